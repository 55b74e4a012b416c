//! Logging into the gateway's log. Each line is tagged with the filter's name and the request id.
//!
//! ```
//! # fn demo() {
//! gateway_sdk::log::info("cache warmed");
//! # }
//! ```

use crate::wit::gateway::filter::log::{Level, log};

/// Logs at trace level.
///
/// ```
/// # fn demo() {
/// gateway_sdk::log::trace("entering on_request");
/// # }
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Logs at debug level.
///
/// ```
/// # fn demo() {
/// gateway_sdk::log::debug("header absent, using the default");
/// # }
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs at info level.
///
/// ```
/// # fn demo() {
/// gateway_sdk::log::info("configured with 3 rules");
/// # }
/// ```
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs at warn level.
///
/// ```
/// # fn demo() {
/// gateway_sdk::log::warn("token expires in under a minute");
/// # }
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs at error level.
///
/// ```
/// # fn demo() {
/// gateway_sdk::log::error("upstream answered with an unparseable header");
/// # }
/// ```
pub fn error(message: &str) {
    log(Level::Error, message)
}
