//! Passive health checks (outlier detection): failures in a row on real traffic eject an
//! instance for a while.
//!
//! `consecutive_failures` failures in a row (5xx answers, connect failures, resets, timeouts;
//! never the client's fault) eject the instance for `base_ejection_time` times the number of
//! times it has been ejected, at most `max_ejection_time`. No more than
//! `max_ejection_percent` of the service's instances are ejected at once: past that, the
//! instance keeps serving, since a service ejected whole answers nothing at all.
//!
//! The state is shared by every worker, in atomics: a failure on one worker counts with the
//! failures on the others, and an ejection holds for all of them. An ejection ends by itself
//! when its time is up, or earlier when an active check passes.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use gateway_config::OutlierDetection;

use crate::clock::nanos;

/// One instance's failures and ejections.
#[derive(Default)]
pub(crate) struct Outlier {
    failures: AtomicU32,
    /// Clock nanoseconds the current ejection ends at; 0 when never ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl Outlier {
    pub(crate) fn is_ejected(&self, now: u64) -> bool {
        now < self.ejected_until.load(Ordering::Acquire)
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub(crate) fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; says whether the instance has now failed enough to be ejected.
    pub(crate) fn failed(&self, config: &OutlierDetection, now: u64) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures >= config.consecutive_failures && !self.is_ejected(now)
    }

    /// Ejects the instance from `now`; returns for how long.
    pub(crate) fn eject(&self, config: &OutlierDetection, now: u64) -> u64 {
        let ejections = self.ejections.fetch_add(1, Ordering::AcqRel) + 1;
        let base = nanos(config.base_ejection_time);
        let time = base
            .saturating_mul(u64::from(ejections))
            .min(nanos(config.max_ejection_time));
        self.ejected_until
            .store(now.saturating_add(time), Ordering::Release);
        self.failures.store(0, Ordering::Release);
        time
    }

    /// Takes on `previous`'s failures and ejections: a reload keeps an ejected instance out.
    pub(crate) fn inherit(&self, previous: &Outlier) {
        for (mine, theirs) in [
            (&self.failures, &previous.failures),
            (&self.ejections, &previous.ejections),
        ] {
            mine.store(theirs.load(Ordering::Acquire), Ordering::Release);
        }
        self.ejected_until.store(
            previous.ejected_until.load(Ordering::Acquire),
            Ordering::Release,
        );
    }

    /// An active check passed: the instance serves again now.
    pub(crate) fn uneject(&self) {
        self.ejected_until.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
    }
}

/// Whether one more of `instances` may be ejected while `ejected` already are.
pub(crate) fn may_eject(config: &OutlierDetection, ejected: usize, instances: usize) -> bool {
    (ejected + 1) * 100 <= config.max_ejection_percent as usize * instances
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::clock::manual::ManualClock;

    fn config() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn each_ejection_lasts_longer_up_to_the_maximum() {
        let clock = ManualClock::default();
        let config = config();
        let outlier = Outlier::default();
        for expected in [10, 20, 25, 25] {
            assert!(!outlier.failed(&config, clock.now()));
            assert!(outlier.failed(&config, clock.now()));
            let time = outlier.eject(&config, clock.now());
            assert_eq!(time, nanos(Duration::from_secs(expected)));
            assert!(outlier.is_ejected(clock.now()));
            clock.advance(Duration::from_secs(expected) - Duration::from_millis(1));
            assert!(outlier.is_ejected(clock.now()));
            clock.advance(Duration::from_millis(1));
            assert!(!outlier.is_ejected(clock.now()), "back after {expected}s");
        }
        assert_eq!(outlier.ejections(), 4);
    }

    #[test]
    fn a_success_between_failures_starts_the_count_again_and_a_passing_check_ends_an_ejection() {
        let clock = ManualClock::default();
        let config = config();
        let outlier = Outlier::default();
        assert!(!outlier.failed(&config, clock.now()));
        outlier.succeeded();
        assert!(!outlier.failed(&config, clock.now()));
        assert!(outlier.failed(&config, clock.now()));
        outlier.eject(&config, clock.now());
        outlier.uneject();
        assert!(!outlier.is_ejected(clock.now()));
    }

    #[test]
    fn at_most_the_configured_share_is_ejected() {
        let config = config();
        assert!(may_eject(&config, 0, 3));
        assert!(!may_eject(&config, 1, 3), "two of three is over half");
        assert!(may_eject(&config, 1, 4));
        assert!(!may_eject(&config, 0, 1), "a lone instance keeps serving");
    }
}
