//! The cache filter end to end: the real gateway with the compiled `cache` plugin, in front of
//! a real upstream that counts the requests it gets per path, and answers by path:
//!
//! - `/fresh/..`: `max-age=60`;
//! - `/private/..`: `private, max-age=60`;
//! - `/cookie/..`: `max-age=60` and a `Set-Cookie` naming the client's `x-user`;
//! - `/auth/..`: `max-age=60`, the body naming the request's `Authorization`;
//! - `/vary/..`: `max-age=60, Vary: Accept-Encoding`, the body naming the encoding asked for;
//! - `/etag/..`: `max-age=1, ETag: "v1"`, and a 304 to `If-None-Match: "v1"`;
//! - `/tagged/..`: `max-age=60, ETag: "t1"`;
//! - `/slow/..`: `max-age=60` after 300 ms;
//! - `/fail/..`: 503 after 300 ms;
//! - any other method: 201.
//!
//! Every body is `<path> #<count>` plus what the path adds, so a test sees which request of
//! the upstream's it got.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{Gateway, RedisServer, Reply, http1_client, plugin_dir, send};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An upstream that counts the requests it answers, per method and path.
struct CountingUpstream {
    address: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl CountingUpstream {
    async fn start() -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let shared = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let counts = counts.clone();
                        async move { Ok::<_, Infallible>(answer(&counts, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingUpstream { address, counts }
    }

    /// How many requests with this method reached `path`.
    fn count(&self, method: &str, path: &str) -> usize {
        let counts = self.counts.lock().expect("counts");
        counts
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }
}

async fn answer(
    counts: &Mutex<HashMap<String, usize>>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let method = request.method().as_str().to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let count = {
        let mut counts = counts.lock().expect("counts");
        let count = counts.entry(format!("{method} {path}")).or_insert(0);
        *count += 1;
        *count
    };
    let mut response = Response::builder().header("content-type", "text/plain");
    let mut body = format!("{path} #{count}");
    if method != "GET" && method != "HEAD" {
        return response
            .status(StatusCode::CREATED)
            .body(Full::new(Bytes::from(body)))
            .expect("response");
    }
    let section = path.split('/').nth(1).unwrap_or("");
    response = match section {
        "private" => response.header("cache-control", "private, max-age=60"),
        "cookie" => response
            .header("cache-control", "max-age=60")
            .header("set-cookie", format!("session={}", header("x-user"))),
        "auth" => {
            body.push_str(&format!(" for {}", header("authorization")));
            response.header("cache-control", "max-age=60")
        }
        "vary" => {
            body.push_str(&format!(" in {}", header("accept-encoding")));
            response
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Encoding")
        }
        "etag" => {
            let response = response
                .header("cache-control", "max-age=1")
                .header("etag", "\"v1\"");
            if header("if-none-match") == "\"v1\"" {
                return response
                    .status(StatusCode::NOT_MODIFIED)
                    .body(Full::new(Bytes::new()))
                    .expect("response");
            }
            response
        }
        "tagged" => response
            .header("cache-control", "max-age=60")
            .header("etag", "\"t1\""),
        "fail" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return response
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Full::new(Bytes::from(body)))
                .expect("response");
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            response.header("cache-control", "max-age=60")
        }
        _ => response.header("cache-control", "max-age=60"),
    };
    response
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// A gateway whose only route caches everything it sends to `upstream`, with `config` as the
/// cache filter's configuration and `sections` added at the top level.
fn gateway(upstream: &CountingUpstream, config: &str, sections: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
plugin_dir: "{plugins}"
{sections}
filters:
  cache:
    module: gateway_plugin_cache.wasm
    # Room for a Redis round trip, and for single flight's waits, on a loaded machine.
    timeout: 5s
services:
  backend:
    instances: ["http://{upstream}"]
routes:
  - name: cached
    match: {{ path_prefix: / }}
    service: backend
    filters: [{{ filter: cache, config: {config} }}]
"#,
        plugins = plugin_dir().display(),
        upstream = upstream.address,
    ))
}

async fn request(gateway: &Gateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::builder().method(method).uri(gateway.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(Bytes::new())).expect("request");
    send(&http1_client(), request).await
}

async fn get(gateway: &Gateway, path: &str) -> Reply {
    request(gateway, "GET", path, &[]).await
}

fn cache_status(reply: &Reply) -> &str {
    reply.header("x-cache-status").unwrap_or("-")
}

