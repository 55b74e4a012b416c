//! Contract 0.2 through the running gateway, with real components and real upstreams: bodies
//! read and replaced for the filters that ask (and streamed for the rest), the request context
//! along the chain, filter metrics, and what the gateway does with a filter or a client that
//! breaks the rules.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{
    Gateway, RawClient, Upstream, get, http1_client, http2_client, plugin_dir, send,
};
use http::Request;
use http_body_util::Full;

/// Routes, each with the exchange test filter (or the raw-outcome one) configured for one
/// capability. `extra` is appended to the top level (a `limits:` block, say).
fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
{extra}
plugin_dir: "{plugins}"
filters:
  exchange:
    module: gateway_test_exchange.wasm
  raw:
    module: gateway_test_raw_outcome.wasm
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: append
    match: {{ path_prefix: /append }}
    service: backend
    filters:
      - filter: exchange
        config: {{ request_body: 64, append_to_request: "!" }}
  - name: refuse-large
    match: {{ path_prefix: /refuse-large }}
    service: backend
    filters:
      - filter: exchange
        config: {{ request_body: 16, too_large_status: 413 }}
  - name: pass-large
    match: {{ path_prefix: /pass-large }}
    service: backend
    filters:
      - filter: exchange
        config: {{ request_body: 16 }}
  - name: upper
    match: {{ path_prefix: /upper }}
    service: backend
    filters:
      - filter: exchange
        config: {{ response_body: 4096, upper_response: true }}
  - name: upper-stream
    match: {{ path_prefix: /stream }}
    service: backend
    filters:
      - filter: exchange
        config: {{ response_body: 4096, upper_response: true }}
  - name: context
    match: {{ path_prefix: /context }}
    service: backend
    filters:
      - filter: exchange
        config:
          set_context: {{ auth.subject: alice }}
          context_to_response_header: {{ auth.subject: x-subject-first }}
      - filter: exchange
        config:
          context_to_request_header: {{ auth.subject: x-user }}
          context_to_response_header: {{ auth.subject: x-subject-last }}
  - name: trap
    match: {{ path_prefix: /trap }}
    service: backend
    filters:
      - filter: exchange
        config: {{ request_body: 64, panic_with_body: true }}
  - name: big-bodies
    match: {{ path_prefix: /big }}
    service: backend
    filters:
      - filter: exchange
        config: {{ request_body: 262144, response_body: 262144 }}
  - name: oversized-body
    match: {{ path_prefix: /raw/oversized-body }}
    service: backend
    filters: [{{ filter: raw, config: oversized-body }}]
  - name: context-flood
    match: {{ path_prefix: /raw/context-flood }}
    service: backend
    filters: [{{ filter: raw, config: context-flood }}]
  - name: invalid-header
    match: {{ path_prefix: /raw/invalid-header }}
    service: backend
    filters: [{{ filter: raw, config: invalid-header }}]
  - name: unknown-metric
    match: {{ path_prefix: /raw/unknown-metric }}
    service: backend
    filters: [{{ filter: raw, config: unknown-metric }}]
  - name: open-invalid-header
    match: {{ path_prefix: /open/invalid-header }}
    service: backend
    filters: [{{ filter: raw, config: invalid-header, on_failure: open }}]
  - name: fine
    match: {{ path_prefix: /raw/fine }}
    service: backend
    filters: [{{ filter: raw, config: fine }}]
"#,
        plugins = plugin_dir().display(),
    )
}

async fn setup(extra: &str) -> (Gateway, Upstream) {
    let upstream = Upstream::start("contract").await;
    let gateway = Gateway::start(&config(&upstream.url(), extra));
    (gateway, upstream)
}

async fn post(gateway: &Gateway, path: &str, body: impl Into<Bytes>) -> gateway_tests::Reply {
    let request = Request::post(gateway.url(path))
        .body(Full::new(body.into()))
        .expect("valid request");
    send(&http1_client(), request).await
}

