//! The proxy path end to end: routing, request ids, forwarding headers, HTTP/2, streaming
//! bodies, and the errors for no route, a refusing upstream and a slow one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::upstream::{checksum, pattern_byte, refusing_address};
use gateway_tests::{Gateway, Upstream, get, http1_client, http2_client, raw_exchange, send};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};

struct Setup {
    gateway: Gateway,
    users: Upstream,
    orders: Upstream,
    orders_b: Upstream,
}

async fn setup() -> Setup {
    let users = Upstream::start("users").await;
    let orders = Upstream::start("orders").await;
    let orders_b = Upstream::start("orders-b").await;
    let refused = refusing_address().await;
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
limits:
  body_read_timeout: 500ms
services:
  users:
    instances: ["{users}"]
  orders:
    instances: ["{orders}", "{orders_b}"]
  dead:
    instances: ["http://{refused}"]
    connect_timeout: 1s
  slow:
    instances: ["{users}"]
    request_timeout: 300ms
routes:
  - name: stream
    match: {{ path_prefix: /stream }}
    service: orders
  - name: users-admin-host
    match: {{ path_prefix: /, host: admin.example.com }}
    service: orders
  - name: by-service
    match: {{ path: "/api/v1/{{service}}/{{*rest}}" }}
    service: "{{service}}"
  - name: users-read
    match: {{ path_prefix: /users, methods: [GET, HEAD] }}
    service: users
  - name: orders
    match: {{ path_prefix: /orders }}
    service: orders
  - name: dead
    match: {{ path_prefix: /dead }}
    service: dead
  - name: slow
    match: {{ path_prefix: /slow }}
    service: slow
  - name: admin
    match: {{ path_prefix: /admin }}
    service: users
"#,
        users = users.url(),
        orders = orders.url(),
        orders_b = orders_b.url(),
    );
    Setup {
        gateway: Gateway::start(&config),
        users,
        orders,
        orders_b,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_prefix_host_method_and_pattern() {
    let s = setup().await;
    let reply = get(&s.gateway.url("/users/42?x=1")).await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(echo["upstream"], "users");
    assert_eq!(echo["target"], "/users/42?x=1");
    assert_eq!(echo["method"], "GET");

    let post = Request::post(s.gateway.url("/users/42"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request");
    send(&http1_client(), post)
        .await
        .assert_gateway_error(404, "NO_ROUTE");

    let by_host = Request::get(s.gateway.url("/users/1"))
        .header("host", "admin.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        send(&http1_client(), by_host).await.json()["upstream"],
        "orders"
    );

    let by_param = get(&s.gateway.url("/api/v1/users/profile/7")).await.json();
    assert_eq!(by_param["upstream"], "users");
    assert_eq!(by_param["target"], "/api/v1/users/profile/7");

    get(&s.gateway.url("/api/v1/nosuch/x"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");
    get(&s.gateway.url("/nowhere"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");
    // Prefixes match whole segments.
    get(&s.gateway.url("/usersx"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_take_turns() {
    let s = setup().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&s.gateway.url("/orders")).await.json()["upstream"].clone());
    }
    assert_eq!(seen, ["orders", "orders-b", "orders", "orders-b"]);
    assert_eq!(s.orders.requests(), 2);
    assert_eq!(s.orders_b.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_generated_passed_upstream_and_returned() {
    let s = setup().await;
    let reply = get(&s.gateway.url("/users/1")).await;
    let id = reply
        .header("x-request-id")
        .expect("a request id")
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(reply.json()["headers"]["x-request-id"][0], id.as_str());

    let again = get(&s.gateway.url("/users/1")).await;
    assert_ne!(
        again.header("x-request-id"),
        Some(id.as_str()),
        "ids are unique"
    );

    let chosen = Request::get(s.gateway.url("/users/1"))
        .header("x-request-id", "client-chosen-42")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(&http1_client(), chosen).await;
    assert_eq!(reply.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(
        reply.json()["headers"]["x-request-id"][0],
        "client-chosen-42"
    );

    let line = s
        .gateway
        .wait_for_log(
            &["\"request_id\":\"client-chosen-42\"", "\"duration_us\""],
            Duration::from_secs(5),
        )
        .expect("an access-log line for the request");
    assert!(line.contains("\"status\":200"), "{line}");
    assert!(line.contains("\"route\":\"users-read\""), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_removed() {
    let s = setup().await;
    let request = Request::get(s.gateway.url("/users/1"))
        .header("host", "shop.example.com:8080")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let echo = send(&http1_client(), request).await.json();
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], "shop.example.com:8080");
    assert_eq!(
        headers["host"][0],
        s.users.address.to_string(),
        "upstream gets its own host"
    );
    assert_eq!(headers["x-kept"][0], "yes");
    for dropped in ["x-drop-me", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            headers.get(dropped).is_none(),
            "{dropped} reached the upstream: {echo}"
        );
    }
    let connection: Vec<String> = headers["connection"]
        .as_array()
        .map(|values| values.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    assert!(
        connection.iter().all(|value| !value.contains("x-drop-me")),
        "the client's Connection header reached the upstream: {connection:?}"
    );

    let reply = get(&s.gateway.url("/users/hop")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.header("x-hop-secret").is_none(),
        "named in the upstream's Connection"
    );
    assert!(reply.header("keep-alive").is_none());
    assert_eq!(reply.header("x-upstream"), Some("users"));
}

#[tokio::test(flavor = "multi_thread")]
async fn paths_are_normalised_before_routing() {
    let s = setup().await;
    let echo = get(&s.gateway.url("/public/../admin//panel/./x"))
        .await
        .json();
    assert_eq!(echo["target"], "/admin/panel/x");
    let echo = get(&s.gateway.url("/%61dmin/%7Euser")).await.json();
    assert_eq!(echo["target"], "/admin/~user");

    for bad in [
        "/admin%2Fx",
        "/admin%5Cx",
        "/admin%00",
        "/../admin",
        "/a/%2e%2e/%2e%2e/admin",
    ] {
        get(&s.gateway.url(bad))
            .await
            .assert_gateway_error(400, "BAD_PATH");
    }
    assert_eq!(
        s.users.requests(),
        2,
        "refused paths never reach an upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_clients_are_served_and_forwarded_as_http1() {
    let s = setup().await;
    let client = http2_client();
    for _ in 0..3 {
        let request = Request::get(s.gateway.url("/users/h2"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = client.request(request).await.expect("h2 response");
        assert_eq!(response.version(), Version::HTTP_2);
        assert!(response.headers().contains_key("x-request-id"));
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["target"], "/users/h2");
    }
    let request = Request::get(s.gateway.url("/nowhere"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(&client, request)
        .await
        .assert_gateway_error(404, "NO_ROUTE");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_stream_both_ways() {
    let s = setup().await;
    let size = 24 * 1024 * 1024 + 17;
    let upload: Vec<u8> = (0..size).map(pattern_byte).collect();
    let expected = checksum(&upload, 0);
    let request = Request::post(s.gateway.url("/orders/upload"))
        .body(Full::new(Bytes::from(upload)))
        .expect("request");
    let echo = send(&http1_client(), request).await.json();
    assert_eq!(echo["body_bytes"], size);
    assert_eq!(echo["body_checksum"], expected);

    let size = 48 * 1024 * 1024;
    let request = Request::get(s.gateway.url(&format!("/stream?bytes={size}")))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = http1_client().request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0usize;
    let mut mismatch = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            if mismatch.is_none()
                && let Some(offset) = data
                    .iter()
                    .enumerate()
                    .position(|(i, &b)| b != pattern_byte(received + i))
            {
                mismatch = Some(received + offset);
            }
            received += data.len();
        }
    }
    assert_eq!(received, size);
    assert_eq!(mismatch, None, "streamed bytes arrive unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_get_502_and_504() {
    let s = setup().await;
    let refused = get(&s.gateway.url("/dead/x")).await;
    let body = refused.assert_gateway_error(502, "UPSTREAM_UNAVAILABLE");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no internal address leaks: {body}"
    );

    let started = Instant::now();
    let slow = get(&s.gateway.url("/slow?ms=3000")).await;
    slow.assert_gateway_error(504, "UPSTREAM_TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at the timeout, not after the upstream"
    );

    // The gateway keeps serving.
    assert_eq!(get(&s.gateway.url("/users/after")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_mid_body_gets_408() {
    let s = setup().await;
    let head = format!(
        "POST /orders/upload HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
        s.gateway.address
    );
    let started = Instant::now();
    let answer = raw_exchange(s.gateway.address, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"REQUEST_TIMEOUT\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_without_a_route() {
    let s = setup().await;
    let reply = get(&s.gateway.url("/health")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    assert_eq!(s.users.requests(), 0);
}
