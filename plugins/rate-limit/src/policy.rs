//! The configuration checked and compiled: which limits apply to a request, and under which
//! store key each one counts.
//!
//! A limit's store key is `<scope>:<name>:<shape>:<key value>`, where `<shape>` is a short hash
//! of its algorithm, rate, window and burst. Nothing else of the configuration goes into it, so
//! a reload that leaves a limit as it was keeps its counters, whatever else changed; a limit
//! whose numbers change starts afresh, as does a consumer's override of a limit (same name,
//! other numbers), so a consumer never inherits the count of the limit it replaces.

use std::collections::BTreeSet;

use crate::algorithm::Shape;
use crate::config::{Algorithm, Config, LimitConfig, MatchConfig, OnStoreError};
use crate::key::{self, KeyPart, KeySpec};

/// The most limits one request can meet, so a configuration cannot make a request cost
/// hundreds of store operations.
const MAX_LIMITS: usize = 16;
/// The longest window: a day covers "per day" quotas, and keeps entries' lifetimes bounded.
const MAX_WINDOW_MS: u64 = 86_400_000;
/// The most a rate or burst may be.
const MAX_RATE: u64 = 1_000_000_000;
/// The most distinct limit names in one configuration: with three outcomes, the metric's
/// series stay within what the gateway takes (256).
pub(crate) const MAX_POLICY_NAMES: usize = 64;

/// One limit, checked.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    pub(crate) name: String,
    pub(crate) shape: Shape,
    pub(crate) key: KeySpec,
    pub(crate) fallback: KeySpec,
    pub(crate) shadow: bool,
    pub(crate) on_store_error: OnStoreError,
    /// `<scope>:<name>:<shape hash>`, the start of every store key of this limit.
    pub(crate) prefix: String,
}

/// A rule, checked.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) path_prefix: Option<String>,
    pub(crate) pattern: Option<Vec<Segment>>,
    pub(crate) methods: Vec<String>,
    pub(crate) limits: Vec<Limit>,
}

/// A segment of a rule's path pattern.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    One,
    Rest,
}

/// Every limit of a configuration, checked.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) scope: String,
    pub(crate) limits: Vec<Limit>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) consumers: Vec<(String, Vec<Limit>)>,
}

/// The longest scope: it goes into a context key, which holds 64 bytes.
pub(crate) const MAX_SCOPE_LEN: usize = 40;

