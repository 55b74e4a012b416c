//! The `kv` capability through the running gateway: counters shared by every instance of a
//! filter without lost updates, TTLs, compare-and-swap races, and namespaces per filter.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{Gateway, Upstream, get, http1_client, plugin_dir, send};
use http::Request;
use http_body_util::Full;

async fn setup() -> (Gateway, Upstream) {
    let upstream = Upstream::start("kv").await;
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
plugin_dir: "{plugins}"
filters:
  probe:
    module: gateway_test_kv_probe.wasm
  other-probe:
    module: gateway_test_kv_probe.wasm
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: counted
    match: {{ path_prefix: /counted }}
    service: backend
    filters: [{{ filter: probe }}]
  - name: windowed
    match: {{ path_prefix: /windowed }}
    service: backend
    filters: [{{ filter: other-probe, config: {{ ttl_ms: 400 }} }}]
"#,
        plugins = plugin_dir().display(),
        upstream = upstream.url(),
    );
    (Gateway::start(&config), upstream)
}

fn hits_seen_upstream(reply: &gateway_tests::Reply) -> u64 {
    reply.json()["headers"]["x-hits"][0]
        .as_str()
        .and_then(|hits| hits.parse().ok())
        .unwrap_or_else(|| panic!("no x-hits upstream: {}", reply.json()))
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_increments_are_never_lost() {
    let (gateway, _upstream) = setup().await;
    let url = gateway.url("/counted");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http1_client();
                let mut seen = Vec::new();
                for _ in 0..20 {
                    let request = Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    seen.push(hits_seen_upstream(&send(&client, request).await));
                }
                seen
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for task in tasks {
        for hits in task.await.expect("task finished") {
            assert!(all.insert(hits), "count {hits} handed out twice");
        }
    }
    assert_eq!(
        all,
        (1..=200).collect::<BTreeSet<u64>>(),
        "every increment counted once"
    );
    let after = get(&gateway.url("/counted")).await;
    assert_eq!(after.header("x-hits-now"), Some("201"));
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_expire_and_filters_do_not_share_keys() {
    let (gateway, _upstream) = setup().await;
    assert_eq!(hits_seen_upstream(&get(&gateway.url("/windowed")).await), 1);
    assert_eq!(hits_seen_upstream(&get(&gateway.url("/windowed")).await), 2);
    // Another filter (same component, other name) counts on its own.
    assert_eq!(hits_seen_upstream(&get(&gateway.url("/counted")).await), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hits_seen_upstream(&get(&gateway.url("/windowed")).await),
        1,
        "the 400ms window ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_one_concurrent_claim_wins() {
    let (gateway, upstream) = setup().await;
    let url = gateway.url("/counted");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let request = Request::get(&url)
                    .header("x-claim", "one-time-token")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                send(&http1_client(), request).await
            })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        let reply = task.await.expect("task finished");
        match reply.status.as_u16() {
            200 => winners += 1,
            409 => {
                reply.assert_gateway_error(409, "ALREADY_CLAIMED");
            }
            other => panic!("unexpected status {other}: {reply:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(
        upstream.requests(),
        1,
        "refused claims never reach the upstream"
    );
}
