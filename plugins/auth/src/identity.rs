//! Who a request comes from once authenticated, and why a request is refused.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::Error;

/// How the caller authenticated; the value of `auth.method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Jwt,
    ApiKey,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Jwt => "jwt",
            Method::ApiKey => "api_key",
        }
    }
}

/// An authenticated caller, with the upstream header values already worked out, so a cached
/// one costs no claim lookups.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) subject: String,
    pub(crate) consumer: Option<String>,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) method: Method,
    /// The configured upstream headers that have a value for this caller.
    pub(crate) headers: Vec<(String, String)>,
}

impl Identity {
    /// The roles and permissions as `auth.roles` and the `roles` header carry them.
    pub(crate) fn roles_joined(&self) -> String {
        let mut joined = String::new();
        for role in &self.roles {
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(role);
        }
        joined
    }
}

/// What the client is told, as the gateway's error code; the reason goes to the log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    MissingCredentials,
    InvalidToken,
    TokenExpired,
    Forbidden,
    /// The keys or the store the decision needs could not be reached.
    Unavailable,
}

impl Code {
    pub(crate) fn status(self) -> u16 {
        match self {
            Code::MissingCredentials | Code::InvalidToken | Code::TokenExpired => 401,
            Code::Forbidden => 403,
            Code::Unavailable => 503,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Code::MissingCredentials => "MISSING_CREDENTIALS",
            Code::InvalidToken => "INVALID_TOKEN",
            Code::TokenExpired => "TOKEN_EXPIRED",
            Code::Forbidden => "FORBIDDEN",
            Code::Unavailable => "AUTH_UNAVAILABLE",
        }
    }

    /// The client's message: the same for every reason behind a code.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Code::MissingCredentials => "authentication is required",
            Code::InvalidToken => "the credentials are not valid",
            Code::TokenExpired => "the token has expired",
            Code::Forbidden => "not allowed",
            Code::Unavailable => "authentication is unavailable, try again later",
        }
    }
}

/// A refused request: the code for the client, the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) reason: String,
}

impl Refusal {
    pub(crate) fn new(code: Code, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Refusal::new(Code::InvalidToken, reason)
    }
}

/// Where an upstream header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderSource {
    Subject,
    Roles,
    Consumer,
    Method,
    Claim(String),
}

impl HeaderSource {
    pub(crate) fn parse(header: &str, source: &str) -> Result<Self, Error> {
        // RFC 9110 §5.6.2: a header name is a token; checked here so no request fails on it.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if header.is_empty() || !header.bytes().all(token) {
            return Err(Error::UpstreamHeader {
                header: header.to_owned(),
                reason: "not a valid header name".to_owned(),
            });
        }
        let source = match source {
            "subject" => HeaderSource::Subject,
            "roles" => HeaderSource::Roles,
            "consumer" => HeaderSource::Consumer,
            "method" => HeaderSource::Method,
            other => match other.strip_prefix("claim:") {
                Some(claim) if !claim.is_empty() => HeaderSource::Claim(claim.to_owned()),
                _ => {
                    return Err(Error::UpstreamHeader {
                        header: header.to_owned(),
                        reason: format!(
                            "`{other}` is not subject, roles, consumer, method or claim:<name>"
                        ),
                    });
                }
            },
        };
        Ok(source)
    }
}

/// The configured upstream headers' values for a caller; a JWT's claims give `claim:` values.
pub(crate) fn header_values(
    sources: &[(String, HeaderSource)],
    identity: &Identity,
    claims: Option<&Map<String, Value>>,
) -> Vec<(String, String)> {
    let mut values = Vec::with_capacity(sources.len());
    for (header, source) in sources {
        let value = match source {
            HeaderSource::Subject => Some(identity.subject.clone()),
            HeaderSource::Roles => Some(identity.roles_joined()),
            HeaderSource::Consumer => identity.consumer.clone(),
            HeaderSource::Method => Some(identity.method.as_str().to_owned()),
            HeaderSource::Claim(name) => {
                claims.and_then(|claims| claim(claims, name)).and_then(text)
            }
        };
        // A value the gateway would refuse as a header (a control character) is left out
        // rather than failing the request; the caller's identity is still set.
        if let Some(value) =
            value.filter(|value| !value.chars().any(|c| c.is_control() && c != '\t'))
        {
            values.push((header.clone(), value));
        }
    }
    values
}

/// A claim by name; a dotted name reads into nested objects (`realm_access.roles`). A claim
/// whose own name holds a dot is found first.
pub(crate) fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A claim as header text: a string, a number or a boolean as written, an array of those
/// joined with commas.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Array(items) => {
            let items: Option<Vec<String>> = items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Object(_) | Value::Null => None,
                    other => text(other),
                })
                .collect();
            Some(items?.join(","))
        }
        Value::Null | Value::Object(_) => None,
    }
}

/// Roles and permissions from the configured claims: arrays of strings, or strings of
/// space-separated names. Anything else in them is ignored.
pub(crate) fn roles(claims: &Map<String, Value>, names: &[String]) -> BTreeSet<String> {
    let mut roles = BTreeSet::new();
    for name in names {
        match claim(claims, name) {
            Some(Value::String(text)) => {
                roles.extend(text.split_ascii_whitespace().map(str::to_owned));
            }
            Some(Value::Array(items)) => {
                roles.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            _ => {}
        }
    }
    // A comma would split one role into two for whoever reads `auth.roles`.
    roles.retain(|role| !role.is_empty() && !role.contains(','));
    roles
}
