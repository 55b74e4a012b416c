//! The store several gateways share through one Redis: each of the five operations is one atomic
//! Redis command or script, bounded by a timeout, and fails at once while Redis is away.
//!
//! # What the store keeps in Redis
//!
//! A filter's key `<key>` is the Redis key `<prefix>:<filter>:<key>` (`kv.redis.key_prefix`,
//! `gateway` unless set). Filter names are made of `[A-Za-z0-9._-]` and the prefix holds no `:`,
//! so the first two `:` always end the prefix and the filter's name: one filter never reaches
//! another's keys, whatever its keys hold. Values are Redis strings holding the filter's bytes
//! unchanged; counters are decimal text (`increment` uses `INCRBY`); a time to live is the
//! key's Redis expiry, in milliseconds. An operator can look with `redis-cli`:
//!
//! ```text
//! redis-cli GET gateway:rate-limit:client:203.0.113.7     # "17"
//! redis-cli PTTL gateway:rate-limit:client:203.0.113.7    # 412: ms left in the window
//! redis-cli --scan --pattern 'gateway:rate-limit:*'       # every key of one filter
//! ```
//!
//! `get` is `GET`, `set` is `SET` (with `PX` for a TTL), `delete` is `DEL`. `increment` and
//! `compare_and_swap` are Lua scripts (run with `EVALSHA`, loaded on every connection), because
//! each reads and writes in one step: `increment` creates an absent counter with the TTL and
//! otherwise adds with `INCRBY`, which keeps the key's expiry (a fixed window); `compare_and_swap`
//! compares and writes, with `PX` if given a TTL and a plain `SET` otherwise, which drops an old
//! expiry, as the memory store does. The key and value limits are checked here before anything is
//! sent, with the same [`Limits`] the memory store uses, so a filter is refused the same way on
//! either.
//!
//! # How the store talks to Redis
//!
//! A thread of its own, `kv-redis`, runs a single-threaded tokio runtime holding the
//! `connections` drivers (the tasks that write to and read from each socket) and one supervisor
//! per connection. Callers, on whatever runtime they run, send through a clone of a
//! [`MultiplexedConnection`], which is a channel to its driver: many operations share one socket,
//! pipelined, and a caller never runs Redis's I/O on its own thread. Each operation is bounded on
//! the caller's runtime by `operation_timeout` ([`KvError::Timeout`]); a late answer is then
//! dropped. A timeout says nothing about whether Redis applied the operation.
//!
//! A supervisor watches its connection: the driver ending (Redis closed the socket, an I/O
//! error), a caller meeting a connection error, or Redis not answering a `PING` sent every second
//! within the longer of `connect_timeout` and `operation_timeout` mark it dead (the last catches
//! a Redis gone without closing the socket: a host down, a partition). A slow operation (a
//! `DEBUG SLEEP`, a long script) only times out: the connection stays, unless Redis stays silent
//! longer than any operation may wait. While no connection is live, operations fail at once
//! with [`KvError::Unavailable`] and the reason, instead of each waiting for its timeout, and the
//! supervisors reconnect with exponential backoff (50 ms doubling to 2 s, plus up to a quarter
//! of jitter so that gateways do not all reconnect together). A Redis that refuses the
//! gateway's password is retried the same way: the password may be fixed on the Redis side.
//!
//! One line is logged when the store goes down (a warning with the reason) and one when it is
//! back, never one per operation; failed reconnection attempts are logged at debug level.
//!
//! # Why
//!
//! The gateway's workers each run a current-thread runtime; an operation must suspend the
//! filter's call, never block the worker, and a dead Redis must cost a request microseconds, not
//! its timeout. redis-rs's `ConnectionManager` makes operations wait on its reconnection (each
//! would spend its whole timeout while Redis is away) and starts each new connection on the
//! runtime of the caller that noticed the loss, a worker. Owning the drivers on one thread gives
//! a state to fail fast on and to report, and keeps Redis's I/O off the workers.

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use gateway_rules::kv::{KvError as Refusal, Limits};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisConnectionInfo,
    RedisError, RedisResult, Script,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, oneshot};

pub use gateway_config::RedisSettings;

use crate::{Acquire, BackendState, BackendStatus, Error, KvError};

