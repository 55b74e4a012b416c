//! `p2c_ewma`: power of two choices over a peak-EWMA latency estimate, as linkerd and Finagle
//! do. Two eligible instances are drawn at random and the one with the lower cost wins: its
//! latency estimate times its requests in flight plus one, over its weight. Drawing two, not
//! scanning all, keeps every worker from sending the next request to the same instance while
//! the counters catch up.
//!
//! The estimate is `tower::load::PeakEwma`'s: a latency above the estimate replaces it at once
//! (the peak), one below moves it by an exponentially weighted average whose weight decays
//! with the time since the last update (`DECAY`); read, it decays towards zero with the time
//! since, so an instance that was slow gets a new chance once it has been left alone. The
//! arithmetic is tower's; the type is not, because tower's wraps a `Service` it sends through
//! (see the module doc of `balance`). Each instance's estimate is shared by every worker: an
//! `f64` in an atomic, updated by whoever saw the latest answer (a lost update between two
//! workers only loses one sample).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::instance::Instance;

/// How quickly past latencies stop counting: tower's and linkerd's default.
const DECAY_NANOS: f64 = 10_000_000_000.0;
/// The estimate of an instance not measured yet: linkerd's default.
const DEFAULT_RTT_NANOS: f64 = 30_000_000.0;

/// One instance's latency estimate.
pub(crate) struct PeakEwma {
    estimate: AtomicU64,
    updated_at: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> PeakEwma {
        PeakEwma {
            estimate: AtomicU64::new(DEFAULT_RTT_NANOS.to_bits()),
            updated_at: AtomicU64::new(0),
        }
    }
}

impl PeakEwma {
    /// The estimate at `now`, in nanoseconds.
    pub(crate) fn estimate(&self, now: u64) -> f64 {
        let estimate = f64::from_bits(self.estimate.load(Ordering::Relaxed));
        let updated_at = self.updated_at.load(Ordering::Relaxed);
        if updated_at == 0 {
            return estimate;
        }
        let elapsed = now.saturating_sub(updated_at) as f64;
        estimate * (-elapsed / DECAY_NANOS).exp()
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

fn cost(instance: &Instance, now: u64) -> f64 {
    instance.latency.estimate(now) * f64::from(instance.in_flight() + 1)
        / f64::from(instance.weight)
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
        Some(second) if cost(&instances[second], now) < cost(&instances[first], now) => second,
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
        ewma.observe(5_000_000, 1);
        assert_eq!(ewma.estimate(1), 5_000_000.0);
        ewma.observe(50_000_000, 2);
        assert_eq!(ewma.estimate(2), 50_000_000.0, "the peak, at once");
        ewma.observe(1_000_000, 10 * second);
        let estimate = ewma.estimate(10 * second);
        assert!(
            estimate < 20_000_000.0 && estimate > 1_000_000.0,
            "{estimate}"
        );
        assert!(
            ewma.estimate(30 * second) < estimate / 5.0,
            "left alone, it decays"
        );
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
}
