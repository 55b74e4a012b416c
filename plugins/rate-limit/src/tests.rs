//! The filter through the SDK's test host: the test sets the clock, the store is the test
//! host's, and failures of the store are the test's to make.

use std::time::Duration;

use gateway_sdk::serde_json::{Value, json};
use gateway_sdk::testing::{KvFailure, TestHost, TestRequest, TestResponse};
use gateway_sdk::{Action, log::Level};

use crate::RateLimit;

/// 2023-11-14T22:14:00Z: the start of a minute, an hour and a second.
const T0: u64 = 1_700_000_040_000;

fn host(config: Value) -> TestHost<RateLimit> {
    let mut host = TestHost::<RateLimit>::new(config).expect("config accepted");
    host.set_now_ms(T0);
    host
}

fn limit(name: &str, algorithm: &str, rate: u64, window: &str) -> Value {
    json!({ "name": name, "algorithm": algorithm, "rate": rate, "window": window })
}

fn from(ip: &str) -> TestRequest {
    TestRequest::get("/").with_client_ip(ip)
}

/// Runs the request phase and, if it passes, the response phase; the status the client gets
/// and the response it sees.
fn send(host: &mut TestHost<RateLimit>, request: TestRequest) -> (u16, Response) {
    let mut request = request;
    match host.on_request(&mut request) {
        Action::Continue => {
            let mut response = TestResponse::new(200);
            assert!(host.on_response(&request, &mut response).is_continue());
            let headers = response.headers();
            (
                200,
                Response {
                    headers,
                    body: String::new(),
                },
            )
        }
        Action::Respond(reply) => (
            reply.status,
            Response {
                headers: reply.headers.clone(),
                body: reply.body_text(),
            },
        ),
    }
}

struct Response {
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn status(host: &mut TestHost<RateLimit>, request: TestRequest) -> u16 {
    send(host, request).0
}

/// How many of `count` requests from `ip` are allowed.
fn allowed(host: &mut TestHost<RateLimit>, ip: &str, count: usize) -> usize {
    (0..count).filter(|_| status(host, from(ip)) == 200).count()
}

#[test]
fn fixed_window_first_request_burst_one_over_and_the_next_window() {
    let mut host = host(json!({ "limits": [limit("per-minute", "fixed_window", 3, "1m")] }));
    let (code, first) = send(&mut host, from("192.0.2.1"));
    assert_eq!(code, 200);
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    assert_eq!(first.header("x-ratelimit-reset"), Some("60"));
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 2);
    host.advance(Duration::from_secs(59));
    let (code, over) = send(&mut host, from("192.0.2.1"));
    assert_eq!(code, 429);
    assert_eq!(over.header("retry-after"), Some("1"));
    assert!(
        over.body.contains("\"code\":\"RATE_LIMITED\""),
        "{}",
        over.body
    );
    // The window's edge: a fresh count.
    host.advance(Duration::from_secs(1));
    assert_eq!(allowed(&mut host, "192.0.2.1", 4), 3);
}

#[test]
fn fixed_window_allows_twice_the_rate_across_the_edge() {
    let mut host = host(json!({ "limits": [limit("per-minute", "fixed_window", 5, "1m")] }));
    host.advance(Duration::from_millis(59_999));
    assert_eq!(allowed(&mut host, "192.0.2.1", 5), 5);
    host.advance(Duration::from_millis(1));
    assert_eq!(allowed(&mut host, "192.0.2.1", 6), 5, "the documented edge");
}

#[test]
fn sliding_window_does_not_allow_a_second_burst_across_the_edge() {
    let mut host = host(json!({ "limits": [limit("per-minute", "sliding_window", 10, "1m")] }));
    host.advance(Duration::from_secs(59));
    assert_eq!(allowed(&mut host, "192.0.2.1", 11), 10);
    // Just past the edge the last window still weighs nearly all of its 10.
    host.advance(Duration::from_secs(2));
    let (code, refused) = send(&mut host, from("192.0.2.1"));
    assert_eq!(code, 429);
    // Held 0 this window; the previous weighs 10 * 59/60: one fits at 6 s in, 5 s from now.
    assert_eq!(refused.header("retry-after"), Some("5"));
    host.advance(Duration::from_secs(5));
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 1);
    // Half-way through, half the previous window weighs: 5 in all.
    host.advance(Duration::from_secs(24));
    assert_eq!(allowed(&mut host, "192.0.2.1", 10), 4);
}

