//! Spans exported over OTLP/HTTP to the harness's receiver: the request's server span, a child
//! per filter call and one for the upstream try, all in the caller's trace; sampling at the
//! configured ratio, following a caller's sampled flag; a collector that refuses exports costs
//! no request.

use std::time::Duration;

use bytes::Bytes;
use gateway_tests::otlp::{OtlpReceiver, Received};
use gateway_tests::{Gateway, Reply, Upstream, eventually, http1_client, send, standard_filters};
use http::Request;
use http_body_util::Full;

fn config(upstream: &str, endpoint: &str, ratio: f64) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
watch: false
tracing:
  otlp:
    endpoint: "{endpoint}"
    sample_ratio: {ratio}
    service_name: edge-gateway
    timeout: 1s
{filters}
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: users
    match: {{ path_prefix: /users }}
    service: backend
    filters:
      - filter: misbehave
        on_failure: open
      - filter: rewrite
        config: {{ response_headers: {{ set: {{ x-rewritten: "yes" }} }} }}
"#,
        filters = standard_filters()
    )
}

async fn get_with(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::get(gateway.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(
        &http1_client(),
        builder.body(Full::new(Bytes::new())).expect("a request"),
    )
    .await
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_request_is_exported_as_its_span_with_a_child_per_filter_call_and_the_upstream() {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::start("users").await;
    let gateway = Gateway::start(&config(&upstream.url(), &receiver.endpoint(), 1.0));

    let reply = get_with(
        &gateway,
        "/users/42",
        &[("traceparent", PARENT), ("x-misbehave", "trap")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        eventually(Duration::from_secs(5), || receiver.spans().len() >= 5).await,
        "the spans arrive: {:?}",
        receiver.spans()
    );
    let spans = receiver.spans();
    let server: &Received = spans
        .iter()
        .find(|span| span.span.name == "GET users")
        .expect("the request's span");
    assert_eq!(server.service, "edge-gateway");
    assert_eq!(
        server.trace_id(),
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    assert_eq!(
        server.parent_id(),
        "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
    assert_eq!(
        server.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.attribute("gateway.route").as_deref(), Some("users"));
    assert_eq!(server.attribute("url.path").as_deref(), Some("/users/42"));
    let request_id = reply.header("x-request-id").expect("a request id");
    assert_eq!(
        server.attribute("gateway.request_id").as_deref(),
        Some(request_id)
    );
    // The upstream was told the gateway's span is its parent: the exported one.
    assert_eq!(server.span.kind, 2, "SPAN_KIND_SERVER");

    let children: Vec<&Received> = spans
        .iter()
        .filter(|span| span.parent_id() == server.span_id())
        .collect();
    let names: Vec<&str> = children
        .iter()
        .map(|span| span.span.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "filter misbehave request",
            "upstream",
            "filter rewrite response",
            "filter misbehave response"
        ],
        "{children:?}"
    );
    assert!(
        children
            .iter()
            .all(|span| span.trace_id() == server.trace_id())
    );
    assert_eq!(
        children[0].attribute("gateway.decision").as_deref(),
        Some("skipped after trap")
    );
    assert_eq!(
        children[0].span.status.as_ref().map(|status| status.code),
        Some(2),
        "an error"
    );
    assert!(
        children[1]
            .attribute("gateway.decision")
            .is_some_and(|decision| decision.starts_with("200 from backend@"))
    );
    for child in &children {
        assert!(child.span.start_time_unix_nano >= server.span.start_time_unix_nano);
        assert!(child.span.end_time_unix_nano <= server.span.end_time_unix_nano + 1_000_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ratio_samples_the_traces_the_gateway_starts_and_a_callers_flag_is_followed() {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::start("users").await;
    let gateway = Gateway::start(&config(&upstream.url(), &receiver.endpoint(), 0.0));
    for _ in 0..20 {
        assert_eq!(get_with(&gateway, "/users/1", &[]).await.status, 200);
    }
    let not_sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    assert_eq!(
        get_with(&gateway, "/users/2", &[("traceparent", not_sampled)])
            .await
            .status,
        200
    );
    // The caller sampled its trace: exported whole, whatever the ratio.
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let reply = get_with(&gateway, "/users/3", &[("traceparent", sampled)]).await;
    assert_eq!(reply.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || !receiver.spans().is_empty()).await,
        "the sampled request is exported"
    );
    // One more flush interval for anything else to show up, had it been sampled.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let traces: std::collections::HashSet<String> =
        receiver.spans().iter().map(Received::trace_id).collect();
    assert_eq!(
        traces.len(),
        1,
        "only the caller's sampled trace: {traces:?}"
    );
    assert!(traces.contains("0af7651916cd43dd8448eb211c80319c"));

    let all = Gateway::start(&config(&upstream.url(), &receiver.endpoint(), 1.0));
    let reply = get_with(&all, "/users/4", &[]).await;
    let upstream_saw = reply.json()["headers"]["traceparent"][0]
        .as_str()
        .expect("the upstream got a traceparent")
        .to_owned();
    assert!(
        upstream_saw.ends_with("-01"),
        "a started, sampled trace says so upstream: {upstream_saw}"
    );
    let trace_id = upstream_saw[3..35].to_owned();
    assert!(
        eventually(Duration::from_secs(5), || receiver
            .spans()
            .iter()
            .any(|span| span.trace_id() == trace_id))
        .await,
        "a trace the gateway started at ratio 1 is exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_costs_no_request_and_is_logged_once() {
    let receiver = OtlpReceiver::start().await;
    receiver.answer_with(503);
    let upstream = Upstream::start("users").await;
    let gateway = Gateway::start(&config(&upstream.url(), &receiver.endpoint(), 1.0));
    // The exporter retries a 503 within its timeout (1s), then drops the batch; meanwhile
    // requests go on, and later ones queue for the next batches.
    for _ in 0..3 {
        for _ in 0..10 {
            assert_eq!(get_with(&gateway, "/users/1", &[]).await.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(receiver.exports() > 1, "exports were tried and refused");
    assert!(
        gateway
            .wait_for_log(&["spans are being dropped"], Duration::from_secs(5))
            .is_some(),
        "the failure is said"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let warnings = gateway
        .logs()
        .iter()
        .filter(|line| line.contains("spans are being dropped"))
        .count();
    assert_eq!(warnings, 1, "said once, not once per failed export");
    assert!(receiver.spans().is_empty());

    receiver.answer_with(200);
    assert_eq!(get_with(&gateway, "/users/ok", &[]).await.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || !receiver.spans().is_empty()).await,
        "exports work again once the collector takes them"
    );
    assert!(
        gateway
            .wait_for_log(
                &["the OTLP collector takes spans again"],
                Duration::from_secs(2)
            )
            .is_some()
    );
}
