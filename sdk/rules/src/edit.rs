//! The edits a filter may make: which header names and values, paths, queries and status codes
//! the gateway accepts from it.
//!
//! The gateway checks every edit a filter makes with these functions, and so does the SDK's test
//! host, so a value a filter's unit test sets is one the gateway takes. Header names and values
//! follow the `http` crate, which the gateway stores them in: a value may hold tabs and bytes
//! 0x80-0xFF (obs-text, so UTF-8 such as `café`), but no other control byte and no DEL. The
//! messages are what the filter receives when an edit is refused.
//!
//! ```
//! use gateway_rules::edit;
//!
//! assert_eq!(edit::header_name("X-Tenant").expect("a token").as_str(), "x-tenant");
//! assert!(edit::header_value("café".to_owned()).is_ok());
//! assert!(edit::path("/users/1").is_ok());
//! let refused = edit::status(42).expect_err("out of range");
//! assert_eq!(refused.to_string(), "42 is not a valid status code");
//! ```

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

/// Why an edit was refused. The text is what the filter receives.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert_eq!(edit::query("a=1#top"), Err(EditError::Query));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The name is not an RFC 9110 token.
    #[error("`{0}` is not a valid header name")]
    HeaderName(String),
    /// The value holds a control byte other than tab, or DEL.
    #[error("header value contains a forbidden character")]
    HeaderValue,
    /// The path does not start with `/` or holds a byte the request line cannot carry.
    #[error("a path must start with `/` and hold only printable ASCII, without `?` or `#`")]
    Path,
    /// The query holds a byte the request line cannot carry.
    #[error("a query may hold only printable ASCII, without `#`")]
    Query,
    /// The status is outside `100..=999`. A caller that checks a reply's status says so in
    /// front: "reply status 42 is not a valid status code".
    #[error("{0} is not a valid status code")]
    Status(u16),
    /// The edit does not belong to the phase it was made in (a path in the response phase, a
    /// status in the request phase).
    #[error("{0}")]
    WrongPhase(&'static str),
    /// A body was set where the filter was not handed one whole: it did not ask for it, or it
    /// was too large to buffer.
    #[error("the body can only be replaced when the filter was handed it whole")]
    BodyNotHeld,
    /// A body set longer than the limit the filter declared for it.
    #[error("a body of {len} bytes is longer than the filter's limit of {limit} bytes")]
    BodyTooLong { len: usize, limit: u32 },
}

/// What the request phase refuses to change once the request has gone upstream.
pub const REQUEST_SENT: &str =
    "the request was already sent upstream; it cannot be changed in the response phase";
/// What the request phase refuses: there is no response yet.
pub const NO_RESPONSE_YET: &str = "there is no response yet in the request phase";

/// A body a filter sets: only one it was handed whole, and no longer than its declared limit.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert!(edit::body(10, true, 64).is_ok());
/// assert_eq!(edit::body(10, false, 64), Err(EditError::BodyNotHeld));
/// assert_eq!(edit::body(65, true, 64), Err(EditError::BodyTooLong { len: 65, limit: 64 }));
/// ```
pub fn body(len: usize, held: bool, limit: u32) -> Result<(), EditError> {
    if !held {
        return Err(EditError::BodyNotHeld);
    }
    if len > limit as usize {
        return Err(EditError::BodyTooLong { len, limit });
    }
    Ok(())
}

/// A header name a filter sets, compared case-insensitively and returned lower-case.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// let name = edit::header_name("Cache-Control").expect("a token");
/// assert_eq!(name.as_str(), "cache-control");
/// assert_eq!(edit::header_name("bad name"), Err(EditError::HeaderName("bad name".into())));
/// ```
#[inline]
pub fn header_name(name: &str) -> Result<HeaderName, EditError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| EditError::HeaderName(name.to_owned()))
}

/// A header value a filter sets. The string becomes the value's storage: checked, not copied.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// let value = edit::header_value("café".to_owned()).expect("obs-text is allowed");
/// assert_eq!(value.as_bytes(), "café".as_bytes());
/// assert_eq!(edit::header_value("a\r\nx-evil: 1".to_owned()), Err(EditError::HeaderValue));
/// ```
#[inline]
pub fn header_value(value: String) -> Result<HeaderValue, EditError> {
    HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| EditError::HeaderValue)
}