#[test]
fn token_bucket_bursts_refills_and_never_overfills() {
    let mut host = host(json!({ "limits": [{
        "name": "bucket", "algorithm": "token_bucket", "rate": 10, "window": "1s", "burst": 5
    }] }));
    let (_, first) = send(&mut host, from("192.0.2.1"));
    assert_eq!(first.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("4"));
    assert_eq!(first.header("ratelimit-policy"), Some("\"bucket\";q=5;w=1"));
    assert_eq!(allowed(&mut host, "192.0.2.1", 5), 4);
    // One token comes back every 100 ms.
    host.advance(Duration::from_millis(99));
    assert_eq!(allowed(&mut host, "192.0.2.1", 1), 0);
    host.advance(Duration::from_millis(1));
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 1);
    // A long rest fills the bucket to its burst, no more.
    host.advance(Duration::from_secs(3600));
    assert_eq!(allowed(&mut host, "192.0.2.1", 7), 5);
}

#[test]
fn token_bucket_state_is_one_timestamp_under_the_limits_key() {
    let mut host = host(json!({ "scope": "api", "limits": [limit("b", "token_bucket", 2, "1s")] }));
    send(&mut host, from("192.0.2.1"));
    let entries = host.kv_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (key, value) = &entries[0];
    assert!(
        key.starts_with("api:b:") && key.ends_with(":ip=192.0.2.1"),
        "{key}"
    );
    let tat: u64 = String::from_utf8_lossy(value).parse().expect("a timestamp");
    assert_eq!(tat, T0 * 1000 + 500_000);
}

#[test]
fn the_headers_travel_in_a_context_entry_of_the_scope() {
    let mut host = host(json!({ "scope": "api", "limits": [limit("m", "fixed_window", 5, "1m")] }));
    let mut request = from("192.0.2.1").with_context("rate_limit.headers.other", "x-other: 1");
    assert!(host.on_request(&mut request).is_continue());
    assert_eq!(
        request.context("rate_limit.headers.api").as_deref(),
        Some(
            "x-ratelimit-limit: 5\nx-ratelimit-remaining: 4\nx-ratelimit-reset: 60\n\
             ratelimit-policy: \"m\";q=5;w=60\nratelimit: \"m\";r=4;t=60"
        )
    );
    assert_eq!(
        request.context("rate_limit.headers.other").as_deref(),
        Some("x-other: 1"),
        "another rate-limit filter's entry is its own"
    );
    let long_scope = TestHost::<RateLimit>::new(json!({
        "scope": "s".repeat(41), "limits": [limit("m", "fixed_window", 5, "1m")]
    }));
    assert!(
        long_scope
            .err()
            .is_some_and(|error| error.contains("1 to 40 bytes"))
    );
}

#[test]
fn a_bucket_that_is_no_timestamp_reads_as_full() {
    let mut host = host(json!({ "scope": "api", "limits": [limit("b", "token_bucket", 2, "1s")] }));
    send(&mut host, from("192.0.2.1"));
    let (key, _) = host.kv_entries().remove(0);
    host.kv_set(&key, [0xff, 0xfe], None);
    assert_eq!(allowed(&mut host, "192.0.2.1", 3), 2);
}

#[test]
fn clients_are_counted_apart_and_ipv6_by_prefix() {
    let mut host = host(json!({ "limits": [limit("m", "fixed_window", 1, "1m")] }));
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 1);
    assert_eq!(allowed(&mut host, "192.0.2.2", 1), 1);
    assert_eq!(allowed(&mut host, "2001:db8::1", 1), 1);
    assert_eq!(allowed(&mut host, "2001:db8::2", 1), 0, "the same /64");
}

fn behind_proxy(config: Value) -> TestHost<RateLimit> {
    let mut config = config;
    config["trusted_proxies"] = json!(["10.0.0.0/8", "192.168.1.1"]);
    host(config)
}

