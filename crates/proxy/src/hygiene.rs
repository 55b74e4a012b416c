//! Request-framing, Host and size checks every request meets before routing.
//!
//! The HTTP/1 parser ([`wire::client`](crate::wire::client)) keeps the framing headers exactly
//! as the client sent them, folding only repeated identical `Content-Length` lines into one, so
//! these checks see what is on the wire. A gateway and its upstream can frame a request
//! differently, which is the root of request smuggling, and can disagree on which virtual host
//! it targets. [`check_request`] refuses those requests before any routing or forwarding
//! happens: both `Content-Length` and `Transfer-Encoding`, stacked or repeated codings
//! (`gzip, chunked`), `Transfer-Encoding` outside HTTP/1.1, a length that is not plain digits,
//! and a `Host` that is missing, repeated, malformed or disagrees with the URI. HTTP/2 requests
//! get the same rules. It also enforces the gateway's own size limits on the request target
//! and header block.
//!
//! A framing or Host violation means the gateway can no longer trust where the next request on
//! the connection starts, so [`Violation::closes_connection`] tells the server to close it after
//! answering.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Request, StatusCode, Uri, Version};

use gateway_config::EdgeLimits;
use gateway_wire as wire;

/// The configured size limits as the per-request checks read them, in addition to the parser's
/// own bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    /// Upper bound on the header block, counting each header as `name: value\r\n`.
    pub max_header_bytes: usize,
    /// Upper bound on the number of header lines, repeated names counted once per line.
    pub max_headers: usize,
    /// Upper bound on the request target as received.
    pub max_uri_bytes: usize,
}

impl SizeLimits {
    pub fn of(limits: &EdgeLimits) -> SizeLimits {
        SizeLimits {
            max_header_bytes: limits.max_header_bytes.as_usize(),
            max_headers: limits.max_headers,
            max_uri_bytes: limits.max_uri_bytes.as_usize(),
        }
    }
}

/// Why a request was refused before routing. The messages are sent to clients, so they name the
/// problem without quoting the offending values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The request head is not HTTP/1.x as RFC 9112 writes it.
    #[error("request is not well-formed HTTP/1.1: {0}")]
    Malformed(&'static str),
    /// The request target is longer than [`SizeLimits::max_uri_bytes`].
    #[error("request URI is too long")]
    UriTooLong,
    /// More header lines than [`SizeLimits::max_headers`].
    #[error("request has too many header fields")]
    HeadersTooMany,
    /// The header block is larger than [`SizeLimits::max_header_bytes`].
    #[error("request header fields are too large")]
    HeadersTooLarge,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    #[error("request has both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    /// `Transfer-Encoding` is repeated, is anything but `chunked`, or is used outside HTTP/1.1.
    #[error("request has an unsupported or malformed Transfer-Encoding")]
    BadTransferEncoding,
    /// `Content-Length` is repeated or is not a plain decimal number.
    #[error("request has a malformed Content-Length")]
    BadContentLength,
    /// An HTTP/1.1 request without a `Host` header.
    #[error("request is missing the Host header")]
    MissingHost,
    /// More than one `Host` header.
    #[error("request has more than one Host header")]
    RepeatedHost,
    /// The `Host` header and the authority of the request target name different hosts.
    #[error("Host header does not match the request URI authority")]
    HostMismatch,
    /// The `Host` header or URI authority is empty or contains characters not allowed in a host.
    #[error("request has a malformed Host")]
    BadHost,
}

impl Violation {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooMany | Self::HeadersTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::Malformed(_)
            | Self::AmbiguousFraming
            | Self::BadTransferEncoding
            | Self::BadContentLength
            | Self::MissingHost
            | Self::RepeatedHost
            | Self::HostMismatch
            | Self::BadHost => StatusCode::BAD_REQUEST,
        }
    }

    /// A stable machine-readable code for error bodies; one per family so clients can match on
    /// the kind of problem without tracking every variant.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "BAD_REQUEST",
            Self::UriTooLong => "URI_TOO_LONG",
            Self::HeadersTooMany | Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::AmbiguousFraming | Self::BadTransferEncoding | Self::BadContentLength => {
                "BAD_FRAMING"
            }
            Self::MissingHost | Self::RepeatedHost | Self::HostMismatch | Self::BadHost => {
                "BAD_HOST"
            }
        }
    }

    /// Whether the connection must be closed after the error response.
    ///
    /// After a framing or Host violation the gateway cannot tell where this request's body ends
    /// or which client context the connection belongs to, so reusing it is unsafe. Size-limit
    /// violations leave framing intact.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Self::UriTooLong | Self::HeadersTooMany | Self::HeadersTooLarge
        )
    }
}

