//! Client connections end to end, over raw TCP: an idle keep-alive connection is parked (its
//! buffers and request state are dropped) and picks up its next request as if nothing happened, whatever
//! arrives next: a request, a pipelined pair, a head in pieces, an HTTP/1.0 keep-alive request.
//! A client's `Connection: close` is honoured. Parking never cuts a request that is still being
//! read or answered, idle connections (HTTP/2 ones too) close after `idle_timeout`, and a
//! shutdown closes parked connections at once while in-flight requests finish. That a quiet
//! connection really gives its buffers back is shown in-process, by gateway-server's tests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{Gateway, RawClient, Reply, Upstream, route_everything_to};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than a quiet connection waits before it is parked (100ms).
const PAST_PARKING: Duration = Duration::from_millis(400);

/// How long a test waits for an answer or a close.
const WAIT: Duration = Duration::from_secs(10);

async fn setup(limits: &str, log: &str) -> (Gateway, Upstream) {
    let upstream = Upstream::start("echo").await;
    let config = route_everything_to(&upstream.url(), &format!("limits:\n{limits}"));
    (Gateway::start_logging(&config, log), upstream)
}

fn target(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()["target"]
        .as_str()
        .expect("the echo names the target")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parked_connection_serves_its_next_requests_as_before() {
    let (gateway, upstream) = setup("  idle_timeout: 30s", "info").await;
    let mut client = RawClient::connect(&gateway).await;

    assert_eq!(target(&client.get("/first").await), "/first");
    tokio::time::sleep(PAST_PARKING).await;

    assert_eq!(target(&client.get("/second").await), "/second");
    tokio::time::sleep(PAST_PARKING).await;

    // Two requests in one write, right after parking.
    client
        .send(
            "GET /third HTTP/1.1\r\nHost: gateway.test\r\n\r\n\
             GET /fourth HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        )
        .await;
    assert_eq!(target(&client.response().await), "/third");
    assert_eq!(target(&client.response().await), "/fourth");
    tokio::time::sleep(PAST_PARKING).await;

    // A head that starts before a quiet spell and ends after it.
    client.send("GET /split HTTP/1.1\r\nHo").await;
    tokio::time::sleep(PAST_PARKING).await;
    client.send("st: gateway.test\r\n\r\n").await;
    assert_eq!(target(&client.response().await), "/split");

    assert_eq!(upstream.requests(), 5);
    assert_eq!(
        upstream.connections(),
        1,
        "one upstream connection throughout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_1_0_keep_alive_survives_parking_and_close_is_honoured() {
    let (gateway, _upstream) = setup("  idle_timeout: 30s", "info").await;
    let mut client = RawClient::connect(&gateway).await;

    // HTTP/1.0 keeps the connection only when asked to.
    client
        .send("GET /old HTTP/1.0\r\nHost: gateway.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(target(&client.response().await), "/old");
    tokio::time::sleep(PAST_PARKING).await;
    client
        .send("GET /older HTTP/1.0\r\nHost: gateway.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    assert_eq!(target(&client.response().await), "/older");

    // A client that asks to close gets its answer, then the close, parked or not.
    client
        .send("GET /last HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(target(&client.response().await), "/last");
    let closed = client.closed_within(WAIT).await;
    assert!(
        closed.is_some_and(|after| after < Duration::from_secs(1)),
        "closed after {closed:?}, not right after the answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_is_never_parked_in_the_middle_of_a_request() {
    let (gateway, _upstream) = setup("  idle_timeout: 30s", "info").await;
    let mut client = RawClient::connect(&gateway).await;

    // An answer slower than the parking delay: the connection is quiet but busy (that it is
    // not parked meanwhile is shown in-process, by gateway-server's own tests).
    assert_eq!(target(&client.get("/slow?ms=600").await), "/slow?ms=600");

    // A body that pauses past the parking delay.
    client
        .send("POST /upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 10\r\n\r\nhello")
        .await;
    tokio::time::sleep(PAST_PARKING).await;
    client.send("world").await;
    let reply = client.response().await;
    assert_eq!(target(&reply), "/upload");
    assert_eq!(reply.json()["body_bytes"], 10, "{reply:?}");

    assert_eq!(target(&client.get("/after").await), "/after");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_close_after_idle_timeout_and_silent_ones_after_header_read_timeout() {
    let (gateway, _upstream) = setup(
        "  header_read_timeout: 300ms\n  idle_timeout: 1500ms",
        "info",
    )
    .await;

    // A client that connects and never sends: the head's deadline applies.
    let mut silent = RawClient::connect(&gateway).await;
    let closed = silent.closed_within(WAIT).await.expect("closed");
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_millis(1400),
        "a silent connection closed after {closed:?}, not at the 300ms header_read_timeout"
    );

    // Between requests, the idle timeout applies, not the head's deadline.
    let mut idle = RawClient::connect(&gateway).await;
    assert_eq!(target(&idle.get("/one").await), "/one");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(target(&idle.get("/two").await), "/two");
    let closed = idle.closed_within(WAIT).await.expect("closed");
    assert!(
        closed >= Duration::from_millis(1300) && closed < Duration::from_secs(4),
        "an idle connection closed after {closed:?}, not at the 1500ms idle_timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_parked_connections_and_finishes_requests_in_flight() {
    let (mut gateway, _upstream) = setup("  idle_timeout: 60s", "info").await;
    let mut parked = RawClient::connect(&gateway).await;
    assert_eq!(target(&parked.get("/idle").await), "/idle");
    tokio::time::sleep(PAST_PARKING).await;

    let mut busy = RawClient::connect(&gateway).await;
    busy.send("GET /slow?ms=800 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    gateway.signal("TERM");

    let closed = parked.closed_within(WAIT).await;
    assert!(
        closed.is_some_and(|after| after < Duration::from_millis(500)),
        "the parked connection closed after {closed:?}, not at once"
    );
    let reply = busy.response().await;
    assert_eq!(
        target(&reply),
        "/slow?ms=800",
        "the request in flight finished"
    );

    let deadline = Instant::now() + WAIT;
    while gateway.is_running() {
        assert!(
            Instant::now() < deadline,
            "still running {WAIT:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_closes_after_idle_timeout_but_not_under_a_long_stream() {
    let (gateway, _upstream) = setup("  idle_timeout: 1s", "info").await;
    let stream = TcpStream::connect(gateway.address).await.expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let mut connection = tokio::spawn(connection);
    let get = |path: &str| {
        Request::get(gateway.url(path))
            .body(Empty::<Bytes>::new())
            .expect("request")
    };

    // A stream that outlasts the idle timeout keeps the connection.
    let response = sender
        .send_request(get("/slow?ms=1600"))
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.expect("whole body");
    assert!(!body.to_bytes().is_empty());

    // Then, with nothing in flight, the gateway closes it.
    let quiet_since = Instant::now();
    tokio::time::timeout(WAIT, &mut connection)
        .await
        .expect("closed by the gateway")
        .expect("connection task")
        .expect("a clean close");
    let closed_after = quiet_since.elapsed();
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_secs(4),
        "closed {closed_after:?} after the last stream, not at the 1s idle_timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_once_the_body_is_wanted() {
    let (gateway, upstream) = setup("  idle_timeout: 30s", "info").await;
    let mut client = RawClient::connect(&gateway).await;
    client
        .send(
            "PUT /upload HTTP/1.1\r\nHost: gateway.test\r\nExpect: 100-continue\r\n\
             Content-Length: 11\r\n\r\n",
        )
        .await;
    let mut interim = [0u8; 25];
    tokio::time::timeout(WAIT, client.stream.read_exact(&mut interim))
        .await
        .expect("an interim answer in time")
        .expect("the connection stays readable");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send("hello world").await;
    let reply = client.response().await;
    assert_eq!(target(&reply), "/upload");
    assert_eq!(reply.json()["body_bytes"], 11, "{reply:?}");

    // Refused before the body is wanted: no 100, and the connection closes after the answer,
    // since the unread body would be taken for the next request.
    let mut client = RawClient::connect(&gateway).await;
    client
        .send("PUT /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
        .await;
    let reply = client.response().await;
    reply.assert_gateway_error(400, "BAD_HOST");
    assert!(client.closed_within(WAIT).await.is_some());
    assert!(!String::from_utf8_lossy(&client.received).contains("100 Continue"));
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_the_answer_left_unread_closes_the_connection() {
    let (gateway, upstream) = setup("  idle_timeout: 30s", "info").await;
    let mut client = RawClient::connect(&gateway).await;
    // `/health` answers without reading the body, half of which has not even been sent.
    client
        .send("POST /health HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 100\r\n\r\nhalf")
        .await;
    let reply = client.response().await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(
        client.closed_within(WAIT).await.is_some(),
        "the rest of the body must not be read as a request"
    );
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_head_gets_a_json_400_and_the_connection_closes() {
    let (gateway, upstream) = setup("  idle_timeout: 30s", "info").await;
    for head in [
        "GET / HTTP/1.1\r\nHost: gateway.test\r\nBad Name: x\r\n\r\n",
        "GET / HTTP/3.0\r\nHost: gateway.test\r\n\r\n",
        "\u{1}\u{2}\u{3} garbage\r\n\r\n",
    ] {
        let mut client = RawClient::connect(&gateway).await;
        client.send(head).await;
        let reply = client.response().await;
        let error = reply.assert_gateway_error(400, "BAD_REQUEST");
        assert!(
            error["request_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
        assert_eq!(reply.header("connection"), Some("close"), "{head:?}");
        assert!(client.closed_within(WAIT).await.is_some(), "{head:?}");
    }
    assert_eq!(upstream.requests(), 0);
    assert_eq!(
        target(&RawClient::connect(&gateway).await.get("/after").await),
        "/after"
    );
}

/// Reads from `client` until `done` says what arrived is complete.
async fn read_until(client: &mut RawClient, done: impl Fn(&[u8]) -> bool) -> (String, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(&client.received) {
        let mut buffer = [0u8; 64 * 1024];
        let read = tokio::time::timeout_at(deadline, client.stream.read(&mut buffer))
            .await
            .expect("an answer in time")
            .expect("the connection stays readable");
        if read == 0 {
            break;
        }
        client.received.extend_from_slice(&buffer[..read]);
    }
    let received = std::mem::take(&mut client.received);
    let head_end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    (head, received[head_end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_of_unknown_length_are_chunked_for_http_1_1_and_closed_for_http_1_0() {
    let (gateway, _upstream) = setup("  idle_timeout: 30s", "info").await;
    let bytes = 200_000;
    let expected: Vec<u8> = (0..bytes)
        .map(gateway_tests::upstream::pattern_byte)
        .collect();

    let mut client = RawClient::connect(&gateway).await;
    client
        .send(&format!(
            "GET /stream?bytes={bytes} HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
        ))
        .await;
    let (head, chunked) =
        read_until(&mut client, |received| received.ends_with(b"\r\n0\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut body = Vec::new();
    let mut rest = &chunked[..];
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a size line");
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).expect("hex"), 16)
            .expect("a chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    assert!(body == expected, "the chunked body differs");

    // The connection carries on: a HEAD answer keeps its length and has no body.
    client
        .send("HEAD /users HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await;
    let (head, body) = read_until(&mut client, |received| {
        received.windows(4).any(|w| w == b"\r\n\r\n")
    })
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.lines()
            .any(|line| line.starts_with("content-length: ") && line != "content-length: 0"),
        "{head}"
    );
    assert!(body.is_empty(), "a body after a HEAD answer");
    assert_eq!(target(&client.get("/after-head").await), "/after-head");

    let mut old = RawClient::connect(&gateway).await;
    old.send(&format!(
        "GET /stream?bytes={bytes} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    ))
    .await;
    let (head, body) = read_until(&mut old, |_| false).await;
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        !head.contains("transfer-encoding") && !head.contains("content-length"),
        "{head}"
    );
    assert!(body == expected, "the body ends with the connection");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_body_sent_in_pieces_reaches_the_upstream_whole() {
    let (gateway, _upstream) = setup("  idle_timeout: 30s", "info").await;
    let mut client = RawClient::connect(&gateway).await;
    let pieces = [
        "POST /upload HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "lo\r\n",
        "6;ext=1\r\n world\r\n0\r\n",
        "\r\nGET /next HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
    ];
    for piece in pieces {
        client.send(piece).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = client.response().await;
    assert_eq!(target(&reply), "/upload");
    let echo = reply.json();
    assert_eq!(echo["body_bytes"], 11, "{echo}");
    assert_eq!(
        echo["body_checksum"],
        gateway_tests::upstream::checksum(b"hello world", 0)
    );
    assert_eq!(target(&client.response().await), "/next");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_cancels_its_request() {
    let (gateway, upstream) =
        setup("  idle_timeout: 30s", "info,gateway_server::http1=debug").await;
    let mut client = RawClient::connect(&gateway).await;
    client
        .send("GET /slow?ms=5000 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    let noticed = gateway.wait_for_log(
        &["the client closed the connection before the answer"],
        Duration::from_secs(3),
    );
    assert!(noticed.is_some(), "the request went on without its client");
    assert_eq!(upstream.requests(), 1);

    let mut next = RawClient::connect(&gateway).await;
    assert_eq!(target(&next.get("/after").await), "/after");
}

/// A client that stops reading its answer holds it, and the upstream connection behind it, only
/// until `send_timeout`: then the gateway closes the connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_cut_off_at_send_timeout() {
    let (gateway, _upstream) = setup("  send_timeout: 300ms", "info").await;
    let total: usize = 64 << 20;
    let mut client = TcpStream::connect(gateway.address).await.expect("connects");
    client
        .write_all(
            format!("GET /stream?bytes={total} HTTP/1.1\r\nHost: gateway.test\r\n\r\n").as_bytes(),
        )
        .await
        .expect("written");
    // Long past send_timeout, reading nothing: the socket buffers fill and the gateway waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, client.read_to_end(&mut received)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {WAIT:?} of reading"
    );
    assert!(
        received.len() < total,
        "{} bytes arrived: the whole answer waited for the client",
        received.len()
    );
    assert!(
        gateway
            .wait_for_log(&["send_timeout"], Duration::from_secs(5))
            .is_some(),
        "the log says why"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_trickles_below_body_min_rate_is_cut_off_with_408() {
    // One byte every 100 ms: each pause well within body_read_timeout, but 10 B/s on average,
    // far below the 500 B/s floor once the first body_read_timeout has passed.
    let (gateway, _upstream) =
        setup("  body_read_timeout: 500ms\n  body_min_rate: 500", "info").await;
    let mut client = RawClient::connect(&gateway).await;
    client
        .send("POST /trickle HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 100000\r\n\r\n")
        .await;
    let started = Instant::now();
    // Trickle until the gateway answers; reading as soon as it does, before a write it no
    // longer reads could make its end of the connection reset.
    let mut received = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        tokio::select! {
            readable = client.stream.readable() => {
                readable.expect("the connection stays readable");
                let mut buffer = [0u8; 4096];
                match client.stream.try_read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => received.extend_from_slice(&buffer[..read]),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(error) => panic!("reading the answer: {error}"),
                }
                if received.windows(4).any(|window| window == b"\r\n\r\n") {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                let _ = client.stream.write_all(b"x").await;
            }
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the gateway let a 10 B/s body trickle for {took:?}"
    );
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        took > Duration::from_millis(400),
        "cut off after {took:?}, before the grace of one body_read_timeout"
    );
}
