//! Why a configuration is refused. Requests are never refused with these: a refusal of a
//! request is a [`crate::identity::Refusal`], which names a client-facing code.

/// A configuration the filter cannot serve with; the message names the part at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(
        "unknown algorithm `{0}` (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
    )]
    UnknownAlgorithm(String),
    #[error("key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("not a JWKS document: {0}")]
    InvalidJwks(String),
    #[error("provider `{provider}`: {reason}")]
    Provider { provider: String, reason: String },
    #[error("path pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("api key of `{consumer}`: `sha256` must be 64 hex digits")]
    ApiKeyHash { consumer: String },
    #[error("user `{user}`: {reason}")]
    User { user: String, reason: String },
    #[error("`upstream_headers.{header}`: {reason}")]
    UpstreamHeader { header: String, reason: String },
    #[error("endpoints: {0}")]
    Endpoints(String),
}
