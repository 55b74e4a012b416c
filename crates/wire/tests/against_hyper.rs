//! Differential test against hyper's HTTP/1.1 server on the question that matters for
//! smuggling: given the same bytes, do both take the same request with the same body, or refuse
//! it? Where they differ, the case says why we differ on purpose; any other difference fails.

use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use gateway_wire::client::{HeadLimits, parse_request_head};
use gateway_wire::{BodyDecoder, Decoded};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a parser made of the bytes: the first request's target and body, or a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Request { target: String, body: Vec<u8> },
    Refused,
}

fn ours(input: &[u8]) -> Verdict {
    let limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_header_lines: 100,
    };
    let mut buffer = BytesMut::from(input);
    let Ok(Some(head)) = parse_request_head(&mut buffer, limits) else {
        return Verdict::Refused;
    };
    // Framing the edge does not trust is refused with 400 before the body is read.
    let Some(framing) = head.body else {
        return Verdict::Refused;
    };
    let mut decoder = BodyDecoder::new(framing);
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buffer) {
            Ok(Decoded::Data(bytes)) => body.extend_from_slice(&bytes),
            Ok(Decoded::End) => break,
            Ok(Decoded::NeedMore) | Err(_) => return Verdict::Refused,
        }
    }
    Verdict::Request {
        target: head.parts.uri.to_string(),
        body,
    }
}

async fn hyper_verdict(input: &[u8]) -> Verdict {
    let (client, server) = tokio::io::duplex(1 << 20);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let target = request.uri().to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|all| all.to_bytes());
            let _ = sender.send((target, body.ok()));
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
        }
    });
    let connection = tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(server), service),
    );
    let (mut read, mut write) = tokio::io::split(client);
    write.write_all(input).await.expect("written");
    write.shutdown().await.expect("shut down");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        read.read_to_end(&mut answer),
    )
    .await;
    connection.abort();
    match receiver.try_recv() {
        Ok((target, Some(body))) => Verdict::Request {
            target,
            body: body.to_vec(),
        },
        _ => Verdict::Refused,
    }
}

/// Each case, and why we differ from hyper where we do (`None`: we must agree).
const CASES: &[(&str, &[u8], Option<&str>)] = &[
    ("plain GET", b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", None),
    ("length body", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", None),
    (
        "chunked body",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        None,
    ),
    (
        "chunk extension and trailer",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nt: 1\r\n\r\n",
        None,
    ),
    (
        "Content-Length with Transfer-Encoding",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Some("RFC 9112 6.1 lets a server take chunked and drop the length; a proxy that does can be \
              read differently by the next hop, so the edge refuses both together"),
    ),
    (
        "conflicting Content-Length",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        None,
    ),
    (
        "Content-Length list of equal values",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        None,
    ),
    (
        "signed Content-Length",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        None,
    ),
    (
        "Transfer-Encoding not ending in chunked",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        None,
    ),
    (
        "chunked twice",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        Some("a repeated coding is how smuggling probes differ between hops; the edge refuses \
              any Transfer-Encoding but a lone chunked"),
    ),
    (
        "chunk size overflow",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        None,
    ),
    (
        "bare LF after the chunk size",
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        None,
    ),
    (
        "obs-fold",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n",
        None,
    ),
    (
        "space before the colon",
        b"GET /a HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
        None,
    ),
    ("HTTP/1.0 with a body", b"POST /a HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", None),
    ("a body cut short", b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nhi", None),
];

#[tokio::test]
async fn the_gateway_frames_bodies_as_hyper_does_or_says_why_not() {
    let mut unexplained = Vec::new();
    for (name, input, why_we_differ) in CASES {
        let ours = ours(input);
        let theirs = hyper_verdict(input).await;
        match (ours == theirs, why_we_differ) {
            (true, None) => {}
            (false, Some(_)) => {}
            (true, Some(reason)) => unexplained.push(format!(
                "{name}: both {ours:?}, but the case says we differ: {reason}"
            )),
            (false, None) => unexplained.push(format!("{name}: ours {ours:?}, hyper's {theirs:?}")),
        }
    }
    assert!(unexplained.is_empty(), "{}", unexplained.join("\n"));
}
