//! Request hygiene end to end, over raw TCP: messages whose framing or Host could be read two
//! ways are refused and their connection closed, so nothing smuggled behind them reaches an
//! upstream; the size limits answer 431 and 414; a client that never finishes its request head
//! is cut off.
//!
//! Every refusal is the gateway's JSON error, whether the parser could not read the head (too
//! many lines) or the edge checks refused what it read: the parser keeps framing headers as
//! sent, folding only repeated identical `Content-Length` lines into one.

use std::time::Duration;

use gateway_tests::upstream::checksum;
use gateway_tests::{Gateway, RawReplies, Reply, Upstream, get, raw_replies, route_everything_to};

/// Pipelined behind each request in the same write: a server that kept reading after a refusal
/// would answer it (and then close), and a smuggled prefix glued to it would reach the upstream.
const NEXT: &str = "GET /next HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n";

/// How long a test waits for the gateway to close a connection.
const WAIT: Duration = Duration::from_secs(5);

/// The `header_read_timeout` of every test but the slowloris one. It also bounds how long a new
/// connection may stay silent, so it is longer than [`WAIT`]: a close seen within the wait was
/// the gateway's decision, not a timeout.
const PATIENT: &str = "10s";

struct Setup {
    gateway: Gateway,
    upstream: Upstream,
}

/// A gateway routing everything to one echo upstream, with small edge limits.
async fn setup(header_read_timeout: &str) -> Setup {
    let upstream = Upstream::start("echo").await;
    let limits = format!(
        "limits:
  max_header_bytes: 1KiB
  max_headers: 10
  max_uri_bytes: 256
  header_read_timeout: {header_read_timeout}
  body_read_timeout: 500ms"
    );
    let config = route_everything_to(&upstream.url(), &limits);
    Setup {
        gateway: Gateway::start(&config),
        upstream,
    }
}

/// Sends `request` with [`NEXT`] behind it in the same write, and reads until the gateway closes
/// the connection.
async fn pipelined(s: &Setup, request: &str) -> RawReplies {
    raw_replies(
        s.gateway.address,
        format!("{request}{NEXT}").as_bytes(),
        WAIT,
    )
    .await
}

