//! A circuit breaker per instance: closed, open, half-open.
//!
//! Closed, every request goes through and failures in a row are counted; at
//! `failure_threshold` the breaker opens. Open, the instance gets nothing for `open_duration`.
//! Then it is half-open: up to `half_open_requests` probes go through at once; the first to
//! succeed closes the breaker, one that fails opens it again for another `open_duration`.
//!
//! Why atomics and no lock: the state is shared by every worker (an instance that fails on one
//! is avoided by all), and it is read on every request. Each field is its own atomic; the
//! transitions are compare-and-swaps, so two workers that see the threshold reached at once
//! open the breaker once. What a race can do is let one request more through at a transition,
//! which a breaker can afford.
//!
//! Why not a tower layer: a tower breaker wraps a `Service` that a request is sent through,
//! and here the instance is picked first and its connections are per worker. The balancer must
//! know which instances are open before it picks, so the state lives with the instance.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use gateway_config::CircuitBreaker;

use crate::clock::nanos;

/// A breaker's state, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What a request that went through the breaker holds: a probe's outcome decides the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Permit {
    Normal,
    Probe,
}

/// One instance's breaker.
pub(crate) struct Breaker {
    failure_threshold: u32,
    open_for: u64,
    half_open_requests: u32,
    state: AtomicU8,
    failures: AtomicU32,
    /// When it last opened, in clock nanoseconds.
    opened_at: AtomicU64,
    probes: AtomicU32,
    /// Times it opened, for the admin API.
    opened: AtomicU32,
}

impl Breaker {
    pub(crate) fn new(config: &CircuitBreaker) -> Breaker {
        Breaker {
            failure_threshold: config.failure_threshold,
            open_for: nanos(config.open_duration),
            half_open_requests: config.half_open_requests,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            opened: AtomicU32::new(0),
        }
    }

    pub(crate) fn state(&self, now: u64) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN if now >= self.reopens_at() => BreakerState::HalfOpen,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    fn reopens_at(&self) -> u64 {
        self.opened_at
            .load(Ordering::Acquire)
            .saturating_add(self.open_for)
    }

