//! One gateway's own store: the shared semantics of `gateway-rules`, sharded behind locks so
//! concurrent requests on different keys rarely contend. Its operations never wait on anything
//! but a shard's lock, held for one map operation.
//!
//! Operations are counted per shard under the lock already held, not in one shared counter,
//! which every worker would otherwise contend on.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use gateway_rules::kv::{KvMap, Limits};

use crate::{BackendState, BackendStatus, KvError};

const SHARDS: usize = 16;

/// Key-value state shared by every filter instance; each filter sees only its own namespace.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    /// The single-flight locks of filters on this store.
    pub locks: crate::LockTable,
    hasher: RandomState,
    limits: Limits,
    created: Instant,
}

struct Shard {
    map: KvMap,
    operations: u64,
}

/// Milliseconds on the process's monotonic clock: expiry must not jump with the wall clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let elapsed = START.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

impl MemoryStore {
    pub fn new(limits: Limits) -> MemoryStore {
        let per_shard = Limits {
            max_entries: limits.max_entries.div_ceil(SHARDS).max(1),
            // A shard must still hold the largest value a filter may store.
            max_bytes: limits
                .max_bytes
                .div_ceil(SHARDS)
                .max(limits.max_value_bytes + limits.max_key_bytes + 64),
            // The maps' keys carry the namespace, which the key limit does not count: the store
            // checks the filter's own key, as the Redis store does, and the maps do not.
            max_key_bytes: usize::MAX,
            ..limits
        };
        MemoryStore {
            locks: crate::LockTable::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: KvMap::new(per_shard),
                        operations: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            limits,
            created: Instant::now(),
        }
    }

