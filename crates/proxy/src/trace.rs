//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the client's `traceparent` and
//! `tracestate` checked, and the upstream given the same trace with the gateway's span as its
//! parent. A request without a usable `traceparent` starts a trace whose id is its request id
//! when that is a UUID (the gateway's own always are), so a trace and a log line find each
//! other.

use bytes::Bytes;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The most list members a `tracestate` may hold (spec section 3.3.1.1).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The trace a request belongs to, and the gateway's span in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    /// 32 lower-case hex digits.
    pub(crate) trace_id: [u8; 32],
    /// The gateway's span: 16 lower-case hex digits.
    pub(crate) span_id: [u8; 16],
    /// The caller's span, when the client sent one.
    pub(crate) parent_id: Option<[u8; 16]>,
    /// `01` sampled, `00` not.
    pub(crate) flags: u8,
}

impl TraceContext {
    /// The request's trace: the client's, continued, or a new one linked to `request_id`.
    /// Removes a `tracestate` that must not travel (its `traceparent` was unusable, or it is
    /// malformed) and replaces `traceparent` with the gateway's.
    ///
    /// With `sample_ratio` (spans are exported), a trace the gateway starts is sampled with
    /// that probability and says so in its flags; a continued one keeps its caller's flag.
    pub(crate) fn continue_or_start(
        headers: &mut HeaderMap,
        request_id: &HeaderValue,
        sample_ratio: Option<f64>,
    ) -> Self {
        let span_id = hex::<8, 16>(fastrand::u64(1..).to_be_bytes());
        let context = match parse_traceparent(headers) {
            Some((trace_id, parent_id, flags)) => {
                if !tracestate_is_valid(headers) {
                    headers.remove(TRACESTATE);
                }
                TraceContext {
                    trace_id,
                    span_id,
                    parent_id: Some(parent_id),
                    flags,
                }
            }
            None => {
                // Without a valid parent, its state belongs to no trace this request is in.
                headers.remove(TRACESTATE);
                let sampled = sample_ratio.is_some_and(|ratio| fastrand::f64() < ratio);
                TraceContext {
                    trace_id: new_trace_id(request_id),
                    span_id,
                    parent_id: None,
                    flags: u8::from(sampled),
                }
            }
        };
        headers.insert(TRACEPARENT, context.traceparent());
        context
    }

    /// `00-<trace id>-<the gateway's span>-<flags>`, for the upstream.
    fn traceparent(&self) -> HeaderValue {
        let mut value = Vec::with_capacity(55);
        value.extend_from_slice(b"00-");
        value.extend_from_slice(&self.trace_id);
        value.push(b'-');
        value.extend_from_slice(&self.span_id);
        value.push(b'-');
        value.extend_from_slice(&hex::<1, 2>([self.flags]));
        HeaderValue::from_maybe_shared(Bytes::from(value))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// Whether the trace is sampled (flag `01`).
    pub(crate) fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    pub(crate) fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("-")
    }

    pub(crate) fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or("-")
    }
}

/// The request id's 128 bits when it is a UUID, else random bits; never all zeros.
fn new_trace_id(request_id: &HeaderValue) -> [u8; 32] {
    let from_request = request_id
        .to_str()
        .ok()
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .filter(|id| !id.is_nil());
    let bits = from_request.map_or_else(|| fastrand::u128(1..), |id| id.as_u128());
    hex::<16, 32>(bits.to_be_bytes())
}

