//! The rewrite rules, checked and compiled once from the configuration. The path and query
//! rewrites work on plain strings; the header edits apply to a request or a response alike,
//! through the SDK's `Headers`.

use std::borrow::Cow;

use gateway_sdk::Headers;
use regex::Regex;

use crate::config::{Config, HeaderOps, PathOps, QueryOps};

/// Every edit the filter makes, ready to apply.
pub struct Rules {
    /// The path rewrite.
    pub path: PathRules,
    /// The query edits.
    pub query: QueryRules,
    /// The request header edits.
    pub request_headers: HeaderRules,
    /// The response header edits.
    pub response_headers: HeaderRules,
}

impl Rules {
    /// Checks the configuration and compiles it. The error names the offending key.
    pub fn new(config: Config) -> Result<Self, String> {
        Ok(Rules {
            path: PathRules::new(config.path)?,
            query: QueryRules::new(config.query)?,
            request_headers: HeaderRules::new("request_headers", config.request_headers)?,
            response_headers: HeaderRules::new("response_headers", config.response_headers)?,
        })
    }

    /// Whether anything is edited in the request phase.
    pub fn edits_request(&self) -> bool {
        !(self.path.is_empty() && self.query.is_empty() && self.request_headers.is_empty())
    }

    /// Whether anything is edited in the response phase.
    pub fn edits_response(&self) -> bool {
        !self.response_headers.is_empty()
    }
}

/// What happens to a path's prefix.
enum PrefixRule {
    /// Strip `strip` if present, then prepend `add`. Both are kept without a trailing `/`, so
    /// `""` means nothing to strip or add.
    StripAdd { strip: String, add: String },
    /// Replace a leading `from` with `to`, both without a trailing `/`.
    Replace { from: String, to: String },
}

/// The compiled path rewrite.
pub struct PathRules {
    prefix: Option<PrefixRule>,
    regex: Option<(Regex, String)>,
}

impl PathRules {
    fn new(ops: PathOps) -> Result<Self, String> {
        let prefix = match (ops.replace_prefix, ops.strip_prefix, ops.add_prefix) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(
                    "path.replace_prefix cannot be combined with strip_prefix or add_prefix".into(),
                );
            }
            (Some(replace), None, None) => Some(PrefixRule::Replace {
                from: checked_prefix("path.replace_prefix.from", &replace.from)?,
                to: checked_prefix("path.replace_prefix.to", &replace.to)?,
            }),
            (None, None, None) => None,
            (None, strip, add) => Some(PrefixRule::StripAdd {
                strip: match strip {
                    Some(strip) => checked_prefix("path.strip_prefix", &strip)?,
                    None => String::new(),
                },
                add: match add {
                    Some(add) => checked_prefix("path.add_prefix", &add)?,
                    None => String::new(),
                },
            }),
        };
        let regex = match ops.regex {
            Some(rule) => {
                let pattern = Regex::new(&rule.pattern)
                    .map_err(|error| format!("path.regex.pattern: invalid regex: {error}"))?;
                Some((pattern, rule.replacement))
            }
            None => None,
        };
        Ok(PathRules { prefix, regex })
    }

    /// Whether there is no path rewrite.
    pub fn is_empty(&self) -> bool {
        self.prefix.is_none() && self.regex.is_none()
    }

    /// The rewritten path, or `None` if it is unchanged. `path` starts with `/`, and so does the
    /// result.
    pub fn rewrite(&self, path: &str) -> Option<String> {
        let prefixed = match &self.prefix {
            None => Cow::Borrowed(path),
            Some(PrefixRule::StripAdd { strip, add }) => {
                let rest = strip_segment_prefix(path, strip).unwrap_or(path);
                Cow::Owned(join_prefix(add, rest))
            }
            Some(PrefixRule::Replace { from, to }) => match strip_segment_prefix(path, from) {
                Some(rest) => Cow::Owned(join_prefix(to, rest)),
                None => Cow::Borrowed(path),
            },
        };
        let rewritten = match &self.regex {
            Some((pattern, replacement)) => {
                match pattern.replace(&prefixed, replacement.as_str()) {
                    Cow::Owned(replaced) if replaced.starts_with('/') => replaced,
                    Cow::Owned(replaced) => format!("/{replaced}"),
                    Cow::Borrowed(_) => prefixed.into_owned(),
                }
            }
            None => prefixed.into_owned(),
        };
        (rewritten != path).then_some(rewritten)
    }
}

