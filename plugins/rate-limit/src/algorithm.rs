//! The three ways a limit counts, each decided by one atomic operation on the store, so that
//! gateways sharing a Redis decide as one.
//!
//! - **Token bucket** (GCRA). The state is one timestamp, the theoretical arrival time (TAT):
//!   when the bucket would be full again. A request moves it on by one emission interval
//!   (`window / rate`) and is allowed if the new TAT is at most `burst` intervals ahead of now.
//!   It is written with compare-and-swap, tried again (at most [`CAS_TRIES`] times) if another
//!   request wrote in between. At a window edge there is no edge: the bucket refills smoothly,
//!   so after a full burst one more request is allowed every interval.
//! - **Fixed window.** One counter per window (windows start at multiples of `window` since the
//!   Unix epoch), incremented. A client may send `rate` at the end of one window and `rate` at
//!   the start of the next: up to twice the rate within one window's length, across the edge.
//! - **Sliding window.** The current window's counter, incremented, plus the previous window's,
//!   weighted by the share of it still inside the last `window`. Across the edge a client gets
//!   about `rate` per window, never twice: the previous window's requests still weigh at first.
//!   The estimate assumes the previous window's requests were spread evenly.
//!
//! A refused request takes nothing: its increment is taken back, or the TAT it would have
//! moved is left where it was. So does an allowed request that a later limit refuses (see
//! [`Taken::give_back`]): a request either counts in every limit that applies or in none.

use std::time::Duration;

use gateway_sdk::kv;

use crate::config::Algorithm;

/// Compare-and-swap rounds a token bucket tries before it counts as a store failure.
pub(crate) const CAS_TRIES: usize = 64;

/// Margin on every entry's lifetime, so that a gateway whose clock runs a little behind still
/// finds the entry the others wrote.
const TTL_MARGIN_MS: u64 = 2_000;

/// How a limit counts: its algorithm and numbers, with times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) algorithm: Algorithm,
    pub(crate) rate: u64,
    pub(crate) window_ms: u64,
    /// The bucket's size; the same as `rate` for the windows.
    pub(crate) burst: u64,
}

/// What a limit decided for one request, and the numbers its headers show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    /// Requests left before this limit refuses.
    pub(crate) remaining: u64,
    /// Until the quota is whole again (a window's end, a full bucket).
    pub(crate) reset_ms: u64,
    /// For a refusal: until a request would be allowed.
    pub(crate) retry_after_ms: u64,
}

/// What an allowed request took from the store, so it can be given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Taken {
    /// One from this counter.
    Count(String),
    /// One interval (in microseconds) from this TAT.
    Interval { key: String, interval_us: u64 },
}

/// Why a limit could not decide: the store failed, or every compare-and-swap lost.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreFailure {
    #[error("{0}")]
    Kv(#[from] gateway_sdk::Error),
    #[error("{CAS_TRIES} compare-and-swap rounds lost to other writers of the same bucket")]
    Contended,
}

fn ttl(ms: u64) -> Option<Duration> {
    Some(Duration::from_millis(ms.saturating_add(TTL_MARGIN_MS)))
}

fn parse_count(value: Option<String>) -> u64 {
    value
        .and_then(|text| text.parse::<i64>().ok())
        .map_or(0, |count| u64::try_from(count).unwrap_or(0))
}

