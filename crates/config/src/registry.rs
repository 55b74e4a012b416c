//! Instances that come and go without a reload: the `registry` section, and the policies of
//! services that only the registry or the admin API knows (`service_defaults`,
//! `service_templates`).

use std::time::Duration;

use serde::Deserialize;

use crate::file::ServiceFile;

/// Where instances registered at run time are found.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    /// Watch the Redis of `kv.redis` for instances that register there (see the README's key
    /// layout), and share the admin API's registrations with every gateway watching it.
    pub redis: bool,
    /// Time between two full reads of the registry. Each also sweeps out instances whose key
    /// expired, so an instance that stopped heartbeating is gone within its TTL and this.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// The TTL the admin API's registrations are kept under in Redis, renewed by this gateway
    /// a third of it apart; when the gateway dies, other gateways drop them after it.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            redis: false,
            resync_interval: Duration::from_secs(1),
            ttl: Duration::from_secs(30),
        }
    }
}

/// The policies of the services whose names match `match`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTemplateFile {
    /// A service name in which `*` stands for any run of characters: `market-*`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// As a service in `services`, without `instances`.
    pub service: ServiceFile,
}

/// A checked template.
#[derive(Debug, Clone)]
pub struct ServiceTemplate {
    pub pattern: String,
    pub service: crate::Service,
}

impl ServiceTemplate {
    /// Whether `name` matches the pattern: literal text, each `*` any run of characters.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(&self.pattern, name)
    }
}

fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The longest service name the registry and the admin API accept.
pub const MAX_SERVICE_NAME: usize = 63;

/// Checks a service name given at run time: 1 to 63 of `[a-z0-9-]`, as DNS labels are, so
/// that it is safe in paths, metric labels and Redis keys.
pub fn check_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SERVICE_NAME {
        return Err(format!(
            "a service name has 1 to {MAX_SERVICE_NAME} characters"
        ));
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    {
        return Err("a service name has only a-z, 0-9 and `-`".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_literal_text_and_runs_for_stars() {
        for (pattern, name, expected) in [
            ("market-*", "market-data", true),
            ("market-*", "market-", true),
            ("market-*", "trading", false),
            ("*-svc", "orders-svc", true),
            ("*-svc", "orders-svcx", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("*", "anything", true),
        ] {
            assert_eq!(glob_matches(pattern, name), expected, "{pattern} ~ {name}");
        }
    }

    #[test]
    fn service_names_are_dns_labels_bounded() {
        assert!(check_service_name("market-data-2").is_ok());
        for bad in ["", "Market", "a_b", "a/b", "a.b", &"a".repeat(64)] {
            assert!(check_service_name(bad).is_err(), "{bad:?}");
        }
    }
}
