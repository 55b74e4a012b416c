//! The key-value state filters see through the `kv` capability.
//!
//! One implementation of the semantics, used by the gateway's memory store (sharded behind
//! locks, in `gateway-kv`) and by the SDK's test host, so a filter's unit tests and production
//! agree on what `increment` or `compare-and-swap` do. The gateway's Redis store cannot hold a
//! [`KvMap`]; it applies the same [`Limits`] checks and gives the same semantics in Redis, and a
//! conformance suite runs one set of cases against both stores. Time is passed in by the caller as
//! milliseconds on a monotonic clock, which keeps this crate free of clocks and lets tests set time.
//!
//! Semantics:
//! - an entry may carry a time to live; an expired entry is absent for every operation;
//! - `increment` treats an absent entry as 0 and applies the TTL only when it creates the entry
//!   (a fixed window, as rate limiting needs); the value is stored as decimal text, so `get`
//!   returns e.g. `b"42"`, and only such text can be incremented (not `+5` or `007`);
//! - `compare_and_swap` writes only if the current value equals `expected` (`None`: absent);
//! - the map is bounded in entries and in bytes (keys and values): when a write would pass
//!   either bound, expired entries are dropped first, then the least recently used ones are
//!   evicted, as a cache does. A read or a write counts as a use, so a counter touched on every
//!   request outlives a cached answer nobody asked for since.
//!
//! ```
//! use gateway_rules::kv::{KvMap, Limits};
//!
//! let mut map = KvMap::new(Limits::default());
//! assert_eq!(map.increment("hits", 1, Some(1_000), 0), Ok(1));
//! assert_eq!(map.increment("hits", 1, Some(1_000), 500), Ok(2));
//! assert_eq!(map.increment("hits", 1, Some(1_000), 1_000), Ok(1)); // the window expired
//! ```

use std::collections::{BTreeMap, HashMap};

/// Bounds on what the map holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries held; past it, entries are evicted.
    pub max_entries: usize,
    /// Longest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most bytes of keys and values held; past it, entries are evicted.
    pub max_bytes: usize,
}

impl Limits {
    /// Refuses a key longer than the limit. Every store applies it before it writes, so a
    /// filter meets the same refusal on every backend.
    ///
    /// ```
    /// use gateway_rules::kv::{KvError, Limits};
    ///
    /// let limits = Limits { max_key_bytes: 4, ..Limits::default() };
    /// assert_eq!(limits.check_key("abcd"), Ok(()));
    /// assert_eq!(limits.check_key("abcde"), Err(KvError::KeyTooLong(5, 4)));
    /// ```
    pub fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.len() > self.max_key_bytes {
            return Err(KvError::KeyTooLong(key.len(), self.max_key_bytes));
        }
        Ok(())
    }

    /// Refuses a value larger than the limit, as [`Limits::check_key`] does keys.
    ///
    /// ```
    /// use gateway_rules::kv::{KvError, Limits};
    ///
    /// let limits = Limits { max_value_bytes: 2, ..Limits::default() };
    /// assert_eq!(limits.check_value(b"ab"), Ok(()));
    /// assert_eq!(limits.check_value(b"abc"), Err(KvError::ValueTooLarge(3, 2)));
    /// ```
    pub fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.max_value_bytes {
            return Err(KvError::ValueTooLarge(value.len(), self.max_value_bytes));
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 100_000,
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_bytes: 256 << 20,
        }
    }
}

/// Why an operation was refused. The text is what the filter receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key of {0} bytes is longer than the limit of {1}")]
    KeyTooLong(usize, usize),
    #[error("value of {0} bytes is larger than the limit of {1}")]
    ValueTooLarge(usize, usize),
    #[error("the value is not an integer")]
    NotAnInteger,
    #[error("the increment overflows a 64-bit integer")]
    Overflow,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    /// Milliseconds on the caller's monotonic clock; `None` never expires.
    expires_at: Option<u64>,
    /// When it was last used, as the map counts uses: its place in `KvMap::uses`.
    used: u64,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// A bounded map with expiring entries. Not synchronised: callers that share one wrap it.
