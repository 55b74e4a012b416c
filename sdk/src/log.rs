//! Logging into the gateway's log. Each line is tagged with the filter's name and the request id.
//! In unit tests the lines are kept by the test host: see [`crate::testing::TestHost::logs`].
//!
//! ```
//! gateway_sdk::log::info("cache warmed");
//! ```

use crate::backend;

/// How important a log line is.
///
/// ```
/// use gateway_sdk::log::Level;
///
/// assert!(Level::Error > Level::Warn);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail.
    Trace,
    /// Detail useful when debugging.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// Something failed.
    Error,
}

/// Logs at a level.
///
/// ```
/// gateway_sdk::log::log(gateway_sdk::log::Level::Info, "ready");
/// ```
pub fn log(level: Level, message: &str) {
    backend::log(level, message)
}

/// Logs at trace level.
///
/// ```
/// gateway_sdk::log::trace("entering on_request");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Logs at debug level.
///
/// ```
/// gateway_sdk::log::debug("header absent, using the default");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs at info level.
///
/// ```
/// gateway_sdk::log::info("configured with 3 rules");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs at warn level.
///
/// ```
/// gateway_sdk::log::warn("token expires in under a minute");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs at error level.
///
/// ```
/// gateway_sdk::log::error("upstream answered with an unparseable header");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message)
}
