//! `GET /metrics` and `GET /admin/stats` end to end: the real gateway with real filters and
//! upstreams, its exposition read by a real Prometheus text parser (`prometheus-parse`).
//! Counters and histograms follow requests, errors, filter traps and reloads; label values stay
//! bounded under 10,000 distinct paths; `metrics.enabled: false` stops the counting; the stats
//! total requests, rate limits, breakers and cache hits.

use bytes::Bytes;
use gateway_tests::{
    ControlledUpstream, Gateway, Upstream, get, http1_client, plugin_dir, send, standard_filters,
    upstream::refusing_address,
};
use http::Request;
use http_body_util::Full;
use prometheus_parse::{Sample, Scrape, Value};

/// Scrapes `/metrics` on the admin listener and parses it.
async fn scrape(gateway: &Gateway) -> Scrape {
    let reply = get(&gateway.admin_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("application/openmetrics-text; version=1.0.0")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    Scrape::parse(lines).expect("the exposition parses as the Prometheus text format")
}

/// The samples of `metric` whose labels include all of `labels`.
fn samples<'s>(scrape: &'s Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'s Sample> {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == metric)
        .filter(|sample| {
            labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(*value))
        })
        .collect()
}

/// The sum of the counters or gauges of `metric` with `labels` (0 without any).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, metric, labels)
        .iter()
        .map(|sample| match &sample.value {
            Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => *value,
            other => panic!("{metric} is not a counter or gauge: {other:?}"),
        })
        .sum()
}

