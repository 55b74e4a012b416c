//! Filters' outbound calls through the running gateway: to a service the route grants, and
//! refused for one it does not; a service that answers too late, or too much.

use bytes::Bytes;
use gateway_tests::{Gateway, Reply, Upstream, http1_client, plugin_dir, send};
use http::Request;
use http_body_util::Full;

async fn setup() -> (Gateway, Upstream, Upstream) {
    let identity = Upstream::start("identity").await;
    let private = Upstream::start("private").await;
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
plugin_dir: "{plugins}"
filters:
  outbound:
    module: gateway_test_outbound_probe.wasm
    timeout: 2s
    max_outbound_response: 64KiB
  hasty:
    module: gateway_test_outbound_probe.wasm
    timeout: 300ms
services:
  identity:
    instances: ["{identity}"]
  private:
    instances: ["{private}"]
routes:
  - name: granted
    match: {{ path_prefix: /granted }}
    filters:
      - filter: outbound
        config: {{ service: identity, timeout_ms: 500 }}
        allow_services: [identity]
  - name: ungranted
    match: {{ path_prefix: /ungranted }}
    filters:
      - filter: outbound
        config: {{ service: private, timeout_ms: 500 }}
        allow_services: [identity]
  - name: hasty
    match: {{ path_prefix: /hasty }}
    filters:
      - filter: hasty
        config: {{ service: identity }}
        allow_services: [identity]
"#,
        plugins = plugin_dir().display(),
        identity = identity.url(),
        private = private.url(),
    );
    (Gateway::start(&config), identity, private)
}

/// Asks the probe to call `path` on its service.
async fn probe(gateway: &Gateway, route: &str, path: &str) -> Reply {
    let request = Request::get(gateway.url(route))
        .header("x-outbound-path", path)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(&http1_client(), request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_service_answers_the_filter() {
    let (gateway, identity, _private) = setup().await;
    let reply = probe(&gateway, "/granted", "/.well-known/jwks.json?fresh=1").await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["status"], 200);
    let echo: serde_json::Value =
        serde_json::from_str(seen["body"].as_str().expect("the service's body")).expect("echo");
    assert_eq!(echo["upstream"], "identity");
    assert_eq!(echo["target"], "/.well-known/jwks.json?fresh=1");
    assert_eq!(identity.requests(), 1, "one call, to the granted service");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_the_route_does_not_grant_is_never_called() {
    let (gateway, _identity, private) = setup().await;
    let reply = probe(&gateway, "/ungranted", "/secrets").await;
    assert_eq!(reply.status.as_u16(), 502, "{}", reply.text());
    assert_eq!(reply.json()["error"], "not_allowed");
    assert_eq!(
        private.requests(),
        0,
        "nothing left for the private service"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_or_oversized_answer_fails_the_call_and_not_the_gateway() {
    let (gateway, _identity, _private) = setup().await;
    let late = probe(&gateway, "/granted", "/slow?ms=1500").await;
    assert_eq!(late.status.as_u16(), 502, "{}", late.text());
    assert_eq!(late.json()["error"], "timeout");

    let large = probe(&gateway, "/granted", "/stream?bytes=200000").await;
    assert_eq!(large.status.as_u16(), 502, "{}", large.text());
    assert_eq!(large.json()["error"], "too_large");

    let fine = probe(&gateway, "/granted", "/after").await;
    assert_eq!(
        fine.status.as_u16(),
        200,
        "the gateway and the filter still serve"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_phase_deadline_counts_the_time_waited_on_a_service() {
    let (gateway, _identity, _private) = setup().await;
    // No timeout of its own: the call waits until the filter's 300 ms deadline stops it.
    let began = std::time::Instant::now();
    let stopped = probe(&gateway, "/hasty", "/slow?ms=3000").await;
    let took = began.elapsed();
    stopped.assert_gateway_error(500, "FILTER_FAILED");
    assert!(
        took < std::time::Duration::from_millis(2500),
        "the call outlived its deadline: {took:?}"
    );
    // The log is read from the gateway's stderr as it comes: wait for the line.
    let said = gateway.wait_for_log(
        &["ran past its deadline of 300ms"],
        std::time::Duration::from_secs(5),
    );
    assert!(
        said.is_some(),
        "the failure says it was the deadline:\n{}",
        gateway.logs().join("\n")
    );
}