/// Checks a configured path prefix and drops its trailing `/`s, so joining never doubles one and
/// matching stays on segment boundaries.
fn checked_prefix(key: &str, prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("{key} must start with `/`"));
    }
    let bytes = prefix.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'%' {
            let escape = bytes.get(at + 1..at + 3);
            if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!("{key}: `%` in `{prefix}` must start a %XX escape"));
            }
            at += 3;
            continue;
        }
        let allowed = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&byte);
        if !allowed {
            let character = prefix[at..].chars().next().unwrap_or_default();
            return Err(format!(
                "{key}: `{prefix}` is not a valid URI path: `{character}` must be percent-encoded"
            ));
        }
        at += 1;
    }
    Ok(prefix.trim_end_matches('/').to_owned())
}

/// What follows `prefix` in `path` if `path` starts with it on a segment boundary: `""` or a rest
/// starting with `/`.
fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Joins a prefix without a trailing `/` to a rest that is `""` or starts with `/`.
fn join_prefix(prefix: &str, rest: &str) -> String {
    let joined = format!("{prefix}{rest}");
    if joined.is_empty() {
        "/".to_owned()
    } else {
        joined
    }
}

/// A configured query parameter name.
struct ParamName {
    raw: String,
    encoded: String,
}

impl ParamName {
    fn new(key: &str, name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err(format!("{key}: a parameter name must not be empty"));
        }
        Ok(ParamName {
            raw: name.to_owned(),
            encoded: percent_encode(name),
        })
    }

    /// Matches the raw name in the query, as configured or as `add`/`set` would have written it,
    /// so that `set` replaces its own earlier output.
    fn matches(&self, name: &str) -> bool {
        name == self.raw || name == self.encoded
    }
}

/// The compiled query edits.
pub struct QueryRules {
    remove: Vec<ParamName>,
    /// Names to replace and the encoded `name=value` that replaces them.
    set: Vec<(ParamName, String)>,
    /// Encoded `name=value` pairs to append.
    add: Vec<String>,
}

impl QueryRules {
    fn new(ops: QueryOps) -> Result<Self, String> {
        let remove = ops
            .remove
            .iter()
            .map(|name| ParamName::new("query.remove", name))
            .collect::<Result<_, _>>()?;
        let set = ops
            .set
            .iter()
            .map(|(name, value)| {
                let name = ParamName::new("query.set", name)?;
                let pair = format!("{}={}", name.encoded, percent_encode(value));
                Ok::<_, String>((name, pair))
            })
            .collect::<Result<_, _>>()?;
        let add = ops
            .add
            .iter()
            .map(|(name, value)| {
                let name = ParamName::new("query.add", name)?;
                Ok::<_, String>(format!("{}={}", name.encoded, percent_encode(value)))
            })
            .collect::<Result<_, _>>()?;
        Ok(QueryRules { remove, set, add })
    }

    /// Whether there is no query edit.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// The edited query string (without `?`); `None` means no query.
    pub fn rewrite(&self, query: Option<&str>) -> Option<String> {
        let mut params: Vec<&str> = match query {
            Some(query) if !query.is_empty() => query.split('&').collect(),
            _ => Vec::new(),
        };
        params.retain(|param| {
            let name = param.split_once('=').map_or(*param, |(name, _)| name);
            !self.remove.iter().any(|remove| remove.matches(name))
                && !self.set.iter().any(|(set, _)| set.matches(name))
        });
        params.extend(self.set.iter().map(|(_, pair)| pair.as_str()));
        params.extend(self.add.iter().map(String::as_str));
        // Empty pieces (`a=1&&b=2`) are kept like any other, but alone they are no query.
        if params.iter().all(|param| param.is_empty()) {
            None
        } else {
            Some(params.join("&"))
        }
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986 (`A-Za-z0-9-._~`).
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    encoded
}

/// The checked header edits of one phase, applied in field order: `remove`, `set`, `add`.
pub struct HeaderRules {
    /// Names whose every value is removed.
    remove: Vec<String>,
    /// Names and the one value each is left with, in name order.
    set: Vec<(String, String)>,
    /// Names and a value to append to each, in name order.
    add: Vec<(String, String)>,
}

impl HeaderRules {
    /// `key` is the configuration key, for error messages.
    fn new(key: &str, ops: HeaderOps) -> Result<Self, String> {
        for name in &ops.remove {
            check_header_name(&format!("{key}.remove"), name)?;
        }
        for (op, headers) in [("set", &ops.set), ("add", &ops.add)] {
            let key = format!("{key}.{op}");
            for (name, value) in headers {
                check_header_name(&key, name)?;
                // The gateway's rule for header values: no control character but tab.
                if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
                    return Err(format!(
                        "{key}: the value of `{name}` contains a control character"
                    ));
                }
            }
        }
        Ok(HeaderRules {
            remove: ops.remove,
            set: ops.set.into_iter().collect(),
            add: ops.add.into_iter().collect(),
        })
    }

