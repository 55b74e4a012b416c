//! Route path patterns such as `/api/v1/{service}/{*rest}`.
//!
//! Patterns are parsed once when the route table is loaded, so every mistake in them is reported
//! there with a message naming the bad part, and matching per request is a plain walk over the
//! segments. Matching runs on the path produced by the `normalize` module, so it does no
//! decoding and never sees `.`, `..` or `//`; a pattern that could only match such a path is
//! refused at parse time instead of silently never matching.
//!
//! Syntax: the pattern starts with `/` and its segments are separated by `/`. A segment is a
//! literal, `{name}` (exactly one non-empty path segment), or `{*name}` (the rest of the path,
//! possibly empty, possibly containing slashes; last segment only). Names are
//! `[A-Za-z_][A-Za-z0-9_]*` and unique within a pattern.
//!
//! Trailing slashes: a pattern without `{*name}` matches the path with or without one trailing
//! slash, because clients and links are inconsistent about it and the two almost never name
//! different resources behind a gateway. `{*name}` captures what follows the slash after the
//! preceding segment verbatim, trailing slash included, so the upstream sees what was asked.

use std::fmt;
use std::str::FromStr;

/// Why a route pattern was refused. Patterns come from configuration, so the messages quote
/// the offending part to make it easy to find.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern must start with `/`")]
    NotAbsolute,
    #[error(
        "pattern has an empty segment (`//` or a trailing `/`); \
         a trailing slash on the request path is accepted without it"
    )]
    EmptySegment,
    #[error("segment `{0}` can never match a normalised path")]
    DotSegment(String),
    #[error("unclosed `{{` in segment `{0}`")]
    UnclosedBrace(String),
    #[error("unmatched `}}` in segment `{0}`")]
    UnmatchedBrace(String),
    #[error("segment `{0}` mixes a parameter with other text; a parameter must be a whole segment")]
    PartialSegment(String),
    #[error("empty parameter name in segment `{0}`")]
    EmptyName(String),
    #[error("invalid parameter name `{0}`: use letters, digits and `_`, not starting with a digit")]
    InvalidName(String),
    #[error("duplicate parameter `{0}`")]
    DuplicateName(String),
    #[error("`{{*{0}}}` must be the last segment")]
    CatchAllNotLast(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
    CatchAll(Box<str>),
}

impl Segment {
    fn param_name(&self) -> Option<&str> {
        match self {
            Self::Param(name) | Self::CatchAll(name) => Some(name),
            Self::Literal(_) => None,
        }
    }
}

/// A parsed route path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: Box<str>,
    segments: Box<[Segment]>,
    param_count: usize,
}

/// Parses a route path pattern; see the module docs for the syntax.
pub fn parse(pattern: &str) -> Result<PathPattern, PatternError> {
    let body = pattern.strip_prefix('/').ok_or(PatternError::NotAbsolute)?;
    // `/` alone has no segments rather than one empty one.
    let raw_segments: Vec<&str> = if body.is_empty() {
        Vec::new()
    } else {
        body.split('/').collect()
    };

    let mut segments: Vec<Segment> = Vec::with_capacity(raw_segments.len());
    for (index, raw) in raw_segments.iter().enumerate() {
        let segment = parse_segment(raw)?;
        if let Some(name) = segment.param_name() {
            if segments
                .iter()
                .any(|earlier| earlier.param_name() == Some(name))
            {
                return Err(PatternError::DuplicateName(name.to_owned()));
            }
            if matches!(segment, Segment::CatchAll(_)) && index + 1 != raw_segments.len() {
                return Err(PatternError::CatchAllNotLast(name.to_owned()));
            }
        }
        segments.push(segment);
    }
    let param_count = segments.iter().filter(|s| s.param_name().is_some()).count();
    Ok(PathPattern {
        source: pattern.into(),
        segments: segments.into_boxed_slice(),
        param_count,
    })
}