#[tokio::test]
async fn a_second_get_is_served_without_reaching_the_upstream() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    let first = get(&gateway, "/fresh/a").await;
    assert_eq!((first.status.as_u16(), cache_status(&first)), (200, "MISS"));
    let second = get(&gateway, "/fresh/a").await;
    assert_eq!(second.status, 200);
    assert_eq!(cache_status(&second), "HIT");
    assert_eq!(second.text(), "/fresh/a #1");
    assert!(
        second
            .header("age")
            .is_some_and(|age| age.parse::<u64>().is_ok())
    );
    assert_eq!(second.header("content-type"), Some("text/plain"));
    let head = request(&gateway, "HEAD", "/fresh/a", &[]).await;
    assert_eq!((head.status.as_u16(), cache_status(&head)), (200, "HIT"));
    assert!(head.body.is_empty());
    assert_eq!(upstream.count("GET", "/fresh/a"), 1);
    assert_eq!(upstream.count("HEAD", "/fresh/a"), 0);
    // Another query is another entry.
    assert_eq!(
        cache_status(&get(&gateway, "/fresh/a?page=2").await),
        "MISS"
    );
}

#[tokio::test]
async fn private_and_cookie_answers_are_never_served_to_another_client() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    for path in ["/private/p", "/cookie/c"] {
        let alice = request(&gateway, "GET", path, &[("x-user", "alice")]).await;
        assert_eq!(alice.text(), format!("{path} #1"));
        let bob = request(&gateway, "GET", path, &[("x-user", "bob")]).await;
        assert_eq!(
            bob.text(),
            format!("{path} #2"),
            "bob got alice's answer at {path}"
        );
        assert_eq!(cache_status(&bob), "MISS");
    }
    let bob = request(&gateway, "GET", "/cookie/c", &[("x-user", "bob")]).await;
    assert_eq!(bob.header("set-cookie"), Some("session=bob"));
}

#[tokio::test]
async fn stripped_cookies_never_reach_another_client() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{ set_cookie: strip }", "");
    let alice = request(&gateway, "GET", "/cookie/s", &[("x-user", "alice")]).await;
    assert_eq!(alice.header("set-cookie"), Some("session=alice"));
    let bob = request(&gateway, "GET", "/cookie/s", &[("x-user", "bob")]).await;
    assert_eq!(cache_status(&bob), "HIT");
    assert_eq!(bob.header("set-cookie"), None);
    assert_eq!(upstream.count("GET", "/cookie/s"), 1);
}

#[tokio::test]
async fn requests_with_authorization_bypass_the_cache() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    let alice = request(
        &gateway,
        "GET",
        "/auth/me",
        &[("authorization", "Bearer alice")],
    )
    .await;
    assert_eq!(cache_status(&alice), "BYPASS");
    let bob = request(
        &gateway,
        "GET",
        "/auth/me",
        &[("authorization", "Bearer bob")],
    )
    .await;
    assert_eq!(bob.text(), "/auth/me #2 for Bearer bob");
    let anonymous = get(&gateway, "/auth/me").await;
    assert_eq!(
        anonymous.text(),
        "/auth/me #3 for -",
        "nothing was stored from alice or bob"
    );
    assert_eq!(cache_status(&anonymous), "MISS");
    // The anonymous entry is not served to a request with credentials either.
    let carol = request(
        &gateway,
        "GET",
        "/auth/me",
        &[("authorization", "Bearer carol")],
    )
    .await;
    assert_eq!(carol.text(), "/auth/me #4 for Bearer carol");
}

#[tokio::test]
async fn vary_accept_encoding_keeps_two_variants() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    assert_eq!(
        request(&gateway, "GET", "/vary/v", &gzip).await.text(),
        "/vary/v #1 in gzip"
    );
    assert_eq!(
        request(&gateway, "GET", "/vary/v", &br).await.text(),
        "/vary/v #2 in br"
    );
    let gzip_again = request(&gateway, "GET", "/vary/v", &gzip).await;
    let br_again = request(&gateway, "GET", "/vary/v", &br).await;
    assert_eq!(
        (gzip_again.text(), cache_status(&gzip_again)),
        ("/vary/v #1 in gzip".into(), "HIT")
    );
    assert_eq!(
        (br_again.text(), cache_status(&br_again)),
        ("/vary/v #2 in br".into(), "HIT")
    );
    assert_eq!(upstream.count("GET", "/vary/v"), 2);
}

