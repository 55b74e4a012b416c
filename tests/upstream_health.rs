//! Health, breakers, retries and limits end to end: the real gateway in front of real
//! upstream instances on ephemeral ports that a test makes fail, slow or dead while it runs.
//! Durations are configured short (hundreds of milliseconds) and every wait for the gateway
//! to notice something is a bounded poll, never a sleep that assumes a fast machine.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{ControlledUpstream, Gateway, Reply, eventually, get, http1_client, send};
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the gateway to notice a change before it fails.
const NOTICE: Duration = Duration::from_secs(10);

/// A gateway config with an admin API and one service `backend` of `instances`, with the
/// service keys in `extra` (lines indented by four spaces).
fn config(instances: &[&ControlledUpstream], extra: &str) -> String {
    let instances: String = instances
        .iter()
        .map(|upstream| format!("      - \"{}\"\n", upstream.url()))
        .collect();
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: false
services:
  backend:
{extra}
    instances:
{instances}
routes:
  - name: all
    match: {{ path_prefix: / }}
    service: backend
"#
    )
}

/// The admin API's view of instance `index` of `backend`.
async fn instance_status(gateway: &Gateway, index: usize) -> Value {
    let reply = get(&gateway.admin_url("/admin/services")).await;
    assert_eq!(reply.status, 200);
    reply.json()["services"]["backend"]["instances"][index].clone()
}

