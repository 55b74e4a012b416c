//! The gateway's side of a connection from a client: request heads parsed where they were read
//! (the target and header values keep sharing the read buffer's bytes), and response heads
//! written into one buffer with the framing the body calls for.
//!
//! Framing headers are kept as the client sent them, so that the edge checks
//! (the proxy's `hygiene`) see exactly what is on the wire: a request with both
//! `Content-Length` and `Transfer-Encoding`, or with codings other than a lone `chunked`, is
//! refused there. Such a body is never read ([`IncomingHead::body`] is `None`), and the
//! connection closes after the answer, so nothing smuggled behind it is ever parsed as a request.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version, request};
use http_body::SizeHint;

use crate::{BodyFraming, has_token, plain_length};

/// Header lines parsed into a stack array; a configuration allowing more uses the heap.
const STACK_HEADER_LINES: usize = 128;

/// Room in a parsed header map for the headers added on the way: the proxy's `X-Forwarded-For`,
/// `-Proto`, `-Host` and `X-Request-Id`, and a few from filters. Growing the map would cost two
/// allocations and a rehash on every request.
pub const ROOM_FOR_ADDED: usize = 8;

/// The bounds on a request head, which the parse enforces before anything is built from it.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes buffered without a complete head before the head is refused.
    pub max_head_bytes: usize,
    /// Header lines parsed before the head is refused.
    pub max_header_lines: usize,
}

/// Why a request head cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x as RFC 9112 writes it.
    Malformed(&'static str),
    /// More header lines than [`HeadLimits::max_header_lines`].
    TooManyLines,
    /// No complete head within [`HeadLimits::max_head_bytes`], the request line complete.
    TooLarge,
    /// No complete request line within [`HeadLimits::max_head_bytes`].
    TargetTooLong,
}

/// A request head, read off the connection.
#[derive(Debug)]
pub struct IncomingHead {
    pub parts: request::Parts,
    /// How the body is delimited; `None` when its framing headers cannot be trusted, so it is
    /// not read at all.
    pub body: Option<BodyFraming>,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// Takes the next request head off the front of `buffer`; `None` while it is incomplete.
///
/// Nearly every head fits the stack arrays; only one with more lines than they hold, under a
/// limit that allows it, is parsed again into arrays on the heap.
pub fn parse_request_head(
    buffer: &mut BytesMut,
    limits: HeadLimits,
) -> Result<Option<IncomingHead>, HeadError> {
    let lines = limits.max_header_lines.max(1);
    let on_stack = lines.min(STACK_HEADER_LINES);
    let mut spans = [(0u32, 0u32, 0u32, 0u32); STACK_HEADER_LINES];
    let mut spans_on_heap = Vec::new();
    let located = {
        let mut slots =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADER_LINES];
        match locate(
            buffer,
            limits,
            &mut slots[..on_stack],
            &mut spans[..on_stack],
        ) {
            Err(HeadError::TooManyLines) if lines > STACK_HEADER_LINES => {
                let mut slots = Vec::new();
                slots.resize_with(lines, MaybeUninit::uninit);
                spans_on_heap = vec![(0, 0, 0, 0); lines];
                locate(buffer, limits, &mut slots, &mut spans_on_heap)
            }
            located => located,
        }
    };
    let Some(Located {
        method,
        target,
        version,
        head_length,
        count,
    }) = located?
    else {
        return Ok(None);
    };
    let spans = if spans_on_heap.is_empty() {
        &spans[..count]
    } else {
        &spans_on_heap[..count]
    };
    let head = buffer.split_to(head_length).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| HeadError::Malformed("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(count + ROOM_FOR_ADDED);
    for &(name_start, name_end, value_start, value_end) in spans {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| HeadError::Malformed("invalid header name"))?;
        let value = head.slice(value_start as usize..value_end as usize);
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| HeadError::Malformed("invalid header value"))?;
        // A repeated identical length frames the body the same whichever line a reader believes:
        // it is read as one. Differing ones are left for the edge checks to refuse.
        if name == header::CONTENT_LENGTH && headers.get_all(&name).iter().any(|v| v == value) {
            continue;
        }
        headers.append(name, value);
    }
    let keep_alive = match version {
        Version::HTTP_10 => has_token(&headers, &header::CONNECTION, b"keep-alive"),
        _ => !has_token(&headers, &header::CONNECTION, b"close"),
    };
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|expect| expect.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = request_body_framing(version, &headers);
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(IncomingHead {
        parts,
        body,
        keep_alive,
        expects_continue,
    }))
}