#[tokio::test]
async fn an_expired_entry_revalidates_and_the_304_refreshes_it() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    assert_eq!(cache_status(&get(&gateway, "/etag/e").await), "MISS");
    // max-age=1: stale once its age reaches a second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = get(&gateway, "/etag/e").await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(cache_status(&revalidated), "REVALIDATED");
    assert_eq!(
        revalidated.text(),
        "/etag/e #1",
        "the stored body, not the 304's"
    );
    assert_eq!(upstream.count("GET", "/etag/e"), 2);
}

#[tokio::test]
async fn a_fresh_entry_answers_a_clients_conditional_with_304() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    assert_eq!(
        get(&gateway, "/tagged/t").await.header("etag"),
        Some("\"t1\"")
    );
    let conditional = request(
        &gateway,
        "GET",
        "/tagged/t",
        &[("if-none-match", "W/\"t1\"")],
    )
    .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    assert_eq!(cache_status(&conditional), "HIT");
    assert!(conditional.body.is_empty());
    let other = request(&gateway, "GET", "/tagged/t", &[("if-none-match", "\"t0\"")]).await;
    assert_eq!(
        (other.status.as_u16(), other.text()),
        (200, "/tagged/t #1".into())
    );
    assert_eq!(upstream.count("GET", "/tagged/t"), 1);
}

#[tokio::test]
async fn a_successful_post_invalidates_its_url() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    get(&gateway, "/fresh/orders").await;
    assert_eq!(cache_status(&get(&gateway, "/fresh/orders").await), "HIT");
    let posted = request(&gateway, "POST", "/fresh/orders", &[]).await;
    assert_eq!(posted.status, StatusCode::CREATED);
    let after = get(&gateway, "/fresh/orders").await;
    assert_eq!(
        (after.text(), cache_status(&after)),
        ("/fresh/orders #2".into(), "MISS")
    );
}

/// `POST /admin/cache/purge` with a JSON body.
async fn purge(gateway: &Gateway, body: serde_json::Value) -> Reply {
    let request = Request::post(gateway.admin_url("/admin/cache/purge"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    send(&http1_client(), request).await
}

#[tokio::test]
async fn purge_by_url_by_prefix_and_by_zone() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{}", "");
    let host = "127.0.0.1";
    for path in [
        "/fresh/a",
        "/fresh/a?x=1",
        "/fresh/b",
        "/fresh/bb",
        "/vary/c",
    ] {
        get(&gateway, path).await;
        assert_eq!(cache_status(&get(&gateway, path).await), "HIT", "{path}");
    }
    let by_url = purge(
        &gateway,
        serde_json::json!({ "url": format!("http://{host}/fresh/a") }),
    )
    .await;
    assert_eq!(by_url.status, 200, "{}", by_url.text());
    assert_eq!(
        by_url.json()["removed"],
        1,
        "the URL, not its other queries"
    );
    assert_eq!(cache_status(&get(&gateway, "/fresh/a").await), "MISS");
    assert_eq!(cache_status(&get(&gateway, "/fresh/a?x=1").await), "HIT");
    let by_prefix = purge(
        &gateway,
        serde_json::json!({ "prefix": format!("http://{host}/fresh/b") }),
    )
    .await;
    assert_eq!(by_prefix.json()["removed"], 2);
    assert_eq!(cache_status(&get(&gateway, "/fresh/b").await), "MISS");
    assert_eq!(cache_status(&get(&gateway, "/fresh/bb").await), "MISS");
    // The whole zone: every entry, a Vary marker and its variant included.
    let zone = purge(&gateway, serde_json::json!({ "zone": "default" })).await;
    assert_eq!(zone.json()["removed"], 6, "{}", zone.text());
    assert_eq!(cache_status(&get(&gateway, "/vary/c").await), "MISS");
    // Bad requests get the gateway's JSON error.
    purge(&gateway, serde_json::json!({ "url": "/relative" }))
        .await
        .assert_gateway_error(400, "BAD_PURGE");
    purge(&gateway, serde_json::json!({ "zone": "a b" }))
        .await
        .assert_gateway_error(400, "BAD_PURGE");
    purge(&gateway, serde_json::json!({ "filter": "nope" }))
        .await
        .assert_gateway_error(404, "NO_SUCH_FILTER");
}

#[tokio::test]
async fn two_gateways_share_entries_and_purges_on_redis() {
    let redis = RedisServer::start();
    let upstream = CountingUpstream::start().await;
    let sections = format!(
        "kv:\n  backend: redis\n  redis:\n    url: \"{}\"\n    operation_timeout: 200ms",
        redis.url()
    );
    let first = gateway(&upstream, "{}", &sections);
    let second = gateway(&upstream, "{}", &sections);
    assert_eq!(cache_status(&get(&first, "/fresh/shared").await), "MISS");
    let other = get(&second, "/fresh/shared").await;
    assert_eq!(
        (cache_status(&other), other.text()),
        ("HIT", "/fresh/shared #1".into())
    );
    // Vary on Redis: the marker and both variants, seen from either gateway.
    request(&first, "GET", "/vary/r", &[("accept-encoding", "gzip")]).await;
    request(&second, "GET", "/vary/r", &[("accept-encoding", "br")]).await;
    let gzip = request(&second, "GET", "/vary/r", &[("accept-encoding", "gzip")]).await;
    let br = request(&first, "GET", "/vary/r", &[("accept-encoding", "br")]).await;
    assert_eq!((cache_status(&gzip), cache_status(&br)), ("HIT", "HIT"));
    // An invalidation through one gateway reaches the other.
    request(&second, "POST", "/fresh/shared", &[]).await;
    assert_eq!(cache_status(&get(&first, "/fresh/shared").await), "MISS");
    assert_eq!(upstream.count("GET", "/fresh/shared"), 2);
    // A purge through one gateway's admin API empties the shared store.
    let purged = purge(
        &second,
        serde_json::json!({ "prefix": "http://127.0.0.1/vary/" }),
    )
    .await;
    assert_eq!(purged.json()["removed"], 3, "{}", purged.text());
    assert_eq!(
        cache_status(&request(&first, "GET", "/vary/r", &[("accept-encoding", "gzip")]).await),
        "MISS"
    );
    // Left: /fresh/shared, and /vary/r's new marker and gzip variant.
    let zone = purge(&first, serde_json::json!({ "zone": "default" })).await;
    assert_eq!(zone.json()["removed"], 3, "{}", zone.text());
    assert_eq!(cache_status(&get(&second, "/fresh/shared").await), "MISS");
}

#[tokio::test]
async fn fifty_concurrent_misses_reach_the_upstream_once() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{ lock_wait: 4s }", "");
    let url = gateway.url("/slow/herd");
    let client = http1_client();
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let request = Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                send(&client, request).await
            })
        })
        .collect();
    let mut statuses = HashMap::new();
    for request in requests {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.text(),
            "/slow/herd #1",
            "every client got the one upstream answer"
        );
        *statuses.entry(cache_status(&reply).to_owned()).or_insert(0) += 1;
    }
    assert_eq!(upstream.count("GET", "/slow/herd"), 1, "{statuses:?}");
    assert_eq!(statuses.get("MISS"), Some(&1), "{statuses:?}");
}

