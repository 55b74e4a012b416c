//! Single-flight locks behind the filters' `lock` capability: one holder per key, with a
//! lease, and waiters woken when the holder releases it or its lease ends.
//!
//! - [`LockTable`]: this gateway's own locks, in memory, next to the memory store. A waiter
//!   sleeps on the lock's `Notify` until the holder releases it, or until the lease ends,
//!   whichever is first; nothing polls.
//! - On Redis ([`crate::RedisStore::acquire`]): `SET NX PX` in one script (which also renews a
//!   lock the caller holds), a release that deletes only the caller's own lock, and waiters
//!   that look again every few milliseconds, each look one round trip, until the lock is gone
//!   or their wait ends.
//!
//! A holder is named by a string the caller chooses (the gateway uses the request id), so a
//! lock taken in one call can be released in another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How an `acquire` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lock.
    Acquired,
    /// Another holder had it and let it go (released, or its lease ended) while the caller
    /// waited; the caller does not hold it.
    Released,
    /// Another holder still has it after the wait.
    TimedOut,
}

struct Held {
    holder: String,
    until: Instant,
    released: Arc<Notify>,
}

/// This gateway's locks, every filter's, keyed by namespace and key.
#[derive(Default)]
pub struct LockTable {
    held: Mutex<HashMap<String, Held>>,
    /// Locks held, kept with the map: every request's end asks, and most find none without
    /// taking the map's lock.
    count: AtomicUsize,
}

impl LockTable {
    /// Removes a lock from the map and wakes its waiters.
    fn let_go(&self, held: &mut HashMap<String, Held>, full_key: &str) {
        if let Some(current) = held.remove(full_key) {
            self.count.fetch_sub(1, Ordering::Relaxed);
            current.released.notify_waiters();
        }
    }
}

impl LockTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // One map call per critical section: a poisoned lock cannot hide a half-made change.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the lock on `namespace`'s `key` for `holder`, waiting at most `wait` for another
    /// holder to let it go.
    pub async fn acquire(
        &self,
        namespace: &str,
        key: &str,
        holder: &str,
        lease: Duration,
        wait: Duration,
    ) -> Acquire {
        let full_key = format!("{namespace}\0{key}");
        let deadline = Instant::now() + wait;
        let mut waited = false;
        loop {
            let (released, until) = {
                let mut held = self.lock();
                let now = Instant::now();
                match held.get_mut(&full_key) {
                    Some(current) if current.holder != holder && current.until > now => {
                        (current.released.clone(), current.until)
                    }
                    Some(current) if current.holder == holder => {
                        current.until = now + lease;
                        return Acquire::Acquired;
                    }
                    _ if waited => {
                        // Let go while this caller waited: it looks for the holder's work.
                        self.let_go(&mut held, &full_key);
                        return Acquire::Released;
                    }
                    _ => {
                        let stale = held.insert(
                            full_key,
                            Held {
                                holder: holder.to_owned(),
                                until: now + lease,
                                released: Arc::new(Notify::new()),
                            },
                        );
                        match stale {
                            // Its lease had ended: whoever waited on it looks again.
                            Some(stale) => stale.released.notify_waiters(),
                            None => {
                                self.count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        return Acquire::Acquired;
                    }
                }
            };
            if Instant::now() >= deadline {
                return Acquire::TimedOut;
            }
            let notified = released.notified();
            tokio::pin!(notified);
            // Registered before the map's lock is taken again, so a release in between is
            // not missed.
            notified.as_mut().enable();
            let _ = tokio::time::timeout_at(deadline.min(until), notified).await;
            waited = true;
        }
    }

    /// Releases every lock of `namespace` that `holder` still holds: when its request ends, so
    /// a holder that failed before releasing strands nobody until its lease ends. How many.
    pub fn release_all(&self, namespace: &str, holder: &str) -> usize {
        if self.count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mark = format!("{namespace}\0");
        let mut held = self.lock();
        let keys: Vec<String> = held
            .iter()
            .filter(|(key, current)| current.holder == holder && key.starts_with(&mark))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &keys {
            self.let_go(&mut held, key);
        }
        keys.len()
    }

    /// Releases the lock if `holder` holds it; whether it did.
    pub fn release(&self, namespace: &str, key: &str, holder: &str) -> bool {
        let full_key = format!("{namespace}\0{key}");
        let mut held = self.lock();
        match held.get(&full_key) {
            Some(current) if current.holder == holder => {
                self.let_go(&mut held, &full_key);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn one_holder_and_its_waiters_wake_on_release() {
        let table = Arc::new(LockTable::default());
        let wait = Duration::from_secs(5);
        assert_eq!(
            table.acquire("f", "k", "a", LEASE, wait).await,
            Acquire::Acquired
        );
        assert_eq!(
            table.acquire("f", "k", "a", LEASE, wait).await,
            Acquire::Acquired,
            "renewed"
        );
        assert_eq!(
            table.acquire("g", "k", "b", LEASE, Duration::ZERO).await,
            Acquire::Acquired,
            "namespaces"
        );
        let waiters: Vec<_> = (0..10)
            .map(|n| {
                let table = table.clone();
                tokio::spawn(
                    async move { table.acquire("f", "k", &format!("w{n}"), LEASE, wait).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!table.release("f", "k", "w1"), "only the holder releases");
        assert!(table.release("f", "k", "a"));
        for waiter in waiters {
            assert_eq!(waiter.await.expect("waiter"), Acquire::Released);
        }
        assert_eq!(
            table.acquire("f", "k", "c", LEASE, Duration::ZERO).await,
            Acquire::Acquired
        );
    }

    #[tokio::test]
    async fn a_wait_is_bounded_and_a_lease_ends() {
        let table = LockTable::default();
        let lease = Duration::from_millis(100);
        assert_eq!(
            table.acquire("f", "k", "a", lease, Duration::ZERO).await,
            Acquire::Acquired
        );
        assert_eq!(
            table
                .acquire("f", "k", "b", LEASE, Duration::from_millis(10))
                .await,
            Acquire::TimedOut
        );
        // The holder never releases: its lease ends, and the waiter is let go then.
        assert_eq!(
            table
                .acquire("f", "k", "b", LEASE, Duration::from_secs(5))
                .await,
            Acquire::Released
        );
        assert_eq!(
            table.acquire("f", "k", "b", LEASE, Duration::ZERO).await,
            Acquire::Acquired
        );
        assert!(
            !table.release("f", "k", "a"),
            "a lease that ended is no longer held"
        );
    }

    #[tokio::test]
    async fn a_requests_end_lets_its_waiters_go() {
        let table = Arc::new(LockTable::default());
        let now = Duration::ZERO;
        assert_eq!(
            table.acquire("f", "k", "a", LEASE, now).await,
            Acquire::Acquired
        );
        assert_eq!(
            table.acquire("f", "j", "a", LEASE, now).await,
            Acquire::Acquired
        );
        assert_eq!(
            table.acquire("g", "k", "a", LEASE, now).await,
            Acquire::Acquired
        );
        let waiter = {
            let table = table.clone();
            tokio::spawn(async move {
                table
                    .acquire("f", "k", "b", LEASE, Duration::from_secs(5))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(table.release_all("f", "a"), 2, "only its own namespace's");
        assert_eq!(waiter.await.expect("waiter"), Acquire::Released);
        assert!(table.release("g", "k", "a"));
    }
}