fn hex<const N: usize, const M: usize>(bytes: [u8; N]) -> [u8; M] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; M];
    for (index, byte) in bytes.iter().enumerate() {
        out[2 * index] = DIGITS[usize::from(byte >> 4)];
        out[2 * index + 1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

/// The trace id, parent id and flags of a usable `traceparent`, per spec section 3.2 and the
/// versioning rules of 4.3: version `ff` is invalid; a later version is read as version 00
/// from its first 55 characters, which must be followed by the end or a `-`.
fn parse_traceparent(headers: &HeaderMap) -> Option<([u8; 32], [u8; 16], u8)> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?.as_bytes();
    // Two headers cannot say which trace the request is in.
    if values.next().is_some() || value.len() < 55 {
        return None;
    }
    let version = &value[0..2];
    if !is_lower_hex(version) || version == b"ff" {
        return None;
    }
    let exact = value.len() == 55;
    if version == b"00" && !exact {
        return None;
    }
    if !exact && value[55] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !is_lower_hex(trace_id) || !is_lower_hex(parent_id) || !is_lower_hex(flags) {
        return None;
    }
    if trace_id.iter().all(|&b| b == b'0') || parent_id.iter().all(|&b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    // Only the sampled bit is defined for version 00; a later version's other bits are not
    // passed on under version 00.
    let flags = flags & 0x01;
    Some((trace_id.try_into().ok()?, parent_id.try_into().ok()?, flags))
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether every `tracestate` header together is a list the spec allows (section 3.3): at
/// most 32 members, each `key=value` with the key and value grammar of 3.3.1, keys unique.
fn tracestate_is_valid(headers: &HeaderMap) -> bool {
    let mut keys: Vec<&[u8]> = Vec::new();
    for value in headers.get_all(TRACESTATE) {
        for member in value.as_bytes().split(|&b| b == b',') {
            let member = member.trim_ascii();
            // Empty members are allowed and ignored.
            if member.is_empty() {
                continue;
            }
            let Some(equals) = member.iter().position(|&b| b == b'=') else {
                return false;
            };
            let (key, value) = (&member[..equals], &member[equals + 1..]);
            if !tracestate_key(key) || !tracestate_value(value) || keys.contains(&key) {
                return false;
            }
            keys.push(key);
            if keys.len() > MAX_TRACESTATE_MEMBERS {
                return false;
            }
        }
    }
    true
}

/// `simple-key` or `tenant-id@system-id` (spec 3.3.1.3.1).
fn tracestate_key(key: &[u8]) -> bool {
    let part = |part: &[u8], first_digit: bool, most: usize| {
        let Some(&first) = part.first() else {
            return false;
        };
        let first_ok = first.is_ascii_lowercase() || (first_digit && first.is_ascii_digit());
        first_ok
            && part.len() <= most
            && part.iter().all(|&b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.iter().position(|&b| b == b'@') {
        None => part(key, false, 256),
        Some(at) => part(&key[..at], true, 241) && part(&key[at + 1..], false, 14),
    }
}

/// Up to 256 printable ASCII characters other than `,` and `=`, not ending in a space
/// (spec 3.3.1.3.2).
fn tracestate_value(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value.last() != Some(&b' ')
        && value
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn traced(traceparent: &[&str], tracestate: &[&str]) -> (TraceContext, HeaderMap) {
        let mut headers = HeaderMap::new();
        for value in traceparent {
            headers.append(TRACEPARENT, HeaderValue::from_str(value).expect("a value"));
        }
        for value in tracestate {
            headers.append(TRACESTATE, HeaderValue::from_str(value).expect("a value"));
        }
        let request_id = HeaderValue::from_static("9b2f3c4d-0e1f-4a2b-8c3d-4e5f60718293");
        let context = TraceContext::continue_or_start(&mut headers, &request_id, None);
        (context, headers)
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_the_gateway_as_parent() {
        let (context, headers) = traced(&[GOOD], &["congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"]);
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.parent_id, Some(*b"00f067aa0ba902b7"));
        assert_ne!(context.span_id(), "00f067aa0ba902b7");
        let sent = headers[TRACEPARENT].to_str().expect("ASCII");
        assert_eq!(
            sent,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                context.span_id()
            )
        );
        assert_eq!(
            headers[TRACESTATE],
            "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"
        );
    }

    #[test]
    fn an_invalid_traceparent_starts_a_trace_from_the_request_id_and_drops_tracestate() {
        let invalid = [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for value in invalid {
            let (context, headers) = traced(&[value], &["congo=t61rcWkgMzE"]);
            assert_eq!(
                context.trace_id(),
                "9b2f3c4d0e1f4a2b8c3d4e5f60718293",
                "{value}"
            );
            assert_eq!(context.parent_id, None, "{value}");
            assert!(headers.get(TRACESTATE).is_none(), "{value}");
            assert_eq!(
                headers[TRACEPARENT].to_str().expect("ASCII"),
                format!(
                    "00-9b2f3c4d0e1f4a2b8c3d4e5f60718293-{}-00",
                    context.span_id()
                )
            );
        }
        let (context, _) = traced(&[GOOD, GOOD], &[]);
        assert_eq!(context.parent_id, None, "two traceparent headers");
    }

    #[test]
    fn a_later_version_is_read_as_version_00_and_sent_as_00() {
        let (context, headers) = traced(
            &["cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what-comes-next"],
            &[],
        );
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let sent = headers[TRACEPARENT].to_str().expect("ASCII");
        assert!(sent.starts_with("00-") && sent.ends_with("-01"), "{sent}");
    }

    #[test]
    fn a_malformed_tracestate_is_dropped_and_a_good_one_kept_whole() {
        let kept = [
            "rojo=00f067aa0ba902b7",
            "tenant1@vendor=a b,other=x",
            ",,  a=1 ,",
        ];
        for state in kept {
            let (_, headers) = traced(&[GOOD], &[state]);
            assert_eq!(headers[TRACESTATE], state);
        }
        let (_, headers) = traced(&[GOOD], &["a=1", "b=2"]);
        assert_eq!(headers.get_all(TRACESTATE).iter().count(), 2);

        let too_many: Vec<String> = (0..33).map(|n| format!("k{n}=v")).collect();
        let dropped = [
            "Upper=1".to_owned(),
            "a=1,a=2".to_owned(),
            "novalue".to_owned(),
            "a=has,comma".to_owned(),
            "a=x\ty".to_owned(),
            too_many.join(","),
        ];
        for state in dropped {
            let (context, headers) = traced(&[GOOD], &[&state]);
            assert!(headers.get(TRACESTATE).is_none(), "{state}");
            assert!(context.parent_id.is_some(), "the traceparent still counts");
        }
    }

    #[test]
    fn a_started_trace_is_sampled_at_the_ratio_and_a_continued_one_keeps_its_flag() {
        let request_id = HeaderValue::from_static("9b2f3c4d-0e1f-4a2b-8c3d-4e5f60718293");
        let started = |ratio| {
            TraceContext::continue_or_start(&mut HeaderMap::new(), &request_id, ratio).sampled()
        };
        assert!(
            !started(None),
            "nothing exported: nothing claims to be sampled"
        );
        assert!((0..100).all(|_| started(Some(1.0))));
        assert!((0..100).all(|_| !started(Some(0.0))));
        let half = (0..2000).filter(|_| started(Some(0.5))).count();
        assert!((800..1200).contains(&half), "{half} of 2000 at 0.5");
        for (flags, sampled) in [("01", true), ("00", false)] {
            let mut headers = HeaderMap::new();
            let parent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
            headers.insert(
                TRACEPARENT,
                HeaderValue::from_str(&parent).expect("a value"),
            );
            for ratio in [Some(0.0), Some(1.0)] {
                let mut headers = headers.clone();
                let context = TraceContext::continue_or_start(&mut headers, &request_id, ratio);
                assert_eq!(context.sampled(), sampled, "{parent} at {ratio:?}");
            }
        }
    }

    #[test]
    fn a_request_id_that_is_no_uuid_gets_a_random_trace_id() {
        let mut headers = HeaderMap::new();
        let context = TraceContext::continue_or_start(
            &mut headers,
            &HeaderValue::from_static("client-chosen-42"),
            None,
        );
        assert!(is_lower_hex(&context.trace_id));
        assert!(context.trace_id.iter().any(|&b| b != b'0'));
    }
}