/// The one response in `replies`, failing if there are none or more.
fn only_response(replies: &RawReplies, case: &str) -> Reply {
    let mut responses = replies.responses();
    assert_eq!(responses.len(), 1, "{case}: {}", replies.text);
    responses.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn framing_and_host_violations_are_refused_and_the_connection_closed() {
    let s = setup(PATIENT).await;
    let cases = [
        (
            "two Transfer-Encoding lines",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "BAD_FRAMING",
        ),
        (
            "two Transfer-Encoding lines, the last not chunked",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\
             Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            "BAD_FRAMING",
        ),
        (
            "a coding before chunked",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
             0\r\n\r\n",
            "BAD_FRAMING",
        ),
        (
            "chunked twice in one line",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked, chunked\r\n\
             \r\n0\r\n\r\n",
            "BAD_FRAMING",
        ),
        (
            "an unknown coding",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: xchunked\r\n\r\n\
             0\r\n\r\n",
            "BAD_FRAMING",
        ),
        (
            "two different Content-Lengths",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\
             Content-Length: 6\r\n\r\nhello",
            "BAD_FRAMING",
        ),
        (
            "a Content-Length list",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5, 5\r\n\r\nhello",
            "BAD_FRAMING",
        ),
        (
            // `/health` answers without a route, but not before the edge checks.
            "a framing violation on /health",
            "POST /health HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked, chunked\r\n\
             \r\n0\r\n\r\n",
            "BAD_FRAMING",
        ),
        (
            "HTTP/1.1 without Host",
            "GET /a HTTP/1.1\r\n\r\n",
            "BAD_HOST",
        ),
        (
            "two Host lines",
            "GET /a HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
            "BAD_HOST",
        ),
    ];
    for (case, request, code) in cases {
        let replies = pipelined(&s, request).await;
        let reply = only_response(&replies, case);
        reply.assert_gateway_error(400, code);
        assert_eq!(reply.header("connection"), Some("close"), "{case}");
        assert!(replies.closed, "{case}: the connection stayed open");
        assert_eq!(s.upstream.requests(), 0, "{case} reached the upstream");
    }
}

/// With both `Content-Length` and `Transfer-Encoding`, a parser that frames by one header while
/// the upstream frames by the other lets a request be smuggled. The gateway refuses the pair,
/// never reads the body, and closes the connection, so neither the request nor whatever the
/// other reading of its framing smuggles behind it reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn content_length_with_transfer_encoding_is_refused_before_any_upstream() {
    let s = setup(PATIENT).await;
    let cases = [
        (
            "Content-Length, then Transfer-Encoding",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding, then Content-Length",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        (
            // Read by length, the body is `0\r\n\r\nG` and `/next` follows; read as chunked, the
            // body is empty and a `GGET /next` request follows. Neither must reach the upstream.
            "CL.TE smuggling",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 6\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        ),
        (
            // Read by length, the body is `8\r\n` and a `SMUGGLED` request line follows.
            "TE.CL smuggling",
            "POST /a HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        (
            "lower-case names and LF-only lines",
            "POST /a HTTP/1.1\nhost: gateway.test\ncontent-length: 5\n\
             transfer-encoding: chunked\n\n0\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        let replies = pipelined(&s, request).await;
        let reply = only_response(&replies, case);
        reply.assert_gateway_error(400, "BAD_FRAMING");
        assert_eq!(reply.header("connection"), Some("close"), "{case}");
        assert!(replies.closed, "{case}: the connection stayed open");
        assert_eq!(s.upstream.requests(), 0, "{case} reached the upstream");
    }

    // Behind a clean request on the same connection, the verdicts stay paired with the requests.
    let clean = "GET /first HTTP/1.1\r\nHost: gateway.test\r\n\r\n";
    let ambiguous = "POST /a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\
                     Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let replies = pipelined(&s, &format!("{clean}{ambiguous}")).await;
    let responses = replies.responses();
    assert_eq!(responses.len(), 2, "{}", replies.text);
    assert_eq!(responses[0].json()["target"], "/first");
    responses[1].assert_gateway_error(400, "BAD_FRAMING");
    assert_eq!(responses[1].header("connection"), Some("close"));
    assert!(replies.closed, "the connection stayed open");
    assert_eq!(s.upstream.requests(), 1, "only the clean request went up");
}

/// Repeated identical lengths frame the body the same way whichever line a reader believes, so
/// the parser folds them into one: the request is served and the connection stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_identical_content_length_is_read_as_one() {
    let s = setup(PATIENT).await;
    let request = "POST /a HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 5\r\n\
                   Content-Length: 5\r\n\r\nhello";
    let replies = pipelined(&s, request).await;
    let responses = replies.responses();
    assert_eq!(responses.len(), 2, "{}", replies.text);
    let echo = responses[0].json();
    assert_eq!(echo["body_bytes"], 5);
    assert_eq!(echo["headers"]["content-length"], serde_json::json!(["5"]));
    assert_eq!(responses[1].json()["target"], "/next");
    assert_eq!(s.upstream.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn size_limits_answer_431_and_414() {
    // The limits leave framing intact, so the connection could be kept; the client ends it.
    const HEAD: &str = "Host: gateway.test\r\nConnection: close\r\n";
    let s = setup(PATIENT).await;
    let lines =
        |count: usize| -> String { (0..count).map(|i| format!("x-filler-{i}: 1\r\n")).collect() };
    let cases = [
        // With Host and Connection: one line over `max_headers`.
        (
            "too many header lines",
            format!("GET /a HTTP/1.1\r\n{HEAD}{}\r\n", lines(9)),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "too many header bytes",
            format!(
                "GET /a HTTP/1.1\r\n{HEAD}x-big: {}\r\n\r\n",
                "a".repeat(1100)
            ),
            431,
            "HEADERS_TOO_LARGE",
        ),
        (
            "too long a target",
            format!("GET /{} HTTP/1.1\r\n{HEAD}\r\n", "a".repeat(300)),
            414,
            "URI_TOO_LONG",
        ),
        // The parser stops at twice `max_headers` lines and answers itself.
        (
            "far too many header lines",
            format!("GET /a HTTP/1.1\r\n{HEAD}{}\r\n", lines(30)),
            431,
            "HEADERS_TOO_LARGE",
        ),
    ];
    for (number, (case, request, status, code)) in cases.into_iter().enumerate() {
        let replies = raw_replies(s.gateway.address, request.as_bytes(), WAIT).await;
        let reply = only_response(&replies, case);
        reply.assert_gateway_error(status, code);
        // Only the follow-ups below go up.
        assert_eq!(s.upstream.requests(), number, "{case} reached the upstream");

        let after = get(&s.gateway.url("/after")).await;
        assert_eq!(after.status, 200, "{case}: the gateway stopped serving");
    }
}

/// Slowloris: a client that opens a request head and never finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    let s = setup("300ms").await;
    let replies = raw_replies(
        s.gateway.address,
        b"GET /a HTTP/1.1\r\nHost: gateway.test\r\n",
        WAIT,
    )
    .await;
    // `header_read_timeout` passes and the connection closes without an answer.
    assert!(replies.closed, "still open after {WAIT:?}");
    assert!(replies.text.is_empty(), "{}", replies.text);
    assert!(
        replies.elapsed >= Duration::from_millis(200) && replies.elapsed < Duration::from_secs(2),
        "closed after {:?}, not at the 300ms timeout",
        replies.elapsed
    );
    assert_eq!(s.upstream.requests(), 0);

    assert_eq!(get(&s.gateway.url("/after")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_well_formed_chunked_body_is_forwarded() {
    let s = setup(PATIENT).await;
    let request = "POST /upload HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let replies = pipelined(&s, request).await;
    let responses = replies.responses();
    assert_eq!(
        responses.len(),
        2,
        "the connection stays usable: {}",
        replies.text
    );
    assert_eq!(responses[0].status, 200);
    let echo = responses[0].json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"], 11);
    assert_eq!(echo["body_checksum"], checksum(b"hello world", 0));
    assert_eq!(responses[1].json()["target"], "/next");
    assert_eq!(s.upstream.requests(), 2);
}

/// A body the client framed wrongly is the client's fault, not the instance's: 400, and the
/// connection closed, since where its next request starts is unknown.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let s = setup(PATIENT).await;
    let extension = "x".repeat(64 * 1024);
    let cases = [
        ("a 0x prefix", "0x5\r\nhello\r\n0\r\n\r\n".to_owned()),
        (
            "a size that overflows",
            "10000000000000000\r\nhello\r\n0\r\n\r\n".to_owned(),
        ),
        ("bare LF line ends", "5\nhello\n0\n\n".to_owned()),
        (
            "a 64 KiB chunk extension",
            format!("5;{extension}\r\nhello\r\n0\r\n\r\n"),
        ),
    ];
    for (case, body) in cases {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let replies = pipelined(&s, &request).await;
        let reply = only_response(&replies, case);
        reply.assert_gateway_error(400, "BAD_REQUEST");
        assert_eq!(reply.header("connection"), Some("close"), "{case}");
    }
    assert_eq!(get(&s.gateway.url("/after")).await.status, 200);
}

/// `/..;/` is no dot segment to the gateway but is one to a Java backend, which strips the
/// parameter first: refused with `BAD_PATH` unless the route allows it.
#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_with_parameters_are_refused_unless_the_route_allows_them() {
    let upstream = Upstream::start("echo").await;
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:0\n\
         services:\n  backend:\n    instances: [\"{}\"]\n\
         routes:\n\
         \x20 - match: {{ path_prefix: /legacy }}\n    service: backend\n    allow_dot_segment_params: true\n\
         \x20 - match: {{ path_prefix: / }}\n    service: backend\n",
        upstream.url()
    );
    let gateway = Gateway::start(&config);
    for path in ["/public/..;/admin", "/.;/admin", "/public/%2e%2e;/admin"] {
        get(&gateway.url(path))
            .await
            .assert_gateway_error(400, "BAD_PATH");
    }
    assert_eq!(upstream.requests(), 0, "none reached the upstream");
    let reply = get(&gateway.url("/public/a;v=1/b")).await;
    assert_eq!(
        reply.json()["target"],
        "/public/a;v=1/b",
        "parameters elsewhere pass"
    );
    let reply = get(&gateway.url("/legacy/..;/x")).await;
    assert_eq!(
        reply.json()["target"],
        "/legacy/..;/x",
        "the route allows them"
    );
}

/// HTTP/1.0 predates `Host`, so its absence there is no violation.
#[tokio::test(flavor = "multi_thread")]
async fn http10_without_host_is_served() {
    let s = setup(PATIENT).await;
    let replies = raw_replies(s.gateway.address, b"GET /old HTTP/1.0\r\n\r\n", WAIT).await;
    let reply = only_response(&replies, "HTTP/1.0");
    assert_eq!(reply.status, 200, "{}", replies.text);
    let echo = reply.json();
    assert_eq!(echo["target"], "/old");
    assert_eq!(echo["upstream"], "echo");
    assert_eq!(s.upstream.requests(), 1);
}
