//! The crate's one error type, and the single place that decides what a client sees for each.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;

use http::StatusCode;

use crate::filter::FilterFailure;
use crate::server::hygiene::Violation;
use crate::server::normalize::PathError;

/// Everything that can go wrong, at start-up or on a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The configuration file has problems; each names its field path.
    #[error("{} is not a valid configuration:\n  - {}", path.display(), problems.join("\n  - "))]
    Config {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// A filter component could not be loaded.
    #[error("filter `{filter}` ({}): {reason}", path.display())]
    FilterLoad {
        filter: String,
        path: PathBuf,
        reason: String,
    },

    /// The configuration is valid but a state cannot be built from it (a filter fails to load
    /// or refuses its config); every problem found is listed.
    #[error("{} cannot be served:\n  - {}", path.display(), problems.join("\n  - "))]
    Unservable {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// A filter refused, or failed on, a route's configuration.
    #[error("route `{route}`, filter `{filter}`: {reason}")]
    FilterInit {
        route: String,
        filter: String,
        reason: String,
    },

    /// The Wasm engine could not be set up.
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),

    /// A plugin crate could not be generated.
    #[error("cannot create plugin `{name}`: {reason}")]
    Scaffold { name: String, reason: String },

    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },

    /// The request broke an edge rule (framing, size, host).
    #[error("request refused at the edge: {0}")]
    Edge(Violation),

    /// The request path cannot be normalised safely.
    #[error("bad request path: {0}")]
    BadPath(PathError),

    /// No route takes the request.
    #[error("no route for the request")]
    NoRoute,

    /// The route takes the service name from the path, and no service has that name.
    #[error("no service named `{0}`")]
    UnknownService(String),

    /// The route has no service and no filter answered the request.
    #[error("route `{0}` has no service and no filter answered")]
    NoService(String),

    /// A filter failed on the request and its policy is `closed`.
    #[error("filter `{filter}` failed: {failure}")]
    FilterFailed {
        filter: String,
        failure: FilterFailure,
    },

    /// The upstream could not be reached.
    #[error("upstream {instance} unreachable: {reason}")]
    UpstreamUnreachable { instance: String, reason: String },

    /// The upstream broke the exchange after it started.
    #[error("upstream {instance} failed: {reason}")]
    UpstreamFailed { instance: String, reason: String },

    /// The upstream did not answer in time.
    #[error("upstream {instance} did not answer within {timeout:?}")]
    UpstreamTimeout {
        instance: String,
        timeout: std::time::Duration,
    },

    /// A worker thread could not be started.
    #[error("cannot start the workers: {reason}")]
    Worker { reason: String },

    /// The client paused too long while sending the request body.
    #[error("client stopped sending the request body")]
    BodyTimeout,
}

impl Error {
    /// The separate problems this error reports, for lists such as the reload status.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Error::Config { path, problems } => problems
                .iter()
                .map(|problem| format!("{}: {problem}", path.display()))
                .collect(),
            Error::Unservable { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a client is told about an error: never addresses, stack traces or secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// The connection cannot be trusted for another request (framing was ambiguous).
    pub close: bool,
}

impl Error {
    /// The status, code and message a client gets for this error: the one place they are chosen.
    pub fn to_client(&self) -> ClientError {
        let plain = |status, code, message: &'static str| ClientError {
            status,
            code,
            message: Cow::Borrowed(message),
            close: false,
        };
        match self {
            Error::Edge(violation) => ClientError {
                status: violation.status(),
                code: violation.code(),
                message: Cow::Owned(violation.to_string()),
                close: violation.closes_connection(),
            },
            Error::BadPath(reason) => ClientError {
                status: StatusCode::BAD_REQUEST,
                code: "BAD_PATH",
                message: Cow::Owned(reason.to_string()),
                close: false,
            },
            Error::NoRoute | Error::UnknownService(_) => plain(
                StatusCode::NOT_FOUND,
                "NO_ROUTE",
                "no route matches the request",
            ),
            Error::NoService(_) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "NO_UPSTREAM",
                "no upstream is configured for this route",
            ),
            Error::FilterFailed { failure, .. } => match failure {
                FilterFailure::Unavailable(_) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "FILTER_UNAVAILABLE",
                    "a filter on this route is unavailable",
                ),
                _ => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "FILTER_FAILED",
                    "a filter on this route failed",
                ),
            },
            Error::UpstreamUnreachable { .. } => plain(
                StatusCode::BAD_GATEWAY,
                "UPSTREAM_UNAVAILABLE",
                "the upstream service could not be reached",
            ),
            Error::UpstreamFailed { .. } => plain(
                StatusCode::BAD_GATEWAY,
                "UPSTREAM_FAILED",
                "the upstream service failed to answer",
            ),
            Error::UpstreamTimeout { .. } => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "UPSTREAM_TIMEOUT",
                "the upstream service did not answer in time",
            ),
            Error::BodyTimeout => ClientError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "REQUEST_TIMEOUT",
                message: Cow::Borrowed("the request body was not received in time"),
                close: true,
            },
            Error::ConfigRead { .. }
            | Error::Config { .. }
            | Error::FilterLoad { .. }
            | Error::FilterInit { .. }
            | Error::Engine(_)
            | Error::Unservable { .. }
            | Error::Scaffold { .. }
            | Error::Bind { .. }
            | Error::Worker { .. } => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal gateway error",
            ),
        }
    }
}
