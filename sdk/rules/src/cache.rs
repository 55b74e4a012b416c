//! The key layout of the bundled cache filter's entries, shared by the filter (which writes
//! them) and the gateway's admin API (which purges them), so the two cannot disagree.
//!
//! A key starts with `<zone> <host><path>[?<query>]`: the route's zone, the host the client
//! asked for (lower-case, no port), the normalised path and the query. Spaces cannot occur in
//! the URL part, so a space ends it; whatever the filter adds after it (key parts, variants,
//! invalidation times) belongs to the same URL.
//!
//! ```
//! use gateway_rules::cache::{Purge, url_key};
//!
//! let key = url_key("shop", "Example.COM", "/api/items", Some("page=2"));
//! assert_eq!(key, "shop example.com/api/items?page=2");
//! let purge = Purge::url("shop", "http://example.com:8080/api/items?page=2").expect("a URL");
//! assert!(purge.matches(&key));
//! assert!(purge.matches(&format!("{key} v1:gzip")));
//! assert!(!purge.matches("shop example.com/api/items?page=20"));
//! ```

/// The URL part of a key.
pub fn url_key(zone: &str, host: &str, path: &str, query: Option<&str>) -> String {
    let mut key = format!("{zone} {}{path}", host.to_ascii_lowercase());
    if let Some(query) = query {
        key.push('?');
        key.push_str(query);
    }
    key
}

/// Whether `zone` may name a zone: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, so a zone
/// can never run into a URL or another zone.
pub fn valid_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone.len() <= 64
        && zone
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Which entries a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purge {
    /// One URL: its entries with every key part and variant.
    Url(String),
    /// Every URL that starts with this (zone, host and path prefix).
    Prefix(String),
    /// A whole zone.
    Zone(String),
}

/// Why a purge request cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error("zone `{0}` is not a zone name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`")]
    Zone(String),
    #[error("`{0}` is not an absolute http:// or https:// URL with a host")]
    Url(String),
}

/// Splits `http://host[:port]/path?query` into host, path and query.
fn split_url(url: &str) -> Option<(String, String, Option<String>)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    if rest.bytes().any(|byte| byte <= b' ' || byte == b'#') {
        return None;
    }
    let (authority, target) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let host = authority.rsplit('@').next()?.split(':').next()?;
    if host.is_empty() {
        return None;
    }
    let target = if target.starts_with('?') {
        format!("/{target}")
    } else {
        target.to_owned()
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target, None),
    };
    Some((host.to_ascii_lowercase(), path, query))
}

fn zone(zone: &str) -> Result<&str, PurgeError> {
    if valid_zone(zone) {
        Ok(zone)
    } else {
        Err(PurgeError::Zone(zone.to_owned()))
    }
}

impl Purge {
    /// The entries of one absolute URL in `zone`.
    pub fn url(zone_name: &str, url: &str) -> Result<Purge, PurgeError> {
        let zone = zone(zone_name)?;
        let (host, path, query) = split_url(url).ok_or_else(|| PurgeError::Url(url.to_owned()))?;
        Ok(Purge::Url(url_key(zone, &host, &path, query.as_deref())))
    }

    /// The entries of every URL in `zone` that starts with the absolute URL `prefix`.
    pub fn prefix(zone_name: &str, prefix: &str) -> Result<Purge, PurgeError> {
        let zone = zone(zone_name)?;
        let (host, path, query) =
            split_url(prefix).ok_or_else(|| PurgeError::Url(prefix.to_owned()))?;
        Ok(Purge::Prefix(url_key(zone, &host, &path, query.as_deref())))
    }

    /// Every entry of `zone`.
    pub fn zone(zone_name: &str) -> Result<Purge, PurgeError> {
        Ok(Purge::Zone(format!("{} ", zone(zone_name)?)))
    }

    /// What every key the purge removes starts with: a store can narrow its scan to it.
    pub fn prefix_of_keys(&self) -> &str {
        match self {
            Purge::Url(key) | Purge::Prefix(key) | Purge::Zone(key) => key,
        }
    }

    /// Whether the purge removes `key`.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Purge::Url(url) => key
                .strip_prefix(url.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' ')),
            Purge::Prefix(prefix) | Purge::Zone(prefix) => key.starts_with(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purges_match_their_keys_only() {
        let prefix = Purge::prefix("z", "https://shop.example/api/").expect("valid");
        assert!(prefix.matches("z shop.example/api/items"));
        assert!(prefix.matches("z shop.example/api/ k:h1|"));
        assert!(!prefix.matches("z shop.example/apix"));
        assert!(!prefix.matches("y shop.example/api/items"));
        let zone = Purge::zone("z").expect("valid");
        assert!(zone.matches("z other.example/"));
        assert!(!zone.matches("zz other.example/"));
        let url = Purge::url("z", "http://shop.example").expect("valid");
        assert_eq!(url.prefix_of_keys(), "z shop.example/");
        assert!(url.matches("z shop.example/ !inv"));
        assert!(!url.matches("z shop.example/a"));
    }

    #[test]
    fn bad_purges_are_refused() {
        assert_eq!(Purge::zone("a b"), Err(PurgeError::Zone("a b".to_owned())));
        assert!(Purge::url("z", "/relative").is_err());
        assert!(Purge::url("z", "ftp://host/").is_err());
        assert!(Purge::url("z", "http:///path").is_err());
        assert!(Purge::prefix("z", "http://host/a b").is_err());
    }
}
