//! The rules of HTTP caching (RFC 9111) and conditional requests (RFC 9110 §13) as pure
//! functions of header values and times: no host calls, so every rule is tested on its own.
//!
//! The cache is a shared cache (RFC 9111 §1): `private` answers and `s-maxage` apply to it.
//! Times are seconds since the Unix epoch (HTTP dates have one-second resolution) unless a name
//! says milliseconds.

use std::time::UNIX_EPOCH;

/// The largest delta-seconds value a cache must handle; larger values mean this (RFC 9111
/// §1.2.2), which keeps every sum of ages in range.
pub(crate) const MAX_DELTA: u64 = 1 << 31;

/// The directives of one message's `Cache-Control` field lines (RFC 9111 §5.2), request and
/// response directives alike: each side reads the ones that apply to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub no_store: bool,
    /// `no-cache`, unqualified or with field names: both mean revalidate before every use here,
    /// since stripping the named fields would serve a different answer than the origin meant.
    pub no_cache: bool,
    /// `private`, qualified or not: a shared cache stores neither.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// `max-stale` on a request: `Some(None)` accepts any staleness.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
    pub stale_if_error: Option<u64>,
}

/// Splits a field value on the commas that are not inside a quoted string.
fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, byte) in value.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(value[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|part| !part.is_empty());
    parts
}

/// A delta-seconds value (RFC 9111 §1.2.2); `None` if it is not one. A quoted value is
/// accepted, as the RFC asks of recipients.
fn delta_seconds(value: &str) -> Option<u64> {
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(value);
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // All digits: only overflow fails to parse, and that is past the cap anyway.
    Some(value.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
}

/// Records a delta-seconds directive. An invalid value, or a second occurrence that disagrees,
/// makes it 0: RFC 9111 §4.2.1 lets a cache consider such an answer stale, the safe reading.
fn set_delta(slot: &mut Option<u64>, value: Option<&str>) {
    let parsed = value.and_then(delta_seconds).unwrap_or(0);
    *slot = match *slot {
        Some(earlier) if earlier != parsed => Some(0),
        _ => Some(parsed),
    };
}

impl CacheControl {
    /// Parses every line of the field; unknown directives are ignored (RFC 9111 §5.2.3).
    pub(crate) fn parse<S: AsRef<str>>(lines: &[S]) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in lines {
            for directive in split_list(line.as_ref()) {
                let (name, value) = match directive.split_once('=') {
                    Some((name, value)) => (name.trim(), Some(value.trim())),
                    None => (directive, None),
                };
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    "max-age" => set_delta(&mut cc.max_age, value),
                    "s-maxage" => set_delta(&mut cc.s_maxage, value),
                    "min-fresh" => set_delta(&mut cc.min_fresh, value),
                    "stale-if-error" => set_delta(&mut cc.stale_if_error, value),
                    "max-stale" => {
                        cc.max_stale = Some(value.map(|value| delta_seconds(value).unwrap_or(0)));
                    }
                    _ => {}
                }
            }
        }
        cc
    }

    /// Whether a stale answer must never be served without revalidation (RFC 9111 §5.2.2.2,
    /// §5.2.2.8, and `s-maxage`, which implies `proxy-revalidate` for a shared cache, §5.2.2.10).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// An HTTP date (RFC 9110 §5.6.7, all three formats) as seconds since the epoch.
pub(crate) fn http_date(value: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    time.duration_since(UNIX_EPOCH)
        .ok()
        .map(|since| since.as_secs())
}

/// Formats seconds since the epoch as an IMF-fixdate.
#[cfg(test)]
pub(crate) fn format_http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Status codes a cache may give a heuristic freshness (RFC 9110 §15.1): without explicit
/// freshness these are the only ones stored. 206 is left out: this cache does not combine
/// ranges.
pub(crate) fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Final statuses this cache understands well enough to store when the answer gives its own
/// freshness (RFC 9111 §3): everything final but 206 (no range support) and 304 (a
/// revalidation's answer, never an entry of its own).
fn storable_status(status: u16) -> bool {
    (200..600).contains(&status) && status != 206 && status != 304
}

/// Why an answer is not stored. The names are the metric's label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    /// The request or the answer says `no-store`.
    NoStore,
    /// `private`: meant for one user (RFC 9111 §5.2.2.7).
    Private,
    /// The answer sets a cookie, and the route does not strip them.
    SetCookie,
    /// `Vary: *`: no later request can be shown to match (RFC 9111 §4.1).
    VaryStar,
    /// A status that is not stored without explicit freshness, or never.
    Status,
    /// The request carried credentials and the answer does not say it may be shared
    /// (RFC 9111 §3.5).
    Authorization,
    /// Neither explicit freshness nor an allowed heuristic, and nothing to revalidate with.
    NoFreshness,
    /// The body is larger than the route stores.
    TooLarge,
}