fn parse_segment(raw: &str) -> Result<Segment, PatternError> {
    if raw.is_empty() {
        return Err(PatternError::EmptySegment);
    }
    let Some(after_open) = raw.strip_prefix('{') else {
        return if raw.contains('{') {
            if raw.contains('}') {
                Err(PatternError::PartialSegment(raw.to_owned()))
            } else {
                Err(PatternError::UnclosedBrace(raw.to_owned()))
            }
        } else if raw.contains('}') {
            Err(PatternError::UnmatchedBrace(raw.to_owned()))
        } else if raw == "." || raw == ".." {
            Err(PatternError::DotSegment(raw.to_owned()))
        } else {
            Ok(Segment::Literal(raw.into()))
        };
    };
    let Some(inner) = after_open.strip_suffix('}') else {
        return if after_open.contains('}') {
            Err(PatternError::PartialSegment(raw.to_owned()))
        } else {
            Err(PatternError::UnclosedBrace(raw.to_owned()))
        };
    };
    if inner.contains(['{', '}']) {
        return Err(PatternError::PartialSegment(raw.to_owned()));
    }
    let (name, catch_all) = match inner.strip_prefix('*') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    if name.is_empty() {
        return Err(PatternError::EmptyName(raw.to_owned()));
    }
    if !is_valid_name(name) {
        return Err(PatternError::InvalidName(name.to_owned()));
    }
    Ok(if catch_all {
        Segment::CatchAll(name.into())
    } else {
        Segment::Param(name.into())
    })
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl PathPattern {
    /// Same as the module-level [`parse`].
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        parse(pattern)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches an already-normalised request path, returning the captured parameters in
    /// pattern order.
    pub fn matches<'p>(&self, path: &'p str) -> Option<Params<'_, 'p>> {
        let mut rest = path.strip_prefix('/')?;
        let mut params = Params { pairs: Vec::new() };
        for segment in &self.segments {
            if let Segment::CatchAll(name) = segment {
                params.push(name, rest, self.param_count);
                return Some(params);
            }
            // Splitting off the separator here is what makes one trailing slash optional: after
            // the last segment, `users` and `users/` both leave nothing behind.
            let (value, after) = rest.split_once('/').unwrap_or((rest, ""));
            if value.is_empty() {
                return None;
            }
            match segment {
                Segment::Literal(literal) if **literal == *value => {}
                Segment::Param(name) => params.push(name, value, self.param_count),
                _ => return None,
            }
            rest = after;
        }
        rest.is_empty().then_some(params)
    }

    /// The parameter names in pattern order, the catch-all (if any) last.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(Segment::param_name)
    }
}

impl FromStr for PathPattern {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        parse(pattern)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Parameters captured by [`PathPattern::matches`]: names borrowed from the pattern, values from
/// the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params<'a, 'p> {
    pairs: Vec<(&'a str, &'p str)>,
}

