//! Filters' state on a real `redis-server` shared by real gateway processes: counts exact across
//! gateways, compare-and-swap races that lose nothing, Redis killed and restarted under load,
//! and a slow Redis that holds up only the requests waiting on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{Gateway, RedisServer, Reply, Upstream, http1_client, load, plugin_dir, send};
use http::Request;
use http_body_util::Full;

/// A configuration whose `probe` filter counts on `redis`, with the given fallback when Redis
/// fails (`closed` answers 500, `open` lets the request through marked `x-kv: unavailable`).
fn config(
    redis: &RedisServer,
    upstream: &Upstream,
    on_kv_error: &str,
    timeouts: Timeouts,
) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
plugin_dir: "{plugins}"
kv:
  backend: redis
  redis:
    url: "{redis}"
    operation_timeout: {operation}
filters:
  probe:
    module: gateway_test_kv_probe.wasm
    timeout: {call}
  cas-probe:
    module: gateway_test_kv_probe.wasm
    timeout: {call}
  local-probe:
    module: gateway_test_kv_probe.wasm
    kv: memory
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: counted
    match: {{ path_prefix: /counted }}
    service: backend
    filters: [{{ filter: probe, config: {{ on_kv_error: {on_kv_error} }} }}]
  - name: swapped
    match: {{ path_prefix: /swapped }}
    service: backend
    filters: [{{ filter: cas-probe, config: {{ mode: cas }} }}]
  - name: local
    match: {{ path_prefix: /local }}
    service: backend
    filters: [{{ filter: local-probe }}]
  - name: plain
    match: {{ path_prefix: /plain }}
    service: backend
"#,
        plugins = plugin_dir().display(),
        redis = redis.url(),
        upstream = upstream.url(),
        operation = timeouts.operation,
        call = timeouts.call,
    )
}

/// The Redis operation timeout and the filters' call timeout, as the config writes them.
#[derive(Clone, Copy)]
struct Timeouts {
    operation: &'static str,
    call: &'static str,
}

/// Roomy: these tests count, and a loaded two-core machine must not turn a slow answer into a
/// miscount.
const ROOMY: Timeouts = Timeouts {
    operation: "2s",
    call: "5s",
};

async fn request(url: &str) -> Reply {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(&http1_client(), request).await
}

/// What the upstream saw of a request: the count the filter attached, or `None` when it went
/// through on the fallback.
fn count_upstream(reply: &Reply) -> Option<u64> {
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    let headers = &reply.json()["headers"];
    if headers["x-kv"][0] == "unavailable" {
        return None;
    }
    let hits = headers["x-hits"][0]
        .as_str()
        .unwrap_or_else(|| panic!("neither x-hits nor x-kv upstream: {}", reply.json()));
    Some(hits.parse().expect("a count"))
}