#[test]
fn forwarded_for_counts_only_from_trusted_proxies() {
    let mut host = behind_proxy(json!({ "limits": [limit("m", "fixed_window", 1, "1m")] }));
    let via = |client_ip: &str, forwarded: &str| {
        TestRequest::get("/")
            .with_client_ip(client_ip)
            .with_header("x-forwarded-for", forwarded)
    };
    // Through the proxy: the client it names, each apart.
    assert_eq!(status(&mut host, via("10.0.0.5", "203.0.113.1")), 200);
    assert_eq!(status(&mut host, via("10.0.0.5", "203.0.113.1")), 429);
    assert_eq!(status(&mut host, via("10.0.0.5", "203.0.113.2")), 200);
    // A client's own entries lie left of what the trusted hops appended.
    assert_eq!(
        status(
            &mut host,
            via("10.0.0.5", "198.51.100.9, 203.0.113.1, 10.0.0.7")
        ),
        429
    );
    assert_eq!(
        status(
            &mut host,
            TestRequest::get("/")
                .with_client_ip("192.168.1.1")
                .with_header("x-forwarded-for", "203.0.113.3")
                .with_header("x-forwarded-for", "10.1.1.1")
        ),
        200
    );
    // Straight from an untrusted client, the header is ignored: no fresh bucket.
    assert_eq!(status(&mut host, via("198.51.100.7", "203.0.113.50")), 200);
    assert_eq!(status(&mut host, via("198.51.100.7", "203.0.113.51")), 429);
    // An unreadable hop stops the walk at the last trusted one.
    assert_eq!(status(&mut host, via("10.0.0.9", "junk")), 200);
    assert_eq!(
        status(&mut host, via("10.0.0.9", "203.0.113.99, junk")),
        429
    );
}

#[test]
fn api_keys_are_counted_hashed_and_never_stored() {
    let mut host = host(json!({
        "key": "api_key",
        "limits": [limit("m", "fixed_window", 1, "1m")]
    }));
    let with_key = |key: &str| TestRequest::get("/").with_header("X-Api-Key", key);
    assert_eq!(status(&mut host, with_key("secret-one")), 200);
    assert_eq!(status(&mut host, with_key("secret-one")), 429);
    assert_eq!(status(&mut host, with_key("secret-two")), 200);
    for (key, _) in host.kv_entries() {
        assert!(!key.contains("secret"), "{key}");
    }
    let hash = crate::key::sha256_hex(b"secret-one");
    assert!(host.kv_entries().iter().any(|(key, _)| key.contains(&hash)));
}

#[test]
fn a_missing_key_falls_back() {
    let mut host = host(json!({
        "key": "subject",
        "fallback": "route",
        "limits": [limit("m", "fixed_window", 2, "1m")]
    }));
    let user = |name: &str| from("192.0.2.1").with_context("auth.subject", name);
    assert_eq!(status(&mut host, user("alice")), 200);
    assert_eq!(status(&mut host, user("alice")), 200);
    assert_eq!(status(&mut host, user("alice")), 429);
    assert_eq!(status(&mut host, user("bob")), 200);
    // Anonymous requests, from any address, share the route's bucket.
    assert_eq!(
        allowed(&mut host, "192.0.2.7", 1) + allowed(&mut host, "192.0.2.8", 2),
        2
    );
}

#[test]
fn the_default_fallback_is_the_client_address() {
    let mut host = host(json!({
        "limits": [{ "name": "m", "algorithm": "fixed_window", "rate": 1, "window": "1m",
                     "key": "consumer" }]
    }));
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 1);
    assert_eq!(allowed(&mut host, "192.0.2.2", 1), 1);
}

#[test]
fn keys_combine_headers_route_parameters_and_context() {
    let mut host = host(json!({
        "key": ["header:X-Tenant", "param:service", "consumer"],
        "limits": [limit("m", "fixed_window", 1, "1m")]
    }));
    let request = |tenant: &str, service: &str| {
        TestRequest::get("/")
            .with_header("x-tenant", tenant)
            .with_route_param("service", service)
            .with_context("auth.consumer", "acme")
    };
    assert_eq!(status(&mut host, request("t1", "users")), 200);
    assert_eq!(status(&mut host, request("t1", "users")), 429);
    assert_eq!(status(&mut host, request("t1", "orders")), 200);
    assert_eq!(status(&mut host, request("t2", "users")), 200);
    let keys: Vec<String> = host.kv_entries().into_iter().map(|(key, _)| key).collect();
    assert!(
        keys.iter()
            .any(|key| key.contains(":x-tenant=t1|service=users|con=acme:")),
        "{keys:?}"
    );
}

