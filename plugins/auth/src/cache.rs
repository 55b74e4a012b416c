//! The verified-token cache of one filter instance: a token seen again costs a SHA-256 and a
//! lookup instead of a signature check.
//!
//! Keyed by the SHA-256 of the token, so the cache holds no token. An entry is never used
//! past the moment the token stops being accepted (`exp` plus the leeway), nor past
//! `max_ttl`. When full, expired entries go first, then an arbitrary one: a bounded cache that
//! is usually right, since a miss only costs a verification.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::identity::Identity;

/// A verified token's identity and when it stops being usable.
pub(crate) struct Entry {
    pub(crate) identity: Rc<Identity>,
    pub(crate) until_ms: u64,
    /// The provider that verified it, for its per-request checks (revocation).
    pub(crate) provider: usize,
    /// The token's `jti`, for the revocation list.
    pub(crate) jti: Option<String>,
}

pub(crate) struct TokenCache {
    entries: RefCell<HashMap<[u8; 32], Entry>>,
    max_entries: usize,
    max_ttl_ms: u64,
}

pub(crate) fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    pub(crate) fn new(max_entries: usize, max_ttl_ms: u64) -> Self {
        TokenCache {
            entries: RefCell::new(HashMap::new()),
            max_entries,
            max_ttl_ms,
        }
    }

    /// The cached identity, its provider and `jti`, if the token is there and still usable.
    pub(crate) fn get(
        &self,
        key: &[u8; 32],
        now_ms: u64,
    ) -> Option<(Rc<Identity>, usize, Option<String>)> {
        let mut entries = self.entries.borrow_mut();
        let entry = entries.get(key)?;
        if now_ms >= entry.until_ms {
            entries.remove(key);
            return None;
        }
        Some((entry.identity.clone(), entry.provider, entry.jti.clone()))
    }

    /// Keeps a verified token until `expires_ms` (or `max_ttl` from now, if sooner or absent).
    pub(crate) fn insert(
        &self,
        key: [u8; 32],
        mut entry: Entry,
        expires_ms: Option<u64>,
        now_ms: u64,
    ) {
        if self.max_entries == 0 {
            return;
        }
        let longest = now_ms.saturating_add(self.max_ttl_ms);
        entry.until_ms = expires_ms.map_or(longest, |expires| expires.min(longest));
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.until_ms > now_ms);
            if entries.len() >= self.max_entries
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(key, entry);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}
