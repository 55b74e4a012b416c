//! The gateway's side of a connection to an instance: the request head written into one
//! buffer, the response head parsed where it was read (header values keep sharing its bytes).
//!
//! Only what a reverse proxy needs: one request at a time per connection, no upgrades, and
//! trailers read past rather than relayed.

use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::SizeHint;

use crate::{BodyFraming, Malformed, has_token, tokens};

/// Most header lines a response head may have.
const MAX_HEADERS: usize = 100;
/// The largest response head read before the instance is judged broken.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Room in a parsed response's header map for the `X-Request-Id` the proxy adds and a few
/// headers from filters, so that adding them does not regrow the map.
pub const ROOM_FOR_ADDED: usize = 4;

/// How a request body is delimited on the way to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no header that says so: a GET and the like.
    Empty,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// The body's exact length when it is known, chunked when not, and nothing at all when there
    /// is no body. An empty body still gets `Content-Length: 0` when the method carries one or
    /// the client said so itself.
    pub fn for_body(
        method: &Method,
        headers: &HeaderMap,
        end_of_stream: bool,
        hint: &SizeHint,
    ) -> RequestFraming {
        if end_of_stream {
            let said_so = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
                || headers.contains_key(header::CONTENT_LENGTH);
            return if said_so {
                RequestFraming::Length(0)
            } else {
                RequestFraming::Empty
            };
        }
        match hint.exact() {
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        }
    }
}

/// What goes into a request's head, borrowed from the request as the filters left it.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingHead<'r> {
    pub method: &'r Method,
    /// The request target in origin form: the path and the query. It holds only printable
    /// ASCII: the client's target was parsed as a URI, normalising decodes only unreserved
    /// characters, and filters' paths and queries are checked as they are set.
    pub target: &'r str,
    pub headers: &'r HeaderMap,
    /// Sent as `Host` when `headers` has none.
    pub host: &'r HeaderValue,
}

/// Writes the request line and headers into `out`. The client's own framing headers give way to
/// `framing`'s: the body is delimited afresh for this connection.
pub fn encode_request_head(out: &mut Vec<u8>, head: OutgoingHead<'_>, framing: RequestFraming) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    debug_assert!(
        head.target.bytes().all(|b| b.is_ascii_graphic()),
        "a request target that could break the head: {:?}",
        head.target
    );
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !head.headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(head.host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in head.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty => {}
        RequestFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head, read off the connection.
#[derive(Debug)]
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub body: BodyFraming,
    /// Whether the connection may carry another request once this body has been read.
    pub reusable: bool,
}

/// Takes the head of the final response for a `method` request off the front of `buffer`,
/// skipping interim (1xx) responses; `None` while the head is still incomplete.
pub fn parse_response_head(
    buffer: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, Malformed> {
    loop {
        // Where each header's name and value sit in the buffer, so that the values can share
        // the buffer's bytes once it is frozen.
        let mut spans = [(0, 0, 0, 0); MAX_HEADERS];
        let (status, version, head_length, count) = {
            let mut slots = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buffer,
                &mut slots,
            );
            let head_length = match parsed {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD_BYTES => {
                    return Err("the response head is too large");
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
                Err(_) => return Err("not an HTTP/1.1 response head"),
            };
            let status = response
                .code
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or("invalid status code")?;
            let version = match response.version {
                Some(0) => Version::HTTP_10,
                _ => Version::HTTP_11,
            };
            let base = buffer.as_ptr() as usize;
            // Offsets within a head of at most MAX_HEAD_BYTES: they fit.
            let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
            for (span, parsed) in spans.iter_mut().zip(response.headers.iter()) {
                let name = offset(parsed.name.as_bytes());
                let value = offset(parsed.value);
                *span = (
                    name,
                    name + parsed.name.len() as u32,
                    value,
                    value + parsed.value.len() as u32,
                );
            }
            (status, version, head_length, response.headers.len())
        };
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err("the instance switched protocols, which the gateway does not relay");
            }
            // 100 Continue, 103 Early Hints: the final response follows.
            buffer.advance(head_length);
            continue;
        }
        let head = buffer.split_to(head_length).freeze();
        let mut headers = HeaderMap::with_capacity(count + ROOM_FOR_ADDED);
        for &(name_start, name_end, value_start, value_end) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
                .map_err(|_| "invalid header name")?;
            let value = head.slice(value_start as usize..value_end as usize);
            let value =
                HeaderValue::from_maybe_shared(value).map_err(|_| "invalid header value")?;
            headers.append(name, value);
        }
        let (body, reusable) = body_framing(method, status, version, &mut headers)?;
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(ResponseHead {
            parts,
            body,
            reusable,
        }));
    }
}