impl NotStored {
    pub(crate) fn label(self) -> &'static str {
        match self {
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::Status => "status",
            NotStored::Authorization => "authorization",
            NotStored::NoFreshness => "no-freshness",
            NotStored::TooLarge => "too-large",
        }
    }
}

/// What of an answer decides whether it is stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer<'a> {
    pub status: u16,
    pub cc: CacheControl,
    pub expires: Option<&'a str>,
    pub date: Option<u64>,
    pub last_modified: Option<u64>,
    pub has_etag: bool,
    pub vary: Vec<String>,
    pub sets_cookie: bool,
}

/// Whether a shared cache may store the answer to a GET (RFC 9111 §3), and its freshness
/// lifetime if so.
///
/// - `request_cc`: the request's `Cache-Control`;
/// - `authorized`: the request carried `Authorization` and the route does not key per user;
/// - `strip_cookies`: the route stores answers that set cookies, without the cookies;
/// - `heuristic`: the freshness given to an answer without its own, where RFC 9111 §4.2.2
///   allows one (zero: none).
pub(crate) fn storable(
    request_cc: &CacheControl,
    answer: &Answer<'_>,
    authorized: bool,
    strip_cookies: bool,
    heuristic: u64,
) -> Result<u64, NotStored> {
    if request_cc.no_store || answer.cc.no_store {
        return Err(NotStored::NoStore);
    }
    if answer.cc.private {
        return Err(NotStored::Private);
    }
    // RFC 9111 §3.5 also lets `must-revalidate` share it; the stricter rule keeps
    // credentials' answers to `public` and `s-maxage`.
    if authorized && !(answer.cc.public || answer.cc.s_maxage.is_some()) {
        return Err(NotStored::Authorization);
    }
    if answer.sets_cookie && !strip_cookies {
        return Err(NotStored::SetCookie);
    }
    if answer.vary.iter().any(|name| name == "*") {
        return Err(NotStored::VaryStar);
    }
    let explicit = explicit_lifetime(answer);
    if !storable_status(answer.status)
        || (explicit.is_none() && !answer.cc.public && !heuristically_cacheable(answer.status))
    {
        return Err(NotStored::Status);
    }
    let lifetime = explicit.unwrap_or(heuristic);
    let validators = answer.has_etag || answer.last_modified.is_some();
    if lifetime == 0 && !validators && answer.cc.stale_if_error.is_none_or(|window| window == 0) {
        return Err(NotStored::NoFreshness);
    }
    Ok(lifetime)
}

/// The freshness the answer gives itself (RFC 9111 §4.2.1): `s-maxage`, then `max-age`, then
/// `Expires` less `Date`; `None` if it gives none. An `Expires` that is not a date means
/// already expired (§5.3).
pub(crate) fn explicit_lifetime(answer: &Answer<'_>) -> Option<u64> {
    if let Some(s_maxage) = answer.cc.s_maxage {
        return Some(s_maxage);
    }
    if let Some(max_age) = answer.cc.max_age {
        return Some(max_age);
    }
    let expires = answer.expires?;
    let Some(expires) = http_date(expires) else {
        return Some(0);
    };
    // Without a Date, the time the cache received the answer stands in (§4.2.1); the caller
    // passes that as `date` then.
    Some(
        expires
            .saturating_sub(answer.date.unwrap_or(0))
            .min(MAX_DELTA),
    )
}

/// The age an answer had when it was received (RFC 9111 §4.2.3): the corrected initial age.
///
/// - `age_header`: its `Age`, if valid;
/// - `date`: its `Date`;
/// - `request_ms`, `response_ms`: when the request was sent and the answer received.
pub(crate) fn initial_age(
    age_header: Option<u64>,
    date: Option<u64>,
    request_ms: u64,
    response_ms: u64,
) -> u64 {
    let response_time = response_ms / 1000;
    let apparent_age = date.map_or(0, |date| response_time.saturating_sub(date));
    let response_delay = response_ms.saturating_sub(request_ms) / 1000;
    let corrected_age_value = age_header.unwrap_or(0).saturating_add(response_delay);
    apparent_age.max(corrected_age_value).min(MAX_DELTA)
}

/// The current age of a stored answer: its initial age plus the time it has been stored.
pub(crate) fn current_age(initial_age: u64, response_ms: u64, now_ms: u64) -> u64 {
    let resident = now_ms.saturating_sub(response_ms) / 1000;
    initial_age.saturating_add(resident).min(MAX_DELTA)
}

/// How a stored answer may be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Fresh enough for this request: serve it.
    Fresh,
    /// Stale, but the request accepts it (`max-stale`) and the answer allows that: serve it.
    StaleAccepted,
    /// It must be revalidated (or fetched again) first.
    Revalidate,
}

