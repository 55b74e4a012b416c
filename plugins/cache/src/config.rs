//! The cache filter's per-route configuration.
//!
//! ```yaml
//! filters:
//!   - filter: cache
//!     config:
//!       zone: products          # purge by route: POST /admin/cache/purge {"zone": "products"}
//!       default_ttl: 30s        # answers that give no freshness of their own
//!       max_ttl: 1h
//!       max_entry_size: 1048576
//!       key: { headers: [accept-language], cookies: [], context: [auth.consumer] }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// Every key of the filter's `config`. All are optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The name entries of this route are kept under, and purged by (`{"zone": ...}`): 1 to 64
    /// ASCII letters, digits, `.`, `_` or `-`. Routes that share a zone share entries.
    pub zone: String,
    /// Freshness given to a cacheable answer that states none (no `s-maxage`, `max-age` or
    /// `Expires`), for the statuses RFC 9111 lets a cache do so (200, 203, 204, 300, 301, 308,
    /// 404, 405, 410, 414, 501) or when the answer says `public`. `0s`: such answers are only
    /// stored when they carry a validator, and then revalidated on every use.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The longest an entry is considered fresh, whatever the answer says.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long an expired entry with a validator (`ETag`, `Last-Modified`) is kept, so it can
    /// be revalidated with a conditional request instead of fetched again.
    #[serde(with = "humantime_serde")]
    pub keep_stale: Duration,
    /// Serve a stale entry when the upstream fails (5xx) within this long after it expired,
    /// unless the answer forbids it (`must-revalidate`, `s-maxage`); an answer's own
    /// `stale-if-error` takes precedence. `0s`: only when the answer asks for it.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// The largest body stored, in bytes. Larger answers pass through uncached. Every answer
    /// on the route is read up to this size before it goes on, so keep it near the largest
    /// answer worth caching.
    pub max_entry_size: u32,
    /// What besides method, host, path and query tells entries apart.
    pub key: KeyConfig,
    /// Key entries per user: requests with `Authorization` are then served from and stored in
    /// the cache under a key that includes a digest of their credentials. Without it they
    /// bypass the cache, unless an answer says `public`, `s-maxage` or `must-revalidate`.
    pub per_user: bool,
    /// Concurrent misses for one key: the first goes upstream, the others wait up to this long
    /// for its answer (then go upstream themselves). The wait is cut short before the filter's
    /// own `timeout`, so raise that to let them wait this long. `0s`: every miss goes upstream.
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// The longest the first miss holds the others back if its request never finishes (a
    /// client gone, a filter failing): about the upstream's own timeout.
    #[serde(with = "humantime_serde")]
    pub lock_lease: Duration,
    /// How long an answer found uncacheable is remembered, so requests for it go upstream at
    /// once instead of waiting for each other (hit-for-miss).
    #[serde(with = "humantime_serde")]
    pub hit_for_miss: Duration,
    /// What to do with an answer that sets a cookie: `bypass` (never store it) or `strip`
    /// (store it without its `Set-Cookie` lines, so no client ever gets another's cookie; the
    /// client that caused the store still gets its cookie).
    pub set_cookie: SetCookie,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zone: "default".to_owned(),
            default_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(24 * 3600),
            keep_stale: Duration::from_secs(3600),
            stale_if_error: Duration::ZERO,
            max_entry_size: 1 << 20,
            key: KeyConfig::default(),
            per_user: false,
            lock_wait: Duration::from_secs(5),
            lock_lease: Duration::from_secs(30),
            hit_for_miss: Duration::from_secs(10),
            set_cookie: SetCookie::Bypass,
        }
    }
}

/// Request parts added to the cache key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    /// Request headers whose values tell entries apart (e.g. `accept-language`).
    pub headers: Vec<String>,
    /// Cookies whose values tell entries apart (e.g. a `currency` cookie).
    pub cookies: Vec<String>,
    /// Request context entries set by earlier filters (e.g. `auth.consumer`, for a cache per
    /// consumer).
    pub context: Vec<String>,
}

impl KeyConfig {
    /// Whether any part beyond the URL is in the key.
    pub(crate) fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.cookies.is_empty() && self.context.is_empty()
    }
}

/// What to do with an answer that sets a cookie.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetCookie {
    /// Never store it.
    #[default]
    Bypass,
    /// Store it without its `Set-Cookie` lines.
    Strip,
}

/// Checks what serde cannot: names and bounds.
pub(crate) fn check(config: &Config) -> Result<(), String> {
    let zone_ok = gateway_rules::cache::valid_zone(&config.zone);
    if !zone_ok {
        return Err(format!(
            "zone `{}`: use 1 to 64 ASCII letters, digits, `.`, `_` or `-`",
            config.zone
        ));
    }
    if config.max_ttl.is_zero() {
        return Err("max_ttl must be more than 0s".to_owned());
    }
    if config.default_ttl > config.max_ttl {
        return Err("default_ttl must not be longer than max_ttl".to_owned());
    }
    if config.lock_lease.is_zero() || config.lock_lease > Duration::from_secs(3600) {
        return Err("lock_lease must be more than 0s and at most 1h".to_owned());
    }
    if config.lock_wait > config.lock_lease {
        return Err("lock_wait must not be longer than lock_lease".to_owned());
    }
    if config.max_entry_size == 0 {
        return Err("max_entry_size must be more than 0".to_owned());
    }
    for name in &config.key.headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
        if !token {
            return Err(format!("key.headers: `{name}` is not a header name"));
        }
    }
    for name in &config.key.cookies {
        if name.is_empty()
            || name
                .bytes()
                .any(|byte| byte <= b' ' || b";=,".contains(&byte))
        {
            return Err(format!("key.cookies: `{name}` is not a cookie name"));
        }
    }
    Ok(())
}