/// 500 requests to `path` through each gateway from 10 concurrent clients each: the counts the
/// upstream saw, sorted.
async fn counts_through_both(first: &Gateway, second: &Gateway, path: &str) -> Vec<u64> {
    let (a, b) = tokio::join!(
        load(first.url(path), 10, 50),
        load(second.url(path), 10, 50)
    );
    let mut counts: Vec<u64> = a
        .iter()
        .chain(&b)
        .map(|reply| count_upstream(reply).expect("Redis is up"))
        .collect();
    counts.sort_unstable();
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_redis_count_every_request_once() {
    let redis = RedisServer::start();
    let upstream = Upstream::start("shared").await;
    let config = config(&redis, &upstream, "closed", ROOMY);
    let first = Gateway::start(&config);
    let second = Gateway::start(&config);

    assert_eq!(
        counts_through_both(&first, &second, "/counted").await,
        (1..=1000).collect::<Vec<u64>>(),
        "every increment, from either gateway, got its own count"
    );
    assert_eq!(redis.command(&["GET", "gateway:probe:hits"]), "1000");

    // The same with compare-and-swap: a read, then a write only if nobody wrote in between.
    assert_eq!(
        counts_through_both(&first, &second, "/swapped").await,
        (1..=1000).collect::<Vec<u64>>(),
        "no compare-and-swap lost an update"
    );
    assert_eq!(redis.command(&["GET", "gateway:cas-probe:hits"]), "1000");

    // A filter on the memory store counts per gateway, even beside Redis-backed ones.
    assert_eq!(
        count_upstream(&request(&first.url("/local")).await),
        Some(1)
    );
    assert_eq!(
        count_upstream(&request(&second.url("/local")).await),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_under_load_gets_the_fallback_then_counting_resumes() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start("outage").await;
    let timeouts = Timeouts {
        operation: "200ms",
        call: "2s",
    };
    let gateway = Gateway::start(&config(&redis, &upstream, "open", timeouts));
    let url = gateway.url("/counted");
    assert_eq!(count_upstream(&request(&url).await), Some(1));

    // Clients keep sending while Redis is killed and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    let reply = request(&url).await;
                    seen.push((count_upstream(&reply), began.elapsed()));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plain = request(&gateway.url("/plain")).await;
    assert_eq!(
        plain.status.as_u16(),
        200,
        "routes without kv are untouched"
    );
    redis.restart();
    let resumed = Instant::now();
    loop {
        if count_upstream(&request(&url).await).is_some() {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(10),
            "counting did not resume within 10s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.expect("client task"));
    }
    // Every request got either its count or the fallback, and none waited long: a connection
    // known dead fails at once, one in doubt within the operation timeout.
    let slowest = seen.iter().map(|(_, took)| *took).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?}, past the filter's deadline"
    );
    let fallbacks = seen.iter().filter(|(count, _)| count.is_none()).count();
    assert!(fallbacks > 0, "no request met the outage");
    let last = seen.iter().rev().find_map(|(count, _)| *count);
    assert!(last.is_some(), "counting resumed for the clients too");
    println!(
        "{} requests under load, {fallbacks} on the fallback, slowest {slowest:?}",
        seen.len()
    );

    // The log is read from the gateway's stderr as it comes: wait for the recovery line.
    gateway.wait_for_log(&["the kv store is back"], Duration::from_secs(5));
    let logs = gateway.logs();
    let down = logs
        .iter()
        .filter(|line| line.contains("redis") && line.contains("\"level\":\"WARN\""))
        .count();
    assert_eq!(
        down,
        1,
        "one warning for the outage, not one per request:\n{}",
        logs.join("\n")
    );
    assert!(
        logs.iter().any(|line| line.contains("redis")
            && line.contains("\"level\":\"INFO\"")
            && line.contains("back")),
        "a line says Redis is back:\n{}",
        logs.join("\n")
    );

    let status: serde_json::Value =
        serde_json::from_slice(&request(&gateway.admin_url("/admin/kv")).await.body).expect("JSON");
    assert_eq!(status["default"], "redis");
    assert_eq!(status["redis"]["state"], "connected", "{status}");
    assert!(status["redis"]["errors"].as_u64() > Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_redis_delays_only_the_requests_waiting_on_it() {
    let redis = RedisServer::start();
    let upstream = Upstream::start("slow").await;
    let timeouts = Timeouts {
        operation: "4s",
        call: "6s",
    };
    // One worker: the requests waiting on Redis and the others share its thread.
    let gateway = Gateway::start_with_workers(&config(&redis, &upstream, "closed", timeouts), 1);
    assert_eq!(
        count_upstream(&request(&gateway.url("/counted")).await),
        Some(1)
    );

    let sleeper = {
        let redis_url = redis.url();
        std::thread::spawn(move || RedisServer::command_at(&redis_url, &["DEBUG", "SLEEP", "2.5"]))
    };
    // Let the sleep begin before the waiting requests are sent.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    let waiting = tokio::spawn(load(gateway.url("/counted"), 4, 1));
    let mut plain_latencies = Vec::new();
    for _ in 0..10 {
        let sent = Instant::now();
        let reply = request(&gateway.url("/plain")).await;
        assert_eq!(reply.status.as_u16(), 200);
        plain_latencies.push(sent.elapsed());
    }
    let plain_done = began.elapsed();
    assert!(
        !waiting.is_finished(),
        "the plain requests finished while Redis still slept"
    );
    let waited = waiting.await.expect("waiting requests");
    let waited_for = began.elapsed();
    for reply in &waited {
        assert!(count_upstream(reply).is_some(), "{}", reply.text());
    }
    sleeper.join().expect("the DEBUG SLEEP finished");
    plain_latencies.sort_unstable();
    println!(
        "10 plain requests took {plain_done:?} (median {:?}, slowest {:?}) while 4 requests waited {waited_for:?} on a sleeping Redis",
        plain_latencies[5], plain_latencies[9]
    );
    assert!(
        plain_done < waited_for,
        "the plain requests ({plain_done:?}) were held behind the ones waiting on Redis ({waited_for:?})"
    );
}
