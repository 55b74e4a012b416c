//! What a call into a filter costs, through the gateway's own filter runtime (no network).
//!
//! - `rewrite/pooled`: one request phase of the rewrite filter on a reused instance;
//! - `rewrite/per-request`: the same with `isolation: per-request`, so every call instantiates
//!   and initialises a fresh instance;
//! - `chain/ip-filter+rewrite`: the bundled filters that exist today as one route's chain, the
//!   request phase then the response phase;
//! - `body/exchange-1k`: the exchange test filter handed a 1 KiB request body whole, which it
//!   measures and observes in a histogram: the cost of a body crossing into a filter;
//! - `baseline/misbehave-no-header`: the misbehave test filter asked to do nothing: one header
//!   lookup and a return, close to the bare cost of crossing into Wasm and back.
//!
//! Run with `cargo bench -p gateway-bench --bench filters`. The components come from
//! `$GATEWAY_PLUGIN_DIR`, else `$CARGO_TARGET_DIR/wasm32-wasip2/wasm`, else the default target
//! folder of `scripts/setup.sh`; build them first (`bench/run` and `scripts/test` do).

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group};
use gateway_config::{FailurePolicy, FilterDefinition, Isolation};
use gateway_filter::{FilterChain, FilterEngine, FilterPool, HeldBody, RequestHead, ResponseHead};
use gateway_kv::{KvStores, Limits};
use gateway_wire as wire;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

const REWRITE: &str = "gateway_plugin_rewrite.wasm";
const IP_FILTER: &str = "gateway_example_ip_filter.wasm";
const MISBEHAVE: &str = "gateway_test_misbehave.wasm";
const EXCHANGE: &str = "gateway_test_exchange.wasm";

/// The folder holding the built components, or an explanation of how to build them.
fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("GATEWAY_PLUGIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(|target| PathBuf::from(target).join("wasm32-wasip2/wasm"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|home| {
                PathBuf::from(home).join(".cache/wasm-gateway/target/wasm32-wasip2/wasm")
            })
        })
        .unwrap_or_else(|| PathBuf::from("target/wasm32-wasip2/wasm"));
    let missing: Vec<&str> = [REWRITE, IP_FILTER, MISBEHAVE, EXCHANGE]
        .into_iter()
        .filter(|file| !dir.join(file).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "error: filter components missing from {}: {}\n\
             build them with:\n  \
             cargo build --profile wasm --target wasm32-wasip2 -p gateway-plugin-rewrite \
             -p gateway-example-ip-filter -p gateway-test-misbehave -p gateway-test-exchange\n\
             (with the same CARGO_TARGET_DIR), or point GATEWAY_PLUGIN_DIR at them",
            dir.display(),
            missing.join(", ")
        );
        std::process::exit(1);
    }
    dir
}

struct Filters {
    engine: FilterEngine,
    dir: PathBuf,
}

impl Filters {
    fn new() -> Filters {
        let engine = FilterEngine::new(KvStores::memory(Limits::default()), None)
            .unwrap_or_else(|error| panic!("cannot start the filter engine: {error}"));
        Filters {
            engine,
            dir: plugin_dir(),
        }
    }

    fn pool(
        &self,
        name: &str,
        file: &str,
        isolation: Isolation,
        config: serde_json::Value,
    ) -> FilterPool {
        let path = self.dir.join(file);
        let mut definition = FilterDefinition::with_module(Path::new(file));
        definition.isolation = isolation;
        let loaded = self
            .engine
            .load(name, &path, &definition)
            .unwrap_or_else(|error| panic!("cannot load {}: {error}", path.display()));
        ready(FilterPool::new(
            Arc::new(loaded),
            "bench",
            &config,
            FailurePolicy::Closed,
            None,
        ))
        .unwrap_or_else(|error| panic!("cannot initialise {name}: {error}"))
    }
}

/// The same realistic configuration `bench/run` gives the rewrite filter.
fn rewrite_config() -> serde_json::Value {
    json!({
        "path": { "strip_prefix": "/bench" },
        "request_headers": { "set": { "x-bench": "rewrite" } },
        "response_headers": { "set": { "x-served-by": "wasm-gateway" } },
    })
}

fn ip_filter_config() -> serde_json::Value {
    json!({ "allow": ["127.0.0.1/32"] })
}

