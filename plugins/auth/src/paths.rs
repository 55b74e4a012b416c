//! Path patterns (public paths, rules) and authorization rules.
//!
//! Patterns are matched on the path as the gateway normalised it, byte for byte: dot segments
//! are already resolved, so `/api/v1/auth/login/../../users` is `/users` here, and an encoded
//! slash (`%2F`) or another case is another path. A pattern never decodes anything, so no
//! spelling of a path can reach a public pattern it does not literally match.

use std::collections::BTreeSet;

use crate::config::RuleConfig;
use crate::error::Error;

/// `/exact`, `/prefix/*` (the prefix itself and everything under it on a segment boundary),
/// or `*` (every path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Any,
    Exact(String),
    Under(String),
}

impl Pattern {
    pub(crate) fn parse(pattern: &str) -> Result<Self, Error> {
        let refuse = |reason: &str| Error::Pattern {
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
        };
        if pattern == "*" {
            return Ok(Pattern::Any);
        }
        if !pattern.starts_with('/') {
            return Err(refuse("must start with `/` (or be `*`)"));
        }
        let (base, under) = match pattern.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (pattern, false),
        };
        if base.contains('*') {
            return Err(refuse("`*` is only allowed as the last segment"));
        }
        if base
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(refuse("dot segments never match a normalised path"));
        }
        Ok(if under {
            Pattern::Under(base.to_owned())
        } else {
            Pattern::Exact(base.to_owned())
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(exact) => path == exact,
            Pattern::Under(base) => match path.strip_prefix(base.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/') || base.is_empty(),
                None => false,
            },
        }
    }
}

/// A rule: where it applies and what it requires.
#[derive(Debug)]
pub(crate) struct Rule {
    path: Pattern,
    methods: Vec<String>,
    any_role: Vec<String>,
    all_permissions: Vec<String>,
}

impl Rule {
    pub(crate) fn new(config: RuleConfig) -> Result<Self, Error> {
        let path = match &config.path {
            Some(pattern) => Pattern::parse(pattern)?,
            None => Pattern::Any,
        };
        Ok(Rule {
            path,
            methods: config.methods,
            any_role: config.roles,
            all_permissions: config.permissions,
        })
    }

    pub(crate) fn applies(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|wanted| wanted == method))
            && self.path.matches(path)
    }

    /// Why the caller does not meet the rule, if not.
    pub(crate) fn unmet(&self, roles: &BTreeSet<String>) -> Option<String> {
        if !self.any_role.is_empty() && !self.any_role.iter().any(|role| roles.contains(role)) {
            return Some(format!("needs one of the roles {:?}", self.any_role));
        }
        let missing: Vec<&String> = self
            .all_permissions
            .iter()
            .filter(|permission| !roles.contains(*permission))
            .collect();
        (!missing.is_empty()).then(|| format!("lacks the permissions {missing:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments_and_nothing_decoded() {
        let docs = Pattern::parse("/docs/*").expect("valid");
        assert!(docs.matches("/docs"));
        assert!(docs.matches("/docs/a/b"));
        assert!(!docs.matches("/docsx"));
        assert!(!docs.matches("/DOCS"));
        let login = Pattern::parse("/api/v1/auth/login").expect("valid");
        assert!(login.matches("/api/v1/auth/login"));
        assert!(!login.matches("/api/v1/auth/login/"));
        assert!(!login.matches("/api/v1/auth%2Flogin"));
        assert!(!login.matches("/API/v1/auth/login"));
        assert!(Pattern::parse("*").expect("valid").matches("/anything"));
        assert!(Pattern::parse("/*").expect("valid").matches("/x"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["docs", "/a/*/b", "/a/../b", "/a*"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