/// First wait before reconnecting; it doubles up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const LAST_RETRY: Duration = Duration::from_secs(2);
/// A connection that lived this long was healthy: the next loss starts the backoff afresh.
const STABLE: Duration = Duration::from_secs(10);
/// How often a supervisor checks that Redis still answers on its connection.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Longest TTL sent, in milliseconds (146 million years). Redis refuses an expiry past
/// `i64::MAX` ms from now; the memory store saturates, so anything longer never expires on both.
const MAX_TTL_MS: u64 = 1 << 62;

/// `increment(KEYS[1], delta = ARGV[1], ttl = ARGV[2])`; the TTL is `''` for none, and `'0'`
/// creates a counter that is expired at once (the memory store's reading of a zero TTL), so
/// nothing is stored. The result is returned as text: Lua numbers are doubles, which would round
/// counters past 2^53. `NOTINTEGER` and `OVERFLOW` are this script's own error codes.
static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
  elseif ARGV[2] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
  return ARGV[1]
end
local reply = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(reply) == 'table' and reply.err then
  if string.find(reply.err, 'overflow', 1, true) then
    return redis.error_reply('OVERFLOW ' .. reply.err)
  elseif string.find(reply.err, 'not an integer', 1, true) then
    return redis.error_reply('NOTINTEGER ' .. reply.err)
  end
  return reply
end
return redis.call('GET', KEYS[1])
",
    )
});

/// `compare_and_swap(KEYS[1], has_expected = ARGV[1] ('1' or '0'), expected = ARGV[2],
/// new = ARGV[3], ttl = ARGV[4])`, TTL as for [`INCREMENT`]; returns 1 if it wrote.
static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
elseif ARGV[4] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
",
    )
});

/// Takes the lock at `KEYS[1]` for the holder `ARGV[1]` for `ARGV[2]` ms, or renews it if the
/// holder has it: 1 if it holds it now, 0 if another does.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if not current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
",
    )
});

/// Deletes the lock at `KEYS[1]` if the holder `ARGV[1]` has it: 1 if it did.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// How often a waiter on a Redis lock looks whether it is gone.
const LOCK_POLL: Duration = Duration::from_millis(5);

/// Key-value state in Redis, shared by every gateway that uses the same Redis and prefix.
///
/// Operations must be called on a tokio runtime with its timer enabled: the timeout runs there.
pub struct RedisStore {
    shared: Arc<Shared>,
    /// The locks this gateway took and has not released, by holder: what a request's end
    /// releases.
    locks: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// Dropping it ends the `kv-redis` thread, which closes the connections.
    _stop: oneshot::Sender<()>,
}

/// What the callers and the `kv-redis` thread share.
struct Shared {
    prefix: String,
    limits: Limits,
    operation_timeout: Duration,
    /// Where Redis is, for messages: never the URL, which may hold the password.
    address: String,
    slots: Vec<Slot>,
    next_slot: AtomicUsize,
    /// Connections live now: the store is down at zero.
    live: AtomicUsize,
    /// Whether a connection was ever live, to tell "connected" from "back" in the log.
    ever_connected: AtomicBool,
    created: Instant,
    /// When the state last changed, in milliseconds after `created`.
    changed_at_ms: AtomicU64,
    last_error: ArcSwapOption<String>,
    counters: Counters,
}

/// One connection's place: empty while it is dead.
struct Slot {
    connection: ArcSwapOption<MultiplexedConnection>,
    /// Woken by a caller that met a connection error and emptied the slot.
    lost: Notify,
}

#[derive(Default)]
struct Counters {
    operations: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    answered: AtomicU64,
    latency_us_total: AtomicU64,
    latency_us_max: AtomicU64,
}

/// Where and how to connect, from `kv.redis.url`.
struct Target {
    address: Address,
    redis: RedisConnectionInfo,
    connect_timeout: Duration,
    /// How long a supervisor's PING may wait: a Redis silent for longer is gone.
    probe_timeout: Duration,
    shown: String,
}

enum Address {
    Tcp(String, u16),
    Unix(PathBuf),
}

/// A live connection and its driver, which is aborted when this is dropped.
struct Link {
    connection: Arc<MultiplexedConnection>,
    driver: Driver,
}

struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What an error from Redis means for the operation and the connection.
enum Failure {
    /// The operation is refused as the memory store would refuse it.
    Refused(Refusal),
    /// The connection cannot be used any more.
    Connection(String),
    /// Redis answered with an error; the connection is fine.
    Answered(String),
}

