//! The rate-limit filter end to end: the real gateway with the compiled filter, real upstreams,
//! and a real `redis-server` for the gateways that share one. Exact counts on one gateway and
//! across two, keys by address, API key and authenticated subject (through a stand-in and through
//! the real auth filter), a spoofed `X-Forwarded-For`,
//! Redis stopped under load with either store-failure policy, and the headers' values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gateway_tests::{Gateway, RedisServer, Reply, Upstream, http1_client, load, plugin_dir, send};
use http::Request;
use http_body_util::Full;

/// The `kv:` section and filter definitions, on the memory store or on this Redis.
fn filters(redis: Option<&RedisServer>) -> String {
    let kv = match redis {
        Some(redis) => format!(
            "kv:\n  backend: redis\n  redis:\n    url: \"{}\"\n    operation_timeout: 500ms\n",
            redis.url()
        ),
        None => String::new(),
    };
    format!(
        r#"{kv}plugin_dir: "{plugins}"
filters:
  rate-limit:
    module: gateway_plugin_rate_limit.wasm
    timeout: 3s
  set-context:
    module: gateway_test_set_context.wasm
    kv: memory
"#,
        plugins = plugin_dir().display()
    )
}

/// A gateway config: one listener, the upstream, and `routes` (YAML list items).
fn config(redis: Option<&RedisServer>, upstream: &Upstream, routes: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
{filters}
services:
  backend:
    instances: ["{upstream}"]
routes:
{routes}
"#,
        filters = filters(redis),
        upstream = upstream.url(),
    )
}

/// One route at `/` whose rate-limit filter has this config (a YAML flow mapping).
fn limited_route(rate_limit: &str) -> String {
    format!(
        "  - name: limited\n    match: {{ path_prefix: / }}\n    service: backend\n    filters:\n      - filter: rate-limit\n        config: {rate_limit}\n"
    )
}

async fn request(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::get(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(
        &http1_client(),
        builder.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("in range")
}

/// Waits, if need be, for a minute with at least 30 s left, so that a load against a limit
/// per minute stays inside one fixed window: the window's edge is the documented exception
/// to "exactly the rate", not what these tests are about.
async fn inside_one_minute() -> u64 {
    let into = now_ms() % 60_000;
    if into > 30_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - into + 100)).await;
    }
    now_ms() / 60_000
}

/// Whole seconds, rounded up, until the current window of `window_s` seconds ends.
fn seconds_left(window_s: u64) -> u64 {
    let window_ms = window_s * 1000;
    (window_ms - now_ms() % window_ms).div_ceil(1000)
}

/// How many replies were allowed (200), checking that every other one is a proper 429 with a
/// `Retry-After` of at most `longest` seconds.
fn allowed(replies: &[Reply], longest: u64) -> usize {
    let mut allowed = 0;
    for reply in replies {
        if reply.status.as_u16() == 200 {
            allowed += 1;
        } else {
            reply.assert_gateway_error(429, "RATE_LIMITED");
            let retry: u64 = reply
                .header("retry-after")
                .and_then(|value| value.parse().ok())
                .expect("a Retry-After in seconds");
            assert!((1..=longest).contains(&retry), "Retry-After {retry}");
        }
    }
    allowed
}

/// `X-RateLimit-Remaining` of every allowed reply, sorted.
fn remaining_values(replies: &[Reply]) -> Vec<u64> {
    let mut values: Vec<u64> = replies
        .iter()
        .filter(|reply| reply.status.as_u16() == 200)
        .map(|reply| {
            reply
                .header("x-ratelimit-remaining")
                .and_then(|value| value.parse().ok())
                .expect("a remaining count")
        })
        .collect();
    values.sort_unstable();
    values
}

const PER_MINUTE: &str =
    "{ limits: [{ name: per-minute, algorithm: fixed_window, rate: 100, window: 1m }] }";

