//! The filter's configuration, as a route's `config` gives it. Every struct refuses unknown
//! keys, so a typo is an error when the gateway loads the route, not a limit that silently
//! never applies.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::key::KeySpec;

/// The whole configuration of one route's rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this configuration in metrics (the `scope` label) and in the store's keys, so two
    /// routes with different scopes never share counters and two with the same scope share the
    /// counters of their limits that are the same.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// The limits of requests that no rule matches. A request is allowed only if every limit
    /// that applies allows it.
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    /// Limits by path and method: the first rule that matches replaces `limits` for the request.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Per consumer (the `auth.consumer` context entry the auth filter sets): limits that
    /// replace those of the same name, and others added, on every path of this configuration.
    #[serde(default)]
    pub consumers: BTreeMap<String, Vec<LimitConfig>>,
    /// What a limit counts by when it names no `key` of its own.
    #[serde(default = "default_key")]
    pub key: KeySpec,
    /// What a limit counts by when a part of its key is missing (no API key, no subject), when
    /// it names no `fallback` of its own.
    #[serde(default = "default_key")]
    pub fallback: KeySpec,
    /// Peers whose `X-Forwarded-For` is believed: addresses or CIDR ranges. From any other peer
    /// the header is ignored and the peer's address is the client's.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// IPv6 clients are counted by this prefix of their address (64: one bucket per /64, what
    /// one subscriber usually holds). 128 counts every address apart.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// The request header an `api_key` key part reads.
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
    /// Which rate-limit headers answers carry.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// The default of every limit's `shadow`.
    #[serde(default)]
    pub shadow: bool,
    /// The default of every limit's `on_store_error`.
    #[serde(default)]
    pub on_store_error: OnStoreError,
}

/// Addresses (`10.0.0.1`, `::1`) or CIDR ranges (`10.0.0.0/8`, `fd00::/8`).
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is neither an IP address nor a CIDR range"
                    ))
                })
        })
        .collect()
}

fn default_scope() -> String {
    "default".to_owned()
}

fn default_key() -> KeySpec {
    KeySpec::ip()
}

fn default_ipv6_prefix() -> u8 {
    64
}

fn default_api_key_header() -> String {
    "x-api-key".to_owned()
}

/// One limit: an algorithm, how many requests per window, and what it counts by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in headers (`RateLimit-Policy`), metrics (the `policy` label) and the
    /// store. 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// How requests are counted.
    pub algorithm: Algorithm,
    /// Requests allowed per `window`; for the token bucket, tokens added per `window`.
    pub rate: u64,
    /// The window, e.g. `1s`, `1m`, `1h`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Token bucket only: the bucket's size, what a client may send at once (default: `rate`).
    #[serde(default)]
    pub burst: Option<u64>,
    /// What the limit counts by (default: the configuration's `key`).
    #[serde(default)]
    pub key: Option<KeySpec>,
    /// What it counts by when a part of `key` is missing (default: the configuration's
    /// `fallback`).
    #[serde(default)]
    pub fallback: Option<KeySpec>,
    /// Counts and logs, but never refuses (default: the configuration's `shadow`).
    #[serde(default)]
    pub shadow: Option<bool>,
    /// What a request gets when the store cannot answer (default: the configuration's
    /// `on_store_error`).
    #[serde(default)]
    pub on_store_error: Option<OnStoreError>,
}

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// GCRA: a bucket of `burst` tokens refilled at `rate` per `window`, kept as one timestamp.
    TokenBucket,
    /// A counter per window, starting at multiples of `window` since the Unix epoch.
    FixedWindow,
    /// The current window's counter plus the previous one's, weighted by how much of it is still
    /// inside the last `window`.
    SlidingWindow,
}

/// A rule: limits for the requests it matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Which requests. Every condition given must hold.
    #[serde(rename = "match")]
    pub matches: MatchConfig,
    /// The limits of those requests, instead of the configuration's `limits`.
    pub limits: Vec<LimitConfig>,
}

/// Which requests a rule takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Whole segments: `/api/v1/trading` takes `/api/v1/trading` and `/api/v1/trading/x`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// A path pattern: `{name}` is one segment, `{*name}` the rest of the path.
    #[serde(default)]
    pub path: Option<String>,
    /// Methods, upper-case (default: any).
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Which rate-limit headers answers carry.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`, for the limit with
    /// the fewest requests left.
    #[serde(default = "yes")]
    pub legacy: bool,
    /// `RateLimit-Policy` and `RateLimit`, as draft-ietf-httpapi-ratelimit-headers-11 has them,
    /// one item per limit.
    #[serde(default = "yes")]
    pub ietf: bool,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            legacy: true,
            ietf: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// What a request gets when the store cannot answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Let it through uncounted: an outage of the store must not become one of the API.
    #[default]
    Open,
    /// Answer 503 `RATE_LIMIT_UNAVAILABLE`: for limits that protect something that cannot take
    /// unlimited traffic.
    Closed,
}
