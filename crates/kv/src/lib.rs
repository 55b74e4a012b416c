//! The stores behind the filters' `kv` capability.
//!
//! - [`memory`]: one gateway's own store, the default: no extra service, nothing leaves the
//!   process, every operation answers at once.
//! - [`redis`]: state shared by several gateways through one Redis, every operation atomic in
//!   Redis, bounded by a timeout, and failing fast while Redis is away.
//!
//! Both give the five operations the semantics of `gateway_rules::kv`, which the SDK's test host
//! also applies, so a filter behaves the same on one machine, on many, and in its unit tests.
//! Every operation takes the filter's namespace: a filter never sees another's keys.
//!
//! The public surface is what the filter runtime and the host need: the stores, [`KvBackend`]
//! to hold either, [`KvError`] for what a filter receives when an operation fails, and
//! [`BackendStatus`] (from `status()` on either store) for the admin API.

pub mod lock;
pub mod memory;
pub mod redis;
mod status;

use std::sync::Arc;
use std::time::Duration;

use gateway_config::{KvBackendKind, KvSettings};
pub use gateway_rules::kv::Limits;
pub use lock::{Acquire, LockTable};
pub use memory::MemoryStore;
pub use redis::{RedisSettings, RedisStore};
pub use status::{BackendState, BackendStatus};

/// Why an operation did not happen: what the filter receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The operation itself is refused, on every backend (a key too long, a value too large, an
    /// increment of something that is not an integer).
    #[error(transparent)]
    Refused(#[from] gateway_rules::kv::KvError),
    /// The store cannot be reached, or refuses the gateway (down, unreachable, wrong password).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
}

/// Why a store cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Redis URL cannot be used.
    #[error("kv.redis.url: {0}")]
    BadUrl(String),
    /// The thread that talks to Redis cannot start.
    #[error("cannot start the thread that talks to Redis: {0}")]
    Thread(std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stores of one gateway: its memory, and the Redis the configuration names, if any.
#[derive(Clone)]
pub struct KvStores {
    pub memory: Arc<MemoryStore>,
    pub redis: Option<Arc<RedisStore>>,
    /// The store of a filter whose definition names none.
    pub default: KvBackendKind,
}

impl KvStores {
    /// The stores `settings` describe; Redis is connected to in the background.
    pub fn start(settings: &KvSettings) -> Result<KvStores> {
        let limits = settings.limits();
        let redis = settings
            .redis
            .as_ref()
            .map(|redis| RedisStore::start(redis, limits))
            .transpose()?;
        Ok(KvStores {
            memory: Arc::new(MemoryStore::new(limits)),
            redis,
            default: settings.backend,
        })
    }

    /// Only a memory store with these bounds: for tools and tests that need no Redis.
    pub fn memory(limits: Limits) -> KvStores {
        KvStores {
            memory: Arc::new(MemoryStore::new(limits)),
            redis: None,
            default: KvBackendKind::Memory,
        }
    }

    /// The store of a filter that asks for `kind` (`None`: the default), or why it has none.
    pub fn backend(&self, kind: Option<KvBackendKind>) -> Result<KvBackend, String> {
        match kind.unwrap_or(self.default) {
            KvBackendKind::Memory => Ok(KvBackend::Memory(self.memory.clone())),
            KvBackendKind::Redis => match &self.redis {
                Some(redis) => Ok(KvBackend::Redis(redis.clone())),
                None => Err(
                    "uses the redis kv backend, but the gateway started without kv.redis; restart it to connect to Redis"
                        .to_owned(),
                ),
            },
        }
    }
}

/// The store one filter's operations go to.
#[derive(Clone)]
pub enum KvBackend {
    Memory(Arc<MemoryStore>),
    Redis(Arc<RedisStore>),
}

impl KvBackend {
    /// Whether an operation may wait on the network: a filter using this store must be called
    /// so that its waits suspend the call instead of blocking a worker.
    pub fn waits(&self) -> bool {
        matches!(self, KvBackend::Redis(_))
    }

    /// The store's state and counters, for the admin API.
    pub fn status(&self) -> BackendStatus {
        match self {
            KvBackend::Memory(store) => store.status(),
            KvBackend::Redis(store) => store.status(),
        }
    }

    /// Removes every key of `namespace` that starts with `prefix` and that `matches` accepts
    /// (given the key without the namespace); how many were removed. For the admin API's
    /// purge: the filters themselves can only name keys.
    pub async fn delete_matching(
        &self,
        namespace: &str,
        prefix: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<usize, KvError> {
        match self {
            KvBackend::Memory(store) => {
                Ok(store.delete_matching(namespace, |key| key.starts_with(prefix) && matches(key)))
            }
            KvBackend::Redis(store) => store.delete_matching(namespace, prefix, matches).await,
        }
    }

    /// Takes a single-flight lock for `holder` (see [`lock`]), in the same store as the
    /// filter's keys.
    pub async fn acquire(
        &self,
        namespace: &str,
        key: &str,
        holder: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Acquire, KvError> {
        match self {
            KvBackend::Memory(store) => Ok(store
                .locks
                .acquire(namespace, key, holder, lease, wait)
                .await),
            KvBackend::Redis(store) => store.acquire(namespace, key, holder, lease, wait).await,
        }
    }

    /// Releases every lock of `namespace` that `holder` still holds, when its request ends.
    pub async fn release_all(&self, namespace: &str, holder: &str) -> Result<usize, KvError> {
        match self {
            KvBackend::Memory(store) => Ok(store.locks.release_all(namespace, holder)),
            KvBackend::Redis(store) => store.release_all(namespace, holder).await,
        }
    }

    /// Releases a lock `holder` holds; whether it did.
    pub async fn release(&self, namespace: &str, key: &str, holder: &str) -> Result<bool, KvError> {
        match self {
            KvBackend::Memory(store) => Ok(store.locks.release(namespace, key, holder)),
            KvBackend::Redis(store) => store.release(namespace, key, holder).await,
        }
    }

    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            KvBackend::Memory(store) => store.get(namespace, key),
            KvBackend::Redis(store) => store.get(namespace, key).await,
        }
    }

    pub async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        match self {
            KvBackend::Memory(store) => store.set(namespace, key, value, ttl_ms),
            KvBackend::Redis(store) => store.set(namespace, key, &value, ttl_ms).await,
        }
    }

    pub async fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        match self {
            KvBackend::Memory(store) => store.delete(namespace, key),
            KvBackend::Redis(store) => store.delete(namespace, key).await,
        }
    }

    pub async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvError> {
        match self {
            KvBackend::Memory(store) => store.increment(namespace, key, delta, ttl_ms),
            KvBackend::Redis(store) => store.increment(namespace, key, delta, ttl_ms).await,
        }
    }

    pub async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        match self {
            KvBackend::Memory(store) => {
                store.compare_and_swap(namespace, key, expected, new, ttl_ms)
            }
            KvBackend::Redis(store) => {
                store
                    .compare_and_swap(namespace, key, expected, &new, ttl_ms)
                    .await
            }
        }
    }
}