impl Shape {
    /// The emission interval of a token bucket, in microseconds: the time one token takes to
    /// come back. At least 1, so a bucket always refills.
    pub(crate) fn interval_us(&self) -> u64 {
        let window_us = u128::from(self.window_ms) * 1000;
        u64::try_from(window_us / u128::from(self.rate.max(1)))
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Decides for one request on the store, at `now_ms`, under `base` (the limit's and the
    /// client's part of the store key). An allowed request comes with what it took.
    pub(crate) fn decide(
        &self,
        base: &str,
        now_ms: u64,
    ) -> Result<(Decision, Option<Taken>), StoreFailure> {
        match self.algorithm {
            Algorithm::FixedWindow => self.fixed_window(base, now_ms),
            Algorithm::SlidingWindow => self.sliding_window(base, now_ms),
            Algorithm::TokenBucket => self.token_bucket(base, now_ms),
        }
    }

    fn fixed_window(
        &self,
        base: &str,
        now_ms: u64,
    ) -> Result<(Decision, Option<Taken>), StoreFailure> {
        let window = self.window_ms;
        let index = now_ms / window;
        let left_ms = (index + 1) * window - now_ms;
        let key = format!("{base}:{index}");
        let count = u64::try_from(kv::increment(&key, 1, ttl(left_ms))?).unwrap_or(0);
        let decision = fixed_decision(count, self.rate, left_ms);
        settle(decision, Taken::Count(key))
    }

    fn sliding_window(
        &self,
        base: &str,
        now_ms: u64,
    ) -> Result<(Decision, Option<Taken>), StoreFailure> {
        let window = self.window_ms;
        let index = now_ms / window;
        let elapsed = now_ms - index * window;
        let key = format!("{base}:{index}");
        // The current window's counter is the previous one for the whole next window.
        let current =
            u64::try_from(kv::increment(&key, 1, ttl(2 * window - elapsed))?).unwrap_or(0);
        let previous = match index.checked_sub(1) {
            Some(before) => parse_count(kv::get_string(&format!("{base}:{before}"))?),
            None => 0,
        };
        let decision = sliding_decision(previous, current, self.rate, window, elapsed);
        settle(decision, Taken::Count(key))
    }

    fn token_bucket(
        &self,
        base: &str,
        now_ms: u64,
    ) -> Result<(Decision, Option<Taken>), StoreFailure> {
        let interval_us = self.interval_us();
        for _ in 0..CAS_TRIES {
            // Read as bytes: a value that is no timestamp (written by hand, say) reads as a
            // full bucket and is swapped out like any other.
            let stored = kv::get(base)?;
            let tat = stored
                .as_deref()
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .and_then(|text| text.parse::<u64>().ok());
            let (decision, new_tat) = gcra(tat, now_ms, interval_us, self.burst);
            let Some(new_tat) = new_tat else {
                return Ok((decision, None));
            };
            let lifetime_ms = (new_tat.saturating_sub(now_ms.saturating_mul(1000))).div_ceil(1000);
            let written = kv::compare_and_swap(
                base,
                stored.as_deref(),
                new_tat.to_string(),
                ttl(lifetime_ms),
            )?;
            if written {
                let taken = Taken::Interval {
                    key: base.to_owned(),
                    interval_us,
                };
                return Ok((decision, Some(taken)));
            }
        }
        Err(StoreFailure::Contended)
    }
}

/// An allowed decision keeps what it took; a refused one gives it back at once.
fn settle(decision: Decision, taken: Taken) -> Result<(Decision, Option<Taken>), StoreFailure> {
    if decision.allowed {
        Ok((decision, Some(taken)))
    } else {
        taken.give_back();
        Ok((decision, None))
    }
}

impl Taken {
    /// Takes back what an allowed request took, when a later limit refused it. A failure here
    /// leaves the request counted: it errs towards refusing, never towards letting more
    /// through, and the store's failure shows up on the next request that needs it.
    pub(crate) fn give_back(&self) {
        match self {
            Taken::Count(key) => {
                let _ = kv::increment(key, -1, None);
            }
            Taken::Interval { key, interval_us } => {
                for _ in 0..CAS_TRIES {
                    let Ok(Some(stored)) = kv::get_string(key) else {
                        return;
                    };
                    let Ok(tat) = stored.parse::<u64>() else {
                        return;
                    };
                    let back = tat.saturating_sub(*interval_us).to_string();
                    match kv::compare_and_swap(key, Some(stored.as_bytes()), back, None) {
                        Ok(false) => continue,
                        Ok(true) | Err(_) => return,
                    }
                }
            }
        }
    }
}

/// A fixed window's decision, from the count with this request and the time left in the window.
pub(crate) fn fixed_decision(count: u64, rate: u64, left_ms: u64) -> Decision {
    let allowed = count <= rate;
    Decision {
        allowed,
        remaining: rate.saturating_sub(count),
        reset_ms: left_ms,
        retry_after_ms: if allowed { 0 } else { left_ms },
    }
}

/// A sliding window's decision, from the previous window's count, the current one's with this
/// request, and the time `elapsed` since the current window began. Allowed when
/// `current + previous * (window - elapsed) / window <= rate`, computed without rounding.
pub(crate) fn sliding_decision(
    previous: u64,
    current: u64,
    rate: u64,
    window: u64,
    elapsed: u64,
) -> Decision {
    let (previous, current, rate, w, e) = (
        u128::from(previous),
        u128::from(current),
        u128::from(rate),
        u128::from(window),
        u128::from(elapsed),
    );
    let weighted = previous * (w - e);
    let allowed = current * w + weighted <= rate * w;
    let room = (rate * w).saturating_sub(weighted) / w;
    let remaining = u64::try_from(room.saturating_sub(current)).unwrap_or(0);
    let reset_ms = u64::try_from(w - e).unwrap_or(0);
    let retry_after_ms = if allowed {
        0
    } else {
        // Without this request, the window holds `current - 1`.
        let held = current - 1;
        let wait = if held < rate {
            // Later in this window, once the previous one weighs little enough.
            let at = w - (rate - held - 1) * w / previous.max(1);
            at.saturating_sub(e)
        } else {
            // In the next window, where this one is the previous: once it weighs little enough.
            let at = w.saturating_sub((rate - 1) * w / held.max(1));
            (w - e) + at
        };
        u64::try_from(wait.max(1)).unwrap_or(u64::MAX)
    };
    Decision {
        allowed,
        remaining,
        reset_ms,
        retry_after_ms,
    }
}

/// GCRA for one request: the decision and, if allowed, the new TAT to store. Times in
/// microseconds except `now_ms`; `tat` is the stored TAT, `None` for a full bucket.
pub(crate) fn gcra(
    tat: Option<u64>,
    now_ms: u64,
    interval_us: u64,
    burst: u64,
) -> (Decision, Option<u64>) {
    let now = u128::from(now_ms) * 1000;
    let interval = u128::from(interval_us);
    let tat = tat.map_or(now, |tat| u128::from(tat).max(now));
    let new_tat = tat + interval;
    let capacity = interval * u128::from(burst);
    let allow_at = new_tat.saturating_sub(capacity);
    let to_ms = |us: u128| u64::try_from(us.div_ceil(1000)).unwrap_or(u64::MAX);
    if now < allow_at {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            reset_ms: to_ms(tat - now),
            retry_after_ms: to_ms(allow_at - now),
        };
        return (decision, None);
    }
    let remaining = (now + capacity - new_tat) / interval;
    let decision = Decision {
        allowed: true,
        remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
        reset_ms: to_ms(new_tat - now),
        retry_after_ms: 0,
    };
    (decision, u64::try_from(new_tat).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_040_000;

    #[test]
    fn fixed_window_allows_the_rate_then_refuses_until_the_window_ends() {
        let first = fixed_decision(1, 100, 60_000);
        assert_eq!(
            (first.allowed, first.remaining, first.reset_ms),
            (true, 99, 60_000)
        );
        let last = fixed_decision(100, 100, 1_000);
        assert_eq!((last.allowed, last.remaining), (true, 0));
        let over = fixed_decision(101, 100, 1_000);
        assert_eq!(
            (over.allowed, over.remaining, over.retry_after_ms),
            (false, 0, 1_000)
        );
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        // A fresh window after a quiet one: the whole rate.
        assert!(sliding_decision(0, 10, 10, 60_000, 0).allowed);
        assert!(!sliding_decision(0, 11, 10, 60_000, 59_999).allowed);
        // Just past the edge after a full window: the previous one weighs all but nothing.
        let edge = sliding_decision(10, 1, 10, 60_000, 1);
        assert!(!edge.allowed, "no second burst across the edge");
        // Half-way: half the previous window weighs, so 5 fit.
        assert!(sliding_decision(10, 5, 10, 60_000, 30_000).allowed);
        let over = sliding_decision(10, 6, 10, 60_000, 30_000);
        assert!(!over.allowed);
        // 5 held; a sixth fits once the previous weighs 4: at 36 s, 6 s from now.
        assert_eq!(over.retry_after_ms, 6_000);
        assert_eq!(sliding_decision(10, 3, 10, 60_000, 30_000).remaining, 2);
    }

    #[test]
    fn sliding_window_sends_a_full_window_into_the_next() {
        // 10 of 10 held this window, at 45 s: wait 15 s to the edge, then until this window
        // weighs 9, a tenth of the next window in.
        let full = sliding_decision(0, 11, 10, 60_000, 45_000);
        assert_eq!(full.retry_after_ms, 15_000 + 6_000);
    }

    #[test]
    fn token_bucket_bursts_then_refills_one_interval_at_a_time() {
        // 10 per second, burst 5: an interval of 100 ms.
        let interval = 100_000;
        let mut tat = None;
        for left in (0..5).rev() {
            let (decision, new_tat) = gcra(tat, T0, interval, 5);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, left);
            tat = new_tat;
        }
        let (over, none) = gcra(tat, T0, interval, 5);
        assert!(!over.allowed && none.is_none());
        assert_eq!(over.retry_after_ms, 100);
        assert_eq!(over.reset_ms, 500);
        // One interval later, one more; not two.
        let (refilled, tat) = gcra(tat, T0 + 100, interval, 5);
        assert!(refilled.allowed);
        assert_eq!(refilled.remaining, 0);
        assert!(!gcra(tat, T0 + 100, interval, 5).0.allowed);
        // A long pause fills the bucket, never beyond the burst.
        let (rested, _) = gcra(tat, T0 + 60_000, interval, 5);
        assert_eq!(rested.remaining, 4);
    }

    #[test]
    fn the_interval_never_rounds_to_nothing() {
        let shape = Shape {
            algorithm: Algorithm::TokenBucket,
            rate: 1_000_000_000,
            window_ms: 1,
            burst: 1,
        };
        assert_eq!(shape.interval_us(), 1);
        let per_minute = Shape {
            rate: 100,
            window_ms: 60_000,
            ..shape
        };
        assert_eq!(per_minute.interval_us(), 600_000);
    }
}
