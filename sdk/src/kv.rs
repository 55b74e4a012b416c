//! Key-value state that outlives a request: counters, cached answers, seen tokens.
//!
//! Every instance of a filter sees the same keys, across requests; other filters never see
//! them. Entries may expire. The store is the gateway's choice, made in its configuration: its
//! own memory (bounded: it evicts when full, so treat it as a cache that is usually right, not a
//! database), or a Redis that several gateways share. Either way each operation is atomic, and
//! every operation can fail: with [`ErrorKind::Refused`] on any store for what no store takes
//! (a key too long, a value too large, an increment of text), and, on Redis, with
//! [`Error::is_unavailable`] when the store cannot answer. Then the filter decides what the
//! request gets: fail closed (answer an error) or fail open (go on without the state),
//! whichever its purpose can afford. An operation on Redis waits without holding a gateway
//! thread, and counts against the phase's deadline (the filter's `timeout`).
//!
//! In unit tests the test host keeps the state, with the same semantics, and can make the store
//! fail: see [`crate::testing::TestHost::kv_set`] and [`crate::testing::TestHost::kv_fails`].
//!
//! ```
//! use std::time::Duration;
//!
//! use gateway_sdk::{Action, Reply, kv};
//!
//! // At most 100 requests per client per minute: a fixed window. A store that cannot count
//! // lets requests through (fails open): an outage of Redis must not become one of the API.
//! fn limit(client: &str) -> Action {
//!     match kv::increment(&format!("client:{client}"), 1, Some(Duration::from_secs(60))) {
//!         Ok(count) if count > 100 => Action::Respond(Reply::text(429, "slow down")),
//!         Ok(_) => Action::Continue,
//!         Err(error) if error.is_unavailable() => {
//!             gateway_sdk::log::warn(&format!("not limiting {client}: {error}"));
//!             Action::Continue
//!         }
//!         Err(error) => Action::Respond(Reply::text(500, error.to_string())),
//!     }
//! }
//! # assert!(limit("203.0.113.7").is_continue());
//! ```

use std::time::Duration;

use crate::backend;
use crate::{Error, ErrorKind};

fn millis(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Why an operation did not happen, as the gateway's store reports it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The rule's words.
    Refused(String),
    /// The store's reason.
    Unavailable(String),
    Timeout,
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Refused(reason) => Error::new(ErrorKind::Refused, reason),
            Failure::Unavailable(reason) => Error::new(
                ErrorKind::Unavailable,
                format!("the key-value store is unavailable: {reason}"),
            ),
            Failure::Timeout => Error::new(
                ErrorKind::Timeout,
                "the key-value store did not answer in time",
            ),
        }
    }
}

/// The value at `key`, if present and not expired.
///
/// ```
/// let cached = gateway_sdk::kv::get("answer:/prices")?;
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    backend::kv_get(key).map_err(Error::from)
}

/// The value at `key` as text, if present and not expired. A value that is not UTF-8 reads as
/// absent (`Ok(None)`), as a header that is not UTF-8 does: the store answered, and the text the
/// filter asked for is not there. Read it with [`get`] to tell the two apart.
///
/// ```
/// let owner = gateway_sdk::kv::get_string("owner")?.unwrap_or_default();
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn get_string(key: &str) -> Result<Option<String>, Error> {
    Ok(get(key)?.and_then(|value| String::from_utf8(value).ok()))
}

/// Stores `value` at `key`, replacing any other; with a `ttl` it expires after that long.
/// Refused if the key or value is larger than the gateway allows.
///
/// ```
/// use std::time::Duration;
///
/// gateway_sdk::kv::set("answer:/prices", b"{\"eur\":1}", Some(Duration::from_secs(30)))?;
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn set(key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) -> Result<(), Error> {
    backend::kv_set(key, value.as_ref(), millis(ttl)).map_err(Error::from)
}

/// Removes the value at `key`; whether one was there.
///
/// ```
/// let was_there = gateway_sdk::kv::delete("session:42")?;
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn delete(key: &str) -> Result<bool, Error> {
    backend::kv_delete(key).map_err(Error::from)
}

/// Adds `delta` to the integer at `key` (absent: 0) and returns the new value. The `ttl`
/// applies only when this creates the entry, so the count resets a fixed time after it started.
/// Refused if the value there is not an integer or the sum overflows.
///
/// ```
/// use std::time::Duration;
///
/// let seen = gateway_sdk::kv::increment("logins:alice", 1, Some(Duration::from_secs(3600)))?;
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
    backend::kv_increment(key, delta, millis(ttl)).map_err(Error::from)
}

/// Writes `new` at `key` only if the current value equals `expected` (`None`: absent or
/// expired); whether it wrote. Use it to update a value read earlier without losing another
/// instance's (or another gateway's) concurrent update.
///
/// A [timeout](crate::ErrorKind::Timeout) leaves it unknown whether it wrote: read the value
/// again before trying once more.
///
/// ```
/// // Claim a one-time token: only the first request to get here wins.
/// let first = gateway_sdk::kv::compare_and_swap("nonce:abc", None, b"used", None)?;
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: impl AsRef<[u8]>,
    ttl: Option<Duration>,
) -> Result<bool, Error> {
    backend::kv_compare_and_swap(key, expected, new.as_ref(), millis(ttl)).map_err(Error::from)
}
