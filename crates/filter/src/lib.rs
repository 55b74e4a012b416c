//! The Wasm filter runtime: the only crate that links wasmtime.
//!
//! A filter is a WebAssembly component built against `wit/filter.wit`. This crate loads it,
//! keeps initialised instances of it per route, and runs its phases on a request's heads under a
//! deadline and a memory cap; whatever goes wrong in a call comes back as a [`FilterFailure`],
//! never as a crash. Its public surface is what the layers above need: load filters
//! ([`FilterEngine`]), build a route's chain ([`FilterPool`], [`FilterChain`]) and run it on
//! [`RequestHead`]s and [`ResponseHead`]s.
//!
//! - [`engine`]: one wasmtime engine with the pooling allocator; loading a component checks its
//!   WIT version and imports before anything runs.
//! - `ticker`: advances the engine's epoch, at which running calls check their deadlines.
//! - `bindings`: the host side of `wit/filter.wit` (lazy reads, log, clock, kv, outbound); a
//!   filter's `kv` operations go to the store of `gateway-kv` its definition chooses.
//! - `declared`: what a filter declared it reads, and the input built from it for each call.
//! - `edits`: a call's outcome (edits, context entries, metric updates) checked and applied.
//! - [`metrics`]: the metrics filters declare, kept per worker without a lock.
//! - [`cache`]: compiled components by content hash, in memory and on disk.
//! - `instance`: one instance in its own store, every call under a deadline and a memory cap.
//! - [`outbound`]: what a filter's calls to configured services go through.
//! - [`pool`]: per route and filter, initialised instances reused across requests.
//! - [`chain`]: a route's filters in order, with each filter's failure policy.

mod bindings;
mod cache;
mod chain;
mod declared;
mod edits;
mod engine;
mod heads;
mod instance;
pub mod metrics;
pub mod outbound;
mod pool;
mod ticker;

use std::path::PathBuf;
use std::time::Duration;

pub use bindings::Phases;
pub use cache::{ContentHash, Origin};
pub use chain::{FilterChain, RequestPhase, Step, Trace};
pub use engine::{FilterEngine, LoadedFilter};
pub use heads::{FilterReply, HeldBody, RequestHead, ResponseHead};
pub use pool::FilterPool;

use gateway_config::ByteSize;

/// The WIT package filters are built against.
const WIT_PACKAGE: &str = "gateway:filter";
/// The version of [`WIT_PACKAGE`] this gateway provides.
const WIT_VERSION: &str = "0.2.0";

/// Why a filter cannot serve, or did not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filter component could not be loaded.
    #[error("filter `{filter}` ({}): {reason}", path.display())]
    Load {
        filter: String,
        path: PathBuf,
        reason: String,
    },

    /// A filter refused, or failed on, a route's configuration.
    #[error("route `{route}`, filter `{filter}`: {reason}")]
    Init {
        route: String,
        filter: String,
        reason: String,
    },

    /// The Wasm engine could not be set up.
    #[error("cannot set up the Wasm engine: {0}")]
    Engine(String),

    /// A filter failed on a request and its policy is `closed`.
    #[error("filter `{filter}` failed: {failure}")]
    Failed {
        filter: String,
        failure: FilterFailure,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// The filter returned an edit, context entry or metric update the gateway refuses; none
    /// of its outcome was applied.
    #[error("made an edit the gateway refuses: {0}")]
    BadEdit(String),
}

impl FilterFailure {
    /// A short name of the failure, as a trace of decisions shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterFailure::Trap(_) => "trap",
            FilterFailure::Timeout(_) => "timeout",
            FilterFailure::MemoryLimit(_) => "memory-limit",
            FilterFailure::Rejected(_) => "rejected",
            FilterFailure::Unavailable(_) => "unavailable",
            FilterFailure::BadReply(_) => "bad-reply",
            FilterFailure::BadEdit(_) => "bad-edit",
        }
    }
}