/// Where a request head's parts lie in the buffer it was read into.
struct Located {
    method: Method,
    /// The request target's start and end.
    target: (u32, u32),
    version: Version,
    head_length: usize,
    /// Header lines, whose spans were written to the start of `spans`.
    count: usize,
}

/// Parses the head at the front of `buffer` with room for `slots.len()` header lines, and
/// writes where each line's name and value lie into `spans` (as long), so that they can be
/// sliced once the buffer is frozen.
fn locate<'b>(
    buffer: &'b [u8],
    limits: HeadLimits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut [(u32, u32, u32, u32)],
) -> Result<Option<Located>, HeadError> {
    let mut request = httparse::Request::new(&mut []);
    let head_length = match request.parse_with_uninit_headers(buffer, slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() < limits.max_head_bytes => {
            return Ok(None);
        }
        Ok(httparse::Status::Partial) => {
            return Err(if buffer.contains(&b'\n') {
                HeadError::TooLarge
            } else {
                HeadError::TargetTooLong
            });
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyLines),
        Err(error) => return Err(HeadError::Malformed(parse_error(error))),
    };
    if head_length > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let version = match request.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("invalid method"))?;
    let base = buffer.as_ptr() as usize;
    // Fits: the head is no longer than `max_head_bytes`, far below 4 GiB.
    let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
    let path = request.path.unwrap_or_default().as_bytes();
    let target = (offset(path), offset(path) + path.len() as u32);
    for (span, parsed) in spans.iter_mut().zip(request.headers.iter()) {
        let name = offset(parsed.name.as_bytes());
        let value = offset(parsed.value);
        *span = (
            name,
            name + parsed.name.len() as u32,
            value,
            value + parsed.value.len() as u32,
        );
    }
    Ok(Some(Located {
        method,
        target,
        version,
        head_length,
        count: request.headers.len(),
    }))
}

fn parse_error(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status | httparse::Error::Token => "invalid request line",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many header lines",
    }
}

/// How a request body is delimited (RFC 9112, 6.3), only in the forms every HTTP/1.1 reader
/// agrees on: one `Content-Length` of plain digits, or one `Transfer-Encoding: chunked` line in
/// HTTP/1.1 without a length. Anything else is `None`.
fn request_body_framing(version: Version, headers: &HeaderMap) -> Option<BodyFraming> {
    let mut encodings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    match (encodings.next(), lengths.next()) {
        (None, None) => Some(BodyFraming::Empty),
        (Some(encoding), None) => {
            let lone_chunked = encodings.next().is_none()
                && version == Version::HTTP_11
                && encoding
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked");
            lone_chunked.then_some(BodyFraming::Chunked)
        }
        (None, Some(length)) if lengths.next().is_none() => {
            match plain_length(length.as_bytes())? {
                0 => Some(BodyFraming::Empty),
                length => Some(BodyFraming::Length(length)),
            }
        }
        _ => None,
    }
}

/// How a response body is delimited on the way to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// The response has no body: an answer to HEAD, a 1xx, 204 or 304.
    NoBody,
    Length(u64),
    Chunked,
    /// An HTTP/1.0 client of a body of unknown length: it ends when the connection does.
    UntilClose,
}

impl ResponseFraming {
    /// The framing a response needs, from what is known of its body (RFC 9112, 6.3).
    pub fn for_response(
        request_method: &Method,
        status: StatusCode,
        client_version: Version,
        hint: &SizeHint,
    ) -> ResponseFraming {
        if *request_method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return ResponseFraming::NoBody;
        }
        match hint.exact() {
            Some(length) => ResponseFraming::Length(length),
            None if client_version == Version::HTTP_11 => ResponseFraming::Chunked,
            None => ResponseFraming::UntilClose,
        }
    }
}

/// The `Connection` header the gateway adds to a response, whatever the response carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// HTTP/1.1 keeps connections by default: nothing to say.
    None,
    Close,
    /// For an HTTP/1.0 client that asked to keep the connection.
    KeepAlive,
}

/// The parts of a response head [`encode_response_head`] writes.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingResponse<'r> {
    pub status: StatusCode,
    pub headers: &'r HeaderMap,
    pub framing: ResponseFraming,
    pub connection: ConnectionHeader,
    /// Sent as `Date` when `headers` has none.
    pub date: &'r [u8],
}

