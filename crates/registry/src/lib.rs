//! The Redis registry: instances of services that register themselves with a TTL and keep
//! their registration alive with heartbeats, and the watch every gateway keeps on them.
//!
//! # The key layout
//!
//! With the key prefix `gateway` (`kv.redis.key_prefix`), an instance of service `orders` at
//! `10.0.0.5:8080` is:
//!
//! ```text
//! SET     gateway:registry:instance:orders/10.0.0.5:8080 '{"url":"http://10.0.0.5:8080"}' PX 30000
//! SADD    gateway:registry:instances orders/10.0.0.5:8080
//! PUBLISH gateway:registry:changes orders/10.0.0.5:8080
//! ```
//!
//! The key holds the registration (see [`Registration`]: the URL, and optionally a weight,
//! a health path, a version, a zone and other metadata) and expires with the TTL; the set
//! indexes the keys, so that a gateway reads them all without scanning; the message tells
//! gateways to read now rather than at their next resync. A heartbeat is the same three
//! commands, a third of the TTL apart. Deregistering is `DEL`, `SREM` and `PUBLISH`.
//!
//! # What a gateway does with it
//!
//! [`watch`] reads the whole registry (`SMEMBERS`, then `MGET` of the keys) every
//! `resync_interval` and whenever a change is published, and hands the instances over whole.
//! A key that expired is gone from the next read; its index entry is removed then (`SREM`),
//! so an instance whose heartbeats stopped leaves every gateway within its TTL and one
//! resync. While Redis is away, a gateway keeps the instances it last read, says so once, and
//! reads again when it is back. A key `<prefix>:registry:marker`, set by the first gateway to
//! read and never expiring, tells a Redis that came back empty (restarted without
//! persistence) from one that kept its data: after an empty return, the instances known
//! before are kept for `registry.ttl`, the time their heartbeats need to register them again.

mod layout;
mod registration;
mod store;
mod watch;

pub use layout::Layout;
pub use registration::{Registered, Registration};
pub use store::{Heartbeat, Snapshot, Store};
pub use watch::watch;

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
