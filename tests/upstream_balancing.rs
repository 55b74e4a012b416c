//! The balancers end to end: the real gateway in front of three (and then four) real upstream
//! instances on ephemeral ports, each naming itself in `x-upstream`. Each balancer's share of
//! requests per instance, within a stated tolerance; `hash` keeping its keys when a fourth
//! instance joins; `p2c_ewma` and `least_connections` moving load away from a slow instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{ControlledUpstream, Gateway, http1_client, send};
use http::Request;
use http_body_util::Full;

/// A gateway config with an admin API and one service of `instances` (URL and weight), with
/// `balancer` and any further service keys in `extra` (indented YAML lines).
fn config(instances: &[(String, u32)], balancer: &str, extra: &str) -> String {
    let instances: String = instances
        .iter()
        .map(|(url, weight)| format!("      - {{ url: \"{url}\", weight: {weight} }}\n"))
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
    balancer: {balancer}
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

async fn three(names: [&str; 3]) -> Vec<ControlledUpstream> {
    let mut upstreams = Vec::new();
    for name in names {
        upstreams.push(ControlledUpstream::start(name).await);
    }
    upstreams
}

fn weighted(upstreams: &[ControlledUpstream], weights: &[u32]) -> Vec<(String, u32)> {
    upstreams
        .iter()
        .zip(weights)
        .map(|(upstream, &weight)| (upstream.url(), weight))
        .collect()
}

/// Sends `count` GETs one after another on one connection, with `header` set to the value
/// `key(i)` gives if any; returns which instance answered each.
async fn picks(
    gateway: &Gateway,
    count: usize,
    key: impl Fn(usize) -> Option<String>,
) -> Vec<String> {
    let client = http1_client();
    let mut answered = Vec::with_capacity(count);
    for index in 0..count {
        let mut request = Request::get(gateway.url("/item"));
        if let Some(key) = key(index) {
            request = request.header("x-user", key);
        }
        let reply = send(
            &client,
            request.body(Full::new(Bytes::new())).expect("a request"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        answered.push(reply.header("x-upstream").expect("named").to_owned());
    }
    answered
}

fn tally(picks: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for pick in picks {
        *counts.entry(pick.clone()).or_insert(0) += 1;
    }
    counts
}

/// Asserts each instance got its share of `total` within `tolerance` (a fraction of that
/// share).
fn assert_shares(counts: &HashMap<String, usize>, expected: &[(&str, f64)], tolerance: f64) {
    let total: usize = counts.values().sum();
    for (name, share) in expected {
        let wanted = share * total as f64;
        let got = counts.get(*name).copied().unwrap_or(0) as f64;
        assert!(
            (got - wanted).abs() <= wanted * tolerance,
            "{name}: {got} of {total}, expected {wanted} ± {:.0}%: {counts:?}",
            tolerance * 100.0
        );
    }
}

#[tokio::test]
async fn round_robin_is_exact_and_ignores_weights_and_weighted_is_exact_and_smooth() {
    let upstreams = three(["a", "b", "c"]).await;
    let gateway = Gateway::start(&config(
        &weighted(&upstreams, &[1, 2, 3]),
        "round_robin",
        "",
    ));
    let counts = tally(&picks(&gateway, 300, |_| None).await);
    assert_shares(
        &counts,
        &[("a", 1.0 / 3.0), ("b", 1.0 / 3.0), ("c", 1.0 / 3.0)],
        0.0,
    );

    let gateway = Gateway::start(&config(&weighted(&upstreams, &[1, 2, 3]), "weighted", ""));
    let answered = picks(&gateway, 600, |_| None).await;
    assert_shares(
        &tally(&answered),
        &[("a", 1.0 / 6.0), ("b", 2.0 / 6.0), ("c", 3.0 / 6.0)],
        0.0,
    );
    // Smooth: the heaviest never gets more than two turns in a row at these weights.
    let longest_run = answered
        .chunk_by(|a, b| a == b)
        .map(<[String]>::len)
        .max()
        .unwrap_or(0);
    assert!(longest_run <= 2, "{:?}", &answered[..12]);
}

#[tokio::test]
async fn random_follows_the_weights_and_least_connections_and_p2c_ewma_spread_idle_load() {
    let upstreams = three(["a", "b", "c"]).await;
    // Tolerance: 25% of each share over 1,200 draws (a binomial's deviation here is 4-8%).
    let gateway = Gateway::start(&config(&weighted(&upstreams, &[1, 2, 3]), "random", ""));
    let counts = tally(&picks(&gateway, 1200, |_| None).await);
    assert_shares(
        &counts,
        &[("a", 1.0 / 6.0), ("b", 2.0 / 6.0), ("c", 3.0 / 6.0)],
        0.25,
    );

    // One request at a time leaves every instance idle at each pick: ties, broken at random.
    let gateway = Gateway::start(&config(
        &weighted(&upstreams, &[1, 1, 1]),
        "least_connections",
        "",
    ));
    let counts = tally(&picks(&gateway, 900, |_| None).await);
    assert_shares(
        &counts,
        &[("a", 1.0 / 3.0), ("b", 1.0 / 3.0), ("c", 1.0 / 3.0)],
        0.25,
    );

    // p2c_ewma follows latency, not shares: an instance whose first answers were slower (a
    // new connection, say) gets less until its estimate decays (10 s). What holds is that it
    // never herds onto one instance: under concurrent load each pick weighs requests in
    // flight, so no instance gets two thirds.
    let gateway = Gateway::start(&config(&weighted(&upstreams, &[1, 1, 1]), "p2c_ewma", ""));
    let counts = under_load(&gateway, 8, 900).await;
    assert!(counts.values().all(|&count| count < 600), "{counts:?}");
}

#[tokio::test]
async fn hash_keeps_each_key_on_its_instance_and_a_fourth_instance_takes_about_a_quarter() {
    let upstreams = three(["a", "b", "c"]).await;
    let extra = "    hash_key: { header: x-user }";
    let gateway = Gateway::start(&config(&weighted(&upstreams, &[1, 1, 1]), "hash", extra));
    let keys = 400;
    let key = |index: usize| Some(format!("user-{}", index % keys));
    let before = picks(&gateway, 2 * keys, key).await;
    for index in 0..keys {
        assert_eq!(
            before[index],
            before[index + keys],
            "user-{index} moved with nothing changed"
        );
    }
    // 400 keys on three equal instances: each within 30% of a third.
    let counts = tally(&before[..keys]);
    assert_shares(
        &counts,
        &[("a", 1.0 / 3.0), ("b", 1.0 / 3.0), ("c", 1.0 / 3.0)],
        0.3,
    );

    let fourth = ControlledUpstream::start("d").await;
    let mut four = weighted(&upstreams, &[1, 1, 1]);
    four.push((fourth.url(), 1));
    std::fs::write(gateway.config_path(), config(&four, "hash", extra)).expect("config written");
    let reload = Request::post(gateway.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("a request");
    assert_eq!(send(&http1_client(), reload).await.status, 200);

    let after = picks(&gateway, keys, key).await;
    let moved: Vec<usize> = (0..keys)
        .filter(|&index| before[index] != after[index])
        .collect();
    assert!(
        (keys * 15 / 100..keys * 35 / 100).contains(&moved.len()),
        "{} of {keys} keys moved; about a quarter should",
        moved.len()
    );
    for index in moved {
        assert_eq!(
            after[index], "d",
            "user-{index} moved, but not to the new instance"
        );
    }
}

/// Runs `clients` concurrent clients, each sending GETs one after another, until `total`
/// answers came; returns how many each instance gave.
async fn under_load(gateway: &Gateway, clients: usize, total: usize) -> HashMap<String, usize> {
    let sent = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let sent = sent.clone();
        let url = gateway.url("/item");
        tasks.spawn(async move {
            let client = http1_client();
            let mut answered = Vec::new();
            while sent.fetch_add(1, Ordering::SeqCst) < total {
                let request = Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("a request");
                let reply = send(&client, request).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                answered.push(reply.header("x-upstream").expect("named").to_owned());
            }
            answered
        });
    }
    let mut all = Vec::new();
    while let Some(answered) = tasks.join_next().await {
        all.extend(answered.expect("a client task"));
    }
    tally(&all)
}

#[tokio::test]
async fn p2c_ewma_and_least_connections_move_load_away_from_a_slow_instance() {
    let upstreams = three(["a", "b", "c"]).await;
    upstreams[2].set_delay(Duration::from_millis(150));
    for balancer in ["p2c_ewma", "least_connections"] {
        let gateway = Gateway::start(&config(&weighted(&upstreams, &[1, 1, 1]), balancer, ""));
        let counts = under_load(&gateway, 8, 300).await;
        let slow = counts.get("c").copied().unwrap_or(0);
        // Round robin would send it a third (100); these keep it far below.
        assert!(
            slow < 45,
            "{balancer}: the slow instance got {slow} of 300: {counts:?}"
        );
        assert!(
            counts.contains_key("a") && counts.contains_key("b"),
            "{counts:?}"
        );
        if balancer == "p2c_ewma" {
            // The admin API shows the estimates the choice was made on.
            let reply = gateway_tests::get(&gateway.admin_url("/admin/services")).await;
            let services = reply.json();
            let instances = &services["services"]["backend"]["instances"];
            let ewma = |index: usize| instances[index]["ewma_ms"].as_f64().unwrap_or(0.0);
            assert!(ewma(2) > ewma(0) && ewma(2) > ewma(1), "{instances}");
            assert_eq!(services["services"]["backend"]["balancer"], "p2c_ewma");
        }
    }
}

#[tokio::test]
async fn p2c_ewma_does_not_take_an_instance_failing_fast_for_the_fastest() {
    let upstreams = three(["a", "b", "c"]).await;
    upstreams[0].set_delay(Duration::from_millis(2));
    upstreams[1].set_delay(Duration::from_millis(2));
    upstreams[2].set_status(503);
    let gateway = Gateway::start(&config(&weighted(&upstreams, &[1, 1, 1]), "p2c_ewma", ""));
    // Its 503s are retried on the others: every answer is a 200.
    let counts = tally(&picks(&gateway, 300, |_| None).await);
    assert_eq!(counts.get("c"), None, "the 503s never reach the client");
    let failing = upstreams[2].requests();
    assert!(
        failing < 30,
        "the instance failing fast got {failing} of 300"
    );
}