#[tokio::test(flavor = "multi_thread")]
async fn one_gateway_allows_exactly_100_of_300() {
    let upstream = Upstream::start("one").await;
    let gateway = Gateway::start(&config(None, &upstream, &limited_route(PER_MINUTE)));
    let minute = inside_one_minute().await;
    let replies = load(gateway.url("/"), 10, 30).await;
    assert_eq!(now_ms() / 60_000, minute, "the load outlasted its window");
    assert_eq!(allowed(&replies, 60), 100);
    assert_eq!(remaining_values(&replies), (0..100).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_redis_allow_exactly_100_in_all() {
    let redis = RedisServer::start();
    let upstream = Upstream::start("two").await;
    let routes = format!(
        "{}{}  - name: bucket\n    match: {{ path_prefix: /bucket }}\n    service: backend\n    filters:\n      - filter: rate-limit\n        config: {{ scope: bucket, limits: [{{ name: daily, algorithm: token_bucket, rate: 100, window: 24h }}] }}\n",
        limited_route(PER_MINUTE).replace("path_prefix: /", "path_prefix: /window"),
        limited_route("{ scope: sliding, limits: [{ name: hourly, algorithm: sliding_window, rate: 100, window: 1h }] }")
            .replace("path_prefix: /", "path_prefix: /sliding")
            .replace("name: limited", "name: sliding")
    );
    let config = config(Some(&redis), &upstream, &routes);
    let first = Gateway::start(&config);
    let second = Gateway::start(&config);

    let minute = inside_one_minute().await;
    let (a, b) = tokio::join!(
        load(first.url("/window"), 5, 30),
        load(second.url("/window"), 5, 30)
    );
    assert_eq!(now_ms() / 60_000, minute, "the load outlasted its window");
    let (from_first, from_second) = (allowed(&a, 60), allowed(&b, 60));
    assert_eq!(
        from_first + from_second,
        100,
        "{from_first} + {from_second}"
    );
    let all: Vec<Reply> = a.into_iter().chain(b).collect();
    assert_eq!(remaining_values(&all), (0..100).collect::<Vec<u64>>());
    // Redis holds the allowed count: refused requests took nothing.
    let keys = redis.command(&["KEYS", "gateway:rate-limit:default:per-minute:*"]);
    let key = keys
        .lines()
        .next()
        .expect("the window's counter")
        .trim()
        .to_owned();
    assert_eq!(redis.command(&["GET", &key]), "100", "{keys}");

    // The token bucket decides with compare-and-swap: exact too.
    let (a, b) = tokio::join!(
        load(first.url("/bucket"), 5, 30),
        load(second.url("/bucket"), 5, 30)
    );
    let allowed_from_bucket = a
        .iter()
        .chain(&b)
        .filter(|reply| reply.status.as_u16() == 200)
        .count();
    assert_eq!(allowed_from_bucket, 100);

    // The sliding window increments its current window: exact as well.
    let (a, b) = tokio::join!(
        load(first.url("/sliding"), 5, 30),
        load(second.url("/sliding"), 5, 30)
    );
    assert_eq!(allowed(&a, 7200) + allowed(&b, 7200), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_are_told_apart_by_address_behind_a_trusted_proxy() {
    let upstream = Upstream::start("by-ip").await;
    let rate_limit = "{ trusted_proxies: [127.0.0.1], limits: [{ name: m, algorithm: fixed_window, rate: 2, window: 1h }] }";
    let gateway = Gateway::start(&config(None, &upstream, &limited_route(rate_limit)));
    let url = gateway.url("/");
    let from = |client: &'static str| [("x-forwarded-for", client)];
    for _ in 0..2 {
        assert_eq!(
            request(&url, &from("203.0.113.1")).await.status.as_u16(),
            200
        );
    }
    request(&url, &from("203.0.113.1"))
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
    assert_eq!(
        request(&url, &from("203.0.113.2")).await.status.as_u16(),
        200
    );
    // What a client writes left of the trusted hops does not matter.
    request(&url, &[("x-forwarded-for", "198.51.100.1, 203.0.113.1")])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_forwarded_for_from_an_untrusted_client_gets_no_fresh_bucket() {
    let upstream = Upstream::start("spoof").await;
    let rate_limit = "{ trusted_proxies: [10.0.0.0/8], limits: [{ name: m, algorithm: fixed_window, rate: 3, window: 1h }] }";
    let gateway = Gateway::start(&config(None, &upstream, &limited_route(rate_limit)));
    let url = gateway.url("/");
    let mut statuses = Vec::new();
    for index in 0..10 {
        let spoofed = format!("198.51.100.{index}");
        let reply = request(&url, &[("x-forwarded-for", &spoofed)]).await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_have_buckets_of_their_own_and_never_reach_redis() {
    let redis = RedisServer::start();
    let upstream = Upstream::start("by-key").await;
    let rate_limit =
        "{ key: api_key, limits: [{ name: m, algorithm: sliding_window, rate: 2, window: 1h }] }";
    let gateway = Gateway::start(&config(Some(&redis), &upstream, &limited_route(rate_limit)));
    let url = gateway.url("/");
    for _ in 0..2 {
        assert_eq!(
            request(&url, &[("x-api-key", "key-one-secret")])
                .await
                .status
                .as_u16(),
            200
        );
    }
    request(&url, &[("x-api-key", "key-one-secret")])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
    assert_eq!(
        request(&url, &[("x-api-key", "key-two-secret")])
            .await
            .status
            .as_u16(),
        200
    );
    let keys = redis.command(&["KEYS", "*"]);
    assert!(!keys.contains("secret"), "{keys}");
    assert_eq!(keys.lines().count(), 2, "one counter per key: {keys}");
}

#[tokio::test(flavor = "multi_thread")]
async fn authenticated_subjects_are_limited_apart_and_anonymous_ones_by_address() {
    let upstream = Upstream::start("by-subject").await;
    let routes = "  - name: limited\n    match: { path_prefix: / }\n    service: backend\n    filters:\n      - filter: set-context\n      - filter: rate-limit\n        config: { key: subject, fallback: ip, limits: [{ name: m, algorithm: token_bucket, rate: 2, window: 1h }] }\n";
    let gateway = Gateway::start(&config(None, &upstream, routes));
    let url = gateway.url("/");
    let alice = [("x-test-subject", "alice")];
    for _ in 0..2 {
        assert_eq!(request(&url, &alice).await.status.as_u16(), 200);
    }
    request(&url, &alice)
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
    assert_eq!(
        request(&url, &[("x-test-subject", "bob")])
            .await
            .status
            .as_u16(),
        200
    );
    // No subject: the client's address, which alice's count does not touch.
    assert_eq!(request(&url, &[]).await.status.as_u16(), 200);
    assert_eq!(request(&url, &[]).await.status.as_u16(), 200);
    request(&url, &[])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
}

/// Sends from 3 clients until `stop` (at most 20 s): every status seen.
async fn statuses_until(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(u16, String)> {
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = http1_client();
                let began = std::time::Instant::now();
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && began.elapsed() < Duration::from_secs(20)
                {
                    let request = Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let reply = send(&client, request).await;
                    seen.push((reply.status.as_u16(), reply.text()));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.extend(task.await.expect("client task"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stopped_under_load_fails_open_or_closed_as_configured() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut redis = RedisServer::start();
    let upstream = Upstream::start("outage").await;
    let high = "limits: [{ name: m, algorithm: fixed_window, rate: 1000000, window: 1h";
    let routes = format!(
        "  - name: open\n    match: {{ path_prefix: /open }}\n    service: backend\n    filters:\n      - filter: rate-limit\n        config: {{ scope: open, {high} }}] }}\n  - name: closed\n    match: {{ path_prefix: /closed }}\n    service: backend\n    filters:\n      - filter: rate-limit\n        config: {{ scope: closed, {high}, on_store_error: closed }}] }}\n"
    );
    let gateway = Gateway::start(&config(Some(&redis), &upstream, &routes));
    assert_eq!(
        request(&gateway.url("/open"), &[]).await.status.as_u16(),
        200
    );
    assert_eq!(
        request(&gateway.url("/closed"), &[]).await.status.as_u16(),
        200
    );

    let stop = Arc::new(AtomicBool::new(false));
    let open = tokio::spawn(statuses_until(gateway.url("/open"), stop.clone()));
    let closed = tokio::spawn(statuses_until(gateway.url("/closed"), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (open, closed) = (
        open.await.expect("open clients"),
        closed.await.expect("closed clients"),
    );

    assert!(
        open.iter().all(|(status, _)| *status == 200),
        "fail open keeps serving"
    );
    let refused: Vec<&String> = closed
        .iter()
        .filter(|(status, _)| *status == 503)
        .map(|(_, body)| body)
        .collect();
    assert!(
        !refused.is_empty(),
        "no request on the closed route met the outage"
    );
    for body in &refused {
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["code"], "RATE_LIMIT_UNAVAILABLE", "{body}");
    }
    assert!(
        closed.iter().all(|(status, _)| matches!(status, 200 | 503)),
        "only served or 503"
    );

    // One warning per filter instance and outage, not one per request: at most 6 requests are
    // in flight at once (3 clients on each route), so no more than 8 instances (one more per
    // route, made at start-up) ever met the outage.
    let warned = gateway
        .wait_for_log(
            &["the store cannot decide", "\"WARN\""],
            Duration::from_secs(5),
        )
        .is_some();
    assert!(warned, "the outage is logged");
    let warnings = gateway
        .logs()
        .iter()
        .filter(|line| line.contains("the store cannot decide"))
        .count();
    let met_outage = open.len() + refused.len();
    println!("{warnings} warnings for {met_outage} requests during the outage");
    assert!(
        warnings <= 8,
        "{warnings} warnings for {met_outage} requests during the outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_and_retry_after_tell_the_truth() {
    let upstream = Upstream::start("headers").await;
    let rate_limit = "{ limits: [{ name: per-minute, algorithm: fixed_window, rate: 3, window: 1m }, { name: per-hour, algorithm: sliding_window, rate: 100, window: 1h }] }";
    let gateway = Gateway::start(&config(None, &upstream, &limited_route(rate_limit)));
    let url = gateway.url("/");
    inside_one_minute().await;
    // The gateway reads its clock between `before` and `after`: what it says lies between.
    let before = seconds_left(60);
    let first = request(&url, &[]).await;
    let after = seconds_left(60);
    assert_eq!(first.status.as_u16(), 200);
    assert_eq!(first.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    let reset: u64 = first
        .header("x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .expect("reset");
    assert!(
        (after..=before).contains(&reset),
        "reset {reset}, {after}..={before} s left in the minute"
    );
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per-minute\";q=3;w=60, \"per-hour\";q=100;w=3600")
    );
    let state = first.header("ratelimit").expect("RateLimit");
    let hour_left = state
        .strip_prefix(&format!(
            "\"per-minute\";r=2;t={reset}, \"per-hour\";r=99;t="
        ))
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{state}"));
    assert!(hour_left <= 3600 && hour_left % 60 == reset % 60, "{state}");
    request(&url, &[]).await;
    request(&url, &[]).await;
    let before = seconds_left(60);
    let refused = request(&url, &[]).await;
    let after = seconds_left(60);
    refused.assert_gateway_error(429, "RATE_LIMITED");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (after..=before).contains(&retry),
        "Retry-After {retry}, {after}..={before} s left in the window"
    );
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(refused.header("x-ratelimit-limit"), Some("3"));
}

/// `POST /admin/reload`, checked to have applied.
async fn reload(gateway: &Gateway, config: &str) {
    std::fs::write(gateway.config_path(), config).expect("config written");
    let request = Request::post(gateway.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(&http1_client(), request).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_the_counters_of_limits_that_did_not_change() {
    let upstream = Upstream::start("reload").await;
    let with_admin = |rate_limit: &str| {
        format!(
            "admin:\n  address: 127.0.0.1:0\nwatch: false\n{}",
            config(None, &upstream, &limited_route(rate_limit))
        )
    };
    let before =
        with_admin("{ limits: [{ name: m, algorithm: fixed_window, rate: 5, window: 1h }] }");
    let gateway = Gateway::start(&before);
    let url = gateway.url("/");
    for _ in 0..3 {
        assert_eq!(request(&url, &[]).await.status.as_u16(), 200);
    }
    // Another limit and other headers; `m` itself is as it was.
    reload(
        &gateway,
        &with_admin(
            "{ headers: { ietf: false }, limits: [{ name: m, algorithm: fixed_window, rate: 5, window: 1h }, { name: other, algorithm: token_bucket, rate: 100, window: 1h }] }",
        ),
    )
    .await;
    let next = request(&url, &[]).await;
    assert_eq!(
        next.header("ratelimit"),
        None,
        "the new configuration serves"
    );
    assert_eq!(
        next.header("x-ratelimit-remaining"),
        Some("1"),
        "m still counts the 3 before"
    );
    assert_eq!(request(&url, &[]).await.status.as_u16(), 200);
    request(&url, &[])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
    // A limit whose numbers change starts afresh.
    reload(
        &gateway,
        &with_admin("{ limits: [{ name: m, algorithm: fixed_window, rate: 6, window: 1h }] }"),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(request(&url, &[]).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429]);
}

/// The real auth filter ahead of the limiter: its key read from the fixture file (`from_file`),
/// a public path, and an API key whose consumer has a limit of its own.
fn auth_and_limit_config(upstream: &Upstream, api_key: &str) -> String {
    use sha2::Digest;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let auth = serde_json::json!({
        "providers": [{
            "name": "test",
            "keys": [{
                "algorithm": "RS256",
                "pem": { "from_file": fixtures.join("rsa-public.pem") },
            }],
        }],
        "api_keys": { "keys": [{
            "sha256": hex(&sha2::Sha256::digest(api_key.as_bytes())),
            "consumer": "partner",
        }] },
        "public_paths": ["/open"],
    });
    let limit = serde_json::json!({
        "key": "subject",
        "fallback": "ip",
        "limits": [{ "name": "m", "algorithm": "token_bucket", "rate": 2, "window": "1h" }],
        "consumers": { "partner": [{ "name": "m", "algorithm": "token_bucket", "rate": 4, "window": "1h" }] },
    });
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
plugin_dir: "{plugins}"
filters:
  auth: {{ module: gateway_plugin_auth.wasm }}
  rate-limit: {{ module: gateway_plugin_rate_limit.wasm }}
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: limited
    match: {{ path_prefix: / }}
    service: backend
    filters:
      - {{ filter: auth, config: {auth} }}
      - {{ filter: rate-limit, config: {limit} }}
"#,
        plugins = plugin_dir().display(),
        upstream = upstream.url(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn token_for(subject: &str) -> String {
    let pem = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth/rsa-private.pem"),
    )
    .expect("the test key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("an RSA key");
    let claims = serde_json::json!({ "sub": subject, "exp": now_ms() / 1000 + 600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("signs")
}

#[tokio::test(flavor = "multi_thread")]
async fn users_the_auth_filter_verified_are_limited_apart_and_a_consumer_by_its_own_limit() {
    let upstream = Upstream::start("after-auth").await;
    let api_key = "partner-key-0123456789";
    let gateway = Gateway::start(&auth_and_limit_config(&upstream, api_key));
    let url = gateway.url("/items");
    let alice = format!("Bearer {}", token_for("alice"));
    let bob = format!("Bearer {}", token_for("bob"));
    for _ in 0..2 {
        assert_eq!(
            request(&url, &[("authorization", &alice)])
                .await
                .status
                .as_u16(),
            200
        );
    }
    request(&url, &[("authorization", &alice)])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
    // Another verified subject has a bucket of its own.
    assert_eq!(
        request(&url, &[("authorization", &bob)])
            .await
            .status
            .as_u16(),
        200
    );
    // A token that does not verify gets no further than the auth filter.
    request(&url, &[("authorization", "Bearer not.a.token")])
        .await
        .assert_gateway_error(401, "INVALID_TOKEN");
    // The API key's consumer gets its own, higher limit.
    for _ in 0..4 {
        assert_eq!(
            request(&url, &[("x-api-key", api_key)])
                .await
                .status
                .as_u16(),
            200
        );
    }
    request(&url, &[("x-api-key", api_key)])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
    // A public path has no subject: the client's address is the key, apart from alice's.
    let open = gateway.url("/open");
    for _ in 0..2 {
        assert_eq!(request(&open, &[]).await.status.as_u16(), 200);
    }
    request(&open, &[])
        .await
        .assert_gateway_error(429, "RATE_LIMITED");
}