#[derive(Debug, Clone)]
pub struct KvMap {
    entries: HashMap<String, Entry>,
    /// The keys by their last use, least recent first.
    uses: BTreeMap<u64, String>,
    /// Uses so far: the next use's number.
    clock: u64,
    /// Bytes of keys and values held.
    bytes: usize,
    /// Live entries evicted to make room.
    evictions: u64,
    limits: Limits,
}

fn expiry(now: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl| now.saturating_add(ttl))
}

impl KvMap {
    /// An empty map with these bounds.
    pub fn new(limits: Limits) -> Self {
        KvMap {
            entries: HashMap::new(),
            uses: BTreeMap::new(),
            clock: 0,
            bytes: 0,
            evictions: 0,
            limits,
        }
    }

    /// Bytes of keys and values held, expired entries included until they are dropped.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Live entries evicted so far to make room.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn next_use(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks `key` as just used.
    fn touch(&mut self, key: &str) {
        let now = self.next_use();
        if let Some(entry) = self.entries.get_mut(key) {
            self.uses.remove(&entry.used);
            entry.used = now;
            self.uses.insert(now, key.to_owned());
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.uses.remove(&entry.used);
        self.bytes -= key.len() + entry.value.len();
        Some(entry)
    }

    /// Entries held, expired ones included until they are dropped.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn live(&self, key: &str, now: u64) -> Option<&Entry> {
        self.entries.get(key).filter(|entry| entry.live(now))
    }

    fn full(&self, adding: usize) -> bool {
        self.entries.len() >= self.limits.max_entries
            || self.bytes.saturating_add(adding) > self.limits.max_bytes
    }

    /// Makes room for `adding` more bytes in one more entry (`key` is not in the map).
    fn make_room(&mut self, adding: usize, now: u64) {
        if !self.full(adding) {
            return;
        }
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.live(now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
        while self.full(adding) {
            let Some((_, victim)) = self.uses.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&victim) {
                self.bytes -= victim.len() + entry.value.len();
                self.evictions += 1;
            }
        }
    }

