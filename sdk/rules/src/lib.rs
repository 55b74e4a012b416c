//! The rules a filter meets, written once: the gateway applies them and so does the SDK's test
//! host, so a filter's unit tests and production agree.
//!
//! - [`edit`]: the edits a filter may make (header names and values, paths, queries, statuses);
//! - [`kv`]: the semantics of the key-value capability (TTL, increment, compare-and-swap, bounds).

pub mod edit;
pub mod kv;
