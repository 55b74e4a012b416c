//! The requests a filter may send to a service through the `outbound` capability.
//!
//! The gateway checks every outbound request with [`request`] before it sends it, and so does
//! the SDK's test host, so a request a filter's unit test sends is one the gateway sends: a
//! refusal is the filter's `bad-request`, with these messages. Header names and values meet the
//! same rules as a filter's header edits (see [`crate::edit`]).
//!
//! ```
//! use gateway_rules::outbound::{self, BadRequest};
//!
//! let head = outbound::request("GET", "/keys?v=2".to_owned(), vec![("Accept".into(), "application/json".into())])
//!     .expect("a request the gateway sends");
//! assert_eq!(head.headers["accept"], "application/json");
//! assert_eq!(
//!     outbound::request("GET", "keys".to_owned(), vec![]).err(),
//!     Some(BadRequest::Target("keys".to_owned()))
//! );
//! ```

use http::{HeaderMap, Method};

use crate::edit;

/// Why a request cannot be sent. The text is what the filter receives.
///
/// ```
/// use gateway_rules::outbound::BadRequest;
///
/// assert_eq!(BadRequest::Method("G T".into()).to_string(), "`G T` is not a method");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// The method is not an RFC 9110 token.
    #[error("`{0}` is not a method")]
    Method(String),
    /// The target does not start with `/`, or is not a valid path and query.
    #[error("`{0}` is not a path and query starting with `/`")]
    Target(String),
    /// A header name is not a token.
    #[error("`{0}` is not a header name")]
    HeaderName(String),
    /// The value of this header holds a control byte other than tab, or DEL.
    #[error("the value of `{0}` is not a header value")]
    HeaderValue(String),
}

/// A request's head, checked and typed as the gateway sends it.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    /// Starts with `/`.
    pub path_and_query: String,
    pub headers: HeaderMap,
}

/// Checks what a filter asked to send, in the order the gateway reports it: the method, the
/// target, then each header in order.
///
/// ```
/// use gateway_rules::outbound::{self, BadRequest};
///
/// let refused = outbound::request("GET", "/".to_owned(), vec![("x-a".into(), "1\r\n".into())]);
/// assert_eq!(refused.err(), Some(BadRequest::HeaderValue("x-a".to_owned())));
/// ```
pub fn request(
    method: &str,
    path_and_query: String,
    headers: Vec<(String, String)>,
) -> Result<Head, BadRequest> {
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| BadRequest::Method(method.to_owned()))?;
    let valid_target = path_and_query.starts_with('/')
        && path_and_query.parse::<http::uri::PathAndQuery>().is_ok();
    if !valid_target {
        return Err(BadRequest::Target(path_and_query));
    }
    let mut checked = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = edit::header_name(&name).map_err(|_| BadRequest::HeaderName(name))?;
        let value =
            edit::header_value(value).map_err(|_| BadRequest::HeaderValue(name.to_string()))?;
        checked.append(name, value);
    }
    Ok(Head {
        method,
        path_and_query,
        headers: checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_go_on_the_wire() {
        let refused = |method: &str, target: &str, header: (&str, &str)| {
            request(
                method,
                target.to_owned(),
                vec![(header.0.to_owned(), header.1.to_owned())],
            )
            .err()
        };
        let fine = ("accept", "*/*");
        assert_eq!(refused("GET", "/a?b=1", fine), None);
        assert_eq!(refused("PURGE", "/", fine), None, "any token is a method");
        assert_eq!(
            refused("", "/", fine),
            Some(BadRequest::Method(String::new()))
        );
        for target in ["", "a", "http://elsewhere/", "/a b"] {
            assert_eq!(
                refused("GET", target, fine),
                Some(BadRequest::Target(target.to_owned())),
                "{target:?}"
            );
        }
        assert_eq!(
            refused("GET", "/", ("bad name", "x")),
            Some(BadRequest::HeaderName("bad name".to_owned()))
        );
        assert_eq!(
            refused("GET", "/", ("X-Note", "a\nb")),
            Some(BadRequest::HeaderValue("x-note".to_owned()))
        );
        assert_eq!(
            refused("GET", "/", ("x-note", "café")),
            None,
            "obs-text, as in an edit"
        );
    }
}
