//! A filter that traps, loops or exhausts its memory costs one request and one instance, never
//! the gateway: closed routes answer `500 FILTER_FAILED`, open routes skip the filter, the pool
//! replaces the instance, and the process keeps serving. Uses the `misbehave` test filter.

use std::ffi::OsStr;
use std::fs;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{
    Gateway, Reply, Run, Upstream, http1_client, run_gateway, send, standard_filters,
};
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The ways the filter misbehaves, each with what the gateway's log says about it.
const FAULTS: [(&str, &str); 3] = [
    ("trap", "trapped"),
    ("loop", "ran past its deadline of 100ms"),
    ("alloc", "went past its memory limit of 8MiB"),
];

/// The `misbehave` filter's call timeout in `standard_filters()`.
const CALL_TIMEOUT: Duration = Duration::from_millis(100);

/// How soon a request whose filter loops must be answered: the deadline plus a margin for a
/// debug build on a busy machine.
const LOOP_ANSWER_WITHIN: Duration = Duration::from_millis(900);

/// The `misbehave` filter's `max_uses` in `standard_filters()`.
const MAX_USES: u64 = 5;

struct Setup {
    gateway: Gateway,
    upstream: Upstream,
}

/// A gateway with the `misbehave` filter on three routes to one upstream: `/closed` (pooled,
/// fails closed), `/open` (pooled, fails open) and `/fresh` (`per-request` isolation).
async fn setup() -> Setup {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
{filters}  misbehave-fresh:
    module: gateway_test_misbehave.wasm
    isolation: per-request
    timeout: 100ms
    memory_limit: 8MiB
services:
  echo:
    instances: ["{upstream}"]
routes:
  - name: closed
    match: {{ path_prefix: /closed }}
    service: echo
    filters:
      - filter: misbehave
  - name: open
    match: {{ path_prefix: /open }}
    service: echo
    filters:
      - filter: misbehave
        on_failure: open
  - name: fresh
    match: {{ path_prefix: /fresh }}
    service: echo
    filters:
      - filter: misbehave-fresh
"#,
        filters = standard_filters(),
        upstream = upstream.url(),
    );
    Setup {
        gateway: Gateway::start(&config),
        upstream,
    }
}

/// GET `path` over `client` with one optional header.
async fn call(
    client: &HttpClient,
    gateway: &Gateway,
    path: &str,
    header: Option<(&str, &str)>,
) -> Reply {
    let mut request = Request::get(gateway.url(path));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    send(
        client,
        request
            .body(Full::new(Bytes::new()))
            .expect("valid request"),
    )
    .await
}

/// The count of request phases the instance that ran the response phase had seen.
fn calls(reply: &Reply) -> u64 {
    reply
        .header("x-misbehave-calls")
        .unwrap_or_else(|| panic!("no x-misbehave-calls on {reply:?}"))
        .parse()
        .expect("a number")
}