#[test]
fn every_limit_must_allow_and_a_refusal_takes_nothing() {
    let mut host = host(json!({ "limits": [
        limit("per-second", "fixed_window", 2, "1s"),
        limit("per-minute", "fixed_window", 3, "1m"),
    ] }));
    let (_, first) = send(&mut host, from("192.0.2.1"));
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per-second\";q=2;w=1, \"per-minute\";q=3;w=60")
    );
    assert_eq!(
        first.header("ratelimit"),
        Some("\"per-second\";r=1;t=1, \"per-minute\";r=2;t=60")
    );
    // The legacy headers show the tightest.
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(
        allowed(&mut host, "192.0.2.1", 2),
        1,
        "per-second refuses the third"
    );
    host.advance(Duration::from_secs(1));
    // Per-minute allowed the refused request nothing: one left, not zero.
    assert_eq!(allowed(&mut host, "192.0.2.1", 1), 1);
    let (code, refused) = send(&mut host, from("192.0.2.1"));
    assert_eq!(code, 429);
    assert_eq!(refused.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("retry-after"), Some("59"));
    // The per-second limit gave back what the refused request took.
    assert_eq!(
        refused.header("ratelimit"),
        Some("\"per-second\";r=1;t=1, \"per-minute\";r=0;t=59")
    );
    assert_eq!(
        host.counter("requests_total", &["default", "per-minute", "limited"]),
        1.0
    );
    assert_eq!(
        host.counter("requests_total", &["default", "per-second", "limited"]),
        1.0
    );
    assert_eq!(
        host.counter("requests_total", &["default", "per-minute", "allowed"]),
        3.0
    );
}

#[test]
fn rules_pick_limits_by_path_and_method() {
    let mut host = host(json!({
        "limits": [limit("default", "fixed_window", 3, "1m")],
        "rules": [
            { "match": { "path_prefix": "/api/v1/trading", "methods": ["POST"] },
              "limits": [limit("trading", "fixed_window", 1, "1m")] },
            { "match": { "path": "/public/{*rest}" }, "limits": [] }
        ]
    }));
    let post = |path: &str| TestRequest::post(path).with_client_ip("192.0.2.1");
    assert_eq!(status(&mut host, post("/api/v1/trading/orders")), 200);
    assert_eq!(status(&mut host, post("/api/v1/trading")), 429);
    // Not the rule's method, not on a segment boundary: the default limit.
    assert_eq!(allowed(&mut host, "192.0.2.1", 1), 1);
    assert_eq!(status(&mut host, post("/api/v1/tradingx")), 200);
    // A rule with no limits leaves its paths unlimited.
    let public = (0..10)
        .filter(|_| {
            status(
                &mut host,
                TestRequest::get("/public/a").with_client_ip("192.0.2.1"),
            ) == 200
        })
        .count();
    assert_eq!(public, 10);
}

#[test]
fn a_consumer_gets_its_own_limit() {
    let mut host = host(json!({
        "key": ["consumer"],
        "limits": [limit("per-minute", "fixed_window", 1, "1m")],
        "consumers": { "gold": [limit("per-minute", "fixed_window", 3, "1m")] }
    }));
    let as_consumer = |name: &str| TestRequest::get("/").with_context("auth.consumer", name);
    let count = |host: &mut TestHost<RateLimit>, name: &str| {
        (0..5)
            .filter(|_| status(host, as_consumer(name)) == 200)
            .count()
    };
    assert_eq!(count(&mut host, "silver"), 1);
    assert_eq!(count(&mut host, "gold"), 3);
}

