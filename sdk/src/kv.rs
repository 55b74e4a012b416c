//! Key-value state that outlives a request: counters, cached answers, seen tokens.
//!
//! Every instance of a filter sees the same keys, across requests; other filters never see
//! them. Entries may expire; the store is bounded and evicts when full, so treat it as a cache
//! that is usually right, not a database. In unit tests the test host keeps the state, with the
//! same semantics: see [`crate::testing::TestHost::kv_set`].
//!
//! ```
//! use std::time::Duration;
//!
//! // At most 100 requests per client per minute: a fixed window.
//! let count = gateway_sdk::kv::increment("client:203.0.113.7", 1, Some(Duration::from_secs(60)))
//!     .expect("the store accepts counters");
//! let limited = count > 100;
//! ```

use std::time::Duration;

use crate::Error;
use crate::backend;

fn millis(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// The value at `key`, if present and not expired.
///
/// ```
/// let cached = gateway_sdk::kv::get("answer:/prices");
/// ```
pub fn get(key: &str) -> Option<Vec<u8>> {
    backend::kv_get(key)
}

/// The value at `key` as text, if present, not expired and valid UTF-8.
///
/// ```
/// let owner = gateway_sdk::kv::get_string("owner").unwrap_or_default();
/// ```
pub fn get_string(key: &str) -> Option<String> {
    String::from_utf8(get(key)?).ok()
}

/// Stores `value` at `key`, replacing any other; with a `ttl` it expires after that long.
/// Refused if the key or value is larger than the gateway allows.
///
/// ```
/// use std::time::Duration;
///
/// gateway_sdk::kv::set("answer:/prices", b"{\"eur\":1}", Some(Duration::from_secs(30)))
///     .expect("small enough to store");
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) -> Result<(), Error> {
    backend::kv_set(key, value.as_ref(), millis(ttl)).map_err(Error::new)
}

/// Removes the value at `key`; whether one was there.
///
/// ```
/// let was_there = gateway_sdk::kv::delete("session:42");
/// ```
pub fn delete(key: &str) -> bool {
    backend::kv_delete(key)
}

/// Adds `delta` to the integer at `key` (absent: 0) and returns the new value. The `ttl`
/// applies only when this creates the entry, so the count resets a fixed time after it started.
/// Refused if the value there is not an integer or the sum overflows.
///
/// ```
/// use std::time::Duration;
///
/// let seen = gateway_sdk::kv::increment("logins:alice", 1, Some(Duration::from_secs(3600)))
///     .expect("a counter");
/// ```
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
    backend::kv_increment(key, delta, millis(ttl)).map_err(Error::new)
}

/// Writes `new` at `key` only if the current value equals `expected` (`None`: absent or
/// expired); whether it wrote. Use it to update a value read earlier without losing another
/// instance's concurrent update.
///
/// ```
/// // Claim a one-time token: only the first request to get here wins.
/// let first = gateway_sdk::kv::compare_and_swap("nonce:abc", None, b"used", None)
///     .expect("small enough to store");
/// ```
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
    ttl: Option<Duration>,
) -> Result<bool, Error> {
    backend::kv_compare_and_swap(key, expected, new.as_ref(), millis(ttl)).map_err(Error::new)
}
