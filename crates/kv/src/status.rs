//! The state of a store as the admin API shows it: whether it answers, since when, and how its
//! operations have gone.
//!
//! A snapshot, taken on request from counters the stores keep as they go: the stores count with
//! relaxed atomics (or under a lock they already hold), so keeping these numbers costs the
//! operations next to nothing.

use serde::Serialize;

/// Whether a store can answer operations now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Operations are sent and answered.
    Connected,
    /// No live connection: operations fail at once with `Unavailable` while the store
    /// reconnects in the background.
    Down,
}

/// A snapshot of one store.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// `memory` or `redis`.
    pub backend: &'static str,
    pub state: BackendState,
    /// Milliseconds since the store entered `state`.
    pub since_ms: u64,
    /// Operations asked of the store, whatever their outcome.
    pub operations: u64,
    /// Operations that failed because the store was unavailable (down, unreachable, refusing
    /// the gateway, or answering with an error). Refusals of the operation itself (a key too
    /// long, a value that is not an integer) are the filter's doing and are not counted.
    pub errors: u64,
    /// Operations that were not answered in time.
    pub timeouts: u64,
    /// Mean time, in microseconds, of the operations the store answered; `None` before the
    /// first, and for a store whose operations are not timed (memory: they do not wait).
    pub mean_latency_us: Option<u64>,
    /// Longest of those times, in microseconds.
    pub max_latency_us: Option<u64>,
    /// Why the store last failed, if it ever did.
    pub last_error: Option<String>,
    /// Entries held, for a store that can tell cheaply (memory; expired entries included
    /// until they are dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Bytes of keys and values held, for the memory store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Live entries the memory store evicted to stay within its bounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evictions: Option<u64>,
}