#[test]
fn counters_of_an_unchanged_limit_survive_a_new_configuration() {
    let before = json!({ "limits": [limit("m", "fixed_window", 2, "1m")] });
    let mut host = host(before);
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 2);
    let entries = host.kv_entries();
    // The same limit in a configuration that changed elsewhere.
    let mut after = TestHost::<RateLimit>::new(json!({
        "headers": { "legacy": false },
        "rules": [{ "match": { "path_prefix": "/x" }, "limits": [limit("x", "fixed_window", 9, "1m")] }],
        "limits": [limit("m", "fixed_window", 2, "1m")]
    }))
    .expect("accepted");
    after.set_now_ms(T0);
    for (key, value) in &entries {
        after.kv_set(key, value, None);
    }
    assert_eq!(allowed(&mut after, "192.0.2.1", 1), 0, "still counted");
    // A limit whose numbers change starts afresh.
    let mut changed = TestHost::<RateLimit>::new(json!({
        "limits": [limit("m", "fixed_window", 3, "1m")]
    }))
    .expect("accepted");
    changed.set_now_ms(T0);
    for (key, value) in &entries {
        changed.kv_set(key, value, None);
    }
    assert_eq!(allowed(&mut changed, "192.0.2.1", 4), 3);
}

#[test]
fn headers_can_be_turned_off_either_style() {
    let mut ietf_only = host(json!({
        "headers": { "legacy": false },
        "limits": [limit("burst", "fixed_window", 100, "1m")]
    }));
    host_advance_to_half_minute(&mut ietf_only);
    let (_, response) = send(&mut ietf_only, from("192.0.2.1"));
    assert_eq!(response.header("x-ratelimit-limit"), None);
    assert_eq!(
        response.header("ratelimit-policy"),
        Some("\"burst\";q=100;w=60")
    );
    assert_eq!(response.header("ratelimit"), Some("\"burst\";r=99;t=30"));

    let mut none = host(json!({
        "headers": { "legacy": false, "ietf": false },
        "limits": [limit("m", "fixed_window", 1, "1m")]
    }));
    assert_eq!(none.phases(), gateway_sdk::Phases::REQUEST);
    let (_, response) = send(&mut none, from("192.0.2.1"));
    assert!(response.headers.is_empty(), "{:?}", response.headers);
    let (code, refused) = send(&mut none, from("192.0.2.1"));
    assert_eq!(code, 429);
    assert_eq!(refused.header("retry-after"), Some("60"));
    assert_eq!(refused.header("x-ratelimit-remaining"), None);
}

fn host_advance_to_half_minute(host: &mut TestHost<RateLimit>) {
    host.advance(Duration::from_secs(30));
}

#[test]
fn shadow_mode_counts_and_logs_but_never_refuses() {
    let mut host = host(json!({
        "shadow": true,
        "limits": [limit("m", "fixed_window", 2, "1m")]
    }));
    assert_eq!(allowed(&mut host, "192.0.2.1", 10), 10);
    assert_eq!(
        host.counter("requests_total", &["default", "m", "allowed"]),
        2.0
    );
    assert_eq!(
        host.counter("requests_total", &["default", "m", "shadow_limited"]),
        8.0
    );
    let (_, response) = send(&mut host, from("192.0.2.1"));
    assert_eq!(
        response.header("x-ratelimit-remaining"),
        None,
        "invisible to clients"
    );
    let lines: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|line| line.level == Level::Info)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line per 10 s, not per request: {lines:?}"
    );
    assert!(
        lines[0]
            .message
            .contains("shadow limit `m` would have refused")
    );
    host.advance(Duration::from_secs(10));
    send(&mut host, from("192.0.2.1"));
    let last = host.logs().pop().expect("a second line");
    assert!(
        last.message.contains("(8 more since the last line)"),
        "{}",
        last.message
    );
}

#[test]
fn a_failing_store_fails_open_by_default_with_one_warning() {
    let mut host = host(json!({ "limits": [limit("m", "fixed_window", 1, "1m")] }));
    host.kv_fails(KvFailure::Unavailable);
    assert_eq!(allowed(&mut host, "192.0.2.1", 5), 5);
    host.kv_fails(KvFailure::Timeout);
    assert_eq!(allowed(&mut host, "192.0.2.1", 5), 5);
    assert_eq!(
        host.counter("store_errors_total", &["default", "m", "open"]),
        10.0
    );
    let warnings: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|line| line.level == Level::Warn)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    host.kv_recovers();
    assert_eq!(allowed(&mut host, "192.0.2.1", 2), 1);
    let back = host.logs().pop().expect("a recovery line");
    assert_eq!(
        back.message,
        "rate limit `default`: the store answers again"
    );
    host.kv_fails(KvFailure::Unavailable);
    allowed(&mut host, "192.0.2.1", 3);
    let warnings = host
        .logs()
        .into_iter()
        .filter(|line| line.level == Level::Warn)
        .count();
    assert_eq!(warnings, 2, "one per outage");
}

