//! The rules a filter meets, written once: the gateway applies them and so does the SDK's test
//! host, so a filter's unit tests and production agree.
//!
//! - [`cache`]: the key layout of the bundled cache filter, which the admin API purges;
//! - [`edit`]: the edits a filter may make (header names and values, paths, queries, statuses,
//!   bodies);
//! - [`changes`]: what a phase hands back (edits, context entries, metric updates), and its
//!   encoding;
//! - [`context`]: the bounds of the request context filters share along the chain;
//! - [`metrics`]: the metrics a filter may declare and the updates it may make;
//! - [`input`]: what a phase is handed with its call, and its encoding;
//! - [`kv`]: the semantics of the key-value capability (TTL, increment, compare-and-swap, bounds);
//! - [`outbound`]: the requests a filter may send to a service.

pub mod cache;
pub mod changes;
pub mod context;
pub mod edit;
pub mod input;
pub mod kv;
pub mod metrics;
pub mod outbound;
