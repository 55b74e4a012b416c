//! Which failures are retried, and the budget that keeps retries from multiplying load.
//!
//! A retry goes to an instance not tried yet for the request; when none is left there is no
//! retry. Connect failures are retried always (nothing reached the instance). Resets before
//! anything was sent, per-try timeouts and 502, 503 and 504 answers are retried for idempotent
//! requests without a body: the instance may have acted on them, which an idempotent method
//! allows, and there is no body that would have to be sent twice.
//!
//! The budget, as Envoy's and linkerd's: retries may be at most `budget_percent` of the
//! requests of the last 10 seconds, plus `budget_min_per_second` whatever the traffic. In a
//! total outage every first try fails and only that share is retried, so the instances see
//! at most `1 + budget_percent / 100` times the load plus the floor, never `1 + attempts`
//! times.
//!
//! Why not `tower::retry::budget::TpsBudget`, whose arithmetic this follows: its `deposit`,
//! made for every request, locks a `Mutex` to see whether its window moved on. A service's
//! budget is shared by every worker, so that would be a lock taken on every request by all of
//! them; here the window is ten one-second slots of atomics, each tagged with its second, and a
//! request costs one clock read and one `fetch_add`. The slots are kept in a few shards, each
//! on cache lines of its own, and a thread counts in its own shard: workers counting requests
//! do not pass one cache line back and forth. A retry, rare, reads them all.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use gateway_config::Retries;
use http::{Method, StatusCode};

use crate::ErrorKind;

/// Seconds the budget looks back over.
const WINDOW: u64 = 10;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Shards of the counts: enough that the workers of a small machine each count in their own.
const SHARDS: usize = 4;

/// Requests and retries per second over the last [`WINDOW`] seconds.
pub(crate) struct Budget {
    percent: u64,
    floor: u64,
    shards: [Shard; SHARDS],
}

/// One shard's slots, on cache lines no other shard shares.
#[derive(Default)]
#[repr(align(64))]
struct Shard {
    slots: [Slot; WINDOW as usize],
}

/// The shard the calling thread counts in.
fn shard_of_this_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

#[derive(Default)]
struct Slot {
    /// The second (of the clock) this slot counts; a slot of an older one is stale.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Budget {
    pub(crate) fn new(config: &Retries) -> Budget {
        Budget {
            percent: u64::from(config.budget_percent),
            floor: u64::from(config.budget_min_per_second) * WINDOW,
            shards: Default::default(),
        }
    }

    /// This second's slot, emptied first if it still counts an older second. Two workers that
    /// empty it at once may lose a count or two, which a budget can afford.
    fn slot(&self, now: u64) -> &Slot {
        let second = now / NANOS_PER_SECOND + 1;
        let slot = &self.shards[shard_of_this_thread()].slots[(second % WINDOW) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen != second
            && slot
                .second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Release);
            slot.retries.store(0, Ordering::Release);
        }
        slot
    }

    /// A request came: it earns the budget its share.
    #[inline]
    pub(crate) fn deposit(&self, now: u64) {
        self.slot(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if it has one.
    pub(crate) fn withdraw(&self, now: u64) -> bool {
        let slot = self.slot(now);
        let second = now / NANOS_PER_SECOND + 1;
        let (mut requests, mut retries) = (0, 0);
        for slot in self.shards.iter().flat_map(|shard| &shard.slots) {
            let at = slot.second.load(Ordering::Acquire);
            if at + WINDOW > second && at <= second {
                requests += slot.requests.load(Ordering::Relaxed);
                retries += slot.retries.load(Ordering::Relaxed);
            }
        }
        if retries * 100 < requests * self.percent + self.floor * 100 {
            slot.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

/// Whether a failure to get an answer may be retried on another instance.
pub(crate) fn failure_is_retryable(kind: ErrorKind, method: &Method, bodiless: bool) -> bool {
    match kind {
        ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout => true,
        ErrorKind::ResetBeforeSent | ErrorKind::ResponseTimeout => {
            bodiless && method.is_idempotent()
        }
        _ => false,
    }
}

/// Whether an answer may be retried on another instance.
pub(crate) fn status_is_retryable(status: StatusCode, method: &Method, bodiless: bool) -> bool {
    matches!(status.as_u16(), 502..=504) && bodiless && method.is_idempotent()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::clock::manual::ManualClock;

    fn budget(percent: u32, floor: u32) -> Budget {
        Budget::new(&Retries {
            attempts: 1,
            try_timeout: None,
            budget_percent: percent,
            budget_min_per_second: floor,
        })
    }

    #[test]
    fn retries_are_a_share_of_the_requests_of_the_window_plus_a_floor() {
        let clock = ManualClock::default();
        let budget = budget(20, 1);
        for _ in 0..100 {
            budget.deposit(clock.now());
        }
        // 20% of 100, and a floor of 1 a second over 10 seconds.
        let granted = (0..100).filter(|_| budget.withdraw(clock.now())).count();
        assert_eq!(granted, 30);
    }

    #[test]
    fn requests_older_than_the_window_earn_nothing() {
        let clock = ManualClock::default();
        let budget = budget(50, 0);
        for _ in 0..10 {
            budget.deposit(clock.now());
        }
        clock.advance(Duration::from_secs(5));
        for _ in 0..10 {
            budget.deposit(clock.now());
        }
        assert_eq!((0..20).filter(|_| budget.withdraw(clock.now())).count(), 10);
        // Ten seconds on, the first ten requests have left the window; the retries taken for
        // the others have not.
        clock.advance(Duration::from_secs(5));
        assert!(!budget.withdraw(clock.now()));
        for _ in 0..20 {
            budget.deposit(clock.now());
        }
        assert_eq!((0..20).filter(|_| budget.withdraw(clock.now())).count(), 5);
        clock.advance(Duration::from_secs(10));
        assert!(
            !budget.withdraw(clock.now()),
            "nothing earned in the window"
        );
    }

    #[test]
    fn requests_counted_on_other_threads_earn_retries_here() {
        let clock = ManualClock::default();
        let budget = budget(10, 0);
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 1 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        budget.deposit(clock.now());
                    }
                });
            }
        });
        // 100 requests on five threads: 10 retries, wherever they are asked for.
        assert_eq!((0..20).filter(|_| budget.withdraw(clock.now())).count(), 10);
    }

    #[test]
    fn what_is_retried() {
        let get = Method::GET;
        let post = Method::POST;
        assert!(failure_is_retryable(
            ErrorKind::ConnectRefused,
            &post,
            false
        ));
        assert!(failure_is_retryable(
            ErrorKind::ConnectTimeout,
            &post,
            false
        ));
        assert!(failure_is_retryable(ErrorKind::ResetBeforeSent, &get, true));
        assert!(!failure_is_retryable(
            ErrorKind::ResetBeforeSent,
            &post,
            true
        ));
        assert!(!failure_is_retryable(
            ErrorKind::ResponseTimeout,
            &get,
            false
        ));
        assert!(!failure_is_retryable(ErrorKind::ResetAfterSent, &get, true));
        assert!(!failure_is_retryable(ErrorKind::ClientBody, &get, true));
        assert!(status_is_retryable(
            StatusCode::SERVICE_UNAVAILABLE,
            &get,
            true
        ));
        assert!(!status_is_retryable(
            StatusCode::SERVICE_UNAVAILABLE,
            &post,
            true
        ));
        assert!(!status_is_retryable(
            StatusCode::INTERNAL_SERVER_ERROR,
            &get,
            true
        ));
    }
}
