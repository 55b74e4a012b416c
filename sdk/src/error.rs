//! The one error of the SDK: what the gateway refused, or why a store or service gave no answer.
//!
//! One type for edits, [`kv`](crate::kv) and [`outbound`](crate::outbound), because a filter
//! mostly asks one question of all of them: could the thing not answer (apply the filter's
//! fail-open or fail-closed choice), or was the request itself wrong (a bug to log)? The
//! [`ErrorKind`] answers it; the message says what happened, for the log.

use std::fmt;

/// What the gateway refused (an edit, a key-value write), or why a store or service gave no
/// answer; with its reason.
///
/// ```
/// use gateway_sdk::{ErrorKind, Headers};
///
/// # fn demo(request: &mut gateway_sdk::Request) {
/// if let Err(error) = request.set_header("bad header", "x") {
///     assert_eq!(error.kind(), ErrorKind::Refused);
///     gateway_sdk::log::warn(&format!("cannot set header: {error}"));
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Why an operation failed, to decide what the request gets.
///
/// New kinds may come with new capabilities, so a `match` needs a `_` arm; most filters only
/// ask [`Error::is_unavailable`].
///
/// ```
/// use gateway_sdk::ErrorKind;
///
/// fn status_for(kind: ErrorKind) -> u16 {
///     match kind {
///         ErrorKind::Timeout => 504,
///         ErrorKind::Unavailable => 503,
///         _ => 500,
///     }
/// }
/// assert_eq!(status_for(ErrorKind::Timeout), 504);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Refused whatever the state of the store or service, so trying again fails the same way:
    /// an edit the gateway's rules refuse, a key too long or a value too large, an increment of
    /// a value that is not an integer or that would overflow, an outbound request that cannot
    /// be sent (a bad method, path or header).
    Refused,
    /// The store or service cannot be reached, refuses the gateway, or broke off its answer;
    /// a key-value operation did not happen.
    Unavailable,
    /// No answer in time. A key-value write may or may not have happened.
    Timeout,
    /// The route does not grant this filter the service it called (`allow_services` in the
    /// gateway's configuration).
    NotAllowed,
    /// The service's answer is larger than the gateway lets the filter receive.
    TooLarge,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// A refusal, with the rule's own words as the reason.
    pub(crate) fn refused(reason: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Refused, reason.to_string())
    }

    /// Why it failed.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) {
    /// let kind = request.set_path("no-slash").unwrap_err().kind();
    /// assert_eq!(kind, gateway_sdk::ErrorKind::Refused);
    /// # }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the store or service could not answer ([`ErrorKind::Unavailable`] or
    /// [`ErrorKind::Timeout`]): the case where a filter applies its fail-open or fail-closed
    /// choice, rather than a mistake in what it asked.
    ///
    /// ```
    /// use gateway_sdk::{Action, kv};
    ///
    /// // Fail open: a rate limit that cannot count lets the request through.
    /// let action = match kv::increment("hits", 1, None) {
    ///     Ok(_) => Action::Continue,
    ///     Err(error) if error.is_unavailable() => Action::Continue,
    ///     Err(error) => Action::Respond(gateway_sdk::Reply::text(500, error.to_string())),
    /// };
    /// # assert!(action.is_continue());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    /// The reason, as the gateway (or the SDK, for a timeout) gives it.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) {
    /// let reason = request.set_path("no-slash").unwrap_err().message().to_owned();
    /// # }
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