#[tokio::test]
async fn concurrent_misses_on_two_gateways_sharing_redis_reach_the_upstream_once() {
    let redis = RedisServer::start();
    let upstream = CountingUpstream::start().await;
    let sections = format!(
        "kv:\n  backend: redis\n  redis:\n    url: \"{}\"\n    operation_timeout: 200ms",
        redis.url()
    );
    let gateways = [
        gateway(&upstream, "{ lock_wait: 4s }", &sections),
        gateway(&upstream, "{ lock_wait: 4s }", &sections),
    ];
    let client = http1_client();
    let requests: Vec<_> = (0..40)
        .map(|n| {
            let url = gateways[n % 2].url("/slow/shared-herd");
            let client = client.clone();
            tokio::spawn(async move {
                let request = Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                send(&client, request).await
            })
        })
        .collect();
    for request in requests {
        let reply = request.await.expect("request task");
        assert_eq!(reply.text(), "/slow/shared-herd #1");
    }
    assert_eq!(upstream.count("GET", "/slow/shared-herd"), 1);
}

#[tokio::test]
async fn misses_waiting_for_a_failing_first_request_go_upstream_themselves() {
    let upstream = CountingUpstream::start().await;
    let gateway = gateway(&upstream, "{ lock_wait: 4s }", "");
    let url = gateway.url("/fail/f");
    let client = http1_client();
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let request = Request::get(url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                send(&client, request).await
            })
        })
        .collect();
    for request in requests {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // Each got its own upstream answer: nothing was stored to share, and nobody waited on.
    assert_eq!(upstream.count("GET", "/fail/f"), 10);
    // Remembered as uncacheable: the next request goes straight upstream.
    let next = get(&gateway, "/fail/f").await;
    assert_eq!(
        (next.status, cache_status(&next)),
        (StatusCode::SERVICE_UNAVAILABLE, "MISS")
    );
}
