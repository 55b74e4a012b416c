//! Logging into the gateway's log. Each line is tagged with the filter's name and the request id.
//! In unit tests the lines are kept by the test host: see [`crate::testing::TestHost::logs`].
//!
//! The gateway tells the filter when it starts the level it discards messages below, and a
//! message below it never leaves the filter. Formatting one still costs, so a message built on
//! every request asks [`enabled`] first:
//!
//! ```
//! use gateway_sdk::log::{self, Level};
//!
//! # let (address, verdict) = ("192.0.2.1", "allowed");
//! if log::enabled(Level::Debug) {
//!     log::debug(&format!("{address}: {verdict}"));
//! }
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

/// Whether a message at `level` would reach the gateway's log. In the test host, every level
/// does.
///
/// ```
/// use gateway_sdk::log::{self, Level};
///
/// if log::enabled(Level::Trace) {
///     log::trace(&format!("state: {:?}", (1, 2)));
/// }
/// ```
pub fn enabled(level: Level) -> bool {
    level >= backend::log_level()
}

/// Logs at a level; below the gateway's level, the message goes nowhere.
///
/// ```
/// gateway_sdk::log::log(gateway_sdk::log::Level::Info, "ready");
/// ```
pub fn log(level: Level, message: &str) {
    if enabled(level) {
        backend::log(level, message)
    }
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
