//! Upstream connections end to end: kept alive and reused, never reused with part of a response
//! still on them, replaced without a failed request when the instance closes them, and closed on
//! the gateway's side too when that happens while nothing needs them; and the HTTP/1.1 the
//! gateway reads from instances, written by hand: chunked, close-delimited and interim
//! responses, early answers, and broken ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{
    GATEWAY_WORKERS, Gateway, RawClient, Upstream, get, http1_client, raw_replies,
    route_everything_to, send,
};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads from `stream` into `received` until it holds at least `wanted` bytes; false if the
/// gateway closed the connection first.
async fn read_at_least(stream: &mut TcpStream, received: &mut Vec<u8>, wanted: usize) -> bool {
    let mut buffer = [0u8; 16 * 1024];
    while received.len() < wanted {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
    }
    true
}

/// Reads from `stream` into `received` until it holds a whole request head, and says where the
/// head ends; `None` if the gateway closed the connection first.
async fn read_request_head(stream: &mut TcpStream, received: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let wanted = received.len() + 1;
        if !read_at_least(stream, received, wanted).await {
            return None;
        }
    }
}

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
                if read_request_head(&mut stream, &mut Vec::new())
                    .await
                    .is_none()
                {
                    return;
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
                let mut buffer = [0u8; 1024];
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

/// How a [`ScriptedUpstream`] answers one request: the pieces it writes, a moment apart so
/// that the gateway reads them separately, and what it does after.
struct Script {
    pieces: Vec<&'static str>,
    /// Close the connection after answering (after reading what the client still sends, as
    /// nginx's lingering close does, so that the answer is not lost to a reset).
    close: bool,
}

/// A raw HTTP/1.1 upstream that answers each request on a connection, one after another, as
/// `script` says for its path. It reads a request's head and, when it answers normally, a body
/// framed by `Content-Length`; it counts the connections it accepted.
struct ScriptedUpstream {
    url: String,
    accepted: Arc<AtomicUsize>,
}

async fn scripted_upstream(script: fn(&str) -> Script) -> ScriptedUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepted_count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            accepted_count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut received = Vec::new();
                loop {
                    let Some(end) = read_request_head(&mut stream, &mut received).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let script = script(&path);
                    if !script.close {
                        let length: usize = head
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .map_or(0, |value| value.trim().parse().expect("a length"));
                        if !read_at_least(&mut stream, &mut received, end + length).await {
                            return;
                        }
                        received.drain(..end + length);
                    }
                    for piece in script.pieces {
                        if stream.write_all(piece.as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(15)).await;
                    }
                    if script.close {
                        let lingering = async {
                            let mut buffer = [0u8; 16 * 1024];
                            while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
                        };
                        let _ = tokio::time::timeout(Duration::from_millis(500), lingering).await;
                        return;
                    }
                }
            });
        }
    });
    ScriptedUpstream {
        url: format!("http://{address}"),
        accepted,
    }
}

fn scripts(path: &str) -> Script {
    let (pieces, close) = match path {
        "/chunked" => (
            vec![
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                "lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n",
                "\r\n",
            ],
            false,
        ),
        "/until-close" => (vec!["HTTP/1.1 200 OK\r\n\r\nall ", "of it"], true),
        "/interim" => (
            vec![
                "HTTP/1.1 100 Continue\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nfinally",
            ],
            false,
        ),
        "/http10" => (
            vec!["HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold"],
            true,
        ),
        "/garbage" => (vec!["SSH-2.0-OpenSSH_9.6\r\n\r\n"], true),
        // Part of the body, then silence, the connection left open.
        "/stall" => (
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nsome"],
            false,
        ),
        "/truncated" => (
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"],
            true,
        ),
        "/early" => (
            vec![
                "HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo long",
            ],
            true,
        ),
        _ => (
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            false,
        ),
    };
    Script { pieces, close }
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_close_delimited_and_interim_responses_arrive_whole() {
    let upstream = scripted_upstream(scripts).await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url, ""));
    for _ in 0..3 {
        let reply = get(&gateway.url("/chunked")).await;
        assert_eq!(
            (reply.status.as_u16(), &reply.body[..]),
            (200, &b"hello world"[..])
        );
        assert!(
            !reply.headers.contains_key("x-trailer"),
            "trailers are not relayed"
        );
    }
    assert!(
        upstream.accepted.load(Ordering::SeqCst) <= GATEWAY_WORKERS,
        "a chunked response leaves its connection reusable"
    );
    let reply = get(&gateway.url("/interim")).await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (200, &b"finally"[..])
    );
    for (path, body) in [("/until-close", "all of it"), ("/http10", "old")] {
        let before = upstream.accepted.load(Ordering::SeqCst);
        let requests = 4;
        for _ in 0..requests {
            let reply = get(&gateway.url(path)).await;
            assert_eq!(
                (reply.status.as_u16(), &reply.body[..]),
                (200, body.as_bytes()),
                "{path}"
            );
        }
        // Each worker may still hold one connection from before; these responses end theirs.
        assert!(
            upstream.accepted.load(Ordering::SeqCst) >= before + requests - GATEWAY_WORKERS,
            "{path}: a connection the response ends is not reused"
        );
    }
}