/// Names in store keys, metrics and headers: short and plain.
fn check_name(what: &str, name: &str, longest: usize) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= longest
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` must be 1 to {longest} bytes of ASCII letters, digits, `.`, `_` and `-`"
        ))
    }
}

/// A header name is a token (RFC 9110, section 5.6.2).
fn check_header_name(at: &str, name: &str) -> Result<(), String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
    if token {
        Ok(())
    } else {
        Err(format!("{at}: `{name}` is not a header name"))
    }
}

fn check_key(at: &str, spec: &KeySpec) -> Result<(), String> {
    for part in spec.parts() {
        if let KeyPart::Header(name) = part {
            check_header_name(at, name)?;
        }
    }
    Ok(())
}

impl Limit {
    fn compile(config: &Config, limit: &LimitConfig, at: &str) -> Result<Limit, String> {
        check_name(&format!("{at}.name"), &limit.name, 64)?;
        if !(1..=MAX_RATE).contains(&limit.rate) {
            return Err(format!("{at}.rate must be 1 to {MAX_RATE}"));
        }
        let window_ms = u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX);
        if !(1..=MAX_WINDOW_MS).contains(&window_ms) {
            return Err(format!("{at}.window must be 1ms to 24h"));
        }
        let burst = match (limit.algorithm, limit.burst) {
            (Algorithm::TokenBucket, burst) => burst.unwrap_or(limit.rate),
            (_, Some(_)) => return Err(format!("{at}.burst is for the token bucket only")),
            (_, None) => limit.rate,
        };
        if !(1..=MAX_RATE).contains(&burst) {
            return Err(format!("{at}.burst must be 1 to {MAX_RATE}"));
        }
        let shape = Shape {
            algorithm: limit.algorithm,
            rate: limit.rate,
            window_ms,
            burst,
        };
        let key = limit.key.clone().unwrap_or_else(|| config.key.clone());
        let fallback = limit
            .fallback
            .clone()
            .unwrap_or_else(|| config.fallback.clone());
        check_key(&format!("{at}.key"), &key)?;
        check_key(&format!("{at}.fallback"), &fallback)?;
        let identity = format!(
            "{:?}/{}/{}/{}",
            shape.algorithm, shape.rate, window_ms, burst
        );
        let shape_hash = &key::sha256_hex(identity.as_bytes())[..8];
        Ok(Limit {
            name: limit.name.clone(),
            shape,
            key,
            fallback,
            shadow: limit.shadow.unwrap_or(config.shadow),
            on_store_error: limit.on_store_error.unwrap_or(config.on_store_error),
            prefix: format!("{}:{}:{shape_hash}", config.scope, limit.name),
        })
    }

    /// The window the headers announce, in seconds: a token bucket's is the time a whole burst
    /// takes to come back.
    pub(crate) fn window_s(&self) -> u64 {
        let window_ms = match self.shape.algorithm {
            Algorithm::TokenBucket => {
                self.shape.interval_us().saturating_mul(self.shape.burst) / 1000
            }
            _ => self.shape.window_ms,
        };
        window_ms.div_ceil(1000).max(1)
    }
}

fn compile_list(config: &Config, limits: &[LimitConfig], at: &str) -> Result<Vec<Limit>, String> {
    if limits.len() > MAX_LIMITS {
        return Err(format!("{at}: at most {MAX_LIMITS} limits"));
    }
    let mut seen = BTreeSet::new();
    limits
        .iter()
        .enumerate()
        .map(|(index, limit)| {
            if !seen.insert(limit.name.as_str()) {
                return Err(format!(
                    "{at}[{index}]: the name `{}` is used twice",
                    limit.name
                ));
            }
            Limit::compile(config, limit, &format!("{at}[{index}]"))
        })
        .collect()
}

fn compile_pattern(pattern: &str, at: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = pattern.strip_prefix('/') else {
        return Err(format!("{at}: a path pattern starts with `/`"));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    segments
        .iter()
        .enumerate()
        .map(|(index, segment)| {
            match segment
                .strip_prefix('{')
                .and_then(|inner| inner.strip_suffix('}'))
            {
                Some(name) if name.starts_with('*') && index == last => Ok(Segment::Rest),
                Some(name) if name.starts_with('*') => {
                    Err(format!("{at}: `{{{name}}}` must be the last segment"))
                }
                Some(name) if !name.is_empty() => Ok(Segment::One),
                _ if segment.contains(['{', '}']) => Err(format!(
                    "{at}: `{segment}` is neither a literal nor `{{name}}`"
                )),
                _ => Ok(Segment::Literal((*segment).to_owned())),
            }
        })
        .collect()
}

impl Rule {
    fn compile(
        config: &Config,
        matches: &MatchConfig,
        limits: &[LimitConfig],
        at: &str,
    ) -> Result<Rule, String> {
        if let Some(prefix) = &matches.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(format!("{at}.match.path_prefix must start with `/`"));
        }
        let pattern = matches
            .path
            .as_deref()
            .map(|pattern| compile_pattern(pattern, &format!("{at}.match.path")))
            .transpose()?;
        for method in &matches.methods {
            if method.is_empty() || !method.bytes().all(|byte| byte.is_ascii_uppercase()) {
                return Err(format!(
                    "{at}.match.methods: `{method}` is not an upper-case method"
                ));
            }
        }
        Ok(Rule {
            path_prefix: matches
                .path_prefix
                .as_ref()
                .map(|prefix| prefix.trim_end_matches('/').to_owned()),
            pattern,
            methods: matches.methods.clone(),
            limits: compile_list(config, limits, &format!("{at}.limits"))?,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|allowed| allowed == method) {
            return false;
        }
        if let Some(prefix) = &self.path_prefix {
            let on_boundary = path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.is_empty());
            if !on_boundary {
                return false;
            }
        }
        match &self.pattern {
            Some(pattern) => pattern_matches(pattern, path),
            None => true,
        }
    }
}

fn pattern_matches(pattern: &[Segment], path: &str) -> bool {
    let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
    for expected in pattern {
        match (expected, segments.next()) {
            (Segment::Rest, _) => return true,
            (Segment::One, Some(segment)) => {
                if segment.is_empty() {
                    return false;
                }
            }
            (Segment::Literal(literal), Some(segment)) => {
                if literal != segment {
                    return false;
                }
            }
            (_, None) => return false,
        }
    }
    segments.next().is_none()
}

impl Policy {
    pub(crate) fn compile(config: &Config) -> Result<Policy, String> {
        check_name("scope", &config.scope, MAX_SCOPE_LEN)?;
        check_key("key", &config.key)?;
        check_key("fallback", &config.fallback)?;
        check_header_name("api_key_header", &config.api_key_header)?;
        if config.ipv6_prefix > 128 {
            return Err("ipv6_prefix must be 0 to 128".to_owned());
        }
        let limits = compile_list(config, &config.limits, "limits")?;
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                Rule::compile(
                    config,
                    &rule.matches,
                    &rule.limits,
                    &format!("rules[{index}]"),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let consumers = config
            .consumers
            .iter()
            .map(|(consumer, limits)| {
                Ok((
                    consumer.clone(),
                    compile_list(config, limits, &format!("consumers.{consumer}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if limits.is_empty() && rules.is_empty() {
            return Err("no limits: give `limits`, `rules`, or both".to_owned());
        }
        let policy = Policy {
            scope: config.scope.clone(),
            limits,
            rules,
            consumers,
        };
        if policy.names().len() > MAX_POLICY_NAMES {
            return Err(format!("at most {MAX_POLICY_NAMES} distinct limit names"));
        }
        Ok(policy)
    }

    /// The limits of a request: the first matching rule's or the default ones, with the
    /// consumer's overrides in place of those of the same name.
    pub(crate) fn applicable(
        &self,
        method: &str,
        path: &str,
        consumer: Option<&str>,
    ) -> Vec<&Limit> {
        let base = self
            .rules
            .iter()
            .find(|rule| rule.matches(method, path))
            .map_or(&self.limits, |rule| &rule.limits);
        let overrides = consumer.and_then(|consumer| {
            self.consumers
                .iter()
                .find(|(name, _)| name == consumer)
                .map(|(_, limits)| limits)
        });
        let Some(overrides) = overrides else {
            return base.iter().collect();
        };
        let mut limits: Vec<&Limit> = base
            .iter()
            .map(|limit| {
                overrides
                    .iter()
                    .find(|over| over.name == limit.name)
                    .unwrap_or(limit)
            })
            .collect();
        for over in overrides {
            if !base.iter().any(|limit| limit.name == over.name) {
                limits.push(over);
            }
        }
        limits.truncate(MAX_LIMITS);
        limits
    }

    /// Every limit name the configuration has anywhere, in order: the label values of the
    /// metrics, declared up front.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for limit in self.all_limits() {
            if !names.contains(&limit.name) {
                names.push(limit.name.clone());
            }
        }
        names
    }

    fn all_limits(&self) -> impl Iterator<Item = &Limit> {
        self.limits
            .iter()
            .chain(self.rules.iter().flat_map(|rule| &rule.limits))
            .chain(self.consumers.iter().flat_map(|(_, limits)| limits))
    }

    fn all_parts(&self) -> impl Iterator<Item = &KeyPart> {
        self.all_limits()
            .flat_map(|limit| limit.key.parts().iter().chain(limit.fallback.parts()))
    }

    /// Whether any limit reads this key part.
    pub(crate) fn uses(&self, wanted: impl Fn(&KeyPart) -> bool) -> bool {
        self.all_parts().any(wanted)
    }

    /// The request headers the limits' keys read.
    pub(crate) fn header_parts(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for part in self.all_parts() {
            if let KeyPart::Header(name) = part
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_one_segment_or_the_rest() {
        let one = compile_pattern("/api/{version}/trading", "p").expect("valid");
        assert!(pattern_matches(&one, "/api/v1/trading"));
        assert!(!pattern_matches(&one, "/api/v1/trading/x"));
        assert!(!pattern_matches(&one, "/api//trading"));
        let rest = compile_pattern("/files/{*path}", "p").expect("valid");
        assert!(pattern_matches(&rest, "/files/a/b"));
        assert!(compile_pattern("/{*rest}/x", "p").is_err());
        assert!(compile_pattern("no-slash", "p").is_err());
        assert!(compile_pattern("/a{b", "p").is_err());
    }
}