/// Checks `request` against `limits` and the framing and Host rules, in that order, returning
/// the first violation found.
pub fn check_request<B>(request: &Request<B>, limits: &SizeLimits) -> Result<(), Violation> {
    if rendered_len(request.uri()) > limits.max_uri_bytes {
        return Err(Violation::UriTooLong);
    }
    check_header_sizes(request, limits)?;
    check_framing(request)?;
    check_host(request)
}

/// The host the client asked for, without any port, for routing: the `Host` header if present,
/// else the authority of the request target.
///
/// Returned as received, so compare it case-insensitively. `None` when there is no host or it
/// is not well formed; [`check_request`] rejects the malformed cases before routing anyway.
pub fn host_of<B>(request: &Request<B>) -> Option<&str> {
    let host_port = match request.headers().get(HOST) {
        Some(value) => value.to_str().ok()?,
        None => {
            let authority = request.uri().authority()?.as_str();
            // Userinfo is never part of the host.
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host_port)| host_port)
        }
    };
    let host = strip_port(host_port)?;
    (!host.is_empty()).then_some(host)
}

fn strip_port(host_port: &str) -> Option<&str> {
    if host_port.starts_with('[') {
        // An IPv6 literal contains colons of its own, so the port is whatever follows `]`.
        let end = host_port.find(']')?;
        host_port.get(..=end)
    } else {
        Some(
            host_port
                .split_once(':')
                .map_or(host_port, |(host, _)| host),
        )
    }
}

/// Length of the request target as `Uri`'s `Display` renders it, without allocating.
fn rendered_len(uri: &Uri) -> usize {
    uri.scheme_str()
        .map_or(0, |scheme| scheme.len() + "://".len())
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |query| query.len() + 1)
}

fn check_header_sizes<B>(request: &Request<B>, limits: &SizeLimits) -> Result<(), Violation> {
    let headers = request.headers();
    // `len` counts values, so a repeated name counts once per line as on the wire.
    if headers.len() > limits.max_headers {
        return Err(Violation::HeadersTooMany);
    }
    let mut total: usize = 0;
    for (name, value) in headers {
        // `: ` and CRLF are part of what the client made the server buffer.
        total = total.saturating_add(name.as_str().len() + value.len() + 4);
        if total > limits.max_header_bytes {
            return Err(Violation::HeadersTooLarge);
        }
    }
    Ok(())
}

fn check_framing<B>(request: &Request<B>) -> Result<(), Violation> {
    let headers = request.headers();
    let mut transfer_encodings = headers.get_all(TRANSFER_ENCODING).iter();
    let mut content_lengths = headers.get_all(CONTENT_LENGTH).iter();
    let transfer_encoding = transfer_encodings.next();
    let content_length = content_lengths.next();

    if transfer_encoding.is_some() && content_length.is_some() {
        return Err(Violation::AmbiguousFraming);
    }

    if let Some(value) = transfer_encoding {
        // Only a lone `chunked` is framed the same way by every HTTP/1.1 implementation; other
        // codings are passed through by some and rejected by others. HTTP/1.0 has no chunked
        // framing, and in HTTP/2 and later the header is forbidden outright (RFC 9113 §8.2.2),
        // so forwarding it to an HTTP/1.1 upstream would invite a downgrade desync.
        if transfer_encodings.next().is_some()
            || request.version() != Version::HTTP_11
            || !value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(Violation::BadTransferEncoding);
        }
    }

    if let Some(value) = content_length
        && (content_lengths.next().is_some() || wire::plain_length(value.as_bytes()).is_none())
    {
        return Err(Violation::BadContentLength);
    }
    Ok(())
}

fn check_host<B>(request: &Request<B>) -> Result<(), Violation> {
    let mut hosts = request.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Violation::RepeatedHost);
    }
    match host {
        // HTTP/1.0 predates Host, and HTTP/2 and later carry it in `:authority`.
        None if request.version() == Version::HTTP_11 => return Err(Violation::MissingHost),
        None => {}
        Some(value) if !is_host_text(value.as_bytes()) => return Err(Violation::BadHost),
        Some(_) => {}
    }

    if let Some(authority) = request.uri().authority() {
        let authority = authority.as_str().as_bytes();
        // Rules out userinfo (`user@host`), which has no business in a request target.
        if !is_host_text(authority) {
            return Err(Violation::BadHost);
        }
        // Some components route by the header, others (and RFC 9112 for absolute-form) by the
        // URI; letting them disagree would let one request be seen as two different hosts.
        if let Some(value) = host
            && !value.as_bytes().eq_ignore_ascii_case(authority)
        {
            return Err(Violation::HostMismatch);
        }
    }
    Ok(())
}

