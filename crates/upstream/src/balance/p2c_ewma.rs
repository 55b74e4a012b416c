//! `p2c_ewma`: power of two choices over a peak-EWMA latency estimate, as linkerd and Finagle
//! do. Two eligible instances are drawn at random and the one with the lower cost wins: its
//! latency estimate times its requests in flight plus one, over its weight. Drawing two, not
//! scanning all, keeps every worker from sending the next request to the same instance while
//! the counters catch up.
//!
//! The estimate is `tower::load::PeakEwma`'s: a latency above the estimate replaces it at once
//! (the peak), one below moves it by an exponentially weighted average whose weight decays
//! with the time since the last update (`DECAY_NANOS`); read, it decays towards zero with the time
//! since, so an instance that was slow gets a new chance once it has been left alone. A try
//! that failed counts at least a second (`FAILURE_PENALTY` in `service`), so an instance that
//! fails fast (a refused connection, a quick 503) does not look like the fastest. An
//! instance not measured yet is taken to be as fast as the one it is compared with, so that
//! requests in flight decide (tower assumes a fixed default instead, which on a fast network
//! keeps a new instance out for as long as that default takes to decay). The
//! arithmetic is tower's; the type is not, because tower's wraps a `Service` it sends through
//! (see the module doc of `balance`). Each instance's estimate is shared by every worker: an
//! `f64` in an atomic, updated by whoever saw the latest answer (a lost update between two
//! workers only loses one sample).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::instance::Instance;

/// How quickly past latencies stop counting: tower's and linkerd's default.
const DECAY_NANOS: f64 = 10_000_000_000.0;
/// One instance's latency estimate.
#[derive(Default)]
pub(crate) struct PeakEwma {
    estimate: AtomicU64,
    /// 0 until the first answer is measured.
    updated_at: AtomicU64,
}

impl PeakEwma {
    /// The estimate at `now`, in nanoseconds; `None` before the first answer.
    pub(crate) fn estimate(&self, now: u64) -> Option<f64> {
        let updated_at = self.updated_at.load(Ordering::Relaxed);
        if updated_at == 0 {
            return None;
        }
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(updated_at) as f64;
        Some(estimate * (-elapsed / DECAY_NANOS).exp())
    }

    /// Takes on `previous`'s estimate.
    pub(crate) fn inherit(&self, previous: &PeakEwma) {
        self.estimate
            .store(previous.estimate.load(Ordering::Relaxed), Ordering::Relaxed);
        self.updated_at.store(
            previous.updated_at.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }

    /// Takes in a response head that came `rtt` nanoseconds after its request was sent.
    pub(crate) fn observe(&self, rtt: u64, now: u64) {
        let rtt = rtt as f64;
        let previous = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let updated_at = self.updated_at.load(Ordering::Relaxed);
        let next = if rtt > previous || updated_at == 0 {
            rtt
        } else {
            let elapsed = now.saturating_sub(updated_at) as f64;
            let decay = (-elapsed / DECAY_NANOS).exp();
            previous * decay + rtt * (1.0 - decay)
        };
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
        self.updated_at.store(now, Ordering::Relaxed);
    }
}

/// Latency times requests in flight plus one, over the weight; `latency` stands in for an
/// instance not measured yet.
fn cost(instance: &Instance, latency: f64) -> f64 {
    latency * f64::from(instance.in_flight() + 1) / f64::from(instance.weight)
}

/// Whether `second` costs less than `first`.
fn cheaper(first: &Instance, second: &Instance, now: u64) -> bool {
    let (a, b) = match (first.latency.estimate(now), second.latency.estimate(now)) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => (a, a),
        (None, Some(b)) => (b, b),
        (None, None) => (1.0, 1.0),
    };
    cost(second, b) < cost(first, a)
}

pub(crate) fn pick(
    instances: &[Instance],
    now: u64,
    eligible: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let count = instances.len();
    let first = super::first_from(fastrand::usize(..count), count, eligible)?;
    if count == 1 {
        return Some(first);
    }
    // The second draw skips the first, so two instances are always compared when two are
    // eligible.
    let start = (first + 1 + fastrand::usize(..count - 1)) % count;
    let second = super::first_from(start, count, &|index| index != first && eligible(index));
    Some(match second {
        Some(second) if cheaper(&instances[first], &instances[second], now) => second,
        _ => first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::tests::{counts, instances};

    #[test]
    fn a_peak_replaces_the_estimate_and_lower_latencies_pull_it_down_over_time() {
        let ewma = PeakEwma::default();
        let second = 1_000_000_000;
        assert_eq!(ewma.estimate(1), None);
        ewma.observe(5_000_000, 1);
        assert_eq!(ewma.estimate(1), Some(5_000_000.0));
        ewma.observe(50_000_000, 2);
        assert_eq!(ewma.estimate(2), Some(50_000_000.0), "the peak, at once");
        ewma.observe(1_000_000, 10 * second);
        let estimate = ewma.estimate(10 * second).expect("measured");
        assert!(
            estimate < 20_000_000.0 && estimate > 1_000_000.0,
            "{estimate}"
        );
        let later = ewma.estimate(30 * second).expect("measured");
        assert!(later < estimate / 5.0, "left alone, it decays");
    }

    #[test]
    fn the_slower_instance_gets_few_requests() {
        let instances = instances(&[1, 1, 1]);
        for (index, latency) in [(0, 1_000_000), (1, 1_000_000), (2, 40_000_000)] {
            instances[index].latency.observe(latency, 1);
        }
        let counts = counts((0..3000).map(|_| pick(&instances, 1, &|_| true)));
        // The slow one wins only when it is drawn twice over: never, with two distinct draws.
        assert_eq!(counts.get(&2), None, "{counts:?}");
        assert!(counts[&0] > 1000 && counts[&1] > 1000, "{counts:?}");
        assert_eq!(pick(&instances, 1, &|index| index == 2), Some(2));
    }

    #[test]
    fn an_instance_not_measured_yet_competes_on_requests_in_flight() {
        let instances = instances(&[1, 1]);
        instances[0].latency.observe(1_000_000, 1);
        let _busy = instances[0].start();
        let counts = counts((0..100).map(|_| pick(&instances, 1, &|_| true)));
        assert_eq!(counts.get(&1), Some(&100), "{counts:?}");
    }
}
