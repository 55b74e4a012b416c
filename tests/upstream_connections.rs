//! Upstream connections end to end: kept alive and reused, never reused with part of a response
//! still on them, replaced without a failed request when the instance closes them, and closed on
//! the gateway's side too when that happens while nothing needs them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{
    GATEWAY_WORKERS, Gateway, Upstream, get, http1_client, route_everything_to, send,
};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A raw HTTP/1.1 upstream that answers one request per connection with a keep-alive response,
/// then, after `linger`, closes its side of the connection: an instance with a short idle
/// timeout. It counts the connections it accepted, and those the gateway then closed too.
struct ClosingUpstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    closed_by_gateway: Arc<AtomicUsize>,
}

async fn closing_upstream(linger: Duration) -> ClosingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed_by_gateway = Arc::new(AtomicUsize::new(0));
    let (accepted_count, closed_count) = (accepted.clone(), closed_by_gateway.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let number = accepted_count.fetch_add(1, Ordering::SeqCst) + 1;
            let closed_count = closed_count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let body = format!("connection {number}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                tokio::time::sleep(linger).await;
                let _ = stream.shutdown().await;
                // Until the gateway closes its side, its socket sits in CLOSE_WAIT.
                while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
                closed_count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    ClosingUpstream {
        url: format!("http://{address}"),
        accepted,
        closed_by_gateway,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_share_one_upstream_connection() {
    let upstream = Upstream::start("kept").await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url(), ""));
    let client = http1_client();
    for index in 0..30 {
        // Bodiless answers (204, HEAD) end without the body being read: they must not cost
        // the connection either.
        let (method, path) = match index % 3 {
            0 => (Method::GET, format!("/echo/{index}")),
            1 => (Method::GET, "/status?code=204".to_owned()),
            _ => (Method::HEAD, format!("/echo/{index}")),
        };
        let request = Request::builder()
            .method(method)
            .uri(gateway.url(&path))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let reply = send(&client, request).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.status);
    }
    assert_eq!(upstream.requests(), 30);
    // Each worker keeps its own upstream connections, and the client may reach both.
    assert!(
        upstream.connections() <= GATEWAY_WORKERS,
        "one request at a time needs one upstream connection per worker, not {}",
        upstream.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_the_client_abandons_does_not_leak_into_the_next() {
    let upstream = Upstream::start("abandoned").await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url(), ""));
    for round in 0..3 {
        // Read a little of a large body, then go away.
        let request = Request::get(gateway.url("/stream?bytes=67108864"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = http1_client().request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|data| !data.is_empty()));
        drop(body);

        // The rest of that body must not be read as the next response.
        let reply = get(&gateway.url(&format!("/after/{round}"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["target"], format!("/after/{round}"));
    }
    assert!(
        upstream.connections() >= 4,
        "an abandoned response's connection is closed, not reused ({} connections)",
        upstream.connections()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_the_upstream_closed_while_idle_are_replaced_unnoticed() {
    let upstream = closing_upstream(Duration::from_millis(20)).await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url, ""));
    let client = http1_client();
    for index in 1..=10 {
        let request = Request::get(gateway.url("/idle"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let reply = send(&client, request).await;
        assert_eq!(reply.status, 200, "request {index}: {:?}", reply.body);
        assert_eq!(reply.body, format!("connection {index}").as_bytes());
        // Long enough for the upstream's close to arrive before the next request.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_the_upstream_closed_are_closed_on_the_gateway_side_too() {
    let upstream = closing_upstream(Duration::from_millis(50)).await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url, ""));
    let reply = get(&gateway.url("/once")).await;
    assert_eq!(reply.status, 200);
    // No request comes to pick the connection up again: the worker's sweep (every 5 s) must
    // notice the close on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while upstream.closed_by_gateway.load(Ordering::SeqCst) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway still holds the connection the upstream closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_reuse_a_bounded_set_of_connections() {
    let upstream = Upstream::start("busy").await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url(), ""));
    let client = http1_client();
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let client = client.clone();
        let url = gateway.url(&format!("/busy/{worker}"));
        clients.spawn(async move {
            for _ in 0..25 {
                let request = Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                assert_eq!(send(&client, request).await.status, 200);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("client task");
    }
    assert_eq!(upstream.requests(), 200);
    assert!(
        upstream.connections() <= 16,
        "8 clients at a time need at most 8 connections per worker, not one per request ({})",
        upstream.connections()
    );
}