impl RedisStore {
    /// Starts the store: returns at once after at most one connection attempt bounded by
    /// `connect_timeout`; if Redis is not there, the store starts down (one warning) and keeps
    /// reconnecting in the background. Fails only on a URL that cannot be used or if the thread
    /// cannot start.
    pub fn start(settings: &RedisSettings, limits: Limits) -> crate::Result<Arc<RedisStore>> {
        let target = Target::parse(settings)?;
        let shared = Arc::new(Shared {
            prefix: settings.key_prefix.clone(),
            limits,
            operation_timeout: settings.operation_timeout,
            address: target.shown.clone(),
            slots: (0..settings.connections.max(1))
                .map(|_| Slot {
                    connection: ArcSwapOption::empty(),
                    lost: Notify::new(),
                })
                .collect(),
            next_slot: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            ever_connected: AtomicBool::new(false),
            created: Instant::now(),
            changed_at_ms: AtomicU64::new(0),
            last_error: ArcSwapOption::empty(),
            counters: Counters::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("kv-redis".to_owned())
            .spawn(move || run(thread_shared, target, ready_tx, stopped))
            .map_err(Error::Thread)?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Arc::new(RedisStore {
                shared,
                locks: std::sync::Mutex::default(),
                _stop: stop,
            })),
            Ok(Err(error)) => Err(Error::Thread(error)),
            Err(_) => Err(Error::Thread(std::io::Error::other(
                "the thread stopped before its first connection attempt",
            ))),
        }
    }

