//! The service registry end to end: two real gateway processes watching one real
//! `redis-server`, real upstream instances, and instances registered by the real
//! `gateway registry` command, by the three Redis commands the README documents, and by the
//! admin API.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{
    ControlledUpstream, Gateway, RedisServer, Reply, gateway_bin, get, http1_client, send,
};
use http::{Method, Request};
use http_body_util::Full;

/// A gateway that routes `/api/v1/{service}/...` to whatever service the path names, and
/// watches the registry on `redis` (re-read every 500 ms).
fn watching(redis: &RedisServer, extra: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: false
kv:
  redis: {{ url: "{url}" }}
registry:
  redis: true
  resync_interval: 500ms
  ttl: 5s
{extra}
routes:
  - name: api
    match:
      path: "/api/v1/{{service}}/{{*rest}}"
    service: "{{service}}"
"#,
        url = redis.url()
    )
}

/// `gateway registry register` running, stopped (killed) when dropped.
struct Registrar {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Registrar {
    /// Starts one for `service` at `url` and waits until it has registered.
    fn start(redis: &RedisServer, service: &str, url: &str, ttl: &str) -> Registrar {
        let mut child = Command::new(gateway_bin())
            .args(["--log-format", "json", "registry", "register"])
            .args(["--redis", &redis.url(), "--service", service, "--url", url])
            .args(["--ttl", ttl, "--meta", "version=1.0.0", "--meta", "zone=a"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway registry starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("log lock").push(line);
            }
        });
        let registrar = Registrar { child, logs };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !registrar.logged("\"registered\"") {
            assert!(
                Instant::now() < deadline,
                "the registrar did not register within 10s: {:?}",
                registrar.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        registrar
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs().iter().any(|line| line.contains(needle))
    }

    /// Stops heartbeating without deregistering, as a crashed sidecar does.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops as an operator does (SIGTERM): it deregisters, then exits.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .child
            .try_wait()
            .expect("the registrar's status")
            .is_none()
        {
            assert!(Instant::now() < deadline, "the registrar did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asks every `gateway` until `condition` holds for all of them, or `within` passes; the
/// time it took.
async fn until_all(
    gateways: &[&Gateway],
    path: &str,
    within: Duration,
    condition: impl Fn(&Reply) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        let mut all = true;
        for gateway in gateways {
            all &= condition(&get(&gateway.url(path)).await);
        }
        if all {
            return Some(started.elapsed());
        }
        if started.elapsed() >= within {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn served_by(name: &'static str) -> impl Fn(&Reply) -> bool {
    move |reply| reply.status == 200 && reply.header("x-upstream") == Some(name)
}

fn no_route(reply: &Reply) -> bool {
    reply.status == 404 && reply.json()["code"] == "NO_ROUTE"
}

/// The admin API's view of a service's instances on `gateway`: URL to its JSON.
async fn instances(gateway: &Gateway, service: &str) -> HashMap<String, serde_json::Value> {
    let reply = get(&gateway.admin_url(&format!("/admin/services/{service}/instances"))).await;
    if reply.status == 404 {
        return HashMap::new();
    }
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|instance| {
            (
                instance["url"].as_str().expect("url").to_owned(),
                instance.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_by_the_cli_serves_on_both_gateways_within_a_second() {
    let redis = RedisServer::start();
    let one = Gateway::start(&watching(&redis, ""));
    let two = Gateway::start(&watching(&redis, ""));
    let orders = ControlledUpstream::start("orders-1").await;
    let gateways = [&one, &two];
    assert!(no_route(&get(&one.url("/api/v1/orders/list")).await));

    let mut registrar = Registrar::start(&redis, "orders", &orders.url(), "10s");
    let took = until_all(
        &gateways,
        "/api/v1/orders/list",
        Duration::from_secs(1),
        served_by("orders-1"),
    )
    .await
    .expect("both gateways route to the new instance within a second");
    println!("registered to served on both gateways: {took:?}");

    let listed = instances(&two, "orders").await;
    let instance = &listed[&orders.url()];
    assert_eq!(instance["source"], "registry");
    assert_eq!(instance["meta"]["version"], "1.0.0");
    assert_eq!(instance["meta"]["zone"], "a");

    let list = std::process::Command::new(gateway_bin())
        .args(["registry", "list", "--redis", &redis.url()])
        .output()
        .expect("gateway registry list runs");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&format!("\"url\":\"{}\"", orders.url()))
            && listed.contains("\"service\":\"orders\""),
        "{listed}"
    );

    registrar.terminate();
    until_all(
        &gateways,
        "/api/v1/orders/list",
        Duration::from_secs(1),
        no_route,
    )
    .await
    .expect("a deregistered instance leaves both gateways at once");
    assert!(registrar.logged("deregistered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_instances_registered_with_the_documented_commands_share_the_load() {
    let redis = RedisServer::start();
    let gateway = Gateway::start(&watching(&redis, ""));
    let mut upstreams = Vec::new();
    for index in 0..20 {
        upstreams.push(ControlledUpstream::start(&format!("market-{index}")).await);
    }
    // What a service in any language does: the README's three commands.
    for upstream in &upstreams {
        let member = format!("market/{}", upstream.address);
        let value = format!(r#"{{"url":"{}","zone":"b"}}"#, upstream.url());
        let key = format!("gateway:registry:instance:{member}");
        assert_eq!(redis.command(&["SET", &key, &value, "PX", "30000"]), "OK");
        redis.command(&["SADD", "gateway:registry:instances", &member]);
        redis.command(&["PUBLISH", "gateway:registry:changes", &member]);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while instances(&gateway, "market").await.len() < 20 {
        assert!(Instant::now() < deadline, "20 instances within 2s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = http1_client();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        let request = Request::get(gateway.url("/api/v1/market/quote"))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let reply = send(&client, request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *counts
            .entry(reply.header("x-upstream").expect("named").to_owned())
            .or_default() += 1;
    }
    println!("requests per instance: {counts:?}");
    assert_eq!(counts.len(), 20, "every instance got requests: {counts:?}");
    // Round robin over 20: each gets 10 of 200.
    assert!(counts.values().all(|&count| count == 10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_heartbeat_stops_leaves_both_gateways_within_its_ttl_and_one_sweep() {
    let redis = RedisServer::start();
    let one = Gateway::start(&watching(&redis, ""));
    let two = Gateway::start(&watching(&redis, ""));
    let mut dying = ControlledUpstream::start("dying").await;
    let staying = ControlledUpstream::start("staying").await;
    let mut dying_registrar = Registrar::start(&redis, "pay", &dying.url(), "2s");
    let _staying_registrar = Registrar::start(&redis, "pay", &staying.url(), "30s");
    for gateway in [&one, &two] {
        let deadline = Instant::now() + Duration::from_secs(2);
        while instances(gateway, "pay").await.len() < 2 {
            assert!(Instant::now() < deadline, "both instances registered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Traffic all along, through both gateways: not one request may fail.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for gateway in [&one, &two] {
        let url = gateway.url("/api/v1/pay/charge");
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let client = http1_client();
            let mut replies = Vec::new();
            // Bounded: at most 2,000 requests, 10 ms apart.
            for _ in 0..2_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let request = Request::builder()
                    .method(Method::GET)
                    .uri(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("a request");
                replies.push(send(&client, request).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            replies
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The sidecar dies: no deregistration, only heartbeats that stop. The instance itself
    // goes once no gateway sends it anything.
    let stopped = Instant::now();
    dying_registrar.kill();
    for gateway in [&one, &two] {
        while instances(gateway, "pay").await.contains_key(&dying.url()) {
            assert!(
                stopped.elapsed() < Duration::from_secs(4),
                "the instance is gone within its TTL (2s) plus a sweep (0.5s), with slack"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "heartbeat stopped to gone from both gateways: {:?}",
        stopped.elapsed()
    );
    dying.stop().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    let mut total = 0;
    for task in load {
        let replies = task.await.expect("the load task");
        total += replies.len();
        for reply in &replies {
            assert_eq!(reply.status, 200, "no request fails: {}", reply.text());
        }
        assert_eq!(
            replies.last().and_then(|reply| reply.header("x-upstream")),
            Some("staying"),
            "the other instance took over"
        );
    }
    assert!(total > 100, "traffic ran throughout: {total} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_leaves_the_gateways_serving_and_they_resync() {
    let mut redis = RedisServer::start();
    let one = Gateway::start(&watching(&redis, ""));
    let two = Gateway::start(&watching(&redis, ""));
    let gateways = [&one, &two];
    let first = ControlledUpstream::start("first").await;
    let _registrar = Registrar::start(&redis, "quotes", &first.url(), "3s");
    until_all(
        &gateways,
        "/api/v1/quotes/now",
        Duration::from_secs(2),
        served_by("first"),
    )
    .await
    .expect("served before the outage");

    redis.stop();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..10 {
        for gateway in gateways {
            let reply = get(&gateway.url("/api/v1/quotes/now")).await;
            assert!(
                served_by("first")(&reply),
                "served while Redis is away: {}",
                reply.text()
            );
        }
    }

    // Back empty (no persistence): the gateways keep the instance until its heartbeat
    // registers it again, and pick up what registers from now on.
    redis.restart();
    let second = ControlledUpstream::start("second").await;
    let _second_registrar = Registrar::start(&redis, "quotes", &second.url(), "3s");
    for gateway in gateways {
        let deadline = Instant::now() + Duration::from_secs(5);
        while instances(gateway, "quotes").await.len() < 2 {
            assert!(Instant::now() < deadline, "resynced after Redis came back");
            let reply = get(&gateway.url("/api/v1/quotes/now")).await;
            assert_eq!(
                reply.status,
                200,
                "served while resyncing: {}",
                reply.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let key = format!("gateway:registry:instance:quotes/{}", first.address);
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.command(&["EXISTS", &key]) != "1" {
        assert!(
            Instant::now() < deadline,
            "the first heartbeat re-created its key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for gateway in gateways {
        let down = gateway
            .logs()
            .iter()
            .filter(|line| line.contains("cannot read the registry's Redis"))
            .count();
        assert_eq!(down, 1, "the outage is logged once");
        assert!(
            gateway
                .wait_for_log(&["the registry's Redis is back"], Duration::from_secs(2))
                .is_some()
        );
    }
}

/// A gateway with a registry but no Redis: instances come from the admin API only.
const ADMIN_ONLY: &str = r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: false
registry: {}
service_templates:
  - match: "checked-*"
    service:
      health_check: { path: /health, interval: 100ms, timeout: 50ms, unhealthy_threshold: 1 }
routes:
  - name: api
    match:
      path: "/api/v1/{service}/{*rest}"
    service: "{service}"
"#;

async fn admin(gateway: &Gateway, method: Method, path: &str, body: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(gateway.admin_url(path))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a request");
    send(&http1_client(), request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_registers_and_deregisters_and_refuses_bad_bodies_with_their_field() {
    let gateway = Gateway::start(ADMIN_ONLY);
    let users = ControlledUpstream::start("users-1").await;
    let path = "/admin/services/users/instances";
    get(&gateway.admin_url(path))
        .await
        .assert_gateway_error(404, "UNKNOWN_SERVICE");

    let body = format!(
        r#"{{"url":"{}","weight":2,"version":"2.1","meta":{{"team":"id"}}}}"#,
        users.url()
    );
    let created = admin(&gateway, Method::POST, path, &body).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["source"], "admin");
    assert_eq!(
        created.json()["shared"],
        false,
        "no Redis to share it through"
    );
    let reply = get(&gateway.url("/api/v1/users/me")).await;
    assert!(served_by("users-1")(&reply), "{}", reply.text());
    let listed = instances(&gateway, "users").await;
    let instance = &listed[&users.url()];
    assert_eq!(instance["source"], "admin");
    assert_eq!(instance["weight"], 2);
    assert_eq!(instance["meta"]["version"], "2.1");
    assert_eq!(instance["meta"]["team"], "id");
    let again = admin(&gateway, Method::POST, path, &body).await;
    assert_eq!(again.status, 200, "the same address is replaced, not added");

    for (path, body, field) in [
        (path, "{}", "url"),
        (path, "not json", "."),
        (path, r#"{"url":"ftp://127.0.0.1:1"}"#, "url"),
        (path, r#"{"url":5}"#, "url"),
        (
            path,
            r#"{"url":"http://127.0.0.1:1","weight":500}"#,
            "weight",
        ),
        (
            path,
            r#"{"url":"http://127.0.0.1:1","health_path":"x"}"#,
            "health_path",
        ),
        (
            path,
            r#"{"url":"http://127.0.0.1:1","color":"red"}"#,
            "color",
        ),
        (
            path,
            r#"{"url":"http://127.0.0.1:1","meta":{"k":7}}"#,
            "meta.k",
        ),
        (
            "/admin/services/Bad_Name/instances",
            r#"{"url":"http://127.0.0.1:1"}"#,
            "service",
        ),
        (
            "/api/v1/gateway/services",
            r#"{"service_name":"users","host":"127.0.0.1"}"#,
            "port",
        ),
        (
            "/api/v1/gateway/services",
            r#"{"service_name":"users","host":"127.0.0.1","port":"80"}"#,
            "port",
        ),
        (
            "/api/v1/gateway/services",
            r#"{"service_name":"a b","host":"127.0.0.1","port":80}"#,
            "service_name",
        ),
    ] {
        let reply = admin(&gateway, Method::POST, path, body).await;
        let error = reply.assert_gateway_error(400, "INVALID_REGISTRATION");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    assert_eq!(
        instances(&gateway, "users").await.len(),
        1,
        "nothing bad was registered"
    );

    // The seeds' body, on the same listener.
    let seed = ControlledUpstream::start("users-2").await;
    let body = format!(
        r#"{{"service_name":"users","host":"127.0.0.1","port":{},"health_endpoint":"/health"}}"#,
        seed.address.port()
    );
    let created = admin(&gateway, Method::POST, "/api/v1/gateway/services", &body).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let listed = instances(&gateway, "users").await;
    assert_eq!(listed[&seed.url()]["health_path"], "/health");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let reply = get(&gateway.url("/api/v1/users/me")).await;
        seen.extend(reply.header("x-upstream").map(str::to_owned));
    }
    assert_eq!(seen.len(), 2, "both instances serve: {seen:?}");

    // Registrations survive a reload.
    let reload = admin(&gateway, Method::POST, "/admin/reload", "").await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(instances(&gateway, "users").await.len(), 2);

    let url = format!(r#"{{"url":"{}"}}"#, users.url());
    let removed = admin(&gateway, Method::DELETE, path, &url).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    admin(&gateway, Method::DELETE, path, &url)
        .await
        .assert_gateway_error(404, "UNKNOWN_INSTANCE");
    let url = format!(r#"{{"url":"{}"}}"#, seed.url());
    assert_eq!(
        admin(&gateway, Method::DELETE, path, &url).await.status,
        200
    );
    let reply = get(&gateway.url("/api/v1/users/me")).await;
    assert!(
        no_route(&reply),
        "a service with no instance left is unknown again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templates_health_checks_apply_to_registered_instances() {
    let gateway = Gateway::start(ADMIN_ONLY);
    let alive = ControlledUpstream::start("alive").await;
    let mut dead = ControlledUpstream::start("dead").await;
    dead.stop().await;
    let path = "/admin/services/checked-api/instances";
    for url in [alive.url(), dead.url()] {
        let created = admin(
            &gateway,
            Method::POST,
            path,
            &format!(r#"{{"url":"{url}"}}"#),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let listed = instances(&gateway, "checked-api").await;
        if listed[&dead.url()]["healthy"] == false && listed[&alive.url()]["healthy"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead instance is found unhealthy: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        alive.health_checks() > 0,
        "the template's checks ask the live instance"
    );
    for _ in 0..10 {
        let reply = get(&gateway.url("/api/v1/checked-api/x")).await;
        assert!(served_by("alive")(&reply), "{}", reply.text());
    }
}
