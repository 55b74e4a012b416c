//! Whether an instance should get traffic, as two kinds of check decide it:
//! - `active`: the gateway asks each instance itself, on a timer, once per gateway;
//! - `passive`: failures seen on real traffic eject an instance for a while (outlier
//!   detection).
//!
//! Both publish into the instance's shared state (atomics every worker reads without a lock):
//! `active` sets whether the instance is healthy, `passive` until when it is ejected. An
//! instance gets traffic when it is healthy and not ejected.

pub(crate) mod active;
pub(crate) mod passive;