#[test]
fn a_limit_that_fails_closed_answers_503_in_json() {
    let mut host = host(json!({ "limits": [
        limit("open", "fixed_window", 5, "1m"),
        { "name": "closed", "algorithm": "token_bucket", "rate": 5, "window": "1m",
          "on_store_error": "closed" }
    ] }));
    host.kv_fails(KvFailure::Unavailable);
    let (code, reply) = send(&mut host, from("192.0.2.1"));
    assert_eq!(code, 503);
    assert!(
        reply.body.contains("\"code\":\"RATE_LIMIT_UNAVAILABLE\""),
        "{}",
        reply.body
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        host.counter("store_errors_total", &["default", "closed", "closed"]),
        1.0
    );
    assert_eq!(
        host.counter("store_errors_total", &["default", "open", "open"]),
        1.0
    );
}

#[test]
fn a_shadow_limit_never_refuses_even_when_it_would_fail_closed() {
    let mut host = host(json!({
        "shadow": true,
        "on_store_error": "closed",
        "limits": [limit("m", "fixed_window", 1, "1m")]
    }));
    host.kv_fails(KvFailure::Unavailable);
    assert_eq!(allowed(&mut host, "192.0.2.1", 3), 3);
    assert_eq!(
        host.counter("store_errors_total", &["default", "m", "open"]),
        3.0
    );
}

#[test]
fn bad_configurations_are_refused_with_the_field() {
    let refused = |config: Value| TestHost::<RateLimit>::new(config).err().expect("refused");
    assert!(refused(json!({})).contains("no limits"));
    assert!(
        refused(json!({ "limits": [limit("m", "fixed_window", 0, "1m")] }))
            .contains("limits[0].rate")
    );
    assert!(
        refused(json!({ "limits": [limit("m", "fixed_window", 1, "2d")] }))
            .contains("limits[0].window")
    );
    assert!(
        refused(json!({ "limits": [limit("a b", "fixed_window", 1, "1m")] }))
            .contains("limits[0].name")
    );
    assert!(
        refused(json!({ "limits": [limit("m", "leaky", 1, "1m")] })).contains("unknown variant")
    );
    assert!(
        refused(json!({ "key": "cookie", "limits": [limit("m", "fixed_window", 1, "1m")] }))
            .contains("unknown key part `cookie`")
    );
    assert!(refused(json!({ "trusted_proxies": ["10.0.0.0/33"], "limits": [limit("m", "fixed_window", 1, "1m")] }))
        .contains("neither an IP address nor a CIDR range"));
    assert!(
        refused(
            json!({ "limits": [{ "name": "m", "algorithm": "fixed_window", "rate": 1,
        "window": "1m", "burst": 3 }] })
        )
        .contains("token bucket only")
    );
    assert!(refused(json!({ "limits": [limit("m", "fixed_window", 1, "1m"), limit("m", "fixed_window", 2, "1m")] }))
        .contains("used twice"));
    assert!(refused(json!({ "limts": [] })).contains("unknown field"));
    assert!(
        refused(json!({ "api_key_header": "x api key", "limits": [limit("m", "fixed_window", 1, "1m")] }))
            .contains("api_key_header: `x api key` is not a header name")
    );
    assert!(
        refused(json!({ "key": "header:a b", "limits": [limit("m", "fixed_window", 1, "1m")] }))
            .contains("is not a header name")
    );
}

#[test]
fn metrics_declare_every_limit_name_of_the_configuration() {
    let host = host(json!({
        "scope": "trading",
        "limits": [limit("a", "fixed_window", 1, "1m")],
        "rules": [{ "match": { "path_prefix": "/x" }, "limits": [limit("b", "fixed_window", 1, "1m")] }],
        "consumers": { "gold": [limit("c", "fixed_window", 1, "1m")] }
    }));
    for policy in ["a", "b", "c"] {
        for outcome in ["allowed", "limited", "shadow_limited"] {
            assert_eq!(
                host.counter("requests_total", &["trading", policy, outcome]),
                0.0
            );
        }
    }
}