/// Waits (bounded) until instance `index`'s admin view satisfies `condition`.
async fn wait_for_status(
    gateway: &Gateway,
    index: usize,
    condition: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + NOTICE;
    loop {
        let status = instance_status(gateway, index).await;
        if condition(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the instance never got there: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_on(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    url: &str,
) -> Reply {
    send(
        client,
        Request::get(url)
            .body(Full::new(Bytes::new()))
            .expect("a request"),
    )
    .await
}

#[tokio::test]
async fn an_instance_killed_mid_load_costs_no_failed_answer_and_is_back_once_its_checks_pass() {
    let a = ControlledUpstream::start("a").await;
    let mut b = ControlledUpstream::start("b").await;
    let c = ControlledUpstream::start("c").await;
    let gateway = Gateway::start(&config(
        &[&a, &b, &c],
        "    outlier_detection: { consecutive_failures: 2, base_ejection_time: 60s }
    health_check: { path: /health, interval: 100ms, timeout: 80ms, healthy_threshold: 2, unhealthy_threshold: 2 }",
    ));
    let client = http1_client();
    let url = gateway.url("/item");
    for _ in 0..30 {
        assert_eq!(get_on(&client, &url).await.status, 200);
    }
    assert!(b.requests() > 0);

    // Killed between two requests: what was not sent to it is retried elsewhere.
    b.stop().await;
    for _ in 0..60 {
        let reply = get_on(&client, &url).await;
        assert_eq!(
            reply.status,
            200,
            "a request failed with an instance down: {}",
            reply.text()
        );
    }
    let status = wait_for_status(&gateway, 1, |status| {
        status["ejected"] == true || status["healthy"] == false
    })
    .await;
    assert!(status["ejections"].as_u64() <= Some(1), "{status}");
    let status = wait_for_status(&gateway, 1, |status| status["healthy"] == false).await;
    assert_eq!(status["healthy"], false);

    // Back on its port: its checks pass, the ejection ends, and traffic reaches it again.
    let served_before = b.requests();
    b.restart().await;
    wait_for_status(&gateway, 1, |status| {
        status["healthy"] == true && status["ejected"] == false
    })
    .await;
    // Traffic while waiting, all of it answered.
    let deadline = Instant::now() + NOTICE;
    while b.requests() == served_before {
        assert!(
            Instant::now() < deadline,
            "no request reached the instance once back"
        );
        assert_eq!(get_on(&client, &url).await.status, 200);
    }
}

#[tokio::test]
async fn an_instance_answering_503_is_ejected_after_the_threshold_gets_nothing_meanwhile_and_comes_back()
 {
    let a = ControlledUpstream::start("a").await;
    let b = ControlledUpstream::start("b").await;
    let c = ControlledUpstream::start("c").await;
    let gateway = Gateway::start(&config(
        &[&a, &b, &c],
        "    outlier_detection: { consecutive_failures: 3, base_ejection_time: 800ms }",
    ));
    b.set_status(503);
    let client = http1_client();
    let url = gateway.url("/item");
    // Round robin: b's turns fail and are retried on the others, so every answer is a 200.
    // The ejection starts during the request that brings b to its third failure: not before
    // that request was sent.
    let mut ejected_no_earlier_than = None;
    for _ in 0..30 {
        let sent = Instant::now();
        let reply = get_on(&client, &url).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if b.requests() == 3 && ejected_no_earlier_than.is_none() {
            ejected_no_earlier_than = Some(sent);
        }
    }
    assert_eq!(b.requests(), 3, "ejected after its third failure in a row");
    let status = instance_status(&gateway, 1).await;
    assert_eq!(
        (status["ejected"].clone(), status["ejections"].clone()),
        (Value::from(true), Value::from(1))
    );

    // Ejected for 800 ms: then it gets traffic again.
    let ejected = ejected_no_earlier_than.expect("b failed three times");
    b.set_status(200);
    loop {
        assert!(ejected.elapsed() < NOTICE, "never back");
        assert_eq!(get_on(&client, &url).await.status, 200);
        if b.requests() > 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ejected.elapsed() >= Duration::from_millis(800),
        "back after {:?}",
        ejected.elapsed()
    );
}

#[tokio::test]
async fn a_breaker_opens_after_its_threshold_probes_after_its_open_duration_and_closes_on_success()
{
    let upstream = ControlledUpstream::start("only").await;
    let gateway = Gateway::start(&config(
        &[&upstream],
        "    circuit_breaker: { failure_threshold: 3, open_duration: 600ms }",
    ));
    upstream.set_status(503);
    let client = http1_client();
    let url = gateway.url("/item");
    // The breaker opens during the third request: not before it was sent.
    let mut opened = Instant::now();
    for _ in 0..3 {
        opened = Instant::now();
        let reply = get_on(&client, &url).await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.header("x-upstream"),
            Some("only"),
            "the instance's own 503"
        );
    }
    // Closed -> open: refused without reaching the instance, told when to come back.
    let refused = get_on(&client, &url).await;
    refused.assert_gateway_error(503, "CIRCUIT_OPEN");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(upstream.requests(), 3);
    assert_eq!(instance_status(&gateway, 0).await["breaker"], "open");

    // Open -> half-open after 600 ms: one probe reaches the instance; it fails: open again.
    let (probe_sent, probe_answered) = probe(&client, &url, &upstream, 4).await;
    assert!(
        probe_answered.duration_since(opened) >= Duration::from_millis(600),
        "probed after {:?}",
        probe_answered.duration_since(opened)
    );
    get_on(&client, &url)
        .await
        .assert_gateway_error(503, "CIRCUIT_OPEN");
    assert_eq!(upstream.requests(), 4);
    assert_eq!(instance_status(&gateway, 0).await["breaker_opened"], 2);

    // Half-open -> closed: the next probe, 600 ms on, succeeds and traffic flows again.
    upstream.set_status(200);
    let (_, answered) = probe(&client, &url, &upstream, 5).await;
    assert!(answered.duration_since(probe_sent) >= Duration::from_millis(600));
    for _ in 0..5 {
        assert_eq!(get_on(&client, &url).await.status, 200);
    }
    assert_eq!(instance_status(&gateway, 0).await["breaker"], "closed");
}

/// Sends requests every 20 ms until the instance has seen `count` (bounded), and returns
/// when the last of them was sent and when its answer came.
async fn probe(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    url: &str,
    upstream: &ControlledUpstream,
    count: usize,
) -> (Instant, Instant) {
    let deadline = Instant::now() + NOTICE;
    loop {
        let sent = Instant::now();
        let reply = get_on(client, url).await;
        if upstream.requests() >= count {
            assert_eq!(upstream.requests(), count, "one probe at a time");
            return (sent, Instant::now());
        }
        reply.assert_gateway_error(503, "CIRCUIT_OPEN");
        assert!(Instant::now() < deadline, "no probe within {NOTICE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn in_a_total_outage_retries_stay_within_the_budget() {
    let upstreams = [
        ControlledUpstream::start("a").await,
        ControlledUpstream::start("b").await,
        ControlledUpstream::start("c").await,
    ];
    for upstream in &upstreams {
        upstream.set_status(503);
    }
    let gateway = Gateway::start(&config(
        &upstreams.iter().collect::<Vec<_>>(),
        "    retries: { attempts: 3, budget_percent: 20, budget_min_per_second: 0 }",
    ));
    let client = http1_client();
    let url = gateway.url("/item");
    let requests = 200;
    for _ in 0..requests {
        assert_eq!(get_on(&client, &url).await.status, 503);
    }
    let reached: usize = upstreams.iter().map(ControlledUpstream::requests).sum();
    let connections: usize = upstreams.iter().map(ControlledUpstream::connections).sum();
    // Without a budget, three retries each would make 800; the budget allows 20% more than
    // the requests (one more for the first request's retry, taken before the count grew).
    assert!(
        (requests..=requests + requests / 5 + 1).contains(&reached),
        "{reached} upstream requests for {requests}"
    );
    assert!(reached > requests, "some retries are allowed: {reached}");
    assert!(
        connections <= reached,
        "{connections} connections for {reached} requests"
    );
}

#[tokio::test]
async fn past_the_concurrency_limit_the_overflow_gets_503_at_once() {
    let upstream = ControlledUpstream::start("slow").await;
    upstream.set_delay(Duration::from_secs(3));
    let gateway = Gateway::start(&config(&[&upstream], "    max_concurrent_requests: 2"));
    let url = gateway.url("/item");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    assert!(eventually(NOTICE, || upstream.in_flight() == 2).await);
    let overflow = get(&url).await;
    overflow.assert_gateway_error(503, "OVERLOADED");
    assert!(
        held.iter().all(|request| !request.is_finished()),
        "answered while the two were still in flight: not queued"
    );
    assert_eq!(upstream.requests(), 2);
    for request in held {
        assert_eq!(request.await.expect("a request task").status, 200);
    }
    assert_eq!(get(&url).await.status, 200, "room again");
}

/// Sends `bytes` on a new connection, closes the sending side, and reads what comes back.
async fn raw(gateway: &Gateway, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.address).await.expect("connect");
    stream.write_all(bytes).await.expect("written");
    stream.shutdown().await.expect("shut down");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(NOTICE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_s_broken_body_never_counts_against_an_instance_and_real_failures_do() {
    let upstream = ControlledUpstream::start("only").await;
    let gateway = Gateway::start(&config(
        &[&upstream],
        "    circuit_breaker: { failure_threshold: 2, open_duration: 60s }
    outlier_detection: { consecutive_failures: 3, max_ejection_percent: 100 }",
    ));
    for _ in 0..4 {
        let truncated = raw(
            &gateway,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b",
        )
        .await;
        assert!(!truncated.starts_with("HTTP/1.1 5"), "{truncated}");
        let malformed = raw(
            &gateway,
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .await;
        assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    }
    let status = instance_status(&gateway, 0).await;
    assert_eq!(status["breaker"], "closed", "{status}");
    assert_eq!(
        (status["ejected"].clone(), status["ejections"].clone()),
        (Value::from(false), Value::from(0)),
        "{status}"
    );
    assert_eq!(get(&gateway.url("/item")).await.status, 200);

    // The instance's own failures count: two 503s open the breaker.
    upstream.set_status(503);
    for _ in 0..2 {
        assert_eq!(get(&gateway.url("/item")).await.status, 503);
    }
    get(&gateway.url("/item"))
        .await
        .assert_gateway_error(503, "CIRCUIT_OPEN");
    assert_eq!(instance_status(&gateway, 0).await["breaker"], "open");
}

#[tokio::test]
async fn a_try_past_its_timeout_is_retried_elsewhere_and_the_overall_timeout_bounds_all_tries() {
    let slow = ControlledUpstream::start("slow").await;
    let fast = ControlledUpstream::start("fast").await;
    slow.set_delay(Duration::from_secs(5));
    let gateway = Gateway::start(&config(
        &[&slow, &fast],
        "    request_timeout: 2s
    retries: { attempts: 1, try_timeout: 300ms }",
    ));
    let client = http1_client();
    let url = gateway.url("/item");
    // Round robin: the slow one's turns time out and go to the fast one.
    for _ in 0..4 {
        let reply = get_on(&client, &url).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("fast"));
    }
    assert!(slow.requests() >= 2, "the slow instance had its turns");

    // Both slow: each try times out, and the answer is 504 once the tries are used up.
    fast.set_delay(Duration::from_secs(5));
    get_on(&client, &url)
        .await
        .assert_gateway_error(504, "UPSTREAM_TIMEOUT");
}

#[tokio::test]
async fn with_every_instance_unhealthy_the_answer_is_503_unless_panic_mode_uses_them_all() {
    let upstream = ControlledUpstream::start("sick").await;
    upstream.set_status(500);
    let checks = "    health_check: { path: /health, interval: 100ms, timeout: 80ms, unhealthy_threshold: 2 }";
    let gateway = Gateway::start(&config(&[&upstream], checks));
    wait_for_status(&gateway, 0, |status| status["healthy"] == false).await;
    let served = upstream.requests();
    get(&gateway.url("/item"))
        .await
        .assert_gateway_error(503, "NO_HEALTHY_UPSTREAM");
    assert_eq!(
        upstream.requests(),
        served,
        "an unhealthy instance gets no traffic"
    );

    let panicking = Gateway::start(&config(
        &[&upstream],
        &format!("{checks}\n    panic_mode: true"),
    ));
    wait_for_status(&panicking, 0, |status| status["healthy"] == false).await;
    let reply = get(&panicking.url("/item")).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(
        reply.header("x-upstream"),
        Some("sick"),
        "panic mode used it anyway"
    );

    // Healthy again: traffic flows.
    upstream.set_status(200);
    wait_for_status(&gateway, 0, |status| status["healthy"] == true).await;
    assert_eq!(get(&gateway.url("/item")).await.status, 200);
}

#[tokio::test]
async fn a_reload_keeps_an_ejected_instance_out_and_an_open_breaker_open() {
    let a = ControlledUpstream::start("a").await;
    let b = ControlledUpstream::start("b").await;
    let text = config(
        &[&a, &b],
        "    outlier_detection: { consecutive_failures: 2, base_ejection_time: 60s, max_ejection_percent: 50 }
    circuit_breaker: { failure_threshold: 2, open_duration: 60s }",
    );
    let gateway = Gateway::start(&text);
    b.set_status(503);
    let client = http1_client();
    let url = gateway.url("/item");
    for _ in 0..8 {
        assert_eq!(get_on(&client, &url).await.status, 200);
    }
    assert_eq!(b.requests(), 2);
    let before = instance_status(&gateway, 1).await;
    assert_eq!(before["ejected"], true, "{before}");
    assert_eq!(before["breaker"], "open", "{before}");

    // The same file reloaded: a new state, which knows what the old one knew.
    let reload = Request::post(gateway.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("a request");
    assert_eq!(send(&http1_client(), reload).await.status, 200);
    let after = instance_status(&gateway, 1).await;
    assert_eq!(
        (&after["ejected"], &after["ejections"], &after["breaker"]),
        (&Value::from(true), &Value::from(1), &Value::from("open")),
        "{after}"
    );
    for _ in 0..8 {
        assert_eq!(get_on(&client, &url).await.status, 200);
    }
    assert_eq!(b.requests(), 2, "still out after the reload");
}