/// The longest header name the `http` crate stores.
const MAX_HEADER_NAME_LEN: usize = (1 << 16) - 1;

/// Checks a header name as [`header_name`] does, without building the `http` crate's name.
///
/// For code that only needs the verdict (the SDK checks an edit where the filter makes it and
/// leaves storing it to the gateway): `http`'s name parser, with its table of standard names,
/// is a quarter of a small filter's component. The rule is the token of RFC 9110, which is
/// what `http` accepts; the tests hold the two to the same answer for every byte.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert_eq!(edit::check_header_name("X-Tenant"), Ok(()));
/// assert_eq!(edit::check_header_name("bad name"), Err(EditError::HeaderName("bad name".into())));
/// ```
#[inline]
pub fn check_header_name(name: &str) -> Result<(), EditError> {
    let tchar = |byte: &u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(byte);
    let valid =
        !name.is_empty() && name.len() <= MAX_HEADER_NAME_LEN && name.as_bytes().iter().all(tchar);
    if valid {
        Ok(())
    } else {
        Err(EditError::HeaderName(name.to_owned()))
    }
}

/// Checks a header value as [`header_value`] does, without building the `http` crate's value
/// (see [`check_header_name`] for why): tabs and bytes from 0x20 up, but DEL.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert_eq!(edit::check_header_value("café\tau lait"), Ok(()));
/// assert_eq!(edit::check_header_value("a\r\nx-evil: 1"), Err(EditError::HeaderValue));
/// ```
#[inline]
pub fn check_header_value(value: &str) -> Result<(), EditError> {
    let allowed = |byte: u8| (byte >= 0x20 && byte != 0x7f) || byte == b'\t';
    if value.bytes().all(allowed) {
        Ok(())
    } else {
        Err(EditError::HeaderValue)
    }
}

/// Checks a path a filter sets: it starts with `/` and holds printable ASCII only, without the
/// `?` or `#` that would end it on the request line.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert_eq!(edit::path("/v2/users"), Ok(()));
/// assert_eq!(edit::path("v2/users"), Err(EditError::Path));
/// ```
#[inline]
pub fn path(path: &str) -> Result<(), EditError> {
    let valid = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if valid { Ok(()) } else { Err(EditError::Path) }
}

/// Checks a query a filter sets, without its `?`: printable ASCII only, without the `#` that
/// would end it on the request line.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert_eq!(edit::query("page=2&sort=name"), Ok(()));
/// assert_eq!(edit::query("q=a b"), Err(EditError::Query));
/// ```
#[inline]
pub fn query(query: &str) -> Result<(), EditError> {
    if query.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        Ok(())
    } else {
        Err(EditError::Query)
    }
}