/// Whether a stored answer can be used for a request (RFC 9111 §4.2, §5.2.1), given its
/// freshness lifetime and current age.
pub(crate) fn usable(
    request_cc: &CacheControl,
    stored_cc: &CacheControl,
    lifetime: u64,
    age: u64,
) -> Use {
    if request_cc.no_cache || stored_cc.no_cache {
        return Use::Revalidate;
    }
    let mut limit = lifetime;
    if let Some(max_age) = request_cc.max_age {
        limit = limit.min(max_age);
    }
    let needed = age.saturating_add(request_cc.min_fresh.unwrap_or(0));
    if needed < limit {
        return Use::Fresh;
    }
    // Stale for this request from here on.
    if stored_cc.forbids_stale() {
        return Use::Revalidate;
    }
    let staleness = age.saturating_sub(lifetime);
    if request_cc.max_age.is_none_or(|max_age| age < max_age) {
        match request_cc.max_stale {
            Some(None) => return Use::StaleAccepted,
            Some(Some(max_stale)) if staleness <= max_stale && age >= lifetime => {
                return Use::StaleAccepted;
            }
            _ => {}
        }
    }
    Use::Revalidate
}

/// Whether a stale stored answer may stand in for an upstream that failed (`stale-if-error`,
/// RFC 5861 §4), from the answer's directive or the route's own window.
pub(crate) fn stale_if_error(
    stored_cc: &CacheControl,
    lifetime: u64,
    age: u64,
    route: u64,
) -> bool {
    if stored_cc.must_revalidate || stored_cc.proxy_revalidate || stored_cc.s_maxage.is_some() {
        return false;
    }
    let window = stored_cc.stale_if_error.unwrap_or(route);
    age.saturating_sub(lifetime) < window
}

/// An entity tag (RFC 9110 §8.8.3): whether it is weak, and its opaque part with the quotes.
fn entity_tag(value: &str) -> Option<(bool, &str)> {
    let value = value.trim();
    let (weak, tag) = match value.strip_prefix("W/") {
        Some(tag) => (true, tag),
        None => (false, value),
    };
    (tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"')).then_some((weak, tag))
}

/// Whether `If-None-Match` matches a stored `ETag` by the weak comparison (RFC 9110 §13.1.2):
/// `*`, or any listed tag with the same opaque part.
pub(crate) fn none_match(if_none_match: &[String], etag: Option<&str>) -> bool {
    let Some((_, stored)) = etag.and_then(entity_tag) else {
        return if_none_match.iter().any(|line| line.trim() == "*");
    };
    if_none_match
        .iter()
        .flat_map(|line| split_list(line))
        .any(|candidate| {
            candidate == "*" || entity_tag(candidate).is_some_and(|(_, tag)| tag == stored)
        })
}

/// Whether a conditional GET or HEAD is answered 304 from a stored answer (RFC 9110 §13.2.2):
/// `If-None-Match` decides when present; otherwise `If-Modified-Since`, against the stored
/// `Last-Modified` (or, without one, its `Date`, §13.2.2 allows either; never the time now).
pub(crate) fn not_modified(
    if_none_match: &[String],
    if_modified_since: Option<&str>,
    etag: Option<&str>,
    last_modified: Option<u64>,
) -> bool {
    if !if_none_match.is_empty() {
        return none_match(if_none_match, etag);
    }
    match (if_modified_since.and_then(http_date), last_modified) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// Header fields a 304 must not change in the stored answer (RFC 9111 §3.2): the framing, and
/// what only describes this hop.
pub(crate) fn kept_on_update(name: &str) -> bool {
    matches!(
        name,
        "content-length"
            | "content-encoding"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "age"
            | "x-cache-status"
    )
}

/// Header fields never stored: hop-by-hop ones (RFC 9110 §7.6.1), and what the cache writes
/// itself on every use.
pub(crate) fn not_stored_header(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "age"
            | "x-cache-status"
            | "content-length"
    )
}

/// The path and query a `Location` or `Content-Location` value names on the same origin, to be
/// invalidated with the request's own (RFC 9111 §4.4); `None` for another origin or a value
/// that is no URI reference. A relative reference is resolved against the request's path.
pub(crate) fn same_origin_target(value: &str, host: &str, request_path: &str) -> Option<String> {
    let value = value.trim();
    if value.is_empty() || value.bytes().any(|byte| byte <= b' ' || byte == b'#') {
        return None;
    }
    if let Some(rest) = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .or_else(|| value.strip_prefix("//"))
    {
        let (authority, target) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let name = authority.split(':').next().unwrap_or(authority);
        return name.eq_ignore_ascii_case(host).then(|| target.to_owned());
    }
    // A colon before the first slash is a scheme: another origin, or no HTTP one.
    let first_slash = value.find('/').unwrap_or(value.len());
    if value[..first_slash].contains(':') {
        return None;
    }
    if value.starts_with('/') {
        return Some(value.to_owned());
    }
    let base = request_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    Some(format!("{base}/{value}"))
}