fn echoed_header(reply: &gateway_tests::Reply, name: &str) -> Option<String> {
    reply.json()["headers"][name][0].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_replaces_the_request_body_and_the_upstream_gets_it_framed_by_its_length() {
    let (gateway, _upstream) = setup("").await;
    let reply = post(&gateway, "/append", "hello").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["body"], "hello!");
    assert_eq!(echo["body_bytes"], 6);
    assert_eq!(
        echoed_header(&reply, "content-length").as_deref(),
        Some("6")
    );
    assert_eq!(
        echoed_header(&reply, "x-request-body-length").as_deref(),
        Some("5")
    );

    // Sent chunked, the body still reaches the upstream whole and framed by its new length.
    let mut client = RawClient::connect(&gateway).await;
    client
        .send(
            "POST /append HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
    let reply = client.response().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["body"], "abcde!");
    assert_eq!(
        echoed_header(&reply, "content-length").as_deref(),
        Some("6")
    );
    assert_eq!(echoed_header(&reply, "transfer-encoding"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_are_read_and_replaced_the_same_over_http2() {
    let (gateway, _upstream) = setup("").await;
    let client = http2_client();
    let request = Request::post(gateway.url("/append"))
        .body(Full::new(Bytes::from_static(b"over h2")))
        .expect("valid request");
    let reply = send(&client, request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["body"], "over h2!");
    assert_eq!(
        echoed_header(&reply, "content-length").as_deref(),
        Some("8")
    );

    let request = Request::get(gateway.url("/upper/h2"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let reply = send(&client, request).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.text().contains(r#""TARGET":"/UPPER/H2""#),
        "{}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_refused_or_streamed_untouched_as_the_filter_decides() {
    let (gateway, _upstream) = setup("").await;
    let large = vec![b'x'; 1000];

    let refused = post(&gateway, "/refuse-large", large.clone()).await;
    refused.assert_gateway_error(413, "BODY_TOO_LARGE");

    let passed = post(&gateway, "/pass-large", large.clone()).await;
    assert_eq!(passed.status, 200, "{}", passed.text());
    assert_eq!(passed.json()["body_bytes"], 1000);
    assert_eq!(
        passed.json()["body_checksum"],
        gateway_tests::upstream::checksum(&large, 0)
    );
    assert_eq!(
        echoed_header(&passed, "x-request-body-length").as_deref(),
        Some("too-large")
    );

    // Of unknown length, found too long while read: what was read goes on in front of the rest.
    let mut client = RawClient::connect(&gateway).await;
    client
        .send(
            "POST /pass-large HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             a\r\n0123456789\r\na\r\nabcdefghij\r\na\r\nABCDEFGHIJ\r\n0\r\n\r\n",
        )
        .await;
    let reply = client.response().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["body"], "0123456789abcdefghijABCDEFGHIJ");
    assert_eq!(
        echoed_header(&reply, "x-request-body-length").as_deref(),
        Some("too-large")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_replaces_the_response_body_and_one_too_large_streams_on() {
    let (gateway, _upstream) = setup("").await;
    let reply = get(&gateway.url("/upper/items")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains(r#""UPSTREAM":"CONTRACT""#), "{text}");
    assert_eq!(
        reply.header("content-length"),
        Some(text.len().to_string().as_str())
    );
    assert!(reply.header("x-response-body-length").is_some());

    let streamed = get(&gateway.url("/stream?bytes=200000")).await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.body.len(), 200_000);
    let expected: Vec<u8> = (0..200_000)
        .map(gateway_tests::upstream::pattern_byte)
        .collect();
    assert!(
        streamed.body == expected,
        "the streamed body arrived changed"
    );
    assert_eq!(streamed.header("x-response-body-length"), Some("too-large"));
}

#[tokio::test(flavor = "multi_thread")]
async fn context_set_by_a_filter_reaches_later_filters_in_both_phases_and_never_the_upstream() {
    let (gateway, _upstream) = setup("").await;
    let reply = get(&gateway.url("/context")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(echoed_header(&reply, "x-user").as_deref(), Some("alice"));
    assert_eq!(reply.header("x-subject-last"), Some("alice"));
    assert_eq!(
        reply.header("x-subject-first"),
        Some("alice"),
        "the filter that set the entry reads it in its own response phase"
    );
    let sent = reply.json()["headers"].to_string();
    assert!(
        !sent.contains("auth.subject"),
        "the context itself is never forwarded: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_a_filter_declares_count_every_phase() {
    let (gateway, _upstream) = setup("").await;
    for _ in 0..5 {
        assert_eq!(post(&gateway, "/append", "abc").await.status, 200);
    }
    let metrics = get(&gateway.admin_url("/admin/filter-metrics"))
        .await
        .json();
    let family = |name: &str| {
        metrics["metrics"]
            .as_array()
            .and_then(|all| all.iter().find(|family| family["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let phases = family("filter_exchange_phases_total");
    assert_eq!(phases["kind"], "counter");
    let requests = phases["series"]
        .as_array()
        .and_then(|series| {
            series
                .iter()
                .find(|series| series["labels"]["phase"] == "request")
        })
        .expect("a request series");
    assert_eq!(requests["value"], 5.0);

    let sizes = family("filter_exchange_body_bytes");
    assert_eq!(sizes["kind"], "histogram");
    assert_eq!(sizes["series"][0]["count"], 5);
    assert_eq!(sizes["series"][0]["sum"], 15.0);
    assert_eq!(sizes["series"][0]["buckets"][0]["count"], 5, "3 <= 16");
}

#[tokio::test(flavor = "multi_thread")]
async fn outcomes_the_gateway_refuses_fail_the_filter_by_its_policy_and_it_keeps_serving() {
    let (gateway, _upstream) = setup("").await;
    for outcome in [
        "oversized-body",
        "context-flood",
        "invalid-header",
        "unknown-metric",
    ] {
        let reply = post(&gateway, &format!("/raw/{outcome}"), "hi").await;
        reply.assert_gateway_error(500, "FILTER_FAILED");
        assert!(
            gateway
                .wait_for_log(
                    &[r#""filter":"raw""#, "made an edit the gateway refuses"],
                    Duration::from_secs(5)
                )
                .is_some(),
            "a log line names the filter for {outcome}"
        );
    }
    let open = post(&gateway, "/open/invalid-header", "hi").await;
    assert_eq!(
        open.status,
        200,
        "fail open skips the filter: {}",
        open.text()
    );
    assert_eq!(
        echoed_header(&open, "x-raw"),
        None,
        "nothing of a refused outcome is applied"
    );
    let fine = post(&gateway, "/raw/fine", "hi").await;
    assert_eq!(fine.status, 200);
    assert_eq!(echoed_header(&fine, "x-raw").as_deref(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_that_traps_with_a_body_held_fails_the_request_and_the_next_one_is_served() {
    let (gateway, _upstream) = setup("").await;
    let reply = post(&gateway, "/trap", "payload").await;
    reply.assert_gateway_error(500, "FILTER_FAILED");
    assert!(
        gateway
            .wait_for_log(&["panicking with a body held"], Duration::from_secs(5))
            .is_some()
    );
    let next = post(&gateway, "/append", "again").await;
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["body"], "again!");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_slower_than_body_read_timeout_gets_408_while_others_are_served() {
    let (gateway, _upstream) = setup("limits:\n  body_read_timeout: 300ms").await;
    let mut slow = RawClient::connect(&gateway).await;
    slow.send("POST /append HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 40\r\n\r\nhalf")
        .await;
    // While the slow body is awaited, no filter instance is held: others go through.
    for _ in 0..3 {
        assert_eq!(post(&gateway, "/append", "quick").await.status, 200);
    }
    let started = Instant::now();
    let reply = slow.response().await;
    reply.assert_gateway_error(408, "REQUEST_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body longer than announced: the extra bytes are the next request, which is no request.
    let mut client = RawClient::connect(&gateway).await;
    client
        .send(
            "POST /append HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\r\nhelloEXTRA \
             BYTES\r\n\r\n",
        )
        .await;
    let first = client.response().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["body"], "hello!");
    let second = client.response().await;
    assert_eq!(second.status, 400, "{}", second.text());
}

/// Resident memory of a process, from `/proc`.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_bodies_near_the_limit_leave_memory_bounded() {
    let (gateway, _upstream) = setup("").await;
    let body = Bytes::from(vec![b'y'; 250_000]);
    let round = || {
        let tasks: Vec<_> = (0..48)
            .map(|_| {
                let url = gateway.url("/big");
                let body = body.clone();
                tokio::spawn(async move {
                    let request = Request::post(url)
                        .body(Full::new(body))
                        .expect("valid request");
                    send(&http1_client(), request).await.status
                })
            })
            .collect();
        async move {
            for task in tasks {
                assert_eq!(task.await.expect("the task ends"), 200);
            }
        }
    };
    round().await;
    let after_first = resident_bytes(gateway.pid());
    for _ in 0..4 {
        round().await;
    }
    let after_last = resident_bytes(gateway.pid());
    let grown = after_last.saturating_sub(after_first);
    assert!(
        grown < 32 * 1024 * 1024,
        "resident memory grew by {grown} bytes over four more rounds of 48 bodies of 250 kB \
         (from {after_first} to {after_last})"
    );
    assert!(
        after_last < 512 * 1024 * 1024,
        "resident memory is {after_last} bytes"
    );
}
