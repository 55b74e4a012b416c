//! The filter's per-route configuration, as written under the route's `config` key.
//!
//! Every key is optional and `{}` is a valid configuration that changes nothing. Maps are
//! `BTreeMap`s: the gateway hands the configuration over as a JSON object whose key order is not
//! guaranteed, so edits are applied in the names' byte order, the same on every start.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How to rewrite the path sent upstream: prefix operations first, then `regex`.
    pub path: PathOps,
    /// Edits to the query string, applied after the path: `remove`, then `set`, then `add`.
    pub query: QueryOps,
    /// Edits to the request headers, applied after the query: `remove`, then `set`, then `add`.
    pub request_headers: HeaderOps,
    /// Edits to the response headers on the way back to the client: `remove`, then `set`, then
    /// `add`.
    pub response_headers: HeaderOps,
}

/// Path rewriting.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathOps {
    /// Removes this prefix if the path starts with it on a segment boundary: `/users` matches
    /// `/users` and `/users/...`, never `/usersx`. Must start with `/`; a trailing `/` is ignored.
    /// A path left empty becomes `/` (unless `add_prefix` follows).
    pub strip_prefix: Option<String>,
    /// Prepends this prefix, after `strip_prefix`, to every path, joined without a double `/`.
    /// Must start with `/`; a trailing `/` is ignored.
    pub add_prefix: Option<String>,
    /// Replaces a leading `from` (segment-aware, as in `strip_prefix`) with `to`; paths that do
    /// not start with `from` are left alone. Cannot be combined with `strip_prefix` or
    /// `add_prefix`.
    pub replace_prefix: Option<ReplacePrefix>,
    /// A regular expression applied to the path after the prefix operations.
    pub regex: Option<RegexRewrite>,
}

/// A prefix to replace with another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplacePrefix {
    /// The prefix to look for. Must start with `/`; a trailing `/` is ignored.
    pub from: String,
    /// What it is replaced with. Must start with `/`; a trailing `/` is ignored.
    pub to: String,
}

/// A regular-expression rewrite of the path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    /// The pattern, in the `regex` crate's syntax. Only the first match is replaced.
    pub pattern: String,
    /// The replacement: `$1` or `${1}` for a numbered group, `${name}` for a named one, `$$` for
    /// a literal `$`. Write `${1}x` rather than `$1x`, which names a group `1x`. A result that
    /// does not start with `/` gets one prepended.
    pub replacement: String,
}

/// Edits to the headers of a request or a response. Names are case-insensitive.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers to replace: every existing value of the name gives way to this one. Applied in
    /// name order (a `BTreeMap`, so the order is the same on every start).
    pub set: BTreeMap<String, String>,
    /// Headers to append, keeping existing values. Applied in name order.
    pub add: BTreeMap<String, String>,
    /// Header names whose every value is removed.
    pub remove: Vec<String>,
}

/// Edits to the query string. Parameters are matched by their raw (not percent-decoded) name;
/// parameters that are not edited are kept byte for byte.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryOps {
    /// Parameters to append as `name=value`, both percent-encoded; a parameter already present
    /// with the same name is kept. Appended in name order.
    pub add: BTreeMap<String, String>,
    /// Parameters to replace: every existing one with the name is removed, then `name=value` is
    /// appended, percent-encoded. Appended in name order, before `add`.
    pub set: BTreeMap<String, String>,
    /// Names of parameters to remove, every occurrence. A query left empty is removed, `?` and
    /// all.
    pub remove: Vec<String>,
}