    /// The value, if present and not expired.
    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.shared.counters.operation();
        if self.shared.limits.check_key(key).is_err() {
            // No key over the limit can have been stored: absent, as in the memory store, and
            // an oversized key never goes on the wire.
            return Ok(None);
        }
        let mut command = redis::cmd("GET");
        command.arg(self.redis_key(namespace, key));
        self.call(move |mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Stores a value, replacing any other, with an optional time to live.
    pub async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        self.shared.counters.operation();
        self.shared.limits.check_key(key)?;
        self.shared.limits.check_value(value)?;
        let key = self.redis_key(namespace, key);
        let command = match ttl_ms {
            // The memory store keeps an entry expired at once, which reads as absent: in Redis,
            // no entry. Redis refuses `PX 0`.
            Some(0) => redis::cmd("DEL").arg(key).to_owned(),
            Some(ttl) => redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl.min(MAX_TTL_MS))
                .to_owned(),
            None => redis::cmd("SET").arg(key).arg(value).to_owned(),
        };
        self.call(move |mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Removes a value; whether a live one was there.
    pub async fn delete(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        self.shared.counters.operation();
        if self.shared.limits.check_key(key).is_err() {
            // As in `get`: such a key cannot be there.
            return Ok(false);
        }
        let mut command = redis::cmd("DEL");
        command.arg(self.redis_key(namespace, key));
        let removed: u64 = self
            .call(move |mut connection| async move { command.query_async(&mut connection).await })
            .await?;
        Ok(removed > 0)
    }

    /// Removes every key of `namespace` that starts with `prefix` and that `matches` accepts;
    /// how many were removed. Walks the keyspace with `SCAN` and a `MATCH` pattern, a batch
    /// per round trip (never `KEYS`, which blocks Redis for the whole keyspace), and deletes
    /// each batch's matches with one `UNLINK`. Each round trip is bounded by the operation
    /// timeout; a failure part way leaves what was removed so far removed.
    pub async fn delete_matching(
        &self,
        namespace: &str,
        prefix: &str,
        matches: impl Fn(&str) -> bool,
    ) -> Result<usize, KvError> {
        let base = self.redis_key(namespace, "");
        let pattern = format!("{}*", glob_escape(&format!("{base}{prefix}")));
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            self.shared.counters.operation();
            let mut command = redis::cmd("SCAN");
            command
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = self
                .call(
                    move |mut connection| async move { command.query_async(&mut connection).await },
                )
                .await?;
            let doomed: Vec<String> = keys
                .into_iter()
                .filter(|key| key.strip_prefix(&base).is_some_and(&matches))
                .collect();
            if !doomed.is_empty() {
                self.shared.counters.operation();
                let mut command = redis::cmd("UNLINK");
                command.arg(doomed);
                let count: usize = self
                    .call(move |mut connection| async move {
                        command.query_async(&mut connection).await
                    })
                    .await?;
                removed += count;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// The Redis key of a filter's lock: `<prefix>-lock:<namespace>:<key>`, apart from every
    /// filter's keys (`<prefix>:...`).
    pub fn lock_key(&self, namespace: &str, key: &str) -> String {
        format!("{}-lock:{namespace}:{key}", self.shared.prefix)
    }

    /// Takes a single-flight lock (see [`crate::lock`]): one script to take or renew it, then,
    /// while another holds it, a look every few milliseconds until it is gone or `wait` ends.
    pub async fn acquire(
        &self,
        namespace: &str,
        key: &str,
        holder: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Acquire, KvError> {
        self.shared.limits.check_key(key)?;
        let redis_key = self.lock_key(namespace, key);
        let deadline = tokio::time::Instant::now() + wait;
        let lease_ms = millis(lease).clamp(1, MAX_TTL_MS);
        self.shared.counters.operation();
        let (script_key, owner) = (redis_key.clone(), holder.to_owned());
        let took: i64 = self
            .call(move |mut connection| async move {
                ACQUIRE
                    .key(script_key)
                    .arg(owner)
                    .arg(lease_ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        if took == 1 {
            let mut locks = self.taken();
            let keys = locks.entry(holder.to_owned()).or_default();
            if !keys.iter().any(|taken| *taken == key) {
                keys.push(key.to_owned());
            }
            return Ok(Acquire::Acquired);
        }
        loop {
            if tokio::time::Instant::now() + LOCK_POLL > deadline {
                return Ok(Acquire::TimedOut);
            }
            tokio::time::sleep(LOCK_POLL).await;
            self.shared.counters.operation();
            let mut command = redis::cmd("EXISTS");
            command.arg(&redis_key);
            let exists: i64 = self
                .call(
                    move |mut connection| async move { command.query_async(&mut connection).await },
                )
                .await?;
            if exists == 0 {
                return Ok(Acquire::Released);
            }
        }
    }

    fn taken(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<String>>> {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Releases every lock of `namespace` that `holder` took through this gateway and still
    /// holds; how many. Costs nothing when the holder released them itself.
    pub async fn release_all(&self, namespace: &str, holder: &str) -> Result<usize, KvError> {
        let Some(keys) = self.taken().remove(holder) else {
            return Ok(0);
        };
        let mut released = 0;
        for key in keys {
            if self.release(namespace, &key, holder).await? {
                released += 1;
            }
        }
        Ok(released)
    }

    /// Releases a lock `holder` holds; whether it did.
    pub async fn release(&self, namespace: &str, key: &str, holder: &str) -> Result<bool, KvError> {
        self.shared.limits.check_key(key)?;
        {
            let mut locks = self.taken();
            if let Some(keys) = locks.get_mut(holder) {
                keys.retain(|taken| taken != key);
                if keys.is_empty() {
                    locks.remove(holder);
                }
            }
        }
        self.shared.counters.operation();
        let (redis_key, owner) = (self.lock_key(namespace, key), holder.to_owned());
        let released: i64 = self
            .call(move |mut connection| async move {
                RELEASE
                    .key(redis_key)
                    .arg(owner)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(released == 1)
    }

    /// Adds `delta` to the integer at `key` (absent: 0) and returns the new value. The TTL
    /// applies only if this creates the entry.
    pub async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvError> {
        self.shared.counters.operation();
        self.shared.limits.check_key(key)?;
        let key = self.redis_key(namespace, key);
        self.call(move |mut connection| async move {
            INCREMENT
                .key(key)
                .arg(delta)
                .arg(ttl_arg(ttl_ms))
                .invoke_async(&mut connection)
                .await
        })
        .await
    }

    /// Writes `new` only if the current value equals `expected` (`None`: absent or expired).
    /// Returns whether it wrote.
    pub async fn compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        self.shared.counters.operation();
        self.shared.limits.check_key(key)?;
        self.shared.limits.check_value(new)?;
        let mut invocation = COMPARE_AND_SWAP.key(self.redis_key(namespace, key));
        invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(new)
            .arg(ttl_arg(ttl_ms));
        self.call(
            move |mut connection| async move { invocation.invoke_async(&mut connection).await },
        )
        .await
    }

    /// The store's state and counters, for the admin API.
    pub fn status(&self) -> BackendStatus {
        let shared = &self.shared;
        let counters = &shared.counters;
        let answered = counters.answered.load(Ordering::Relaxed);
        let now_ms = millis(shared.created.elapsed());
        BackendStatus {
            backend: "redis",
            state: if shared.live.load(Ordering::Relaxed) > 0 {
                BackendState::Connected
            } else {
                BackendState::Down
            },
            since_ms: now_ms.saturating_sub(shared.changed_at_ms.load(Ordering::Relaxed)),
            operations: counters.operations.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            timeouts: counters.timeouts.load(Ordering::Relaxed),
            mean_latency_us: (answered > 0)
                .then(|| counters.latency_us_total.load(Ordering::Relaxed) / answered),
            max_latency_us: (answered > 0).then(|| counters.latency_us_max.load(Ordering::Relaxed)),
            last_error: shared.last_error.load_full().map(|error| (*error).clone()),
            entries: None,
            bytes: None,
            evictions: None,
        }
    }

    /// The Redis key of a filter's key: `<prefix>:<namespace>:<key>`, the layout the module
    /// documentation describes.
    pub fn redis_key(&self, namespace: &str, key: &str) -> String {
        format!("{}:{namespace}:{key}", self.shared.prefix)
    }

    /// Runs one operation on a live connection, bounded by the operation timeout, and keeps the
    /// counters.
    async fn call<T, F, Fut>(&self, operation: F) -> Result<T, KvError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let shared = &self.shared;
        let (slot, connection) = shared.connection().inspect_err(|_| {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        })?;
        let started = Instant::now();
        let answer = tokio::time::timeout(
            shared.operation_timeout,
            operation(MultiplexedConnection::clone(&connection)),
        )
        .await;
        match answer {
            Err(_) => {
                shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(KvError::Timeout(shared.operation_timeout))
            }
            Ok(Ok(value)) => {
                shared.counters.answered(started.elapsed());
                Ok(value)
            }
            Ok(Err(error)) => match failure(&error, &shared.address) {
                Failure::Refused(refusal) => {
                    shared.counters.answered(started.elapsed());
                    Err(KvError::Refused(refusal))
                }
                Failure::Answered(reason) => {
                    shared.counters.answered(started.elapsed());
                    Err(shared.failed(reason))
                }
                Failure::Connection(reason) => {
                    let previous = slot
                        .connection
                        .compare_and_swap(Arc::as_ptr(&connection), None);
                    let failed = shared.failed(reason);
                    // Only the first caller to see this connection fail empties the slot and
                    // tells the supervisor; a later connection in the slot is left alone.
                    if Option::as_ref(&previous)
                        .is_some_and(|current| Arc::ptr_eq(current, &connection))
                    {
                        slot.lost.notify_one();
                    }
                    Err(failed)
                }
            },
        }
    }
}

/// `text` as a Redis glob pattern that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// The TTL argument of the scripts: `''` for none.
fn ttl_arg(ttl_ms: Option<u64>) -> String {
    ttl_ms.map_or_else(String::new, |ttl| ttl.min(MAX_TTL_MS).to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn failure(error: &RedisError, address: &str) -> Failure {
    match error.code() {
        Some("NOTINTEGER") => return Failure::Refused(Refusal::NotAnInteger),
        Some("OVERFLOW") => return Failure::Refused(Refusal::Overflow),
        _ => {}
    }
    if refuses_the_gateway(error) {
        Failure::Connection(refused(address, error))
    } else if error.is_io_error() || error.is_unrecoverable_error() {
        Failure::Connection(format!(
            "lost the connection to Redis at {address}: {error}"
        ))
    } else {
        Failure::Answered(format!(
            "Redis at {address} answered with an error: {error}"
        ))
    }
}

/// Whether Redis refuses this client as such: a wrong password, or none when one is needed.
fn refuses_the_gateway(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
}

fn refused(address: &str, error: &RedisError) -> String {
    format!(
        "Redis at {address} refused the gateway (wrong password? check the password in \
         kv.redis.url): {error}"
    )
}

impl Counters {
    fn operation(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    fn answered(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.latency_us_total.fetch_add(micros, Ordering::Relaxed);
        self.latency_us_max.fetch_max(micros, Ordering::Relaxed);
    }
}

impl Shared {
    /// A live connection, taking the slots in turn; fails at once when none is live.
    fn connection(&self) -> Result<(&Slot, Arc<MultiplexedConnection>), KvError> {
        let count = self.slots.len();
        let first = if count == 1 {
            0
        } else {
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        };
        (0..count)
            .map(|offset| &self.slots[(first + offset) % count])
            .find_map(|slot| slot.connection.load_full().map(|live| (slot, live)))
            .ok_or_else(|| {
                let reason = self.last_error.load_full().map_or_else(
                    || format!("not connected to Redis at {} yet", self.address),
                    |error| (*error).clone(),
                );
                KvError::Unavailable(reason)
            })
    }

    /// Counts and remembers a failed operation.
    fn failed(&self, reason: String) -> KvError {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.last_error.store(Some(Arc::new(reason.clone())));
        KvError::Unavailable(reason)
    }

    fn state_changed(&self) {
        self.changed_at_ms
            .store(millis(self.created.elapsed()), Ordering::Relaxed);
    }

    /// Puts a new connection in its slot.
    fn publish(&self, index: usize, link: &Link) {
        self.slots[index]
            .connection
            .store(Some(link.connection.clone()));
        if self.live.fetch_add(1, Ordering::SeqCst) == 0 {
            let was_down_ms = millis(self.created.elapsed())
                .saturating_sub(self.changed_at_ms.load(Ordering::Relaxed));
            self.state_changed();
            if self.ever_connected.swap(true, Ordering::Relaxed) {
                tracing::info!(redis = %self.address, was_down_ms, "Redis is reachable again: the kv store is back");
            } else {
                tracing::info!(redis = %self.address, "the kv store is connected to Redis");
            }
        }
    }

    /// Empties a connection's slot once its supervisor has seen it die.
    fn lost(&self, index: usize, reason: String) {
        self.slots[index].connection.store(None);
        self.last_error.store(Some(Arc::new(reason.clone())));
        if self.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state_changed();
            tracing::warn!(redis = %self.address, %reason, "Redis is unreachable: the kv store is down, its operations fail until it is back");
        } else {
            tracing::debug!(redis = %self.address, %reason, "one Redis connection lost");
        }
    }
}

impl Target {
    fn parse(settings: &RedisSettings) -> crate::Result<Target> {
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| Error::BadUrl(error.to_string()))?;
        let (address, shown) = match info.addr() {
            ConnectionAddr::Tcp(host, port) if host.contains(':') => (
                Address::Tcp(host.clone(), *port),
                format!("[{host}]:{port}"),
            ),
            ConnectionAddr::Tcp(host, port) => {
                (Address::Tcp(host.clone(), *port), format!("{host}:{port}"))
            }
            ConnectionAddr::Unix(path) => (Address::Unix(path.clone()), path.display().to_string()),
            _ => {
                return Err(Error::BadUrl("TLS (rediss://) is not supported".to_owned()));
            }
        };
        Ok(Target {
            address,
            redis: info.redis_settings().clone(),
            connect_timeout: settings.connect_timeout,
            // Never shorter than an operation may wait: a Redis that is only slow must not lose
            // the connection operations are waiting on.
            probe_timeout: settings.connect_timeout.max(settings.operation_timeout),
            shown,
        })
    }

    /// One connection attempt, bounded by the connect timeout; the error is the reason the
    /// store gives while down.
    async fn connect(&self) -> Result<Link, String> {
        match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(Ok(link)) => Ok(link),
            Ok(Err(error)) if refuses_the_gateway(&error) => Err(refused(&self.shown, &error)),
            Ok(Err(error)) => Err(format!(
                "cannot connect to Redis at {}: {error}",
                self.shown
            )),
            Err(_) => Err(format!(
                "Redis at {} did not answer within {:?} (kv.redis.connect_timeout)",
                self.shown, self.connect_timeout
            )),
        }
    }

    async fn open(&self) -> RedisResult<Link> {
        match &self.address {
            Address::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                // Operations are small and latency-bound: do not wait to fill a segment.
                stream.set_nodelay(true)?;
                self.handshake(stream).await
            }
            Address::Unix(path) => {
                self.handshake(tokio::net::UnixStream::connect(path).await?)
                    .await
            }
        }
    }

    /// Authenticates, starts the driver on this runtime and loads the scripts.
    async fn handshake<S>(&self, stream: S) -> RedisResult<Link>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The store bounds every operation on the caller's runtime; redis-rs's own timeout
        // would run on whichever runtime polls the request.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let (mut connection, driver) =
            MultiplexedConnection::new_with_config(&self.redis, stream, config).await?;
        let driver = Driver(tokio::spawn(driver));
        // Loading the scripts on every connection saves the first operation after a Redis
        // restart a NOSCRIPT round trip, and checks that this Redis lets the gateway in: a
        // Redis that wants a password accepts the connection and refuses the first command.
        for script in [&*INCREMENT, &*COMPARE_AND_SWAP] {
            script.load_async(&mut connection).await?;
        }
        Ok(Link {
            connection: Arc::new(connection),
            driver,
        })
    }
}

/// The body of the `kv-redis` thread: first connection attempts, then one supervisor per
/// connection until the store is dropped.
fn run(
    shared: Arc<Shared>,
    target: Target,
    ready: std::sync::mpsc::SyncSender<std::io::Result<()>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    runtime.block_on(async move {
        let target = Arc::new(target);
        let attempts: Vec<_> = (0..shared.slots.len())
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move { target.connect().await })
            })
            .collect();
        let mut firsts = Vec::with_capacity(attempts.len());
        for (index, attempt) in attempts.into_iter().enumerate() {
            let first = attempt
                .await
                .unwrap_or_else(|error| Err(format!("the connection attempt failed: {error}")));
            match &first {
                Ok(link) => shared.publish(index, link),
                Err(reason) => shared.last_error.store(Some(Arc::new(reason.clone()))),
            }
            firsts.push(first);
        }
        if shared.live.load(Ordering::SeqCst) == 0
            && let Some(Err(reason)) = firsts.first()
        {
            tracing::warn!(redis = %shared.address, %reason, "cannot reach Redis: the kv store starts down and keeps trying to connect");
        }
        let _ = ready.send(Ok(()));
        for (index, first) in firsts.into_iter().enumerate() {
            tokio::spawn(supervise(shared.clone(), index, target.clone(), first));
        }
        // The sender is dropped with the store; leaving drops the runtime, its supervisors and
        // drivers, which closes the connections.
        let _ = stopped.await;
    });
}

/// Keeps one connection slot filled: watches the live connection, and reconnects with backoff
/// when it dies or an attempt fails.
async fn supervise(
    shared: Arc<Shared>,
    index: usize,
    target: Arc<Target>,
    mut attempt: Result<Link, String>,
) {
    let mut backoff = Backoff::new();
    loop {
        match attempt {
            Ok(link) => {
                let connected = Instant::now();
                let reason = watch(&shared, index, link, &target).await;
                shared.lost(index, reason);
                if connected.elapsed() >= STABLE {
                    backoff = Backoff::new();
                }
            }
            Err(reason) => {
                tracing::debug!(redis = %shared.address, %reason, "a Redis connection attempt failed");
                shared.last_error.store(Some(Arc::new(reason)));
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
        attempt = target.connect().await;
        if let Ok(link) = &attempt {
            shared.publish(index, link);
        }
    }
}

/// Waits until a published connection dies; returns why.
async fn watch(shared: &Shared, index: usize, mut link: Link, target: &Target) -> String {
    let slot = &shared.slots[index];
    let mut probe =
        tokio::time::interval_at(tokio::time::Instant::now() + PROBE_EVERY, PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut link.driver.0 => {
                return format!("Redis at {} closed the connection", target.shown);
            }
            () = slot.lost.notified() => {
                let still_ours = Option::as_ref(&slot.connection.load())
                    .is_some_and(|current| Arc::ptr_eq(current, &link.connection));
                // A wake-up left over from an earlier connection of this slot: ignore it.
                if !still_ours {
                    return shared.last_error.load_full().map_or_else(
                        || format!("lost the connection to Redis at {}", target.shown),
                        |error| (*error).clone(),
                    );
                }
            }
            _ = probe.tick() => {
                let mut connection = MultiplexedConnection::clone(&link.connection);
                let ping = redis::cmd("PING");
                let pong = ping.query_async::<()>(&mut connection);
                match tokio::time::timeout(target.probe_timeout, pong).await {
                    Err(_) => {
                        return format!(
                            "Redis at {} did not answer a PING within {:?}",
                            target.shown, target.probe_timeout
                        );
                    }
                    Ok(Err(error)) => {
                        if let Failure::Connection(reason) = failure(&error, &target.shown) {
                            return reason;
                        }
                    }
                    Ok(Ok(())) => {}
                }
            }
        }
    }
}

/// Waits between reconnection attempts: doubling from [`FIRST_RETRY`] to [`LAST_RETRY`], each
/// with up to a quarter more at random, so gateways that lost one Redis together do not all
/// come back in the same millisecond.
struct Backoff {
    next: Duration,
    random: RandomState,
    attempts: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_RETRY,
            random: RandomState::new(),
            attempts: 0,
        }
    }

    fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(LAST_RETRY);
        self.attempts += 1;
        let spread = millis(base) / 4 + 1;
        base + Duration::from_millis(self.random.hash_one(self.attempts) % spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn a_store_without_its_redis_starts_down_and_fails_at_once() {
        // A port nothing listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let started = Instant::now();
        let store = RedisStore::start(
            &settings(&format!("redis://127.0.0.1:{port}")),
            Limits::default(),
        )
        .expect("the store starts without Redis");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(store.status().state, BackendState::Down);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let get = store.get("f", "k");
        // The filter runtime may move an operation between threads while it waits.
        assert_send(&get);
        let started = Instant::now();
        match runtime.block_on(get) {
            Err(KvError::Unavailable(reason)) => {
                assert!(reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(20), "failed fast");
        let status = store.status();
        assert_eq!((status.operations, status.errors), (1, 1));
    }

    fn settings(url: &str) -> RedisSettings {
        RedisSettings {
            url: url.to_owned(),
            operation_timeout: Duration::from_millis(20),
            connect_timeout: Duration::from_secs(1),
            key_prefix: "gateway".to_owned(),
            connections: 1,
        }
    }

    #[test]
    fn the_backoff_doubles_to_its_ceiling_with_a_little_jitter() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        for (wait, base) in waits.iter().zip([50, 100, 200, 400, 800, 1600, 2000, 2000]) {
            let base = Duration::from_millis(base);
            assert!(
                *wait >= base && *wait <= base + base / 4 + Duration::from_millis(1),
                "{waits:?}"
            );
        }
    }

    #[test]
    fn ttls_beyond_what_redis_accepts_are_clamped() {
        assert_eq!(ttl_arg(None), "");
        assert_eq!(ttl_arg(Some(150)), "150");
        assert_eq!(ttl_arg(Some(u64::MAX)), MAX_TTL_MS.to_string());
    }

    #[test]
    fn the_address_shown_never_holds_the_password() {
        let target = Target::parse(&settings("redis://:secret@127.0.0.1:6390/2")).expect("a url");
        assert_eq!(target.shown, "127.0.0.1:6390");
        let target = Target::parse(&settings("redis://[::1]:6390")).expect("a url");
        assert_eq!(target.shown, "[::1]:6390");
    }

    #[test]
    fn urls_the_store_cannot_use_are_refused() {
        for url in ["rediss://127.0.0.1:6379", "http://127.0.0.1", "not a url"] {
            assert!(
                matches!(Target::parse(&settings(url)), Err(Error::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn the_script_errors_are_refusals_and_auth_errors_refuse_the_gateway() {
        let code = |code: &str| redis::make_extension_error(code.to_owned(), None);
        assert!(matches!(
            failure(&code("NOTINTEGER"), "a"),
            Failure::Refused(Refusal::NotAnInteger)
        ));
        assert!(matches!(
            failure(&code("OVERFLOW"), "a"),
            Failure::Refused(Refusal::Overflow)
        ));
        for auth in ["NOAUTH", "WRONGPASS"] {
            assert!(
                matches!(failure(&code(auth), "a"), Failure::Connection(reason) if reason.contains("password")),
                "{auth}"
            );
        }
        let broken = RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(matches!(failure(&broken, "a"), Failure::Connection(_)));
        assert!(matches!(
            failure(&code("WRONGTYPE"), "a"),
            Failure::Answered(_)
        ));
    }
}