    /// Whether a request could go through now; changes nothing.
    pub(crate) fn allows(&self, now: u64) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                self.state.load(Ordering::Acquire) == OPEN
                    || self.probes.load(Ordering::Acquire) < self.half_open_requests
            }
        }
    }

    /// How long until an open breaker lets a probe through.
    pub(crate) fn retry_after(&self, now: u64) -> Duration {
        Duration::from_nanos(self.reopens_at().saturating_sub(now))
    }

    /// Lets a request through, if the state allows it now.
    pub(crate) fn acquire(&self, now: u64) -> Option<Permit> {
        loop {
            match self.state.load(Ordering::Acquire) {
                CLOSED => return Some(Permit::Normal),
                OPEN => {
                    if now < self.reopens_at() {
                        return None;
                    }
                    // Whoever wins moves it to half-open; everyone then competes for probes.
                    if self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.probes.store(0, Ordering::Release);
                    }
                }
                _ => {
                    let taken = self.probes.fetch_add(1, Ordering::AcqRel);
                    if taken < self.half_open_requests {
                        return Some(Permit::Probe);
                    }
                    self.probes.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
            }
        }
    }

    /// The instance answered well.
    pub(crate) fn succeeded(&self, permit: Permit, label: &str) {
        match permit {
            Permit::Probe => {
                if self
                    .state
                    .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.failures.store(0, Ordering::Release);
                    tracing::info!(
                        instance = label,
                        "circuit breaker closed: a probe succeeded"
                    );
                }
            }
            Permit::Normal => {
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// The instance failed the request.
    pub(crate) fn failed(&self, permit: Permit, now: u64, label: &str) {
        match permit {
            Permit::Probe => {
                if self
                    .state
                    .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.open(now);
                    tracing::warn!(
                        instance = label,
                        open_for = ?Duration::from_nanos(self.open_for),
                        "circuit breaker opened again: a probe failed"
                    );
                }
            }
            Permit::Normal => {
                let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                // A request let through while closed may end after the breaker opened: its
                // failure is counted, but it changes nothing then.
                if failures >= self.failure_threshold
                    && self.state.load(Ordering::Acquire) == CLOSED
                {
                    // Set before the state, so whoever sees it open sees when it opened.
                    let previous = self.opened_at.swap(now, Ordering::AcqRel);
                    if self
                        .state
                        .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.open(now);
                        tracing::warn!(
                            instance = label,
                            failures,
                            open_for = ?Duration::from_nanos(self.open_for),
                            "circuit breaker opened"
                        );
                    } else {
                        self.opened_at.store(previous, Ordering::Release);
                    }
                }
            }
        }
    }

    fn open(&self, now: u64) {
        self.opened_at.store(now, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that went through ended without saying anything about the instance (the
    /// client's fault): a probe's slot is free again.
    pub(crate) fn released(&self, permit: Permit) {
        if permit == Permit::Probe && self.state.load(Ordering::Acquire) == HALF_OPEN {
            self.probes.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Takes on `previous`'s state, if it counts the same way: a reload keeps an open breaker
    /// open. Probes in flight stay with `previous`.
    pub(crate) fn inherit(&self, previous: &Breaker) {
        let same = (
            self.failure_threshold,
            self.open_for,
            self.half_open_requests,
        ) == (
            previous.failure_threshold,
            previous.open_for,
            previous.half_open_requests,
        );
        if !same {
            return;
        }
        let state = match previous.state.load(Ordering::Acquire) {
            // Its probes belong to the old state: here it may probe again.
            HALF_OPEN => OPEN,
            state => state,
        };
        self.opened_at.store(
            previous.opened_at.load(Ordering::Acquire),
            Ordering::Release,
        );
        self.failures
            .store(previous.failures.load(Ordering::Acquire), Ordering::Release);
        self.opened
            .store(previous.opened.load(Ordering::Relaxed), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    /// Times it opened.
    pub(crate) fn times_opened(&self) -> u32 {
        self.opened.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::clock::manual::ManualClock;

    fn breaker() -> Breaker {
        Breaker::new(&CircuitBreaker {
            failure_threshold: 3,
            open_duration: Duration::from_secs(60),
            half_open_requests: 1,
            failure_statuses: vec![503],
        })
    }

    #[test]
    fn failures_in_a_row_open_it_and_a_success_between_them_starts_the_count_again() {
        let clock = ManualClock::default();
        let breaker = breaker();
        for _ in 0..2 {
            let permit = breaker.acquire(clock.now()).expect("closed");
            breaker.failed(permit, clock.now(), "s@a");
        }
        let permit = breaker.acquire(clock.now()).expect("closed");
        breaker.succeeded(permit, "s@a");
        for _ in 0..2 {
            let permit = breaker.acquire(clock.now()).expect("closed");
            breaker.failed(permit, clock.now(), "s@a");
        }
        assert_eq!(breaker.state(clock.now()), BreakerState::Closed);
        let permit = breaker.acquire(clock.now()).expect("closed");
        breaker.failed(permit, clock.now(), "s@a");
        assert_eq!(breaker.state(clock.now()), BreakerState::Open);
        assert!(!breaker.allows(clock.now()));
        assert_eq!(breaker.acquire(clock.now()), None);
        assert_eq!(breaker.retry_after(clock.now()), Duration::from_secs(60));
        assert_eq!(breaker.times_opened(), 1);
    }

    #[test]
    fn after_its_open_duration_one_probe_goes_through_and_its_outcome_decides() {
        let clock = ManualClock::default();
        let breaker = breaker();
        for _ in 0..3 {
            let permit = breaker.acquire(clock.now()).expect("closed");
            breaker.failed(permit, clock.now(), "s@a");
        }
        clock.advance(Duration::from_secs(59));
        assert_eq!(breaker.acquire(clock.now()), None, "still open");
        clock.advance(Duration::from_secs(1));
        assert_eq!(breaker.state(clock.now()), BreakerState::HalfOpen);
        let probe = breaker.acquire(clock.now()).expect("a probe");
        assert_eq!(probe, Permit::Probe);
        assert_eq!(breaker.acquire(clock.now()), None, "one probe at a time");

        // The probe fails: open again, for a whole open duration from now.
        breaker.failed(probe, clock.now(), "s@a");
        assert_eq!(breaker.state(clock.now()), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        assert_eq!(breaker.acquire(clock.now()), None);
        clock.advance(Duration::from_secs(30));

        // A client's fault says nothing: the probe's slot is free again.
        let probe = breaker.acquire(clock.now()).expect("a probe");
        breaker.released(probe);
        let probe = breaker.acquire(clock.now()).expect("the slot again");
        breaker.succeeded(probe, "s@a");
        assert_eq!(breaker.state(clock.now()), BreakerState::Closed);
        assert_eq!(breaker.acquire(clock.now()), Some(Permit::Normal));
        assert_eq!(breaker.times_opened(), 2);
    }
}