/// A request as the proxy hands it to the chain: the client's headers in a map sized the way the
/// gateway's parser sizes it, then the headers the gateway itself adds before the filters run.
fn request() -> RequestHead {
    let client = [
        ("host", "127.0.0.1:8080"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
    ];
    let added = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0f57bec5-1306-4d15-a916-30fd85678a29"),
    ];
    let mut headers = HeaderMap::with_capacity(client.len() + wire::client::ROOM_FOR_ADDED);
    for (name, value) in client.into_iter().chain(added) {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    RequestHead {
        method: Method::GET,
        path: "/bench/items/42".to_owned(),
        query: None,
        headers,
        authority: Some("127.0.0.1".to_owned()),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        ..RequestHead::default()
    }
}

/// An upstream's response, its header map sized the way the gateway's parser sizes it.
fn response() -> ResponseHead {
    let upstream = [
        ("content-type", "text/plain"),
        ("content-length", "3"),
        ("server", "nginx"),
    ];
    let mut headers = HeaderMap::with_capacity(upstream.len() + wire::upstream::ROOM_FOR_ADDED);
    for (name, value) in upstream {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    ResponseHead {
        status: StatusCode::OK,
        headers,
        ..ResponseHead::default()
    }
}

/// The output of a call that never waits, as every filter here is one on the memory store with
/// no services granted: polled once, in place, as a worker's task polls it.
fn ready<F: Future>(call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    match call
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a call on the memory store waited"),
    }
}

/// Fails loudly if a filter refuses or fails: a benchmark of the error path would mislead.
fn expect_continue(pool: &FilterPool) {
    let mut head = request();
    match ready(pool.on_request(&mut head)) {
        Ok(None) => {}
        Ok(Some(reply)) => panic!(
            "{} answered {} instead of passing",
            pool.name(),
            reply.status
        ),
        Err(failure) => panic!("{} failed: {failure}", pool.name()),
    }
}

fn filter_calls(c: &mut Criterion) {
    let filters = Filters::new();

    let rewrite = filters.pool("rewrite", REWRITE, Isolation::Pooled, rewrite_config());
    expect_continue(&rewrite);
    let mut head = request();
    let _ = ready(rewrite.on_request(&mut head));
    assert_eq!(
        head.path, "/items/42",
        "the rewrite filter did not strip the prefix"
    );
    // Every iteration gets an untouched request; cloning it is setup, not measured.
    c.bench_function("rewrite/pooled", |b| {
        b.iter_batched_ref(
            request,
            |head| black_box(ready(rewrite.on_request(head))),
            BatchSize::SmallInput,
        )
    });

    let isolated = filters.pool("rewrite", REWRITE, Isolation::PerRequest, rewrite_config());
    expect_continue(&isolated);
    c.bench_function("rewrite/per-request", |b| {
        b.iter_batched_ref(
            request,
            |head| black_box(ready(isolated.on_request(head))),
            BatchSize::SmallInput,
        )
    });

    let chain = FilterChain {
        filters: vec![
            filters.pool(
                "ip-filter",
                IP_FILTER,
                Isolation::Pooled,
                ip_filter_config(),
            ),
            filters.pool("rewrite", REWRITE, Isolation::Pooled, rewrite_config()),
        ],
    };
    let mut head = request();
    let phase = ready(chain.on_request(&mut head, 0..chain.filters.len(), None));
    assert!(
        matches!(phase.outcome, Ok(None)),
        "the chain did not pass the request"
    );
    let mut answer = response();
    let replaced = ready(chain.on_response(phase.ran, &mut head, &mut answer, None));
    assert!(
        matches!(replaced, Ok(None)),
        "the chain's response phase failed"
    );
    assert!(answer.headers.contains_key("x-served-by"));
    c.bench_function("chain/ip-filter+rewrite", |b| {
        b.iter_batched_ref(
            || (request(), response()),
            |(head, answer)| {
                let phase = ready(chain.on_request(head, 0..chain.filters.len(), None));
                black_box(ready(chain.on_response(phase.ran, head, answer, None)))
            },
            BatchSize::SmallInput,
        )
    });

    let exchange = filters.pool(
        "exchange",
        EXCHANGE,
        Isolation::Pooled,
        json!({ "request_body": 4096 }),
    );
    let with_body = || RequestHead {
        body: HeldBody::Complete(Bytes::from(vec![b'b'; 1024])),
        ..request()
    };
    let mut head = with_body();
    assert!(matches!(ready(exchange.on_request(&mut head)), Ok(None)));
    assert_eq!(head.headers["x-request-body-length"], "1024");
    c.bench_function("body/exchange-1k", |b| {
        b.iter_batched_ref(
            with_body,
            |head| black_box(ready(exchange.on_request(head))),
            BatchSize::SmallInput,
        )
    });

    let baseline = filters.pool("misbehave", MISBEHAVE, Isolation::Pooled, json!({}));
    expect_continue(&baseline);
    c.bench_function("baseline/misbehave-no-header", |b| {
        b.iter_batched_ref(
            request,
            |head| black_box(ready(baseline.on_request(head))),
            BatchSize::SmallInput,
        )
    });
}

/// Where criterion writes its estimates, found the way criterion finds it.
fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    // This executable is TARGET/release/deps/filters-HASH.
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median criterion estimated for one benchmark in this run, in nanoseconds.
fn median_ns(dir: &Path, id: &str, since: std::time::SystemTime) -> Option<f64> {
    let file = dir.join(id.replace('/', "_")).join("new/estimates.json");
    let fresh = std::fs::metadata(&file).ok()?.modified().ok()? >= since;
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    fresh.then(|| estimates["median"]["point_estimate"].as_f64())?
}

/// Criterion prints a mean-based estimate; the target is a median, so print those too.
fn print_medians(since: std::time::SystemTime) {
    let Some(dir) = criterion_dir() else { return };
    let ids = [
        "rewrite/pooled",
        "rewrite/per-request",
        "chain/ip-filter+rewrite",
        "body/exchange-1k",
        "baseline/misbehave-no-header",
    ];
    let medians: Vec<(&str, f64)> = ids
        .into_iter()
        .filter_map(|id| Some((id, median_ns(&dir, id, since)?)))
        .collect();
    if medians.is_empty() {
        return;
    }
    println!("\nmedians (from {}):", dir.display());
    for (id, nanos) in &medians {
        println!("  {id:32} {:>9.3} µs", nanos / 1000.0);
    }
    if let Some((_, nanos)) = medians.iter().find(|(id, _)| *id == "rewrite/pooled") {
        let verdict = if *nanos < 2000.0 { "met" } else { "MISSED" };
        println!(
            "target: one call on a pooled instance under 2 µs median: {:.3} µs, {verdict}",
            nanos / 1000.0
        );
    }
}

criterion_group!(benches, filter_calls);

fn main() {
    let started = std::time::SystemTime::now();
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_medians(started);
}