/// Asserts the log has a line about this reply's request with every one of `needles`.
fn assert_logged(gateway: &Gateway, reply: &Reply, needles: &[&str]) {
    let request_id = reply.header("x-request-id").expect("a request id");
    let mut all = vec![request_id, r#""filter":"misbehave""#];
    all.extend_from_slice(needles);
    assert!(
        gateway.wait_for_log(&all, Duration::from_secs(5)).is_some(),
        "no log line with {all:?}; the log:\n{}",
        gateway.logs().join("\n")
    );
}

/// Asserts the request was answered at the deadline, not before and not much after.
fn assert_stopped_at_deadline(took: Duration) {
    assert!(
        (CALL_TIMEOUT..LOOP_ANSWER_WITHIN).contains(&took),
        "a looping filter is stopped at its {CALL_TIMEOUT:?} deadline; the answer took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_phase_failures_answer_500_without_calling_the_upstream() {
    let mut s = setup().await;
    let client = http1_client();
    for (round, (fault, logged)) in FAULTS.into_iter().enumerate() {
        let started = Instant::now();
        let reply = call(&client, &s.gateway, "/closed", Some(("x-misbehave", fault))).await;
        let took = started.elapsed();
        reply.assert_gateway_error(500, "FILTER_FAILED");
        assert_eq!(
            s.upstream.requests(),
            round,
            "{fault}: the upstream is not called"
        );
        assert_logged(
            &s.gateway,
            &reply,
            &[
                "request refused (fail closed)",
                r#""phase":"request""#,
                logged,
            ],
        );
        if fault == "loop" {
            assert_stopped_at_deadline(took);
        }

        let next = call(&client, &s.gateway, "/closed/next", None).await;
        assert_eq!(next.status, 200, "the request after a {fault}: {next:?}");
        assert_eq!(next.json()["target"], "/closed/next");
        assert_eq!(s.upstream.requests(), round + 1);
        assert!(s.gateway.is_running(), "after a {fault}");
    }
    assert!(
        s.gateway
            .wait_for_log(
                &[
                    r#""filter":"misbehave""#,
                    "filter panicked",
                    "misbehaving on purpose"
                ],
                Duration::from_secs(5),
            )
            .is_some(),
        "the guest's panic message reaches the log, tagged with the filter"
    );
}

/// The epoch ticker, which call deadlines depend on, sleeps once no filter has been called for
/// 200 ms; the first call after that must wake it.
#[tokio::test(flavor = "multi_thread")]
async fn a_loop_after_a_quiet_spell_is_still_stopped_at_its_deadline() {
    let s = setup().await;
    let client = http1_client();
    for quiet in [Duration::from_millis(600), Duration::from_millis(1500)] {
        tokio::time::sleep(quiet).await;
        let started = Instant::now();
        let reply = call(
            &client,
            &s.gateway,
            "/closed",
            Some(("x-misbehave", "loop")),
        )
        .await;
        let took = started.elapsed();
        reply.assert_gateway_error(500, "FILTER_FAILED");
        assert_stopped_at_deadline(took);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn response_phase_failures_answer_500_after_calling_the_upstream() {
    let mut s = setup().await;
    let client = http1_client();
    for (round, (fault, logged)) in FAULTS.into_iter().enumerate() {
        let started = Instant::now();
        let reply = call(
            &client,
            &s.gateway,
            "/closed",
            Some(("x-misbehave-response", fault)),
        )
        .await;
        let took = started.elapsed();
        reply.assert_gateway_error(500, "FILTER_FAILED");
        assert_eq!(
            s.upstream.requests(),
            2 * round + 1,
            "{fault}: the upstream was called before the response phase"
        );
        assert_logged(
            &s.gateway,
            &reply,
            &[
                "request refused (fail closed)",
                r#""phase":"response""#,
                logged,
            ],
        );
        if fault == "loop" {
            assert_stopped_at_deadline(took);
        }

        let next = call(&client, &s.gateway, "/closed", None).await;
        assert_eq!(next.status, 200, "the request after a {fault}: {next:?}");
        assert!(next.header("x-misbehave-calls").is_some(), "{next:?}");
        assert!(s.gateway.is_running(), "after a {fault}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_route_skips_a_failing_filter_and_warns() {
    let mut s = setup().await;
    let client = http1_client();
    for (fault, logged) in FAULTS {
        let started = Instant::now();
        let reply = call(
            &client,
            &s.gateway,
            "/open/in",
            Some(("x-misbehave", fault)),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200, "{fault}: {reply:?}");
        assert_eq!(
            reply.json()["target"],
            "/open/in",
            "{fault}: the upstream answered"
        );
        assert_logged(
            &s.gateway,
            &reply,
            &[
                r#""level":"WARN""#,
                "skipped (fail open)",
                r#""phase":"request""#,
                logged,
            ],
        );
        if fault == "loop" {
            assert_stopped_at_deadline(took);
        }

        let reply = call(
            &client,
            &s.gateway,
            "/open/out",
            Some(("x-misbehave-response", fault)),
        )
        .await;
        assert_eq!(reply.status, 200, "{fault}: {reply:?}");
        assert_eq!(reply.json()["target"], "/open/out");
        assert_eq!(
            reply.header("x-misbehave-calls"),
            None,
            "{fault}: the upstream's response passes unchanged"
        );
        assert_logged(
            &s.gateway,
            &reply,
            &[
                r#""level":"WARN""#,
                "skipped (fail open)",
                r#""phase":"response""#,
                logged,
            ],
        );
    }
    assert_eq!(s.upstream.requests(), 2 * FAULTS.len());
    assert!(s.gateway.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_reused_recycled_and_replaced_after_a_failure() {
    let s = setup().await;
    let client = http1_client();

    // Sequential requests: instances serve up to `max_uses` requests each, then are replaced.
    let mut counts = Vec::new();
    for _ in 0..30 {
        counts.push(calls(&call(&client, &s.gateway, "/closed", None).await));
    }
    assert!(
        counts.iter().all(|count| (1..=MAX_USES).contains(count)),
        "every response phase runs on an instance that served 1 to {MAX_USES} requests: {counts:?}"
    );
    assert!(
        counts.contains(&MAX_USES),
        "instances are reused up to the limit: {counts:?}"
    );
    let first_full = counts
        .iter()
        .position(|&count| count == MAX_USES)
        .expect("seen above");
    assert!(
        counts[first_full..].contains(&1),
        "a fresh instance follows one that served its last request: {counts:?}"
    );

    // A trap discards the instance: the next requests see a fresh one, not a used one.
    let used = [
        calls(&call(&client, &s.gateway, "/closed", None).await),
        calls(&call(&client, &s.gateway, "/closed", None).await),
    ];
    assert!(
        used.iter().any(|&count| count > 1),
        "an instance in use: {used:?}"
    );
    call(
        &client,
        &s.gateway,
        "/closed",
        Some(("x-misbehave", "trap")),
    )
    .await
    .assert_gateway_error(500, "FILTER_FAILED");
    let mut after = Vec::new();
    for _ in 0..3 {
        after.push(calls(&call(&client, &s.gateway, "/closed", None).await));
    }
    assert!(
        after.contains(&1),
        "a fresh instance after the trap: {after:?}"
    );

    // Per-request isolation: no response phase ever runs on an instance that served another
    // request's request phase.
    for _ in 0..5 {
        let count = calls(&call(&client, &s.gateway, "/fresh", None).await);
        assert!(
            count <= 1,
            "per-request instances are never reused: count {count}"
        );
    }
}

/// What one request of the mixed burst asks the filter to do.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Normal,
    Request(&'static str),
    Response(&'static str),
}

/// A tenth of the burst each: trap, loop and alloc in the request phase, trap and alloc in the
/// response phase; the other half behave. Loops are kept to a tenth: each holds a worker thread
/// for the whole deadline.
fn kind(index: usize) -> Kind {
    match index % 10 {
        0 => Kind::Request("trap"),
        1 => Kind::Request("loop"),
        2 => Kind::Request("alloc"),
        3 => Kind::Response("trap"),
        4 => Kind::Response("alloc"),
        _ => Kind::Normal,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_failures_stay_contained() {
    const REQUESTS: usize = 200;
    const TASKS: usize = 16;
    let mut s = setup().await;
    let address = s.gateway.address;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(async move {
                let client = http1_client();
                let mut replies = Vec::new();
                for index in (task..REQUESTS).step_by(TASKS) {
                    let request = Request::get(format!("http://{address}/closed/{index}"));
                    let request = match kind(index) {
                        Kind::Normal => request,
                        Kind::Request(fault) => request.header("x-misbehave", fault),
                        Kind::Response(fault) => request.header("x-misbehave-response", fault),
                    };
                    let request = request
                        .body(Full::new(Bytes::new()))
                        .expect("valid request");
                    replies.push((index, send(&client, request).await));
                }
                replies
            })
        })
        .collect();
    let mut replies = Vec::with_capacity(REQUESTS);
    for task in tasks {
        let finished = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the burst ends within 60s");
        replies.extend(finished.expect("every request is answered, without connection errors"));
    }
    let burst = started.elapsed();

    assert_eq!(replies.len(), REQUESTS);
    let mut reached_upstream = 0;
    for (index, reply) in &replies {
        match kind(*index) {
            Kind::Normal => {
                assert_eq!(reply.status, 200, "request {index}: {reply:?}");
                assert_eq!(reply.json()["target"], format!("/closed/{index}"));
                reached_upstream += 1;
            }
            Kind::Request(_) => {
                reply.assert_gateway_error(500, "FILTER_FAILED");
            }
            Kind::Response(_) => {
                reply.assert_gateway_error(500, "FILTER_FAILED");
                reached_upstream += 1;
            }
        }
    }
    assert_eq!(
        s.upstream.requests(),
        reached_upstream,
        "only requests whose request phase passed reached the upstream"
    );

    let client = http1_client();
    for _ in 0..20 {
        let reply = call(&client, &s.gateway, "/closed", None).await;
        assert_eq!(reply.status, 200, "after the burst: {reply:?}");
    }
    assert!(s.gateway.is_running(), "after a burst of {burst:?}");
    // The host's own panics would print outside the JSON log (or name the host code).
    for line in s.gateway.logs() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_ok()
                && !line.contains("host code called by the filter panicked"),
            "the host never panics: {line}"
        );
    }
}

/// How long `gateway serve` may take to refuse a configuration.
const REFUSE_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn a_config_the_filter_rejects_stops_the_gateway_from_starting() {
    let upstream = "http://127.0.0.1:9";
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
{filters}services:
  echo:
    instances: ["{upstream}"]
routes:
  - name: fine
    match: {{ path_prefix: /fine }}
    service: echo
    filters:
      - filter: misbehave
  - name: strict
    match: {{ path_prefix: /strict }}
    service: echo
    filters:
      - filter: misbehave
        config: {{ reject: "nope" }}
"#,
        filters = standard_filters(),
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("gateway.yaml");
    fs::write(&path, config).expect("config written");
    let args = [
        OsStr::new("serve"),
        OsStr::new("--config"),
        path.as_os_str(),
    ];
    let Run { status, stderr, .. } = run_gateway(args, REFUSE_WITHIN);
    assert!(!status.success(), "{status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("route `strict`, filter `misbehave`: rejected its configuration: nope"),
        "stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("route `fine`"),
        "only the bad route is named:\n{stderr}"
    );
    assert!(!stderr.contains("listening"), "it never served:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_reach_no_environment_files_or_network() {
    let s = setup().await;
    let client = http1_client();
    let reply = call(
        &client,
        &s.gateway,
        "/closed",
        Some(("x-misbehave", "probe")),
    )
    .await;
    assert_eq!(reply.status, 200);
    let probe = reply.json()["headers"]["x-probe"][0]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no probe result upstream: {}", reply.json()));
    assert_eq!(probe, "env=0;args=0;fs=denied;net=denied");
}
