//! The gateway's key-value store behind the `kv` capability: the shared semantics of
//! `gateway-rules`, sharded behind locks so concurrent requests on different keys rarely contend.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use gateway_rules::kv::{KvError, KvMap, Limits};

const SHARDS: usize = 16;

/// Key-value state shared by every filter instance; each filter sees only its own namespace.
pub struct KvStore {
    shards: Vec<Mutex<KvMap>>,
    hasher: RandomState,
}

/// Milliseconds on the process's monotonic clock: expiry must not jump with the wall clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

impl KvStore {
    pub fn new(limits: Limits) -> KvStore {
        let per_shard = Limits {
            max_entries: limits.max_entries.div_ceil(SHARDS).max(1),
            ..limits
        };
        KvStore {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(KvMap::new(per_shard)))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// Runs `operation` on the shard holding `namespace`'s `key`.
    fn with_shard<R>(
        &self,
        namespace: &str,
        key: &str,
        operation: impl FnOnce(&mut KvMap, &str, u64) -> R,
    ) -> R {
        // A NUL cannot appear in a filter name, so namespaces cannot run into each other.
        let full_key = format!("{namespace}\0{key}");
        let shard = self.hasher.hash_one(&full_key) as usize % SHARDS;
        // Each KvMap mutation is a single map call, so a panic elsewhere while the lock was held
        // cannot have left the map inconsistent: a poisoned lock is safe to keep using.
        let mut map = self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        operation(&mut map, &full_key, now_ms())
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        self.with_shard(namespace, key, |map, key, now| map.get(key, now))
    }

    pub fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.with_shard(namespace, key, |map, key, now| {
            map.set(key, value, ttl_ms, now)
        })
    }

    pub fn delete(&self, namespace: &str, key: &str) -> bool {
        self.with_shard(namespace, key, |map, key, now| map.delete(key, now))
    }

    pub fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvError> {
        self.with_shard(namespace, key, |map, key, now| {
            map.increment(key, delta, ttl_ms, now)
        })
    }

    pub fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        self.with_shard(namespace, key, |map, key, now| {
            map.compare_and_swap(key, expected, new, ttl_ms, now)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn namespaces_do_not_see_each_other() {
        let store = KvStore::new(Limits::default());
        store.set("auth", "k", b"a".to_vec(), None).expect("set");
        store.set("cache", "k", b"c".to_vec(), None).expect("set");
        assert_eq!(store.get("auth", "k"), Some(b"a".to_vec()));
        assert_eq!(store.get("cache", "k"), Some(b"c".to_vec()));
        assert!(store.delete("auth", "k"));
        assert_eq!(store.get("cache", "k"), Some(b"c".to_vec()));
    }

    #[test]
    fn concurrent_increments_are_not_lost() {
        let store = Arc::new(KvStore::new(Limits::default()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        store
                            .increment("limit", "client", 1, None)
                            .expect("increment");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread finished");
        }
        assert_eq!(store.get("limit", "client"), Some(b"8000".to_vec()));
    }

    #[test]
    fn the_store_stays_bounded() {
        let store = KvStore::new(Limits {
            max_entries: 64,
            ..Limits::default()
        });
        for n in 0..1_000 {
            store
                .set("f", &format!("key-{n}"), b"v".to_vec(), None)
                .expect("set");
        }
        let held: usize = store
            .shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |map| map.len()))
            .sum();
        assert!(held <= 64, "{held} entries held");
    }
}