/// A status code a filter sets or replies with: `100..=999`.
///
/// ```
/// use gateway_rules::edit::{self, EditError};
///
/// assert_eq!(edit::status(204).expect("in range").as_u16(), 204);
/// assert_eq!(edit::status(1000), Err(EditError::Status(1000)));
/// ```
#[inline]
pub fn status(status: u16) -> Result<StatusCode, EditError> {
    StatusCode::from_u16(status).map_err(|_| EditError::Status(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_tokens_returned_lower_case() {
        // (name, the lower-case name if accepted)
        let cases = [
            ("x-tenant", Some("x-tenant")),
            ("X-Tenant", Some("x-tenant")),
            ("CONTENT-TYPE", Some("content-type")),
            ("x.y_z~!#$%&'*+^`|", Some("x.y_z~!#$%&'*+^`|")),
            ("", None),
            ("bad name", None),
            ("x:y", None),
            ("x\ty", None),
            ("café", None),
            ("(x)", None),
        ];
        for (name, expected) in cases {
            let parsed = header_name(name);
            assert_eq!(
                parsed.as_ref().ok().map(HeaderName::as_str),
                expected,
                "{name:?}"
            );
            if expected.is_none() {
                assert_eq!(parsed, Err(EditError::HeaderName(name.to_owned())));
            }
        }
    }

    #[test]
    fn header_values_refuse_control_bytes_but_tab() {
        // (value, accepted)
        let cases = [
            ("", true),
            ("plain text", true),
            ("a\tb", true),
            ("\"quoted\"; q=0.9", true),
            // obs-text: the gateway passes UTF-8 through as bytes 0x80-0xFF.
            ("café", true),
            ("日本", true),
            ("\u{80}", true),
            ("\x01", false),
            ("\x7f", false),
            ("\0", false),
            ("line\r\nx-evil: 1", false),
            ("cr\r", false),
            ("lf\n", false),
        ];
        for (value, accepted) in cases {
            let parsed = header_value(value.to_owned());
            assert_eq!(parsed.is_ok(), accepted, "{value:?}");
            match parsed {
                Ok(parsed) => assert_eq!(parsed.as_bytes(), value.as_bytes(), "{value:?}"),
                Err(error) => assert_eq!(error, EditError::HeaderValue),
            }
        }
    }

    #[test]
    fn the_light_checks_agree_with_the_http_crate_on_every_byte() {
        for byte in 0..=u8::MAX {
            let text = String::from_utf8_lossy(&[byte]).into_owned();
            for name in [text.clone(), format!("x-{text}"), format!("{text}-x")] {
                assert_eq!(
                    check_header_name(&name).is_ok(),
                    header_name(&name).is_ok(),
                    "name {name:?}"
                );
            }
            let value = format!("a{text}b");
            assert_eq!(
                check_header_value(&value).is_ok(),
                header_value(value.clone()).is_ok(),
                "value {value:?}"
            );
        }
        for value in ["café", "日本", "\u{80}", "\u{7f}", "", "\t"] {
            assert_eq!(
                check_header_value(value).is_ok(),
                header_value(value.to_owned()).is_ok(),
                "{value:?}"
            );
        }
        let longest = "a".repeat(MAX_HEADER_NAME_LEN);
        assert!(check_header_name(&longest).is_ok() && header_name(&longest).is_ok());
        let too_long = "a".repeat(MAX_HEADER_NAME_LEN + 1);
        assert!(check_header_name(&too_long).is_err() && header_name(&too_long).is_err());
        assert!(check_header_name("").is_err() && header_name("").is_err());
    }

    #[test]
    fn paths_start_with_a_slash_and_hold_printable_ascii() {
        // (path, accepted)
        let cases = [
            ("/", true),
            ("/users/42", true),
            ("/a%20b/~x;y=1", true),
            ("", false),
            ("users", false),
            ("/a b", false),
            ("/a?b", false),
            ("/a#b", false),
            ("/caf\u{e9}", false),
            ("/a\tb", false),
            ("/a\x7f", false),
        ];
        for (candidate, accepted) in cases {
            let checked = path(candidate);
            assert_eq!(checked.is_ok(), accepted, "{candidate:?}");
            if !accepted {
                assert_eq!(checked, Err(EditError::Path));
            }
        }
    }

    #[test]
    fn queries_hold_printable_ascii_without_a_fragment() {
        // (query, accepted)
        let cases = [
            ("", true),
            ("a=1&b=2", true),
            ("q=a+b%20c&&flag", true),
            ("next=/a?b", true),
            ("a=1#top", false),
            ("q=a b", false),
            ("q=caf\u{e9}", false),
            ("q=\x01", false),
        ];
        for (candidate, accepted) in cases {
            let checked = query(candidate);
            assert_eq!(checked.is_ok(), accepted, "{candidate:?}");
            if !accepted {
                assert_eq!(checked, Err(EditError::Query));
            }
        }
    }

    #[test]
    fn statuses_are_three_digits() {
        for accepted in [100, 200, 404, 599, 999] {
            assert_eq!(status(accepted).map(|s| s.as_u16()), Ok(accepted));
        }
        for refused in [0, 99, 1000, u16::MAX] {
            assert_eq!(status(refused), Err(EditError::Status(refused)));
        }
    }

    #[test]
    fn messages_are_the_ones_filters_receive() {
        let cases = [
            (
                EditError::HeaderName("bad name".into()),
                "`bad name` is not a valid header name",
            ),
            (
                EditError::HeaderValue,
                "header value contains a forbidden character",
            ),
            (
                EditError::Path,
                "a path must start with `/` and hold only printable ASCII, without `?` or `#`",
            ),
            (
                EditError::Query,
                "a query may hold only printable ASCII, without `#`",
            ),
            (EditError::Status(42), "42 is not a valid status code"),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }
}