/// An instance that goes silent in the middle of a body holds the client only until the
/// service's `read_timeout`: the response then ends short and the connection closes.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_silent_mid_body_is_cut_off_at_read_timeout() {
    let upstream = scripted_upstream(scripts).await;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\n\
         services:\n  backend:\n    instances: [\"{}\"]\n    read_timeout: 300ms\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    service: backend\n",
        upstream.url
    );
    let gateway = Gateway::start(&config);
    let replies = raw_replies(
        gateway.address,
        b"GET /stall HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        replies.text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        replies.text
    );
    assert!(replies.text.ends_with("some"), "{}", replies.text);
    assert!(
        replies.closed,
        "still open after {:?}, the instance silent",
        replies.elapsed
    );
    assert!(
        gateway
            .wait_for_log(&["sent nothing for 300ms"], Duration::from_secs(5))
            .is_some(),
        "the log says why"
    );
    assert_eq!(get(&gateway.url("/after")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_response_costs_its_request_only() {
    let upstream = scripted_upstream(scripts).await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url, ""));
    let reply = get(&gateway.url("/garbage")).await;
    reply.assert_gateway_error(502, "UPSTREAM_FAILED");
    assert!(
        gateway
            .wait_for_log(
                &["unreadable response", "not an HTTP/1.1 response head"],
                Duration::from_secs(5)
            )
            .is_some(),
        "the log says why; the log:\n{}",
        gateway.logs().join("\n")
    );

    // The head came and the status with it; the body's end never does. The client must see a
    // broken body, not a short one passed off as complete.
    let request = Request::get(gateway.url("/truncated"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = http1_client()
        .request(request)
        .await
        .expect("a response head");
    assert_eq!(response.status(), 200);
    assert!(
        response.into_body().collect().await.is_err(),
        "a truncated body fails"
    );

    let reply = get(&gateway.url("/after")).await;
    assert_eq!((reply.status.as_u16(), &reply.body[..]), (200, &b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_before_the_whole_body_reaches_the_client() {
    let upstream = scripted_upstream(scripts).await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url, ""));
    // The client announces 4 MiB and sends 64 KiB; the instance answers without reading any.
    let mut request =
        b"POST /early HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4194304\r\n\r\n".to_vec();
    request.resize(request.len() + 64 * 1024, b'x');
    let replies = raw_replies(gateway.address, &request, Duration::from_secs(10)).await;
    let responses = replies.responses();
    assert_eq!(responses.len(), 1, "{}", replies.text);
    assert_eq!(
        (responses[0].status.as_u16(), &responses[0].body[..]),
        (413, &b"too long"[..])
    );

    let reply = get(&gateway.url("/after")).await;
    assert_eq!(reply.status, 200);
}

/// An upstream that answers the first request on each connection and closes the connection,
/// unanswered, when a second one arrives on it: the instance that closes an idle connection
/// just as the gateway picks it. It counts the requests it dropped that way.
async fn one_answer_per_connection() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let dropped = Arc::new(AtomicUsize::new(0));
    let dropped_count = dropped.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let dropped_count = dropped_count.clone();
            tokio::spawn(async move {
                // Heads only: the requests that get an answer here have no body.
                for answered in [true, false] {
                    if read_request_head(&mut stream, &mut Vec::new())
                        .await
                        .is_none()
                    {
                        return;
                    }
                    if !answered {
                        dropped_count.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    let response = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh";
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{address}"), dropped)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_met_by_a_just_closed_connection_is_resent_only_if_that_is_safe() {
    let (upstream, dropped) = one_answer_per_connection().await;
    let gateway = Gateway::start(&route_everything_to(&upstream, ""));
    // One client connection, so one worker and its one idle upstream connection at a time:
    // every request after the first meets a connection the instance is about to close. A
    // pooled client would not do: it may open a second connection, which another worker takes.
    let mut client = RawClient::connect(&gateway).await;
    for (index, method) in ["GET", "GET", "OPTIONS", "DELETE"].into_iter().enumerate() {
        client
            .send(&format!(
                "{method} /safe/{index} HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
            ))
            .await;
        let reply = client.response().await;
        assert_eq!(reply.status, 200, "{method} is resent on a new connection");
    }
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        3,
        "three requests met a closing connection"
    );

    // A POST may have been acted on: it is not sent twice.
    client
        .send("POST /unsafe HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 8\r\n\r\npay once")
        .await;
    client
        .response()
        .await
        .assert_gateway_error(502, "UPSTREAM_FAILED");
    assert_eq!(dropped.load(Ordering::SeqCst), 4);
}