fn is_host_text(value: &[u8]) -> bool {
    !value.is_empty()
        && value.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use gateway_wire::BodyFraming;
    use gateway_wire::client::{HeadLimits, parse_request_head};

    fn default_limits() -> SizeLimits {
        SizeLimits::of(&EdgeLimits::default())
    }
    use http::HeaderValue;
    use http::header::HeaderName;

    /// Header lines in wire order; values are bytes so tests can send obs-text.
    type Headers<'a> = &'a [(&'a str, &'a [u8])];

    fn request(version: Version, uri: &str, headers: Headers<'_>) -> Request<()> {
        let mut request = Request::builder()
            .version(version)
            .uri(uri)
            .body(())
            .expect("test request must be valid");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
            let value = HeaderValue::from_bytes(value).expect("valid header value");
            request.headers_mut().append(name, value);
        }
        request
    }

    fn check(request: &Request<()>) -> Result<(), Violation> {
        check_request(request, &default_limits())
    }

    const H11: Version = Version::HTTP_11;
    const H10: Version = Version::HTTP_10;
    const H2: Version = Version::HTTP_2;

    const HOST: (&str, &[u8]) = ("host", b"example.com");

    #[test]
    fn transfer_encoding_values() {
        use Violation::*;
        let cases: &[(&[u8], Result<(), Violation>)] = &[
            (b"chunked", Ok(())),
            (b" ChUnKeD ", Ok(())),
            (b"gzip, chunked", Err(BadTransferEncoding)),
            (b"chunked, chunked", Err(BadTransferEncoding)),
            (b"xchunked", Err(BadTransferEncoding)),
            (b"chunked;x", Err(BadTransferEncoding)),
            (b"identity", Err(BadTransferEncoding)),
            (b"", Err(BadTransferEncoding)),
        ];
        for (value, expected) in cases {
            let request = request(H11, "/", &[HOST, ("transfer-encoding", value)]);
            assert_eq!(check(&request), *expected, "Transfer-Encoding {value:?}");
        }
    }

    #[test]
    fn content_length_values() {
        let cases: &[(&[u8], bool)] = &[
            (b"42", true),
            (b"0", true),
            (b"007", true),
            (b"18446744073709551615", true),
            (b"5, 5", false),
            (b"+5", false),
            (b"-1", false),
            (b"1 0", false),
            (b"", false),
            (b"0x10", false),
            (b"18446744073709551616", false),
        ];
        for (value, ok) in cases {
            let request = request(H11, "/", &[HOST, ("content-length", value)]);
            let expected = if *ok {
                Ok(())
            } else {
                Err(Violation::BadContentLength)
            };
            assert_eq!(check(&request), expected, "Content-Length {value:?}");
        }
    }

    #[test]
    fn host_values() {
        let cases: &[(&[u8], bool)] = &[
            (b"example.com", true),
            (b"example.com:8080", true),
            (b"[::1]:8080", true),
            (b"my_svc.local", true),
            (b"10.0.0.1", true),
            (b"", false),
            (b"exa mple.com", false),
            (b"user@example.com", false),
            (b"example.com/x", false),
            (b"a.com,b.com", false),
            (b"ex\xe9.com", false),
        ];
        for (value, ok) in cases {
            let request = request(H11, "/", &[("host", value)]);
            let expected = if *ok { Ok(()) } else { Err(Violation::BadHost) };
            assert_eq!(check(&request), expected, "Host {value:?}");
        }
    }

    #[test]
    fn framing_structure() {
        use Violation::*;
        let cl: (&str, &[u8]) = ("content-length", b"5");
        let te: (&str, &[u8]) = ("transfer-encoding", b"chunked");
        let cases: &[(Version, Headers<'_>, Result<(), Violation>)] = &[
            (H11, &[HOST, cl, te], Err(AmbiguousFraming)),
            (H11, &[HOST, te, cl], Err(AmbiguousFraming)),
            (H11, &[HOST, te, te], Err(BadTransferEncoding)),
            (H11, &[HOST, cl, cl], Err(BadContentLength)),
            (H10, &[te], Err(BadTransferEncoding)),
            (H2, &[te], Err(BadTransferEncoding)),
            (H10, &[cl], Ok(())),
            (H2, &[cl], Ok(())),
        ];
        for (version, headers, expected) in cases {
            let request = request(*version, "/", headers);
            assert_eq!(check(&request), *expected, "{version:?} {headers:?}");
        }
    }

    #[test]
    fn host_presence_and_agreement() {
        use Violation::*;
        let cases: &[(Version, &str, Headers<'_>, Result<(), Violation>)] = &[
            (H11, "/", &[], Err(MissingHost)),
            (H11, "http://example.com/", &[], Err(MissingHost)),
            (H11, "/", &[HOST, HOST], Err(RepeatedHost)),
            (H11, "http://example.com/", &[HOST], Ok(())),
            // RFC 9112 lets absolute-form override Host, so a disagreement is ambiguous.
            (H11, "http://other.com/", &[HOST], Err(HostMismatch)),
            (H10, "/", &[], Ok(())),
            (H10, "/", &[HOST], Ok(())),
            (H10, "/", &[HOST, HOST], Err(RepeatedHost)),
            (H2, "https://example.com/x", &[], Ok(())),
            (H2, "/x", &[], Ok(())),
            (H2, "https://example.com/x", &[HOST], Ok(())),
            (H2, "https://EXAMPLE.com/x", &[HOST], Ok(())),
            (H2, "https://other.com/x", &[HOST], Err(HostMismatch)),
            (H2, "https://example.com:8443/x", &[HOST], Err(HostMismatch)),
            (
                H2,
                "https://example.com/x",
                &[HOST, HOST],
                Err(RepeatedHost),
            ),
            (H2, "https://user@example.com/x", &[], Err(BadHost)),
        ];
        for (version, uri, headers, expected) in cases {
            let request = request(*version, uri, headers);
            assert_eq!(check(&request), *expected, "{version:?} {uri} {headers:?}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let host: (&str, &[u8]) = ("host", b"a.io");
        let uri = "/abcdefgh?q=1"; // 13 bytes
        let limits = SizeLimits {
            max_uri_bytes: 13,
            ..default_limits()
        };
        assert_eq!(check_request(&request(H11, uri, &[host]), &limits), Ok(()));
        let limits = SizeLimits {
            max_uri_bytes: 12,
            ..default_limits()
        };
        assert_eq!(
            check_request(&request(H11, uri, &[host]), &limits),
            Err(Violation::UriTooLong)
        );

        // Three lines, repeats counted per line: host (4+4+4) + 2 x x-a (3+1+4) = 28 bytes.
        let headers: Headers<'_> = &[host, ("x-a", b"1"), ("x-a", b"2")];
        let limits = SizeLimits {
            max_headers: 3,
            max_header_bytes: 28,
            max_uri_bytes: 100,
        };
        assert_eq!(check_request(&request(H11, "/", headers), &limits), Ok(()));
        let fewer = SizeLimits {
            max_headers: 2,
            ..limits
        };
        assert_eq!(
            check_request(&request(H11, "/", headers), &fewer),
            Err(Violation::HeadersTooMany)
        );
        let smaller = SizeLimits {
            max_header_bytes: 27,
            ..limits
        };
        assert_eq!(
            check_request(&request(H11, "/", headers), &smaller),
            Err(Violation::HeadersTooLarge)
        );
    }

    #[test]
    fn checks_run_in_documented_order() {
        let limits = SizeLimits {
            max_uri_bytes: 4,
            max_headers: 2,
            max_header_bytes: 1000,
        };
        let bad_everything: Headers<'_> = &[
            ("content-length", b"1"),
            ("transfer-encoding", b"gzip"),
            ("x", b"y"),
        ];
        // Too long URI, too many headers, bad framing and no Host: the URI is reported.
        let request_a = request(H11, "/long-path", bad_everything);
        assert_eq!(
            check_request(&request_a, &limits),
            Err(Violation::UriTooLong)
        );
        // Short URI: the header count is next.
        let request_b = request(H11, "/", bad_everything);
        assert_eq!(
            check_request(&request_b, &limits),
            Err(Violation::HeadersTooMany)
        );
        // Within limits: framing beats the missing Host.
        let roomy = SizeLimits {
            max_headers: 10,
            ..limits
        };
        assert_eq!(
            check_request(&request_b, &roomy),
            Err(Violation::AmbiguousFraming)
        );
    }

    #[test]
    fn uri_length_matches_rendered_form() {
        let uris = [
            "/",
            "/a/b?c=d",
            "http://example.com",
            "http://example.com/x?y",
            "https://user@example.com:8443/p",
            "example.com:443",
            "*",
        ];
        for uri in uris {
            let parsed: Uri = uri.parse().expect("valid URI");
            assert_eq!(
                rendered_len(&parsed),
                parsed.to_string().len(),
                "uri {uri:?}"
            );
        }
    }

    #[test]
    fn violation_metadata() {
        use Violation::*;
        let cases = [
            (UriTooLong, 414, "URI_TOO_LONG", false),
            (HeadersTooMany, 431, "HEADERS_TOO_LARGE", false),
            (HeadersTooLarge, 431, "HEADERS_TOO_LARGE", false),
            (AmbiguousFraming, 400, "BAD_FRAMING", true),
            (BadTransferEncoding, 400, "BAD_FRAMING", true),
            (BadContentLength, 400, "BAD_FRAMING", true),
            (MissingHost, 400, "BAD_HOST", true),
            (RepeatedHost, 400, "BAD_HOST", true),
            (HostMismatch, 400, "BAD_HOST", true),
            (BadHost, 400, "BAD_HOST", true),
        ];
        for (violation, status, code, closes) in cases {
            assert_eq!(violation.status().as_u16(), status, "{violation:?}");
            assert_eq!(violation.code(), code, "{violation:?}");
            assert_eq!(violation.closes_connection(), closes, "{violation:?}");
            assert!(!violation.to_string().is_empty());
        }
    }

    #[test]
    fn host_of_strips_the_port() {
        let cases: &[(Version, &str, Headers<'_>, Option<&str>)] = &[
            (H11, "/", &[("host", b"example.com")], Some("example.com")),
            (
                H11,
                "/",
                &[("host", b"example.com:8080")],
                Some("example.com"),
            ),
            (H11, "/", &[("host", b"[::1]:8080")], Some("[::1]")),
            (H11, "/", &[("host", b"[::1]")], Some("[::1]")),
            (H11, "/", &[("host", b"10.0.0.1:80")], Some("10.0.0.1")),
            (H11, "/", &[("host", b"[::1")], None),
            (H11, "/", &[("host", b"")], None),
            (H11, "/", &[("host", b":80")], None),
            (H11, "/", &[("host", b"ex\xe9.com")], None),
            (H10, "/", &[], None),
            (
                H2,
                "https://api.example.com:8443/x",
                &[],
                Some("api.example.com"),
            ),
            (
                H2,
                "https://[2001:db8::1]:8443/x",
                &[],
                Some("[2001:db8::1]"),
            ),
            (H2, "https://user@example.com/x", &[], Some("example.com")),
            // The header wins; check_request is what rejects a disagreement.
            (
                H11,
                "http://uri.example/",
                &[("host", b"header.example")],
                Some("header.example"),
            ),
        ];
        for (version, uri, headers, expected) in cases {
            let request = request(*version, uri, headers);
            assert_eq!(
                host_of(&request),
                *expected,
                "uri {uri:?} headers {headers:?}"
            );
        }
    }

    /// Every head whose body the parser will not read must be one the edge checks refuse, or
    /// its body would be taken for the next request.
    #[test]
    fn only_framing_every_reader_agrees_on_is_read_and_the_rest_is_refused() {
        let framed = [
            ("", Some(BodyFraming::Empty)),
            ("Content-Length: 0\r\n", Some(BodyFraming::Empty)),
            ("Content-Length: 12\r\n", Some(BodyFraming::Length(12))),
            (
                "Content-Length: 12\r\nContent-Length: 12\r\n",
                Some(BodyFraming::Length(12)),
            ),
            ("Transfer-Encoding: chunked\r\n", Some(BodyFraming::Chunked)),
            (
                "Transfer-Encoding:  Chunked \r\n",
                Some(BodyFraming::Chunked),
            ),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", None),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", None),
            ("Transfer-Encoding: gzip, chunked\r\n", None),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                None,
            ),
            ("Transfer-Encoding: xchunked\r\n", None),
            ("Content-Length: 5\r\nContent-Length: 6\r\n", None),
            ("Content-Length: 5, 5\r\n", None),
            ("Content-Length: +5\r\n", None),
            ("Content-Length: 99999999999999999999999\r\n", None),
        ];
        for (lines, expected) in framed {
            let wire = format!("POST /a HTTP/1.1\r\nHost: a\r\n{lines}\r\n");
            let parsed = parse_request_head(
                &mut BytesMut::from(wire.as_str()),
                HeadLimits {
                    max_head_bytes: 1024,
                    max_header_lines: 8,
                },
            )
            .expect("a valid head")
            .expect("a complete head");
            assert_eq!(parsed.body, expected, "{lines:?}");
            let request = http::Request::from_parts(parsed.parts, ());
            let checked = check_request(&request, &default_limits());
            assert_eq!(
                checked.is_ok(),
                expected.is_some(),
                "{lines:?}: {checked:?}"
            );
        }
    }
}
