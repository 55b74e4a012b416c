//! A route's `debug_trace`: answers to the clients it allows carry `x-gateway-trace`, each
//! filter call with its phase, decision and time, and the upstream try; nobody else gets it.
//! The real gateway, the real rewrite and misbehave filters, a real upstream.

use bytes::Bytes;
use gateway_tests::{Gateway, Reply, Upstream, http1_client, send, standard_filters};
use http::Request;
use http_body_util::Full;

fn config(upstream: &str, trace: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
watch: false
access_log: {{ enabled: true, destination: stderr }}
{filters}
services:
  backend:
    instances: ["{upstream}"]
  dead:
    instances: ["http://127.0.0.1:1"]
    retries: {{ attempts: 0 }}
routes:
  - name: traced
    match: {{ path_prefix: /traced }}
    service: backend
    debug_trace: {trace}
    filters:
      - filter: misbehave
        on_failure: open
      - filter: rewrite
        config: {{ response_headers: {{ set: {{ x-rewritten: "yes" }} }} }}
  - name: strict
    match: {{ path_prefix: /strict }}
    service: backend
    debug_trace: {trace}
    filters:
      - filter: misbehave
  - name: dead
    match: {{ path_prefix: /dead }}
    service: dead
    debug_trace: {trace}
  - name: elsewhere
    match: {{ path_prefix: /elsewhere }}
    service: backend
    debug_trace: {{ allow: [10.0.0.0/8, "2001:db8::/32"] }}
    filters:
      - filter: rewrite
        config: {{ response_headers: {{ set: {{ x-rewritten: "yes" }} }} }}
"#,
        filters = standard_filters()
    )
}

async fn request(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::get(gateway.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("a request");
    send(&http1_client(), request).await
}

/// The trace's steps, each as its name and its parameters.
fn steps(reply: &Reply) -> Vec<(String, Vec<(String, String)>)> {
    let trace = reply
        .header("x-gateway-trace")
        .unwrap_or_else(|| panic!("no x-gateway-trace in {:?}", reply.headers));
    trace
        .split(", ")
        .map(|step| {
            let mut parts = step.split(';');
            let name = parts.next().expect("a name").to_owned();
            let params = parts
                .map(|param| {
                    let (key, value) = param.split_once('=').expect("key=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn param<'s>(step: &'s (String, Vec<(String, String)>), key: &str) -> &'s str {
    step.1
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("{key} in {step:?}"))
}

#[tokio::test]
async fn an_allowed_client_sees_each_filter_its_phase_decision_and_time_and_the_upstream() {
    let upstream = Upstream::start("users").await;
    let gateway = Gateway::start(&config(&upstream.url(), "{ allow: [127.0.0.1] }"));

    let reply = request(&gateway, "/traced/a", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let traced = steps(&reply);
    let summary: Vec<(&str, &str, &str)> = traced
        .iter()
        .map(|step| {
            (
                step.0.as_str(),
                param(step, "phase"),
                param(step, "decision"),
            )
        })
        .collect();
    assert_eq!(summary.len(), 4, "{summary:?}");
    assert_eq!(summary[0], ("misbehave", "request", "continue"));
    assert_eq!(summary[1].0, "upstream");
    assert!(summary[1].2.starts_with("200 from backend@"), "{summary:?}");
    // The response phase runs back to front: rewrite, then misbehave.
    assert_eq!(summary[2], ("rewrite", "response", "continue"));
    assert_eq!(summary[3], ("misbehave", "response", "continue"));
    for step in &traced {
        let millis: f64 = param(step, "dur").parse().expect("a duration in ms");
        assert!((0.0..10_000.0).contains(&millis), "{step:?}");
    }

    // A filter that fails open is skipped, and the trace says so.
    let reply = request(&gateway, "/traced/b", &[("x-misbehave", "trap")]).await;
    assert_eq!(reply.status, 200);
    let first = &steps(&reply)[0];
    assert_eq!(param(first, "decision"), "skipped after trap");

    // Failing closed refuses the request; the trace comes with the gateway's error.
    let reply = request(&gateway, "/strict/c", &[("x-misbehave", "trap")]).await;
    reply.assert_gateway_error(500, "FILTER_FAILED");
    assert_eq!(param(&steps(&reply)[0], "decision"), "refused after trap");

    // No filter at all, and no instance answering: the upstream step alone, with the code.
    let reply = request(&gateway, "/dead/d", &[]).await;
    reply.assert_gateway_error(502, "UPSTREAM_UNAVAILABLE");
    let only = steps(&reply);
    assert_eq!(only.len(), 1);
    assert_eq!(param(&only[0], "decision"), "failed UPSTREAM_UNAVAILABLE");
}

#[tokio::test]
async fn clients_the_route_does_not_allow_and_requests_that_do_not_ask_get_no_trace() {
    let upstream = Upstream::start("users").await;
    let gateway = Gateway::start(&config(&upstream.url(), "{ allow: [127.0.0.1] }"));
    let reply = request(&gateway, "/elsewhere/a", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-rewritten"), Some("yes"), "the filters ran");
    assert_eq!(
        reply.header("x-gateway-trace"),
        None,
        "127.0.0.1 is not in its ranges"
    );

    let asking = Gateway::start(&config(
        &upstream.url(),
        "{ allow: [127.0.0.0/8], when_header: x-debug-trace, access_log: true }",
    ));
    let reply = request(&asking, "/traced/a", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("x-gateway-trace"),
        None,
        "the client did not ask"
    );
    let reply = request(&asking, "/traced/b", &[("x-debug-trace", "1")]).await;
    let trace = reply
        .header("x-gateway-trace")
        .expect("asked and allowed")
        .to_owned();

    // The access log line of the traced request carries the same trace, and only that line.
    let line = asking
        .wait_for_log(
            &["\"target\":\"/traced/b\""],
            std::time::Duration::from_secs(5),
        )
        .expect("the access log line");
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(line["debug_trace"], trace.as_str());
    let untraced = asking
        .logs()
        .into_iter()
        .find(|line| line.contains("\"target\":\"/traced/a\""))
        .expect("the other line");
    assert!(!untraced.contains("debug_trace"), "{untraced}");
}