/// `(count, sum, +Inf bucket)` of the one histogram series of `metric` with `labels`.
fn histogram(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> (u64, f64, f64) {
    let found = samples(scrape, metric, labels);
    assert_eq!(found.len(), 1, "one {metric} series with {labels:?}");
    match &found[0].value {
        Value::Histogram(buckets) => {
            let count = buckets.last().map_or(0.0, |bucket| bucket.count);
            assert!(
                buckets
                    .windows(2)
                    .all(|pair| pair[0].count <= pair[1].count),
                "cumulative buckets: {buckets:?}"
            );
            let sum = match samples(scrape, &format!("{metric}_sum"), labels).first() {
                Some(sample) => match sample.value {
                    Value::Untyped(sum) | Value::Gauge(sum) | Value::Counter(sum) => sum,
                    _ => 0.0,
                },
                None => 0.0,
            };
            (count as u64, sum, count)
        }
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

async fn request(gateway: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut builder = Request::builder().method(method).uri(gateway.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("request");
    send(&http1_client(), request).await.status.as_u16()
}

async fn post_reload(gateway: &Gateway) -> u16 {
    let request = Request::post(gateway.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(&http1_client(), request).await.status.as_u16()
}

/// Routes `/plain` to a live upstream, `/guarded` through the `misbehave` filter, and `/dead`
/// to an instance that refuses connections.
async fn traffic_config(upstream: &Upstream, sections: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: false
access_log: {{ enabled: false }}
{sections}
{filters}
services:
  backend:
    instances: ["{upstream}"]
  dead:
    instances: ["http://{refusing}"]
routes:
  - name: plain
    match: {{ path_prefix: /plain }}
    service: backend
  - name: guarded
    match: {{ path_prefix: /guarded }}
    service: backend
    filters:
      - filter: misbehave
  - name: dead
    match: {{ path_prefix: /dead }}
    service: dead
"#,
        filters = standard_filters(),
        upstream = upstream.url(),
        refusing = refusing_address().await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_and_histograms_follow_requests_errors_traps_and_reloads() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&traffic_config(&upstream, "").await);
    let upstream_label = upstream.url().trim_start_matches("http://").to_owned();

    let before = scrape(&gateway).await;
    assert_eq!(value(&before, "gateway_generation", &[]), 1.0);
    assert_eq!(
        value(&before, "gateway_requests_total", &[("route", "plain")]),
        0.0
    );

    for _ in 0..5 {
        assert_eq!(request(&gateway, "GET", "/plain/a", &[]).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(request(&gateway, "POST", "/plain/b", &[]).await, 200);
    }
    assert_eq!(request(&gateway, "PROPFIND", "/plain/c", &[]).await, 200);
    for _ in 0..3 {
        let status = request(&gateway, "GET", "/guarded", &[("x-misbehave", "trap")]).await;
        assert!(
            status >= 500,
            "a trapping filter fails closed, got {status}"
        );
    }
    assert_eq!(request(&gateway, "GET", "/guarded", &[]).await, 200);
    assert_eq!(request(&gateway, "GET", "/nowhere", &[]).await, 404);
    for _ in 0..2 {
        let status = request(&gateway, "GET", "/dead", &[]).await;
        assert!(status >= 500, "a refused upstream is a 5xx, got {status}");
    }

    let after = scrape(&gateway).await;
    let requests = |route: &str, method: &str, status: &str| {
        value(
            &after,
            "gateway_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("plain", "GET", "2xx"), 5.0);
    assert_eq!(requests("plain", "POST", "2xx"), 2.0);
    assert_eq!(
        requests("plain", "OTHER", "2xx"),
        1.0,
        "methods fold to OTHER"
    );
    assert_eq!(requests("guarded", "GET", "5xx"), 3.0);
    assert_eq!(requests("guarded", "GET", "2xx"), 1.0);
    assert_eq!(requests("-", "GET", "4xx"), 1.0, "no route: route `-`");
    assert_eq!(requests("dead", "GET", "5xx"), 2.0);

    let (count, sum, _) = histogram(
        &after,
        "gateway_request_duration_seconds",
        &[("route", "plain")],
    );
    assert_eq!(count, 8);
    assert!(sum > 0.0, "time was measured: {sum}");

    let filter = [("filter", "misbehave"), ("phase", "request")];
    assert_eq!(value(&after, "gateway_filter_calls_total", &filter), 4.0);
    let failures = |kind: &str| {
        value(
            &after,
            "gateway_filter_failures_total",
            &[
                ("filter", "misbehave"),
                ("phase", "request"),
                ("kind", kind),
            ],
        )
    };
    assert_eq!(failures("trap"), 3.0);
    assert_eq!(failures("timeout"), 0.0);
    let (filter_calls, _, _) = histogram(&after, "gateway_filter_duration_seconds", &filter);
    assert_eq!(filter_calls, 4);

    let backend = [
        ("service", "backend"),
        ("upstream", upstream_label.as_str()),
    ];
    assert_eq!(
        value(
            &after,
            "gateway_upstream_requests_total",
            &[backend[0], backend[1], ("outcome", "2xx")]
        ),
        9.0,
        "8 on /plain and 1 on /guarded: {:?}",
        samples(&after, "gateway_upstream_requests_total", &[])
    );
    let (tries, _, _) = histogram(&after, "gateway_upstream_duration_seconds", &backend);
    assert_eq!(tries, 9);
    assert!(
        value(
            &after,
            "gateway_upstream_requests_total",
            &[("service", "dead"), ("outcome", "error")]
        ) >= 2.0
    );
    assert_eq!(value(&after, "gateway_upstream_healthy", &backend), 1.0);

    assert!(value(&after, "gateway_connections_accepted_total", &[]) >= 1.0);
    assert!(value(&after, "gateway_received_bytes_total", &[]) > 0.0);
    assert!(value(&after, "gateway_sent_bytes_total", &[]) > 0.0);

    // One applied reload, then one rejected.
    assert_eq!(post_reload(&gateway).await, 200);
    std::fs::write(gateway.config_path(), "routes: [").expect("config written");
    assert_eq!(post_reload(&gateway).await, 422);
    let reloaded = scrape(&gateway).await;
    assert_eq!(
        value(&reloaded, "gateway_reloads_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        value(
            &reloaded,
            "gateway_reloads_total",
            &[("result", "rejected")]
        ),
        1.0
    );
    assert_eq!(value(&reloaded, "gateway_generation", &[]), 2.0);
    // A reload keeps the counters: a route of the same name counts on.
    assert_eq!(
        value(
            &reloaded,
            "gateway_requests_total",
            &[("route", "plain"), ("method", "GET"), ("status", "2xx")]
        ),
        5.0
    );
    assert_eq!(request(&gateway, "GET", "/plain/a", &[]).await, 200);
    let counted_on = scrape(&gateway).await;
    assert_eq!(
        value(
            &counted_on,
            "gateway_requests_total",
            &[("route", "plain"), ("method", "GET"), ("status", "2xx")]
        ),
        6.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_stay_bounded_under_ten_thousand_distinct_paths() {
    const PATHS: usize = 10_000;
    const TASKS: usize = 16;
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&traffic_config(&upstream, "").await);

    let client = http1_client();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            let base = gateway.url("");
            tokio::spawn(async move {
                for n in (task..PATHS).step_by(TASKS) {
                    // Half routed, half not: neither may add a series per path.
                    let path = if n % 2 == 0 {
                        format!("/plain/item-{n}")
                    } else {
                        format!("/unrouted-{n}")
                    };
                    let request = Request::get(format!("{base}{path}"))
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    send(&client, request).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("the load task ends");
    }

    let scraped = scrape(&gateway).await;
    let total = value(&scraped, "gateway_requests_total", &[]);
    assert_eq!(total, PATHS as f64, "every request counted");
    assert!(
        scraped.samples.len() < 400,
        "{} samples after {PATHS} distinct paths",
        scraped.samples.len()
    );
    let requests = samples(&scraped, "gateway_requests_total", &[]);
    assert_eq!(
        requests.len(),
        2,
        "one series per route and class: {requests:?}"
    );
    for sample in &scraped.samples {
        for (name, value) in sample.labels.iter() {
            assert!(
                !value.contains("item-") && !value.contains("unrouted-"),
                "{}: label {name}=\"{value}\" carries a path",
                sample.metric
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_off_counts_nothing_but_the_state_still_shows() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&traffic_config(&upstream, "metrics: { enabled: false }").await);
    for _ in 0..3 {
        assert_eq!(request(&gateway, "GET", "/plain", &[]).await, 200);
    }
    let scraped = scrape(&gateway).await;
    assert_eq!(value(&scraped, "gateway_requests_total", &[]), 0.0);
    assert_eq!(value(&scraped, "gateway_upstream_requests_total", &[]), 0.0);
    assert_eq!(value(&scraped, "gateway_generation", &[]), 1.0);
    assert_eq!(
        value(
            &scraped,
            "gateway_upstream_healthy",
            &[("service", "backend")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_total_requests_rate_limits_breakers_and_cache() {
    let upstream = Upstream::start("backend").await;
    let failing = ControlledUpstream::start("failing").await;
    failing.set_status(503);
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
access_log: {{ enabled: false }}
plugin_dir: "{plugins}"
filters:
  limiter:
    module: gateway_plugin_rate_limit.wasm
    timeout: 3s
  store:
    module: gateway_plugin_cache.wasm
    timeout: 3s
services:
  backend:
    instances: ["{upstream}"]
  failing:
    instances: ["{failing}"]
    circuit_breaker: {{ failure_threshold: 2, open_duration: 60s }}
routes:
  - name: limited
    match: {{ path_prefix: /limited }}
    service: backend
    filters:
      - filter: limiter
        config: {{ limits: [{{ name: tiny, algorithm: fixed_window, rate: 3, window: 1h }}] }}
  - name: cached
    match: {{ path_prefix: /cached }}
    service: backend
    filters:
      - filter: store
        config: {{ default_ttl: 60s }}
  - name: failing
    match: {{ path_prefix: /failing }}
    service: failing
"#,
        plugins = plugin_dir().display(),
        upstream = upstream.url(),
        failing = failing.url(),
    );
    let gateway = Gateway::start(&config);

    let mut limited = 0;
    for _ in 0..5 {
        if request(&gateway, "GET", "/limited", &[]).await == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 2, "3 allowed in the window, then 429s");
    for _ in 0..3 {
        assert_eq!(request(&gateway, "GET", "/cached/one", &[]).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(request(&gateway, "GET", "/failing", &[]).await, 503);
    }
    // The breaker is open now: refused at the gateway.
    assert_eq!(request(&gateway, "GET", "/failing", &[]).await, 503);

    let stats = get(&gateway.admin_url("/admin/stats")).await;
    assert_eq!(stats.status, 200);
    let stats = stats.json();
    assert_eq!(stats["requests"]["total"], 11, "{stats}");
    assert_eq!(stats["requests"]["2xx"], 6, "{stats}");
    assert_eq!(stats["requests"]["4xx"], 2, "{stats}");
    assert_eq!(stats["requests"]["5xx"], 3, "{stats}");
    assert_eq!(stats["rate_limits"]["limited"], 2, "{stats}");
    assert_eq!(stats["breakers"]["open"], 1, "{stats}");
    assert_eq!(stats["breakers"]["opened_total"], 1, "{stats}");
    assert_eq!(stats["cache"]["misses"], 1, "{stats}");
    assert_eq!(stats["cache"]["hits"], 2, "{stats}");

    let seeds = get(&gateway.admin_url("/api/v1/gateway/stats")).await;
    assert_eq!(seeds.status, 200);
    assert_eq!(
        seeds.json(),
        stats,
        "the seeds' path answers from the same data"
    );

    // The same breaker, seen in /metrics.
    let scraped = scrape(&gateway).await;
    assert_eq!(
        value(
            &scraped,
            "gateway_upstream_breaker_state",
            &[("service", "failing"), ("state", "open")]
        ),
        1.0
    );
    assert!(
        value(
            &scraped,
            "filter_limiter_requests_total",
            &[("outcome", "limited")]
        ) >= 2.0,
        "the filters' own metrics are exported"
    );
}
