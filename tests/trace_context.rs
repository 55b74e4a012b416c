//! W3C trace context end to end: a client's `traceparent` continued with the gateway's span as
//! the upstream's parent, one created from the request id when absent or invalid, and the
//! access log naming the same trace.

use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{Gateway, Reply, Upstream, http1_client, route_everything_to, send};
use http::Request;
use http_body_util::Full;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

async fn traced(gateway: &Gateway, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(gateway.url("/traced"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = send(
        &http1_client(),
        request.body(Full::new(Bytes::new())).expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200);
    reply
}

/// The one value the upstream got for `name`, if any.
fn upstream_got(reply: &Reply, name: &str) -> Option<String> {
    let values = reply.json()["headers"][name].as_array().cloned()?;
    assert_eq!(values.len(), 1, "one {name} header: {values:?}");
    values[0].as_str().map(str::to_owned)
}

/// `(trace id, parent id, flags)` of a traceparent the gateway sent.
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00", "{traceparent}");
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_traceparent_is_passed_upstream_with_the_gateway_as_parent() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&route_everything_to(
        &upstream.url(),
        "access_log: { flush_interval: 50ms }",
    ));
    let reply = traced(
        &gateway,
        &[
            ("traceparent", &format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
            ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ("x-request-id", "traced-1"),
        ],
    )
    .await;
    let sent = upstream_got(&reply, "traceparent").expect("a traceparent upstream");
    let (trace_id, parent, flags) = parts(&sent);
    assert_eq!(trace_id, TRACE_ID, "the same trace");
    assert_ne!(parent, CALLER_SPAN, "the gateway's span is the new parent");
    assert_eq!(parent.len(), 16);
    assert_eq!(flags, "01", "the caller's sampling decision is kept");
    assert_eq!(
        upstream_got(&reply, "tracestate").as_deref(),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
    );

    let line = gateway
        .wait_for_log(&["\"request_id\":\"traced-1\""], Duration::from_secs(5))
        .expect("an access-log line");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(entry["trace_id"], TRACE_ID);
    assert_eq!(
        entry["span_id"],
        parent.as_str(),
        "the log names the gateway's span"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trace_is_created_from_the_request_id_when_absent_or_invalid() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url(), ""));

    let reply = traced(&gateway, &[]).await;
    let request_id = reply.header("x-request-id").expect("a request id");
    let sent = upstream_got(&reply, "traceparent").expect("a traceparent upstream");
    let (trace_id, parent, flags) = parts(&sent);
    assert_eq!(
        trace_id,
        request_id.replace('-', ""),
        "linked to the request id"
    );
    assert_eq!(parent.len(), 16);
    assert_ne!(parent, "0000000000000000");
    assert_eq!(flags, "00");

    let invalid = [
        format!("00-{}-{CALLER_SPAN}-01", TRACE_ID.to_uppercase()),
        format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32)),
        format!("00-{TRACE_ID}-{}-01", "0".repeat(16)),
        format!("ff-{TRACE_ID}-{CALLER_SPAN}-01"),
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01-more"),
    ];
    for value in &invalid {
        let reply = traced(
            &gateway,
            &[("traceparent", value), ("tracestate", "congo=t61rcWkgMzE")],
        )
        .await;
        let request_id = reply.header("x-request-id").expect("a request id");
        let sent = upstream_got(&reply, "traceparent").expect("a traceparent upstream");
        assert_eq!(
            parts(&sent).0,
            request_id.replace('-', ""),
            "restarted for {value}"
        );
        assert_eq!(
            upstream_got(&reply, "tracestate"),
            None,
            "no tracestate without a valid parent, for {value}"
        );
    }

    // A later version is read as far as version 00 goes, and sent on as 00.
    let reply = traced(
        &gateway,
        &[(
            "traceparent",
            &format!("cc-{TRACE_ID}-{CALLER_SPAN}-01-future"),
        )],
    )
    .await;
    let sent = upstream_got(&reply, "traceparent").expect("a traceparent upstream");
    assert_eq!(parts(&sent).0, TRACE_ID);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_propagation_off_the_headers_pass_untouched() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&route_everything_to(
        &upstream.url(),
        "tracing: { propagate: false }",
    ));
    let reply = traced(&gateway, &[]).await;
    assert_eq!(upstream_got(&reply, "traceparent"), None);
    let given = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let reply = traced(&gateway, &[("traceparent", &given)]).await;
    assert_eq!(upstream_got(&reply, "traceparent"), Some(given));
}