/// How the body of a final response is delimited (RFC 9112, 6.3), and whether the connection
/// outlives it.
fn body_framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(BodyFraming, bool), Malformed> {
    let mut reusable = match version {
        Version::HTTP_11 => !has_token(headers, &header::CONNECTION, b"close"),
        _ => has_token(headers, &header::CONNECTION, b"keep-alive"),
    };
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((BodyFraming::Empty, reusable));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Both framings at once is how responses are smuggled: the length is ignored, and the
        // connection goes with this response.
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            reusable = false;
        }
        let last_coding = tokens(headers, &header::TRANSFER_ENCODING).last();
        return Ok(
            if last_coding.is_some_and(|last| last.eq_ignore_ascii_case(b"chunked")) {
                (BodyFraming::Chunked, reusable)
            } else {
                (BodyFraming::UntilClose, false)
            },
        );
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&byte| byte == b',') {
            let part = part.trim_ascii();
            let parsed = std::str::from_utf8(part)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or("invalid content-length")?;
            if length.is_some_and(|earlier| earlier != parsed) {
                return Err("conflicting content-length values");
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        Some(0) => (BodyFraming::Empty, reusable),
        Some(length) => (BodyFraming::Length(length), reusable),
        None => (BodyFraming::UntilClose, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_size_line;

    fn head_of(bytes: &str, method: &Method) -> Result<Option<ResponseHead>, Malformed> {
        parse_response_head(&mut BytesMut::from(bytes), method)
    }

    fn framing_of(bytes: &str) -> (BodyFraming, bool) {
        let head = head_of(bytes, &Method::GET)
            .expect("a valid head")
            .expect("a complete head");
        (head.body, head.reusable)
    }

    #[test]
    fn request_bodies_are_framed_by_what_is_known_of_them() {
        let none = HeaderMap::new();
        let mut said_zero = HeaderMap::new();
        said_zero.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let exact = SizeHint::with_exact(5);
        let unknown = SizeHint::default();
        let cases = [
            (Method::GET, &none, true, &exact, RequestFraming::Empty),
            (Method::DELETE, &none, true, &unknown, RequestFraming::Empty),
            (
                Method::POST,
                &none,
                true,
                &unknown,
                RequestFraming::Length(0),
            ),
            (
                Method::GET,
                &said_zero,
                true,
                &unknown,
                RequestFraming::Length(0),
            ),
            (Method::PUT, &none, false, &exact, RequestFraming::Length(5)),
            (
                Method::POST,
                &none,
                false,
                &unknown,
                RequestFraming::Chunked,
            ),
        ];
        for (method, headers, end, hint, expected) in cases {
            assert_eq!(
                RequestFraming::for_body(&method, headers, end, hint),
                expected,
                "{method} end={end}"
            );
        }
    }

    #[test]
    fn request_heads_carry_their_own_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("up.test"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        let instance_host = HeaderValue::from_static("instance.test");
        let head = OutgoingHead {
            method: &Method::PUT,
            target: "/a/b?c=d",
            headers: &headers,
            host: &instance_host,
        };
        let mut out = b"left over".to_vec();
        let cases = [
            (RequestFraming::Empty, ""),
            (RequestFraming::Length(12), "content-length: 12\r\n"),
            (RequestFraming::Chunked, "transfer-encoding: chunked\r\n"),
        ];
        for (framing, framing_line) in cases {
            encode_request_head(&mut out, head, framing);
            assert_eq!(
                String::from_utf8_lossy(&out),
                format!(
                    "PUT /a/b?c=d HTTP/1.1\r\nhost: up.test\r\nx-two: a\r\nx-two: b\r\n{framing_line}\r\n"
                )
            );
        }
        let mut hostless = headers.clone();
        hostless.remove(header::HOST);
        let head = OutgoingHead {
            headers: &hostless,
            ..head
        };
        encode_request_head(&mut out, head, RequestFraming::Empty);
        assert!(
            out.starts_with(b"PUT /a/b?c=d HTTP/1.1\r\nhost: instance.test\r\n"),
            "the instance's own host when the request has none"
        );
        assert_eq!(chunk_size_line(0).as_ref(), b"0\r\n");
        assert_eq!(chunk_size_line(0x1f2e).as_ref(), b"1f2e\r\n");
        assert_eq!(chunk_size_line(usize::MAX).as_ref().len(), 18);
    }

    #[test]
    fn a_response_head_is_taken_off_the_buffer_once_complete() {
        let wire = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nhiHTTP/1.1";
        let mut buffer = BytesMut::new();
        for end in 1..wire.find("\r\n\r\n").expect("a head") + 4 {
            buffer.clear();
            buffer.extend_from_slice(&wire.as_bytes()[..end]);
            assert!(
                parse_response_head(&mut buffer, &Method::GET)
                    .expect("valid so far")
                    .is_none(),
                "complete at {end} bytes"
            );
        }
        let mut buffer = BytesMut::from(wire);
        let head = parse_response_head(&mut buffer, &Method::GET)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.parts.status, StatusCode::OK);
        assert_eq!(head.parts.version, Version::HTTP_11);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!((head.body, head.reusable), (BodyFraming::Length(2), true));
        assert_eq!(&buffer[..], b"hiHTTP/1.1", "the body and what follows stay");
    }

    #[test]
    fn interim_responses_are_skipped_and_upgrades_refused() {
        let head = head_of(
            "HTTP/1.1 100 Continue\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            &Method::POST,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert!(!head.parts.headers.contains_key("link"));
        assert!(
            head_of("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", &Method::POST)
                .expect("valid so far")
                .is_none()
        );
        assert!(
            head_of(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                &Method::GET
            )
            .is_err()
        );
    }

    #[test]
    fn response_bodies_are_delimited_as_rfc_9112_says() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                (BodyFraming::Length(10), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                (BodyFraming::Empty, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
                (BodyFraming::Length(7), true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                (BodyFraming::Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                (BodyFraming::Chunked, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                (BodyFraming::Chunked, false),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                (BodyFraming::UntilClose, false),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", (BodyFraming::UntilClose, false)),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                (BodyFraming::Empty, true),
            ),
            (
                "HTTP/1.1 304 Not Modified\r\n\r\n",
                (BodyFraming::Empty, true),
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n",
                (BodyFraming::Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                (BodyFraming::Length(1), false),
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n",
                (BodyFraming::Length(1), true),
            ),
        ];
        for (wire, expected) in cases {
            assert_eq!(framing_of(wire), expected, "{wire:?}");
        }
        let head = head_of(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            &Method::HEAD,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(head.body, BodyFraming::Empty, "a HEAD response has no body");
        assert_eq!(
            head.parts.headers[header::CONTENT_LENGTH],
            "10",
            "but keeps its length"
        );
        let smuggled = head_of(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            &Method::GET,
        )
        .expect("valid")
        .expect("complete");
        assert!(!smuggled.parts.headers.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn unreadable_response_heads_are_refused() {
        let too_many: String = (0..=MAX_HEADERS).map(|n| format!("x-{n}: 1\r\n")).collect();
        let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        let cases = [
            "SSH-2.0-OpenSSH\r\n\r\n".to_owned(),
            "HTTP/1.1 2000 OK\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_owned(),
            "HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n".to_owned(),
            format!("HTTP/1.1 200 OK\r\n{too_many}\r\n"),
            endless,
        ];
        for wire in cases {
            assert!(
                head_of(&wire, &Method::GET).is_err(),
                "{:?}",
                &wire[..wire.len().min(60)]
            );
        }
    }
}