impl<'a, 'p> Params<'a, 'p> {
    fn push(&mut self, name: &'a str, value: &'p str, expected: usize) {
        // Reserving on the first capture keeps failed matches on a literal allocation-free,
        // which is most matches in a route table.
        if self.pairs.capacity() == 0 {
            self.pairs.reserve_exact(expected);
        }
        self.pairs.push((name, value));
    }

    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, value)| value)
    }

    /// `(name, value)` pairs in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'p str)> + '_ {
        self.pairs.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(source: &str) -> PathPattern {
        match parse(source) {
            Ok(pattern) => pattern,
            Err(e) => panic!("pattern {source:?} should parse: {e}"),
        }
    }

    #[test]
    fn matching() {
        // (pattern, path, expected captures in order, or None for no match)
        type Case<'a> = (&'a str, &'a str, Option<&'a [(&'a str, &'a str)]>);
        let cases: &[Case<'_>] = &[
            (
                "/api/v1/{service}/{*rest}",
                "/api/v1/users/42/orders",
                Some(&[("service", "users"), ("rest", "42/orders")]),
            ),
            (
                "/api/v1/{service}/{*rest}",
                "/api/v1/users",
                Some(&[("service", "users"), ("rest", "")]),
            ),
            (
                "/api/v1/{service}/{*rest}",
                "/api/v1/users/",
                Some(&[("service", "users"), ("rest", "")]),
            ),
            (
                "/api/v1/{service}/{*rest}",
                "/api/v1/users/a/b",
                Some(&[("service", "users"), ("rest", "a/b")]),
            ),
            (
                "/api/v1/{service}/{*rest}",
                "/api/v1/users/a/b/",
                Some(&[("service", "users"), ("rest", "a/b/")]),
            ),
            ("/api/v1/{service}/{*rest}", "/api/v1", None),
            ("/api/v1/{service}/{*rest}", "/api/v1/", None),
            ("/api/v1/{service}/{*rest}", "/api/v2/users", None),
            (
                "/api/v1/{service}",
                "/api/v1/users",
                Some(&[("service", "users")]),
            ),
            (
                "/api/v1/{service}",
                "/api/v1/users/",
                Some(&[("service", "users")]),
            ),
            ("/api/v1/{service}", "/api/v1/users//", None),
            ("/api/v1/{service}", "/api/v1/users/x", None),
            ("/files/{id}", "/files/", None),
            ("/files/{id}", "/files", None),
            ("/files/{id}", "/files/a/b", None),
            ("/files/{id}", "/files//a", None),
            ("/files/{id}", "/files/a%20b", Some(&[("id", "a%20b")])),
            ("/health", "/health", Some(&[])),
            ("/health", "/health/", Some(&[])),
            ("/health", "/healthz", None),
            ("/health", "/Health", None),
            ("/health", "/", None),
            ("/health", "health", None),
            ("/", "/", Some(&[])),
            ("/", "/a", None),
            ("/", "", None),
            ("/{*all}", "/", Some(&[("all", "")])),
            ("/{*all}", "/a/b/c", Some(&[("all", "a/b/c")])),
            ("/static/{*file}", "/static", Some(&[("file", "")])),
            ("/static/{*file}", "/staticx/a", None),
            ("/{a}/{b}", "/x/y", Some(&[("a", "x"), ("b", "y")])),
            ("/{a}/{b}", "/x", None),
            ("/{a}/{b}", "/x/y/z", None),
        ];
        for (source, path, expected) in cases {
            let parsed = pattern(source);
            let got = parsed.matches(path);
            let got: Option<Vec<(&str, &str)>> = got.map(|params| params.iter().collect());
            let expected: Option<Vec<(&str, &str)>> = expected.map(<[_]>::to_vec);
            assert_eq!(got, expected, "pattern {source:?} on {path:?}");
        }
    }

    #[test]
    fn params_lookup() {
        let pattern = pattern("/api/{version}/{service}/{*rest}");
        let Some(params) = pattern.matches("/api/v1/users/42") else {
            panic!("expected a match");
        };
        assert_eq!(params.get("version"), Some("v1"));
        assert_eq!(params.get("service"), Some("users"));
        assert_eq!(params.get("rest"), Some("42"));
        assert_eq!(params.get("missing"), None);
        assert_eq!(params.len(), 3);
        assert!(!params.is_empty());
        // One exact reservation, no regrowth.
        assert_eq!(params.pairs.capacity(), 3);
    }

    #[test]
    fn literal_mismatch_does_not_allocate() {
        let with_param = pattern("/api/{service}");
        assert!(with_param.matches("/other/x").is_none());
        let literal_only = pattern("/health");
        let Some(params) = literal_only.matches("/health") else {
            panic!("expected a match");
        };
        assert_eq!(params.pairs.capacity(), 0);
    }

    #[test]
    fn parse_errors() {
        use PatternError::*;
        let cases: &[(&str, PatternError, &str)] = &[
            ("", NotAbsolute, "pattern must start with `/`"),
            ("api/{x}", NotAbsolute, "pattern must start with `/`"),
            (
                "/a/{*rest}/b",
                CatchAllNotLast("rest".into()),
                "`{*rest}` must be the last segment",
            ),
            (
                "/{service}/{service}",
                DuplicateName("service".into()),
                "duplicate parameter `service`",
            ),
            (
                "/{x}/{*x}",
                DuplicateName("x".into()),
                "duplicate parameter `x`",
            ),
            (
                "/{svc",
                UnclosedBrace("{svc".into()),
                "unclosed `{` in segment `{svc`",
            ),
            (
                "/v{svc",
                UnclosedBrace("v{svc".into()),
                "unclosed `{` in segment `v{svc`",
            ),
            (
                "/svc}",
                UnmatchedBrace("svc}".into()),
                "unmatched `}` in segment `svc}`",
            ),
            (
                "/{",
                UnclosedBrace("{".into()),
                "unclosed `{` in segment `{`",
            ),
            (
                "/v{version}",
                PartialSegment("v{version}".into()),
                "segment `v{version}` mixes a parameter with other text; a parameter must be a whole segment",
            ),
            (
                "/{a}b",
                PartialSegment("{a}b".into()),
                "segment `{a}b` mixes a parameter with other text; a parameter must be a whole segment",
            ),
            (
                "/{a}{b}",
                PartialSegment("{a}{b}".into()),
                "segment `{a}{b}` mixes a parameter with other text; a parameter must be a whole segment",
            ),
            (
                "/{}",
                EmptyName("{}".into()),
                "empty parameter name in segment `{}`",
            ),
            (
                "/{*}",
                EmptyName("{*}".into()),
                "empty parameter name in segment `{*}`",
            ),
            (
                "/{1x}",
                InvalidName("1x".into()),
                "invalid parameter name `1x`: use letters, digits and `_`, not starting with a digit",
            ),
            (
                "/{a-b}",
                InvalidName("a-b".into()),
                "invalid parameter name `a-b`: use letters, digits and `_`, not starting with a digit",
            ),
            (
                "/{**x}",
                InvalidName("*x".into()),
                "invalid parameter name `*x`: use letters, digits and `_`, not starting with a digit",
            ),
            (
                "/a//b",
                EmptySegment,
                "pattern has an empty segment (`//` or a trailing `/`); a trailing slash on the request path is accepted without it",
            ),
            (
                "/a/",
                EmptySegment,
                "pattern has an empty segment (`//` or a trailing `/`); a trailing slash on the request path is accepted without it",
            ),
            (
                "/a/../b",
                DotSegment("..".into()),
                "segment `..` can never match a normalised path",
            ),
            (
                "/./b",
                DotSegment(".".into()),
                "segment `.` can never match a normalised path",
            ),
        ];
        for (source, expected, message) in cases {
            let got = parse(source);
            assert_eq!(got.as_ref().err(), Some(expected), "pattern {source:?}");
            assert_eq!(expected.to_string(), *message, "pattern {source:?}");
        }
    }

    #[test]
    fn accepted_patterns_and_names() {
        let cases: &[(&str, &[&str])] = &[
            ("/", &[]),
            ("/health", &[]),
            ("/{_}", &["_"]),
            ("/api/v1/{service}/{*rest}", &["service", "rest"]),
            ("/{Tenant_1}/items/{item_id}", &["Tenant_1", "item_id"]),
            ("/{*everything}", &["everything"]),
            ("/a.b/~c/x-y", &[]),
        ];
        for (source, names) in cases {
            let parsed = pattern(source);
            assert_eq!(
                parsed.param_names().collect::<Vec<_>>(),
                *names,
                "pattern {source:?}"
            );
            assert_eq!(parsed.as_str(), *source);
            assert_eq!(parsed.to_string(), *source);
        }
    }

    #[test]
    fn from_str_matches_parse() {
        assert_eq!("/a/{b}".parse::<PathPattern>(), parse("/a/{b}"));
        assert_eq!(PathPattern::parse("/a/{b}"), parse("/a/{b}"));
        assert_eq!(
            "/a/{b".parse::<PathPattern>(),
            Err(PatternError::UnclosedBrace("{b".into()))
        );
    }
}