    /// The store's state: always connected, since it was made; with the entries it holds.
    pub fn status(&self) -> BackendStatus {
        let (mut operations, mut entries, mut bytes, mut evictions) = (0u64, 0u64, 0u64, 0u64);
        for n in 0..SHARDS {
            let shard = self.lock(n);
            operations += shard.operations;
            entries += shard.map.len() as u64;
            bytes += shard.map.bytes() as u64;
            evictions += shard.map.evictions();
        }
        BackendStatus {
            backend: "memory",
            state: BackendState::Connected,
            since_ms: u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX),
            operations,
            errors: 0,
            timeouts: 0,
            mean_latency_us: None,
            max_latency_us: None,
            last_error: None,
            entries: Some(entries),
            bytes: Some(bytes),
            evictions: Some(evictions),
        }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Each KvMap mutation is a single map call, so a panic elsewhere while the lock was held
        // cannot have left the map inconsistent: a poisoned lock is safe to keep using.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut shard = self.lock(self.hasher.hash_one(&full_key) as usize % SHARDS);
        shard.operations += 1;
        operation(&mut shard.map, &full_key, now_ms())
    }

    /// Removes every key of `namespace` that `matches` accepts; how many live ones were
    /// removed. Takes each shard's lock in turn, so other operations wait at most for one
    /// shard's sweep.
    pub fn delete_matching(&self, namespace: &str, matches: impl Fn(&str) -> bool) -> usize {
        let mark = format!("{namespace}\0");
        (0..SHARDS)
            .map(|n| {
                let mut shard = self.lock(n);
                shard.operations += 1;
                shard.map.remove_matching(
                    |key| key.strip_prefix(&mark).is_some_and(&matches),
                    now_ms(),
                )
            })
            .sum()
    }

    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.with_shard(namespace, key, |map, key, now| map.get(key, now)))
    }

    pub fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.with_shard(namespace, key, |map, full_key, now| {
            self.limits.check_key(key)?;
            map.set(full_key, value, ttl_ms, now)
        })
        .map_err(KvError::from)
    }

    pub fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.with_shard(namespace, key, |map, key, now| map.delete(key, now)))
    }

    pub fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvError> {
        self.with_shard(namespace, key, |map, full_key, now| {
            self.limits.check_key(key)?;
            map.increment(full_key, delta, ttl_ms, now)
        })
        .map_err(KvError::from)
    }

    pub fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        self.with_shard(namespace, key, |map, full_key, now| {
            self.limits.check_key(key)?;
            map.compare_and_swap(full_key, expected, new, ttl_ms, now)
        })
        .map_err(KvError::from)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn namespaces_do_not_see_each_other() {
        let store = MemoryStore::new(Limits::default());
        store.set("auth", "k", b"a".to_vec(), None).expect("set");
        store.set("cache", "k", b"c".to_vec(), None).expect("set");
        assert_eq!(store.get("auth", "k"), Ok(Some(b"a".to_vec())));
        assert_eq!(store.get("cache", "k"), Ok(Some(b"c".to_vec())));
        assert_eq!(store.delete("auth", "k"), Ok(true));
        assert_eq!(store.get("cache", "k"), Ok(Some(b"c".to_vec())));
    }

    #[test]
    fn concurrent_increments_are_not_lost() {
        let store = Arc::new(MemoryStore::new(Limits::default()));
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
        assert_eq!(store.get("limit", "client"), Ok(Some(b"8000".to_vec())));
    }

    #[test]
    fn the_store_stays_bounded() {
        let store = MemoryStore::new(Limits {
            max_entries: 64,
            ..Limits::default()
        });
        for n in 0..1_000 {
            store
                .set("f", &format!("key-{n}"), b"v".to_vec(), None)
                .expect("set");
        }
        let held = store
            .status()
            .entries
            .expect("the memory store counts its entries");
        assert!(held <= 64, "{held} entries held");
    }

    #[test]
    fn the_key_limit_counts_the_filters_key_not_the_namespace() {
        let store = MemoryStore::new(Limits {
            max_key_bytes: 4,
            ..Limits::default()
        });
        store
            .set("a-long-filter-name", "abcd", b"v".to_vec(), None)
            .expect("a key at the limit");
        assert_eq!(
            store.increment("f", "abcde", 1, None),
            Err(KvError::Refused(gateway_rules::kv::KvError::KeyTooLong(
                5, 4
            )))
        );
    }

    #[test]
    fn the_status_counts_operations_and_entries() {
        let store = MemoryStore::new(Limits::default());
        store.set("f", "a", b"1".to_vec(), None).expect("set");
        store.set("f", "b", b"2".to_vec(), None).expect("set");
        store.get("f", "a").expect("get");
        let status = store.status();
        assert_eq!(status.backend, "memory");
        assert_eq!(status.state, BackendState::Connected);
        assert_eq!(status.operations, 3);
        assert_eq!(status.entries, Some(2));
    }

    #[test]
    fn a_purge_removes_only_its_namespaces_matching_keys() {
        let store = MemoryStore::new(Limits::default());
        for key in ["z a/1", "z a/2", "z b/1"] {
            store.set("cache", key, b"v".to_vec(), None).expect("set");
        }
        store
            .set("other", "z a/1", b"v".to_vec(), None)
            .expect("set");
        assert_eq!(
            store.delete_matching("cache", |key| key.starts_with("z a/")),
            2
        );
        assert_eq!(store.get("cache", "z a/1"), Ok(None));
        assert_eq!(store.get("cache", "z b/1"), Ok(Some(b"v".to_vec())));
        assert_eq!(store.get("other", "z a/1"), Ok(Some(b"v".to_vec())));
    }

    #[test]
    fn the_status_counts_bytes_and_evictions() {
        let store = MemoryStore::new(Limits {
            max_bytes: 16 * 1024,
            max_value_bytes: 512,
            ..Limits::default()
        });
        for n in 0..200 {
            store
                .set("f", &format!("k{n}"), vec![0; 500], None)
                .expect("set");
        }
        let status = store.status();
        let bytes = status.bytes.expect("the memory store counts its bytes");
        // Each of the 16 shards holds at least one largest value with its longest key.
        let per_shard = (512 + 1024 + 64) as u64;
        assert!(bytes <= 16 * per_shard, "{bytes} bytes");
        assert!(status.evictions.expect("counted") > 0);
    }
}