/// Writes the status line and headers into `out`. The response's own framing and `Connection`
/// headers give way to `framing` and `connection`, except that an answer to HEAD, or a 304,
/// keeps the length of the body it stands for.
pub fn encode_response_head(out: &mut Vec<u8>, response: OutgoingResponse<'_>) {
    let OutgoingResponse {
        status,
        headers,
        framing,
        connection,
        date,
    } = response;
    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let keeps_length = framing == ResponseFraming::NoBody
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT;
    for (name, value) in headers {
        let framing_header = name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING;
        if (framing_header && !keeps_length) || name == header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ResponseFraming::NoBody | ResponseFraming::UntilClose => {}
        ResponseFraming::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    match connection {
        ConnectionHeader::None => {}
        ConnectionHeader::Close => out.extend_from_slice(b"connection: close\r\n"),
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a response tells the client the connection ends with it.
pub fn says_close(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, b"close")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 1024,
        max_header_lines: 8,
    };

    fn parse(wire: &str) -> Result<Option<IncomingHead>, HeadError> {
        parse_request_head(&mut BytesMut::from(wire), LIMITS)
    }

    fn complete(wire: &str) -> IncomingHead {
        parse(wire).expect("a valid head").expect("a complete head")
    }

    #[test]
    fn a_request_head_is_taken_off_the_buffer_once_complete() {
        let wire = "POST /a/b?c=d HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\r\nx-a: 2\r\n\
                    Content-Length: 2\r\n\r\nhiGET";
        let head_end = wire.find("\r\n\r\n").expect("a head") + 4;
        for end in 1..head_end {
            let mut buffer = BytesMut::from(&wire[..end]);
            assert!(
                parse_request_head(&mut buffer, LIMITS)
                    .expect("valid so far")
                    .is_none(),
                "complete at {end} bytes"
            );
            assert_eq!(buffer.len(), end, "nothing taken while incomplete");
        }
        let mut buffer = BytesMut::from(wire);
        let head = parse_request_head(&mut buffer, LIMITS)
            .expect("valid")
            .expect("complete");
        assert_eq!(&buffer[..], b"hiGET", "the body and what follows stay");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/a/b?c=d");
        assert_eq!(head.parts.version, Version::HTTP_11);
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(head.body, Some(BodyFraming::Length(2)));
        assert!(head.keep_alive && !head.expects_continue);

        let absolute = complete("GET http://gw.test/x HTTP/1.1\r\nHost: gw.test\r\n\r\n");
        assert_eq!(absolute.parts.uri.host(), Some("gw.test"));
        assert_eq!(
            complete("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").parts.uri,
            "*"
        );
        let lf_only = complete("GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(lf_only.parts.headers["host"], "a");
    }

    #[test]
    fn keep_alive_and_continue_follow_the_version_and_headers() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n",
                false,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: te, close\r\n\r\n",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", false),
            ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ];
        for (wire, keep_alive) in cases {
            assert_eq!(complete(wire).keep_alive, keep_alive, "{wire:?}");
        }
        let expect = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\
                      Content-Length: 3\r\n\r\n";
        assert!(complete(expect).expects_continue);
        let old = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(
            !complete(old).expects_continue,
            "HTTP/1.0 has no 100 Continue"
        );
    }

    #[test]
    fn http_1_0_has_no_chunked_coding() {
        let old_chunked = complete("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(old_chunked.body, None);
    }

    #[test]
    fn unreadable_and_oversized_heads_are_refused() {
        let malformed = [
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        ];
        for wire in malformed {
            assert!(
                matches!(parse(wire), Err(HeadError::Malformed(_))),
                "{wire:?}: {:?}",
                parse(wire)
            );
        }
        let lines: String = (0..9).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\n{lines}\r\n")).map(|_| ()),
            Err(HeadError::TooManyLines)
        );
        let long_line = format!("GET /{}", "a".repeat(1100));
        assert_eq!(parse(&long_line).map(|_| ()), Err(HeadError::TargetTooLong));
        let long_head = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "b".repeat(1100));
        assert_eq!(parse(&long_head).map(|_| ()), Err(HeadError::TooLarge));
        let complete_but_long = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "b".repeat(1100));
        assert_eq!(
            parse(&complete_but_long).map(|_| ()),
            Err(HeadError::TooLarge)
        );
        let many = HeadLimits {
            max_header_lines: STACK_HEADER_LINES + 10,
            max_head_bytes: 64 * 1024,
        };
        let lines: String = (0..STACK_HEADER_LINES + 5)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        let wire = format!("GET / HTTP/1.1\r\n{lines}\r\n");
        let parsed = parse_request_head(&mut BytesMut::from(&wire[..]), many)
            .expect("valid")
            .expect("complete");
        assert_eq!(parsed.parts.headers.len(), STACK_HEADER_LINES + 5);
        let lines: String = (0..STACK_HEADER_LINES + 11)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        let wire = format!("GET / HTTP/1.1\r\n{lines}\r\n");
        assert_eq!(
            parse_request_head(&mut BytesMut::from(&wire[..]), many).map(|_| ()),
            Err(HeadError::TooManyLines),
            "past a limit above the stack arrays"
        );
    }

    fn encoded(
        status: StatusCode,
        headers: &HeaderMap,
        framing: ResponseFraming,
        connection: ConnectionHeader,
    ) -> String {
        let mut out = b"left over".to_vec();
        encode_response_head(
            &mut out,
            OutgoingResponse {
                status,
                headers,
                framing,
                connection,
                date: b"Sun, 22 Nov 2026 10:00:00 GMT",
            },
        );
        String::from_utf8(out).expect("ASCII")
    }

    #[test]
    fn response_heads_carry_the_framing_and_connection_the_gateway_chose() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let date = "date: Sun, 22 Nov 2026 10:00:00 GMT\r\n";
        assert_eq!(
            encoded(
                StatusCode::OK,
                &headers,
                ResponseFraming::Length(3),
                ConnectionHeader::None
            ),
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n{date}\r\n"
            )
        );
        assert_eq!(
            encoded(
                StatusCode::BAD_GATEWAY,
                &headers,
                ResponseFraming::Chunked,
                ConnectionHeader::Close
            ),
            format!(
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n\
                 transfer-encoding: chunked\r\nconnection: close\r\n{date}\r\n"
            )
        );
        assert_eq!(
            encoded(
                StatusCode::OK,
                &headers,
                ResponseFraming::NoBody,
                ConnectionHeader::KeepAlive
            ),
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 99\r\n\
                 connection: keep-alive\r\n{date}\r\n"
            ),
            "an answer to HEAD keeps the length it stands for"
        );
        assert_eq!(
            encoded(
                StatusCode::NO_CONTENT,
                &headers,
                ResponseFraming::NoBody,
                ConnectionHeader::None
            ),
            format!("HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\n{date}\r\n")
        );
        let mut dated = HeaderMap::new();
        dated.insert(header::DATE, HeaderValue::from_static("yesterday"));
        assert_eq!(
            encoded(
                StatusCode::from_u16(599).expect("a status"),
                &dated,
                ResponseFraming::UntilClose,
                ConnectionHeader::Close
            ),
            "HTTP/1.1 599 \r\ndate: yesterday\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_follows_the_request_the_status_and_the_body() {
        let exact = SizeHint::with_exact(5);
        let unknown = SizeHint::default();
        let cases = [
            (
                Method::GET,
                StatusCode::OK,
                Version::HTTP_11,
                &exact,
                ResponseFraming::Length(5),
            ),
            (
                Method::GET,
                StatusCode::OK,
                Version::HTTP_11,
                &unknown,
                ResponseFraming::Chunked,
            ),
            (
                Method::GET,
                StatusCode::OK,
                Version::HTTP_10,
                &unknown,
                ResponseFraming::UntilClose,
            ),
            (
                Method::GET,
                StatusCode::OK,
                Version::HTTP_10,
                &exact,
                ResponseFraming::Length(5),
            ),
            (
                Method::HEAD,
                StatusCode::OK,
                Version::HTTP_11,
                &exact,
                ResponseFraming::NoBody,
            ),
            (
                Method::GET,
                StatusCode::NO_CONTENT,
                Version::HTTP_11,
                &unknown,
                ResponseFraming::NoBody,
            ),
            (
                Method::GET,
                StatusCode::NOT_MODIFIED,
                Version::HTTP_11,
                &exact,
                ResponseFraming::NoBody,
            ),
        ];
        for (method, status, version, hint, expected) in cases {
            assert_eq!(
                ResponseFraming::for_response(&method, status, version, hint),
                expected,
                "{method} {status} {version:?}"
            );
        }
    }
}
