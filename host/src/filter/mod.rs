//! The Wasm filter runtime.
//!
//! - [`engine`]: one wasmtime engine with the pooling allocator; loading a component checks its
//!   WIT version and imports before anything runs.
//! - `ticker`: advances the engine's epoch, at which running calls check their deadlines.
//! - `bindings`: the host side of `wit/filter.wit` (handles, log, clock, kv).
//! - [`cache`]: compiled components by content hash, in memory and on disk.
//! - `instance`: one instance in its own store, every call under a deadline and a memory cap.
//! - [`kv`]: the key-value store behind the `kv` capability, namespaced per filter.
//! - [`pool`]: per route and filter, initialised instances reused across requests.
//! - [`chain`]: a route's filters in order, with each filter's failure policy.

mod bindings;
pub mod cache;
pub mod chain;
pub mod engine;
mod exchange;
mod instance;
pub mod kv;
pub mod pool;
mod ticker;

use std::time::Duration;

pub use bindings::Phases;
pub use chain::FilterChain;
pub use engine::{FilterEngine, LoadedFilter};
pub use exchange::{Reply, RequestHead, ResponseHead};
pub use kv::KvStore;
pub use pool::FilterPool;

use crate::config::ByteSize;

/// The WIT package filters are built against.
pub const WIT_PACKAGE: &str = "gateway:filter";
/// The version of [`WIT_PACKAGE`] this gateway provides.
pub const WIT_VERSION: &str = "0.1.0";
/// The largest `memory_limit` a filter may be given.
pub const MAX_MEMORY_LIMIT: ByteSize = ByteSize(256 << 20);

/// How a call into a filter went wrong. The instance is discarded after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterFailure {
    /// The filter trapped (a panic, an out-of-bounds access, `unreachable`).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    #[error("ran past its deadline of {0:?}")]
    Timeout(Duration),
    /// The instance tried to grow its memory past the cap.
    #[error("went past its memory limit of {0}")]
    MemoryLimit(ByteSize),
    /// `init` rejected the configuration.
    #[error("rejected its configuration: {0}")]
    Rejected(String),
    /// No instance could be made to serve the call.
    #[error("no instance available: {0}")]
    Unavailable(String),
    /// The filter answered with a reply that cannot be sent (bad status or header).
    #[error("answered with an invalid reply: {0}")]
    BadReply(String),
}
