//! The headers a proxy owes both sides: hop-by-hop headers removed, `X-Forwarded-*` set, and a
//! request id carried from the client to the upstream and back.

use std::net::IpAddr;

use bytes::Bytes;
use gateway_wire::fields::{REQUEST_ID, ip_text};
use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const HOP_BY_HOP_COUNT: usize = 9;

/// Headers that describe one connection, never the message (RFC 9110 7.6.1), plus the
/// non-standard ones clients and proxies still send.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which hop-by-hop headers are there, usually none or just
    // `connection`: cheaper than nine hashed removals.
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[index] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    // Nearly every `Connection` value is `keep-alive` (itself removed below) or `close` (which
    // names no header in practice): only look further when it names something else.
    let names_others = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|token| match token {
            b"" => false,
            _ if token.eq_ignore_ascii_case(b"keep-alive") => false,
            _ if token.eq_ignore_ascii_case(b"close") => headers.contains_key("close"),
            _ => true,
        });
    if names_others {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.into_iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// The client's request id if it is a sane token, or a new one.
///
/// A client-chosen id is kept so a caller can follow its own request through the logs; one
/// that is long or holds odd characters is replaced rather than echoed into logs and upstreams.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let usable = |value: &&HeaderValue| {
        let bytes = value.as_bytes();
        (1..=128).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    match headers.get(REQUEST_ID).filter(usable) {
        Some(value) => value.clone(),
        None => {
            let mut id = [0; uuid::fmt::Hyphenated::LENGTH];
            uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
            // Owned by the `Bytes`: the copies the upstream request, the response and the log
            // take are reference counts, not allocations.
            HeaderValue::from_maybe_shared(Bytes::from_owner(id))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-uuid"))
        }
    }
}

/// Sets the headers that tell the upstream who asked and how. The original `Host` travels as
/// `X-Forwarded-Host`; the upstream gets its own host in `Host`.
pub fn set_forwarded(headers: &mut HeaderMap, client_ip: IpAddr, host: Option<&HeaderValue>) {
    // Earlier proxies may each have added a line rather than extended one: keep them all.
    let earlier = || {
        headers
            .get_all(&FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let mut client = [0; 64];
    let written = ip_text(client_ip, &mut client);
    let client = &client[..written];
    // Sized exactly, so the buffer becomes the header value as it is, with no copy or second
    // allocation.
    let length = earlier().map(|value| value.len() + 2).sum::<usize>() + client.len();
    let mut forwarded_for = Vec::with_capacity(length);
    for value in earlier() {
        forwarded_for.extend_from_slice(value.as_bytes());
        forwarded_for.extend_from_slice(b", ");
    }
    forwarded_for.extend_from_slice(client);
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(forwarded_for)) {
        headers.insert(FORWARDED_FOR, value);
    }
    headers.insert(FORWARDED_PROTO, HeaderValue::from_static("http"));
    match host {
        Some(host) => {
            headers.insert(FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(FORWARDED_HOST);
        }
    }
    headers.remove(header::HOST);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn a_connection_header_naming_only_its_own_options_goes_with_the_hop_by_hop_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, close"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);

        // Even `close` names a header, should one have that name.
        let mut odd = HeaderMap::new();
        odd.insert(header::CONNECTION, HeaderValue::from_static("close"));
        odd.insert("close", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut odd);
        assert!(odd.is_empty(), "{odd:?}");

        let mut untouched = HeaderMap::new();
        untouched.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched.len(), 1);
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_replaced_otherwise() {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");

        headers.insert(REQUEST_ID, HeaderValue::from_static("has spaces"));
        let replaced = request_id(&headers);
        assert_ne!(replaced, "has spaces");
        assert_eq!(replaced.len(), 36);

        let fresh = request_id(&HeaderMap::new());
        assert_ne!(fresh, request_id(&HeaderMap::new()));
    }

    #[test]
    fn forwarded_headers_extend_the_chain() {
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.append(FORWARDED_FOR, HeaderValue::from_static("10.0.0.2"));
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        let host = headers.get(header::HOST).cloned();
        set_forwarded(
            &mut headers,
            "127.0.0.1".parse().expect("ip"),
            host.as_ref(),
        );
        assert_eq!(headers[&FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(headers.get_all(&FORWARDED_FOR).iter().count(), 1);
        assert_eq!(headers[&FORWARDED_PROTO], "http");
        assert_eq!(headers[&FORWARDED_HOST], "example.com");
        assert!(!headers.contains_key(header::HOST));

        let mut first_hop = HeaderMap::new();
        set_forwarded(&mut first_hop, "::1".parse().expect("ip"), None);
        assert_eq!(first_hop[&FORWARDED_FOR], "::1");
        assert!(!first_hop.contains_key(&FORWARDED_HOST));
    }
}
