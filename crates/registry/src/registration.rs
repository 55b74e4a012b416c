//! What an instance says of itself when it registers, and the checks it must pass before a
//! gateway sends it traffic.

use std::collections::BTreeMap;

use gateway_config::InstanceUrl;
use gateway_upstream::{Member, Source};
use serde::{Deserialize, Serialize};

/// Most metadata entries, and their sizes: enough for labels, too little to be a data store.
const MAX_META: usize = 32;
const MAX_META_KEY: usize = 64;
const MAX_META_VALUE: usize = 256;
const MAX_HEALTH_PATH: usize = 1024;

/// A registration, as the instance's key in Redis holds it (JSON) and as the admin API takes
/// it. Only `url` is required.
///
/// ```json
/// {"url": "http://10.0.0.5:8080", "weight": 2, "health_path": "/ready",
///  "version": "1.4.2", "zone": "eu-west-1a", "meta": {"team": "payments"}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `http://host:port`, nothing after it.
    pub url: String,
    /// 1 to 100, for the `weighted` balancer; 1 unless given.
    #[serde(default = "one")]
    pub weight: u32,
    /// The path the service's active health checks ask this instance, when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Anything else, shown by the admin API: at most 32 entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// A checked registration: the instance of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub service: String,
    pub member: Member,
}

/// Sorts instances by service, then address: the order every read hands them over in.
pub(crate) fn sort(instances: &mut [Registered]) {
    instances.sort_by(|a, b| {
        (&a.service, a.member.url.authority.as_str())
            .cmp(&(&b.service, b.member.url.authority.as_str()))
    });
}

impl Registration {
    /// A registration of `url` with every default.
    pub fn of_url(url: &str) -> Registration {
        Registration {
            url: url.to_owned(),
            weight: 1,
            health_path: None,
            version: None,
            zone: None,
            meta: BTreeMap::new(),
        }
    }

    /// Checks the registration as an instance of `service`, from `source`; a problem comes
    /// with the field it is in.
    pub fn check(&self, service: &str, source: Source) -> Result<Registered, (String, String)> {
        let problem = |field: &str, message: String| (field.to_owned(), message);
        gateway_config::check_service_name(service).map_err(|reason| problem("service", reason))?;
        let url: InstanceUrl = self.url.parse().map_err(|reason| problem("url", reason))?;
        if !(1..=100).contains(&self.weight) {
            return Err(problem("weight", "must be 1 to 100".to_owned()));
        }
        if let Some(path) = &self.health_path {
            let plain = path.starts_with('/')
                && path.len() <= MAX_HEALTH_PATH
                && path.parse::<http::uri::PathAndQuery>().is_ok();
            if !plain {
                return Err(problem(
                    "health_path",
                    format!("must be a path starting with `/`, at most {MAX_HEALTH_PATH} bytes"),
                ));
            }
        }
        let mut meta = BTreeMap::new();
        for (field, value) in [("version", &self.version), ("zone", &self.zone)] {
            if let Some(value) = value {
                check_meta_value(field, value).map_err(|reason| problem(field, reason))?;
                meta.insert(field.to_owned(), value.clone());
            }
        }
        if self.meta.len() > MAX_META {
            return Err(problem("meta", format!("at most {MAX_META} entries")));
        }
        for (key, value) in &self.meta {
            let field = format!("meta.{key}");
            let plain_key = !key.is_empty()
                && key.len() <= MAX_META_KEY
                && key
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
            if !plain_key {
                return Err(problem(
                    &field,
                    format!("a key has 1 to {MAX_META_KEY} of A-Z, a-z, 0-9, `.`, `_` and `-`"),
                ));
            }
            check_meta_value(&field, value).map_err(|reason| problem(&field, reason))?;
            meta.insert(key.clone(), value.clone());
        }
        Ok(Registered {
            service: service.to_owned(),
            member: Member {
                url,
                weight: self.weight,
                source,
                health_path: self.health_path.clone(),
                meta,
            },
        })
    }
}

fn check_meta_value(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_META_VALUE || value.chars().any(char::is_control) {
        return Err(format!(
            "`{field}` has at most {MAX_META_VALUE} bytes and no control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Registration {
        serde_json::from_str(json).expect("a registration")
    }

    #[test]
    fn only_the_url_is_required_and_metadata_is_kept() {
        let registered = parse(r#"{"url":"http://127.0.0.1:9000"}"#)
            .check("orders", Source::Registry)
            .expect("valid");
        assert_eq!(registered.member.weight, 1);
        assert_eq!(registered.member.url.authority.as_str(), "127.0.0.1:9000");
        let full = parse(
            r#"{"url":"http://10.0.0.5:8080","weight":3,"health_path":"/ready",
                "version":"1.4.2","zone":"a","meta":{"team":"payments"}}"#,
        )
        .check("orders", Source::Admin)
        .expect("valid");
        assert_eq!(full.member.health_path.as_deref(), Some("/ready"));
        assert_eq!(full.member.meta["version"], "1.4.2");
        assert_eq!(full.member.meta["zone"], "a");
        assert_eq!(full.member.meta["team"], "payments");
    }

    #[test]
    fn each_problem_names_its_field() {
        for (service, json, field) in [
            ("Orders", r#"{"url":"http://127.0.0.1:1"}"#, "service"),
            ("orders", r#"{"url":"127.0.0.1:1"}"#, "url"),
            ("orders", r#"{"url":"http://127.0.0.1:1/base"}"#, "url"),
            (
                "orders",
                r#"{"url":"http://127.0.0.1:1","weight":0}"#,
                "weight",
            ),
            (
                "orders",
                r#"{"url":"http://127.0.0.1:1","health_path":"ready"}"#,
                "health_path",
            ),
            (
                "orders",
                r#"{"url":"http://127.0.0.1:1","zone":"a\nb"}"#,
                "zone",
            ),
            (
                "orders",
                r#"{"url":"http://127.0.0.1:1","meta":{"a b":"x"}}"#,
                "meta.a b",
            ),
        ] {
            let error = parse(json).check(service, Source::Admin).expect_err(json);
            assert_eq!(error.0, field, "{json}: {}", error.1);
        }
        assert!(serde_json::from_str::<Registration>(r#"{"url":"http://a:1","extra":1}"#).is_err());
    }
}
