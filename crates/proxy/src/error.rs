//! The proxy's one error type, and the single place that decides what a client sees for each.

use std::borrow::Cow;

use gateway_filter::FilterFailure;
use gateway_upstream::ErrorKind;
use http::StatusCode;

use crate::body::BodyReadTimeout;
use crate::hygiene::Violation;
use gateway_routing::normalize::PathError;

/// Why a request got the gateway's own answer, or why a state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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

    /// A filter could not be loaded or initialised, or failed on the request (policy
    /// `closed`).
    #[error(transparent)]
    Filter(gateway_filter::Error),

    /// The upstream could not be reached, failed, or did not answer in time; or the client's
    /// body failed on its way there (its kind is then [`ErrorKind::ClientBody`]).
    #[error(transparent)]
    Upstream(gateway_upstream::Error),

    /// The client paused too long while sending the request body.
    #[error("client stopped sending the request body")]
    BodyTimeout,

    /// The upstream's response body, read for a filter, failed or stalled.
    #[error("the upstream's response body failed: {0}")]
    UpstreamBody(std::io::Error),

    /// The request body, read for a filter, was malformed or cut short.
    #[error("the request body is malformed or incomplete")]
    BadBody,

    /// A WebSocket handshake the gateway cannot take: what is missing or wrong.
    #[error("bad WebSocket handshake: {0}")]
    BadHandshake(&'static str),

    /// A WebSocket handshake asked for a protocol version other than 13.
    #[error("unsupported WebSocket version")]
    WebSocketVersion,

    /// The instance accepted the upgrade with a handshake the client could not trust (wrong
    /// accept key, a subprotocol or extension not offered), or broke it off.
    #[error("the instance's WebSocket handshake failed: {0}")]
    UpstreamHandshake(gateway_upstream::Error),

    /// A route names a service the state does not have.
    #[error("route `{route}` forwards to service `{service}`, which is not defined")]
    RouteService { route: String, service: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<gateway_upstream::Error> for Error {
    /// A client body that stalled is the client's timeout, whichever layer noticed it.
    fn from(error: gateway_upstream::Error) -> Error {
        let mut cause = error
            .source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static));
        let mut stalled = false;
        while let Some(error) = cause {
            stalled |= error.is::<BodyReadTimeout>();
            cause = error.source();
        }
        if stalled {
            Error::BodyTimeout
        } else {
            Error::Upstream(error)
        }
    }
}

/// What a client is told about an error: never addresses, stack traces or secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    /// The connection cannot be trusted for another request (framing was ambiguous).
    pub close: bool,
    /// Seconds for `Retry-After`; a 503 without them says 1.
    pub retry_after: Option<u64>,
}

impl Error {
    /// The status, code and message a client gets for this error: the one place they are chosen.
    pub fn to_client(&self) -> ClientError {
        let plain = |status, code, message: &'static str| ClientError {
            status,
            code,
            message: Cow::Borrowed(message),
            close: false,
            retry_after: None,
        };
        match self {
            Error::Edge(violation) => ClientError {
                status: violation.status(),
                code: violation.code(),
                message: Cow::Owned(violation.to_string()),
                close: violation.closes_connection(),
                retry_after: None,
            },
            Error::BadPath(reason) => ClientError {
                status: StatusCode::BAD_REQUEST,
                code: "BAD_PATH",
                message: Cow::Owned(reason.to_string()),
                close: false,
                retry_after: None,
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
            Error::Filter(gateway_filter::Error::Failed {
                failure: FilterFailure::Unavailable(_),
                ..
            }) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "FILTER_UNAVAILABLE",
                "a filter on this route is unavailable",
            ),
            Error::Filter(gateway_filter::Error::Failed { .. }) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "FILTER_FAILED",
                "a filter on this route failed",
            ),
            Error::Upstream(error) => match error.kind {
                ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout => plain(
                    StatusCode::BAD_GATEWAY,
                    "UPSTREAM_UNAVAILABLE",
                    "the upstream service could not be reached",
                ),
                ErrorKind::ResponseTimeout => plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UPSTREAM_TIMEOUT",
                    "the upstream service did not answer in time",
                ),
                ErrorKind::ResetBeforeSent | ErrorKind::ResetAfterSent | ErrorKind::Protocol => {
                    plain(
                        StatusCode::BAD_GATEWAY,
                        "UPSTREAM_FAILED",
                        "the upstream service failed to answer",
                    )
                }
                ErrorKind::NoHealthyInstance => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NO_HEALTHY_UPSTREAM",
                    "no instance of the upstream service is healthy",
                ),
                ErrorKind::CircuitOpen => ClientError {
                    // Whole seconds, rounded up: a client told 0 would come straight back.
                    retry_after: Some(
                        error
                            .retry_after
                            .map_or(1, |wait| {
                                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
                            })
                            .max(1),
                    ),
                    ..plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "CIRCUIT_OPEN",
                        "the upstream service is failing; its circuit breaker is open",
                    )
                },
                ErrorKind::Overloaded => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "OVERLOADED",
                    "the upstream service has too many requests in flight",
                ),
                // Malformed framing, cut short, or longer than announced: where the next request
                // on the connection starts is unknown.
                ErrorKind::ClientBody => ClientError {
                    status: StatusCode::BAD_REQUEST,
                    code: "BAD_REQUEST",
                    message: Cow::Borrowed("the request body is malformed or incomplete"),
                    close: true,
                    retry_after: None,
                },
            },
            Error::UpstreamBody(error) if error.kind() == std::io::ErrorKind::TimedOut => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "UPSTREAM_TIMEOUT",
                "the upstream service did not answer in time",
            ),
            Error::UpstreamBody(_) => plain(
                StatusCode::BAD_GATEWAY,
                "UPSTREAM_FAILED",
                "the upstream service failed to answer",
            ),
            Error::BadBody => ClientError {
                status: StatusCode::BAD_REQUEST,
                code: "BAD_REQUEST",
                message: Cow::Borrowed("the request body is malformed or incomplete"),
                close: true,
                retry_after: None,
            },
            Error::BodyTimeout => ClientError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "REQUEST_TIMEOUT",
                message: Cow::Borrowed("the request body was not received in time"),
                close: true,
                retry_after: None,
            },
            Error::BadHandshake(reason) => ClientError {
                status: StatusCode::BAD_REQUEST,
                code: "BAD_HANDSHAKE",
                message: Cow::Borrowed(reason),
                close: true,
                retry_after: None,
            },
            Error::WebSocketVersion => ClientError {
                status: StatusCode::UPGRADE_REQUIRED,
                code: "UNSUPPORTED_WEBSOCKET_VERSION",
                message: Cow::Borrowed("only WebSocket version 13 is supported"),
                close: true,
                retry_after: None,
            },
            Error::UpstreamHandshake(error) => match error.kind {
                ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout => plain(
                    StatusCode::BAD_GATEWAY,
                    "UPSTREAM_UNAVAILABLE",
                    "the upstream service could not be reached",
                ),
                ErrorKind::ResponseTimeout => plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UPSTREAM_TIMEOUT",
                    "the upstream service did not answer in time",
                ),
                _ => plain(
                    StatusCode::BAD_GATEWAY,
                    "UPSTREAM_FAILED",
                    "the upstream service failed the WebSocket handshake",
                ),
            },
            Error::Filter(_) | Error::RouteService { .. } => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal gateway error",
            ),
        }
    }
}