    fn insert(&mut self, key: &str, value: Vec<u8>, expires_at: Option<u64>, now: u64) {
        self.remove(key);
        self.make_room(key.len() + value.len(), now);
        let used = self.next_use();
        self.bytes += key.len() + value.len();
        self.uses.insert(used, key.to_owned());
        self.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at,
                used,
            },
        );
    }

    /// The value, if present and not expired; a use of the entry.
    pub fn get(&mut self, key: &str, now: u64) -> Option<Vec<u8>> {
        let value = self.live(key, now).map(|entry| entry.value.clone());
        if value.is_some() {
            self.touch(key);
        }
        value
    }

    /// The value, if present and not expired, without counting a use: for inspection.
    pub fn peek(&self, key: &str, now: u64) -> Option<Vec<u8>> {
        self.live(key, now).map(|entry| entry.value.clone())
    }

    /// Removes every entry whose key `matches`; how many live ones were removed.
    pub fn remove_matching(&mut self, matches: impl Fn(&str) -> bool, now: u64) -> usize {
        let keys: Vec<String> = self
            .entries
            .keys()
            .filter(|key| matches(key))
            .cloned()
            .collect();
        keys.iter()
            .filter_map(|key| self.remove(key))
            .filter(|entry| entry.live(now))
            .count()
    }

    /// Stores a value, replacing any other, with an optional time to live.
    pub fn set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<(), KvError> {
        self.limits.check_key(key)?;
        self.limits.check_value(&value)?;
        self.insert(key, value, expiry(now, ttl_ms), now);
        Ok(())
    }

    /// Removes a value; whether a live one was there.
    pub fn delete(&mut self, key: &str, now: u64) -> bool {
        self.remove(key).is_some_and(|entry| entry.live(now))
    }

    /// Adds `delta` to the integer at `key` (absent: 0) and returns the new value. The TTL
    /// applies only if this creates the entry.
    pub fn increment(
        &mut self,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<i64, KvError> {
        self.limits.check_key(key)?;
        let (current, expires_at) = match self.live(key, now) {
            Some(entry) => {
                let text = std::str::from_utf8(&entry.value).map_err(|_| KvError::NotAnInteger)?;
                let current: i64 = text.parse().map_err(|_| KvError::NotAnInteger)?;
                // Only the text `increment` itself writes counts: Rust's parser also takes
                // `+5`, `007` or `-0`, which Redis's INCRBY refuses, and both stores must agree.
                if current.to_string() != text {
                    return Err(KvError::NotAnInteger);
                }
                (current, entry.expires_at)
            }
            None => (0, expiry(now, ttl_ms)),
        };
        let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
        self.insert(key, next.to_string().into_bytes(), expires_at, now);
        Ok(next)
    }

    /// Writes `new` only if the current value equals `expected` (`None`: absent or expired).
    /// Returns whether it wrote.
    pub fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
        now: u64,
    ) -> Result<bool, KvError> {
        self.limits.check_key(key)?;
        self.limits.check_value(&new)?;
        let current = self.live(key, now).map(|entry| entry.value.as_slice());
        if current != expected {
            return Ok(false);
        }
        self.insert(key, new, expiry(now, ttl_ms), now);
        Ok(true)
    }

    /// Every live entry, for inspection in tests.
    pub fn entries(&self, now: u64) -> Vec<(String, Vec<u8>)> {
        let mut entries: Vec<(String, Vec<u8>)> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.live(now))
            .map(|(key, entry)| (key.clone(), entry.value.clone()))
            .collect();
        entries.sort();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> KvMap {
        KvMap::new(Limits {
            max_entries: 3,
            max_key_bytes: 8,
            max_value_bytes: 4,
            max_bytes: 1 << 20,
        })
    }

    #[test]
    fn values_expire_at_their_ttl() {
        let mut kv = map();
        kv.set("a", b"1".to_vec(), Some(100), 1_000).expect("set");
        kv.set("b", b"2".to_vec(), None, 1_000).expect("set");
        assert_eq!(kv.get("a", 1_099), Some(b"1".to_vec()));
        assert_eq!(kv.get("a", 1_100), None);
        assert_eq!(kv.get("b", u64::MAX), Some(b"2".to_vec()));
        assert!(
            !kv.delete("a", 1_100),
            "an expired entry is not there to delete"
        );
        assert!(kv.delete("b", 1_100));
        assert_eq!(kv.get("b", 1_100), None);
    }

    #[test]
    fn increments_count_in_a_fixed_window() {
        let mut kv = map();
        assert_eq!(kv.increment("n", 1, Some(60), 0), Ok(1));
        assert_eq!(kv.increment("n", 5, Some(60), 30), Ok(6));
        assert_eq!(
            kv.get("n", 30),
            Some(b"6".to_vec()),
            "stored as decimal text"
        );
        assert_eq!(
            kv.increment("n", 1, Some(60), 60),
            Ok(1),
            "the window started at 0"
        );
        assert_eq!(kv.increment("n", -3, None, 61), Ok(-2));
        kv.set("t", b"x".to_vec(), None, 0).expect("set");
        assert_eq!(kv.increment("t", 1, None, 0), Err(KvError::NotAnInteger));
        kv.set("t", b"+5".to_vec(), None, 0).expect("set");
        assert_eq!(
            kv.increment("t", 1, None, 0),
            Err(KvError::NotAnInteger),
            "only canonical decimal text is a counter"
        );
        kv.insert("big", i64::MAX.to_string().into_bytes(), None, 0);
        assert_eq!(kv.increment("big", 1, None, 0), Err(KvError::Overflow));
    }

    #[test]
    fn compare_and_swap_writes_only_on_a_match() {
        let mut kv = map();
        assert_eq!(
            kv.compare_and_swap("k", None, b"v1".to_vec(), None, 0),
            Ok(true)
        );
        assert_eq!(
            kv.compare_and_swap("k", None, b"v2".to_vec(), None, 0),
            Ok(false)
        );
        assert_eq!(
            kv.compare_and_swap("k", Some(b"v0"), b"v2".to_vec(), None, 0),
            Ok(false)
        );
        assert_eq!(
            kv.compare_and_swap("k", Some(b"v1"), b"v2".to_vec(), Some(10), 0),
            Ok(true)
        );
        assert_eq!(kv.get("k", 5), Some(b"v2".to_vec()));
        assert_eq!(
            kv.compare_and_swap("k", None, b"v3".to_vec(), None, 10),
            Ok(true),
            "an expired entry counts as absent"
        );
    }

    #[test]
    fn limits_are_enforced() {
        let mut kv = map();
        assert_eq!(
            kv.set("much-too-long", b"v".to_vec(), None, 0),
            Err(KvError::KeyTooLong(13, 8))
        );
        assert_eq!(
            kv.set("k", b"12345".to_vec(), None, 0),
            Err(KvError::ValueTooLarge(5, 4))
        );
        for key in ["a", "b", "c", "d", "e"] {
            kv.set(key, b"v".to_vec(), None, 0).expect("set");
            assert!(kv.len() <= 3, "bounded");
        }
        assert_eq!(
            kv.get("e", 0),
            Some(b"v".to_vec()),
            "the newest entry is kept"
        );
    }

    #[test]
    fn a_full_map_drops_expired_entries_before_live_ones() {
        let mut kv = map();
        kv.set("old", b"1".to_vec(), Some(10), 0).expect("set");
        kv.set("keep1", b"1".to_vec(), None, 0).expect("set");
        kv.set("keep2", b"1".to_vec(), None, 0).expect("set");
        kv.set("new", b"1".to_vec(), None, 20).expect("set");
        let keys: Vec<String> = kv.entries(20).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["keep1", "keep2", "new"]);
    }

    #[test]
    fn a_full_map_evicts_the_least_recently_used() {
        let mut kv = map();
        for key in ["a", "b", "c"] {
            kv.set(key, b"v".to_vec(), None, 0).expect("set");
        }
        assert_eq!(kv.get("a", 0), Some(b"v".to_vec()), "a use of `a`");
        kv.set("d", b"v".to_vec(), None, 0).expect("set");
        let keys: Vec<String> = kv.entries(0).into_iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["a", "c", "d"], "`b` was the least recently used");
        assert_eq!(kv.evictions(), 1);
        assert_eq!(kv.peek("c", 0), Some(b"v".to_vec()));
        kv.set("e", b"v".to_vec(), None, 0).expect("set");
        assert_eq!(kv.peek("c", 0), None, "a peek is no use");
    }

    #[test]
    fn the_bytes_held_stay_within_their_bound() {
        let mut kv = KvMap::new(Limits {
            max_entries: 100,
            max_key_bytes: 8,
            max_value_bytes: 64,
            max_bytes: 100,
        });
        for n in 0..10 {
            kv.set(&format!("k{n}"), vec![0; 40], None, 0).expect("set");
            assert!(kv.bytes() <= 100, "{} bytes held", kv.bytes());
        }
        assert_eq!(kv.len(), 2, "two entries of 42 bytes fit in 100");
        assert_eq!(kv.evictions(), 8);
        kv.set("k9", b"1".to_vec(), None, 0)
            .expect("a smaller value replaces");
        assert_eq!(kv.bytes(), 42 + 3);
        assert_eq!(kv.remove_matching(|key| key.starts_with('k'), 0), 2);
        assert_eq!((kv.len(), kv.bytes()), (0, 0));
    }
}
