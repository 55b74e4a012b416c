//! Single flight: one request at a time does the work behind a key, while the others wait for
//! it instead of repeating it (a cache's concurrent misses for one answer, a token refresh).
//!
//! A lock is held by a request, not by a filter instance: take it in the request phase and
//! release it in the response phase. It is released by [`release`], by the gateway when the
//! request's response phases are done (whatever it still holds then), or when its lease ends,
//! whichever comes first, so a holder that failed strands its waiters for at most the lease.
//! Locks live in the same store as the filter's [`kv`](crate::kv) state: this gateway's memory,
//! or a Redis that several gateways share, where a lock is one for all of them. A wait never
//! holds a gateway thread, and is cut short (as [`Outcome::TimedOut`]) before it would pass the
//! phase's deadline (the filter's `timeout`), so set that longer than the waits asked for.
//!
//! In unit tests the test host keeps the locks; it can play another request holding one:
//! see [`crate::testing::TestHost::lock_held_elsewhere`].
//!
//! ```
//! use std::time::Duration;
//!
//! use gateway_sdk::lock::{self, Outcome};
//!
//! // Refresh a shared token once, however many requests find it missing at the same time.
//! fn token() -> Result<Option<Vec<u8>>, gateway_sdk::Error> {
//!     if let Some(token) = gateway_sdk::kv::get("token")? {
//!         return Ok(Some(token));
//!     }
//!     match lock::acquire("token", Duration::from_secs(5), Duration::from_millis(200))? {
//!         Outcome::Acquired => {
//!             let fresh = b"fetched".to_vec(); // fetch it here
//!             gateway_sdk::kv::set("token", &fresh, Some(Duration::from_secs(60)))?;
//!             lock::release("token")?;
//!             Ok(Some(fresh))
//!         }
//!         // The holder is done: its work is in the store, unless it failed.
//!         Outcome::Released => gateway_sdk::kv::get("token"),
//!         Outcome::TimedOut => Ok(None),
//!     }
//! }
//! # assert_eq!(token().expect("token").as_deref(), Some(&b"fetched"[..]));
//! ```

use std::time::Duration;

use crate::Error;
use crate::backend;

/// How an [`acquire`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This request holds the lock, until it releases it or the lease ends.
    Acquired,
    /// Another request held it and let it go (released it, or its lease ended) while this one
    /// waited. This request does not hold it: look for the other's work, and acquire again
    /// if it is not there.
    Released,
    /// Another request still holds it after the wait.
    TimedOut,
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Takes the lock on `key` for `lease`, waiting at most `wait` for another request to let it
/// go (`Duration::ZERO`: do not wait). Taking a lock this request holds renews its lease.
/// Fails as [`kv`](crate::kv) operations do: refused for a key too long, unavailable or timed
/// out when Redis cannot answer.
///
/// ```
/// use std::time::Duration;
///
/// let outcome = gateway_sdk::lock::acquire("refresh", Duration::from_secs(5), Duration::ZERO)?;
/// assert_eq!(outcome, gateway_sdk::lock::Outcome::Acquired);
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn acquire(key: &str, lease: Duration, wait: Duration) -> Result<Outcome, Error> {
    backend::lock_acquire(key, millis(lease), millis(wait)).map_err(Error::from)
}

/// Releases the lock on `key` if this request holds it; whether it did.
///
/// ```
/// let released = gateway_sdk::lock::release("refresh")?;
/// assert!(!released, "never taken");
/// # Ok::<(), gateway_sdk::Error>(())
/// ```
pub fn release(key: &str) -> Result<bool, Error> {
    backend::lock_release(key).map_err(Error::from)
}
