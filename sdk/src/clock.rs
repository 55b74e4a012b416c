//! Time as the gateway sees it.
//!
//! ```
//! # fn demo() {
//! let started = gateway_sdk::clock::monotonic_ns();
//! let elapsed_ns = gateway_sdk::clock::monotonic_ns() - started;
//! # }
//! ```

use crate::wit::gateway::filter::clock;

/// Milliseconds since the Unix epoch.
///
/// ```
/// # fn demo() {
/// let expired = 1_700_000_000_000 < gateway_sdk::clock::now_ms();
/// # }
/// ```
pub fn now_ms() -> u64 {
    clock::now_ms()
}

/// Nanoseconds on a clock that never goes backwards; only differences are meaningful.
///
/// ```
/// # fn demo() {
/// let t = gateway_sdk::clock::monotonic_ns();
/// # }
/// ```
pub fn monotonic_ns() -> u64 {
    clock::monotonic_ns()
}