    /// Whether there is no header edit.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Edits the headers of a request or a response. Stops at the first edit the host refuses
    /// and says which.
    pub fn apply(&self, headers: &mut impl Headers) -> Result<(), String> {
        for name in &self.remove {
            headers.remove_header(name);
        }
        for (name, value) in &self.set {
            headers
                .set_header(name, value)
                .map_err(|reason| format!("cannot set header `{name}`: {reason}"))?;
        }
        for (name, value) in &self.add {
            headers
                .append_header(name, value)
                .map_err(|reason| format!("cannot add header `{name}`: {reason}"))?;
        }
        Ok(())
    }
}

/// Header names are RFC 9110 tokens: one or more `tchar`.
fn check_header_name(key: &str, name: &str) -> Result<(), String> {
    let tchar = |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
    if !name.is_empty() && name.bytes().all(tchar) {
        Ok(())
    } else {
        Err(format!("{key}: `{name}` is not a valid header name"))
    }
}

#[cfg(test)]
mod tests {
    use gateway_sdk::serde_json::{Value, json};

    use super::*;

    fn compiled(config: Value) -> Rules {
        let text = config.to_string();
        let config: Config = gateway_sdk::serde_json::from_value(config)
            .unwrap_or_else(|error| panic!("{text}: {error}"));
        Rules::new(config).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn rewrites_paths() {
        let strip_add = json!({"strip_prefix": "/users", "add_prefix": "/v2"});
        // (path config, request path, path sent upstream)
        let cases: &[(Value, &str, &str)] = &[
            (json!({}), "/users/1", "/users/1"),
            (json!({"strip_prefix": "/users"}), "/users/1", "/1"),
            (json!({"strip_prefix": "/users"}), "/users", "/"),
            (json!({"strip_prefix": "/users"}), "/users/", "/"),
            (json!({"strip_prefix": "/users"}), "/usersx/1", "/usersx/1"),
            (json!({"strip_prefix": "/users"}), "/other", "/other"),
            (json!({"strip_prefix": "/users/"}), "/users/1", "/1"),
            (json!({"strip_prefix": "/users/"}), "/users", "/"),
            (json!({"strip_prefix": "/"}), "/users", "/users"),
            (json!({"strip_prefix": "/a/b"}), "/a/b/c", "/c"),
            (json!({"strip_prefix": "/a/b"}), "/a/bc", "/a/bc"),
            (json!({"add_prefix": "/v2"}), "/users", "/v2/users"),
            (json!({"add_prefix": "/v2/"}), "/users", "/v2/users"),
            (json!({"add_prefix": "/v2"}), "/", "/v2/"),
            (json!({"add_prefix": "/"}), "/users", "/users"),
            (strip_add.clone(), "/users/1", "/v2/1"),
            (strip_add.clone(), "/users", "/v2"),
            (strip_add.clone(), "/users/", "/v2/"),
            // add_prefix applies whether or not strip_prefix matched.
            (strip_add, "/orders/1", "/v2/orders/1"),
            (
                json!({"replace_prefix": {"from": "/old", "to": "/new"}}),
                "/old/x",
                "/new/x",
            ),
            (
                json!({"replace_prefix": {"from": "/old", "to": "/new"}}),
                "/old",
                "/new",
            ),
            (
                json!({"replace_prefix": {"from": "/old", "to": "/new"}}),
                "/older",
                "/older",
            ),
            (
                json!({"replace_prefix": {"from": "/old", "to": "/new"}}),
                "/x/old",
                "/x/old",
            ),
            (
                json!({"replace_prefix": {"from": "/old/", "to": "/"}}),
                "/old/x",
                "/x",
            ),
            (
                json!({"replace_prefix": {"from": "/old", "to": "/"}}),
                "/old",
                "/",
            ),
            (
                json!({"regex": {"pattern": "^/api/v1/([^/]+)/(.*)$", "replacement": "/$1/$2"}}),
                "/api/v1/users/42/orders",
                "/users/42/orders",
            ),
            (
                json!({"regex": {"pattern": "^/api/v1/([^/]+)/(.*)$", "replacement": "/$1/$2"}}),
                "/api/v2/users/42",
                "/api/v2/users/42",
            ),
            (
                json!({"regex": {"pattern": "^/(?P<svc>[a-z]+)/", "replacement": "/${svc}-svc/"}}),
                "/billing/invoices",
                "/billing-svc/invoices",
            ),
            // Only the first match is replaced.
            (
                json!({"regex": {"pattern": "a", "replacement": "b"}}),
                "/aaa",
                "/baa",
            ),
            // A result without a leading `/` gets one.
            (
                json!({"regex": {"pattern": "^/v1/", "replacement": ""}}),
                "/v1/users",
                "/users",
            ),
            (
                json!({"regex": {"pattern": "^/.*$", "replacement": ""}}),
                "/anything",
                "/",
            ),
            (
                json!({"regex": {"pattern": "(?i)^/API", "replacement": "/api"}}),
                "/Api/x",
                "/api/x",
            ),
            (
                json!({"regex": {"pattern": "^/(\\d+)$", "replacement": "/id/${1}x"}}),
                "/42",
                "/id/42x",
            ),
            (
                json!({"regex": {"pattern": "x", "replacement": "$$"}}),
                "/x",
                "/$",
            ),
            // The regex sees the path after the prefix operations.
            (
                json!({"strip_prefix": "/users", "add_prefix": "/v2",
                       "regex": {"pattern": "^/v2/(\\d+)$", "replacement": "/v2/id/$1"}}),
                "/users/42",
                "/v2/id/42",
            ),
        ];
        for (config, path, expected) in cases {
            let rules = compiled(json!({"path": config}));
            let rewritten = rules.path.rewrite(path);
            assert_eq!(
                rewritten.as_deref().unwrap_or(path),
                *expected,
                "{config} on {path}"
            );
            // `None` exactly when nothing changed, so the host is not called for nothing.
            assert_eq!(rewritten.is_none(), path == expected, "{config} on {path}");
        }
    }

    #[test]
    fn edits_queries() {
        // (query config, request query, query sent upstream)
        let cases: &[(Value, Option<&str>, Option<&str>)] = &[
            (
                json!({"add": {"source": "gateway"}}),
                None,
                Some("source=gateway"),
            ),
            (
                json!({"add": {"source": "gateway"}}),
                Some(""),
                Some("source=gateway"),
            ),
            (
                json!({"add": {"source": "gateway"}}),
                Some("a=1"),
                Some("a=1&source=gateway"),
            ),
            (json!({"add": {"a": "2"}}), Some("a=1"), Some("a=1&a=2")),
            (json!({"add": {"b": "2", "a": "1"}}), None, Some("a=1&b=2")),
            (
                json!({"add": {"q": "a b&c=d/é"}}),
                None,
                Some("q=a%20b%26c%3Dd%2F%C3%A9"),
            ),
            (json!({"add": {"a[]": "x"}}), None, Some("a%5B%5D=x")),
            (json!({"add": {"t": "-._~"}}), None, Some("t=-._~")),
            (json!({"add": {"empty": ""}}), None, Some("empty=")),
            (
                json!({"set": {"page": "1"}}),
                Some("page=3&x=y&page=4"),
                Some("x=y&page=1"),
            ),
            (
                json!({"set": {"page": "1"}}),
                Some("x=y"),
                Some("x=y&page=1"),
            ),
            (json!({"set": {"page": "1"}}), None, Some("page=1")),
            (json!({"set": {"page": "1"}}), Some("page"), Some("page=1")),
            (
                json!({"set": {"a b": "1"}}),
                Some("a%20b=0&c=1"),
                Some("c=1&a%20b=1"),
            ),
            (
                json!({"remove": ["debug"]}),
                Some("a=1&debug=1&b=2&debug"),
                Some("a=1&b=2"),
            ),
            (json!({"remove": ["debug"]}), Some("debug=1"), None),
            (json!({"remove": ["debug"]}), Some("debug=1&debug=2"), None),
            (json!({"remove": ["debug"]}), None, None),
            (
                json!({"remove": ["debug"]}),
                Some("debugger=1&xdebug=2"),
                Some("debugger=1&xdebug=2"),
            ),
            (
                json!({"remove": ["debug"]}),
                Some("Debug=1"),
                Some("Debug=1"),
            ),
            // Raw names: an encoded name is not decoded before comparing.
            (json!({"remove": ["a.b"]}), Some("a%2Eb=1"), Some("a%2Eb=1")),
            (json!({"remove": ["debug"]}), Some("debug=1&"), None),
            // Untouched parameters are kept byte for byte, odd ones included.
            (
                json!({"remove": ["token"]}),
                Some("q=a+b%20c&&token=s&x==y&flag"),
                Some("q=a+b%20c&&x==y&flag"),
            ),
            (
                json!({"remove": ["a"], "set": {"a": "2"}}),
                Some("a=1"),
                Some("a=2"),
            ),
            (
                json!({"remove": ["debug"], "set": {"page": "1"}, "add": {"source": "gw"}}),
                Some("page=2&debug=1&q=x"),
                Some("q=x&page=1&source=gw"),
            ),
        ];
        for (config, query, expected) in cases {
            let rules = compiled(json!({"query": config}));
            let rewritten = rules.query.rewrite(*query);
            assert_eq!(rewritten.as_deref(), *expected, "{config} on {query:?}");
        }
    }
}
