//! The time the breakers, ejections, latency estimates and the retry budget read: behind a
//! small trait, so unit tests move it forward at once instead of sleeping.
//!
//! Times are nanoseconds since a fixed start, in a `u64`, because that is what fits in the
//! atomics the per-instance state is made of (an `Instant` does not).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A monotonic clock.
pub(crate) trait Clock: Send + Sync {
    /// Nanoseconds since this clock's start; never goes back.
    fn now(&self) -> u64;
}

/// The process's monotonic clock.
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        let start = START.get_or_init(Instant::now);
        nanos(start.elapsed())
    }
}

/// A duration as this module's nanoseconds, saturating.
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
pub(crate) mod manual {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::{Clock, nanos};

    /// A clock that moves only when a test says so.
    #[derive(Default)]
    pub(crate) struct ManualClock(AtomicU64);

    impl ManualClock {
        pub(crate) fn advance(&self, by: Duration) {
            self.0.fetch_add(nanos(by), Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> u64 {
            // Never zero: zero means "never" in the state that stores times.
            self.0.load(Ordering::SeqCst) + 1
        }
    }
}
