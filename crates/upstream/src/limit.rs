//! Requests in flight, per instance and per service, and the limits on them.
//!
//! A request counts from when its instance is picked until the instance has sent the whole
//! response: at once for a response that came whole with its head (most do), or when the
//! streamed body ends or is dropped. The count is what `least_connections` and `p2c_ewma` read
//! and what the admin API shows.
//!
//! Past `max_concurrent_requests_per_instance` an instance is skipped; past
//! `max_concurrent_requests` for the service, or when every instance is full, the request gets
//! 503 `OVERLOADED` at once. Nothing queues: a queue in front of an overloaded service only
//! adds the wait to every answer. Why not `tower::limit::ConcurrencyLimit`: it makes a caller
//! wait for a permit (`poll_ready`), which is the queue this avoids, and it wraps a tower
//! `Service` (see `balance`).
//!
//! The counters are atomics shared by every worker; taking a slot is a `fetch_add` checked
//! against the limit and undone when over it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A count of requests in flight, with its limit.
#[derive(Default)]
pub(crate) struct Counter {
    count: Arc<AtomicU32>,
    limit: Option<u32>,
}

impl Counter {
    pub(crate) fn new(limit: Option<u32>) -> Counter {
        Counter {
            count: Arc::default(),
            limit,
        }
    }

    pub(crate) fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether a slot is free now; changes nothing.
    pub(crate) fn has_room(&self) -> bool {
        self.limit.is_none_or(|limit| self.get() < limit)
    }

    /// Takes a slot, if one is free.
    pub(crate) fn acquire(&self) -> Option<Slot> {
        self.borrow().map(BorrowedSlot::into_owned)
    }

    /// Takes a slot for as long as the counter is borrowed: no reference count to touch, for
    /// the many requests whose response arrives whole with its head.
    pub(crate) fn borrow(&self) -> Option<BorrowedSlot<'_>> {
        let before = self.count.fetch_add(1, Ordering::AcqRel);
        if self.limit.is_some_and(|limit| before >= limit) {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BorrowedSlot(self))
    }

    /// Whether a limit applies; without one the service does not count.
    pub(crate) fn is_limited(&self) -> bool {
        self.limit.is_some()
    }
}

/// One request's slot, borrowing its counter; freed when dropped.
pub(crate) struct BorrowedSlot<'c>(&'c Counter);

impl BorrowedSlot<'_> {
    /// The same slot, owning a reference to its counter, to travel with a response body.
    pub(crate) fn into_owned(self) -> Slot {
        let slot = Slot(self.0.count.clone());
        std::mem::forget(self);
        slot
    }
}

impl Drop for BorrowedSlot<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request's slot; freed when dropped.
pub(crate) struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a request holds while its instance works on it: its slots on the instance and, when
/// the service is limited, on the service.
#[derive(Default)]
pub struct InFlight {
    instance: Option<Slot>,
    service: Option<Slot>,
}

impl InFlight {
    pub(crate) fn instance(slot: Slot) -> InFlight {
        InFlight {
            instance: Some(slot),
            service: None,
        }
    }

    pub(crate) fn service(slot: Slot) -> InFlight {
        InFlight {
            instance: None,
            service: Some(slot),
        }
    }

    /// Holds `other`'s slots too.
    pub(crate) fn join(&mut self, other: InFlight) {
        self.instance = self.instance.take().or(other.instance);
        self.service = self.service.take().or(other.service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_counter_refuses_at_once_and_a_dropped_slot_frees_room() {
        let counter = Counter::new(Some(2));
        let first = counter.acquire().expect("room");
        let _second = counter.acquire().expect("room");
        assert!(!counter.has_room());
        assert!(counter.acquire().is_none());
        assert_eq!(counter.get(), 2, "a refusal leaves no trace");
        drop(first);
        assert!(counter.has_room());
        let borrowed = counter.borrow().expect("room");
        assert!(counter.borrow().is_none());
        let owned = borrowed.into_owned();
        assert_eq!(counter.get(), 2, "the same slot, owned");
        drop(owned);
        assert_eq!(counter.get(), 1);
        let unlimited = Counter::new(None);
        let _slots: Vec<_> = (0..100)
            .map(|_| unlimited.acquire().expect("room"))
            .collect();
        assert_eq!(unlimited.get(), 100);
    }
}
