//! The two stores behind the `kv` capability against one conformance suite: each case is
//! written once over a `KvBackend` and run on the memory store and on a real Redis, so a filter
//! gets the same answers from both. Then what only the Redis store has to get right: callers on
//! several runtimes, the key layout an operator sees, and Redis stopping, restarting, stalling
//! or refusing the password.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gateway_config::RedisSettings;
use gateway_kv::{BackendState, KvBackend, KvError, MemoryStore, RedisStore};
use gateway_rules::kv::{KvError as Refusal, Limits};
use gateway_tests::RedisServer;

const LIMITS: Limits = Limits {
    max_entries: 10_000,
    max_key_bytes: 64,
    max_value_bytes: 256,
    max_bytes: 1 << 20,
};

/// Long enough never to fire on a loaded test machine, except where a test wants it to.
const GENEROUS: Duration = Duration::from_secs(2);

fn settings(server: &RedisServer) -> RedisSettings {
    RedisSettings {
        url: server.url(),
        operation_timeout: GENEROUS,
        connect_timeout: Duration::from_secs(1),
        key_prefix: "gateway".to_owned(),
        connections: 2,
    }
}

fn redis_store(settings: &RedisSettings) -> Arc<RedisStore> {
    RedisStore::start(settings, LIMITS).expect("the store starts")
}

/// Polls until `key` reads absent; panics after `within`. Returns when it was first seen gone.
async fn wait_until_absent(
    kv: &KvBackend,
    namespace: &str,
    key: &str,
    within: Duration,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if kv.get(namespace, key).await.expect("get").is_none() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{key} still there after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sleep_until(instant: Instant) {
    tokio::time::sleep_until(instant.into()).await;
}

fn text(value: &str) -> Option<Vec<u8>> {
    Some(value.as_bytes().to_vec())
}

// The conformance cases: each takes the store and a namespace of its own.

async fn values_are_stored_overwritten_and_kept_as_bytes(kv: &KvBackend, ns: &str) {
    assert_eq!(kv.get(ns, "k").await, Ok(None));
    kv.set(ns, "k", b"one".to_vec(), None).await.expect("set");
    assert_eq!(kv.get(ns, "k").await, Ok(text("one")));
    kv.set(ns, "k", b"two".to_vec(), None)
        .await
        .expect("overwrite");
    assert_eq!(kv.get(ns, "k").await, Ok(text("two")));
    let every_byte: Vec<u8> = (0..=255).collect();
    kv.set(ns, "binary", every_byte.clone(), None)
        .await
        .expect("set");
    assert_eq!(kv.get(ns, "binary").await, Ok(Some(every_byte)));
    kv.set(ns, "empty", Vec::new(), None).await.expect("set");
    assert_eq!(
        kv.get(ns, "empty").await,
        Ok(Some(Vec::new())),
        "an empty value is not an absent one"
    );
}

async fn values_expire_at_their_ttl(kv: &KvBackend, ns: &str) {
    let set_at = Instant::now();
    kv.set(ns, "short", b"v".to_vec(), Some(150))
        .await
        .expect("set");
    kv.set(ns, "forever", b"v".to_vec(), None)
        .await
        .expect("set");
    assert_eq!(kv.get(ns, "short").await, Ok(text("v")));
    let gone = wait_until_absent(kv, ns, "short", Duration::from_secs(3)).await;
    assert!(
        gone - set_at >= Duration::from_millis(140),
        "expired after {:?}, before its TTL",
        gone - set_at
    );
    assert_eq!(kv.get(ns, "forever").await, Ok(text("v")));

    kv.set(ns, "renewed", b"v".to_vec(), Some(150))
        .await
        .expect("set");
    kv.set(ns, "renewed", b"w".to_vec(), None)
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        kv.get(ns, "renewed").await,
        Ok(text("w")),
        "a set without a TTL drops the old one"
    );
}

async fn a_zero_ttl_is_expired_at_once(kv: &KvBackend, ns: &str) {
    kv.set(ns, "k", b"v".to_vec(), None).await.expect("set");
    kv.set(ns, "k", b"w".to_vec(), Some(0)).await.expect("set");
    assert_eq!(kv.get(ns, "k").await, Ok(None));
    assert_eq!(kv.increment(ns, "n", 3, Some(0)).await, Ok(3));
    assert_eq!(kv.get(ns, "n").await, Ok(None));
    assert_eq!(
        kv.compare_and_swap(ns, "c", None, b"v".to_vec(), Some(0))
            .await,
        Ok(true)
    );
    assert_eq!(kv.get(ns, "c").await, Ok(None));
}

async fn delete_says_whether_the_entry_was_there(kv: &KvBackend, ns: &str) {
    assert_eq!(kv.delete(ns, "k").await, Ok(false));
    kv.set(ns, "k", b"v".to_vec(), None).await.expect("set");
    assert_eq!(kv.delete(ns, "k").await, Ok(true));
    assert_eq!(kv.get(ns, "k").await, Ok(None));
    assert_eq!(kv.delete(ns, "k").await, Ok(false));
    kv.set(ns, "expiring", b"v".to_vec(), Some(100))
        .await
        .expect("set");
    wait_until_absent(kv, ns, "expiring", Duration::from_secs(3)).await;
    assert_eq!(
        kv.delete(ns, "expiring").await,
        Ok(false),
        "an expired entry is not there to delete"
    );
}

async fn increments_count_from_zero_in_decimal_text(kv: &KvBackend, ns: &str) {
    assert_eq!(kv.increment(ns, "n", 5, None).await, Ok(5));
    assert_eq!(kv.get(ns, "n").await, Ok(text("5")));
    assert_eq!(kv.increment(ns, "n", -7, None).await, Ok(-2));
    assert_eq!(kv.get(ns, "n").await, Ok(text("-2")));
    assert_eq!(kv.increment(ns, "n", 0, None).await, Ok(-2));
    kv.set(ns, "set", b"41".to_vec(), None).await.expect("set");
    assert_eq!(kv.increment(ns, "set", 1, None).await, Ok(42));
    assert_eq!(
        kv.increment(ns, "low", i64::MIN, None).await,
        Ok(i64::MIN),
        "a new counter starts from 0 whatever the delta"
    );
}

async fn increments_are_exact_to_the_end_of_i64_and_refuse_overflow(kv: &KvBackend, ns: &str) {
    let almost = (i64::MAX - 1).to_string();
    kv.set(ns, "big", almost.into_bytes(), None)
        .await
        .expect("set");
    assert_eq!(kv.increment(ns, "big", 1, None).await, Ok(i64::MAX));
    assert_eq!(kv.get(ns, "big").await, Ok(text(&i64::MAX.to_string())));
    assert_eq!(
        kv.increment(ns, "big", 1, None).await,
        Err(KvError::Refused(Refusal::Overflow))
    );
    assert_eq!(
        kv.get(ns, "big").await,
        Ok(text(&i64::MAX.to_string())),
        "a refused increment changes nothing"
    );
    kv.set(ns, "small", i64::MIN.to_string().into_bytes(), None)
        .await
        .expect("set");
    assert_eq!(
        kv.increment(ns, "small", -1, None).await,
        Err(KvError::Refused(Refusal::Overflow))
    );
}

async fn only_integers_can_be_incremented(kv: &KvBackend, ns: &str) {
    for value in [
        "abc",
        "1.5",
        "",
        "99999999999999999999",
        "+5",
        "007",
        "-0",
        " 5",
    ] {
        kv.set(ns, "k", value.as_bytes().to_vec(), None)
            .await
            .expect("set");
        assert_eq!(
            kv.increment(ns, "k", 1, None).await,
            Err(KvError::Refused(Refusal::NotAnInteger)),
            "{value:?}"
        );
        assert_eq!(kv.get(ns, "k").await, Ok(text(value)), "unchanged");
    }
}

async fn an_increments_ttl_applies_only_when_it_creates_the_counter(kv: &KvBackend, ns: &str) {
    let created = Instant::now();
    assert_eq!(kv.increment(ns, "window", 1, Some(400)).await, Ok(1));
    sleep_until(created + Duration::from_millis(200)).await;
    assert_eq!(kv.increment(ns, "window", 1, Some(400)).await, Ok(2));
    // Had the second increment renewed the TTL, the counter would live until about 600 ms.
    sleep_until(created + Duration::from_millis(500)).await;
    assert_eq!(
        kv.get(ns, "window").await,
        Ok(None),
        "the window ends at the first increment's TTL"
    );
    assert_eq!(
        kv.increment(ns, "window", 1, Some(400)).await,
        Ok(1),
        "a new window"
    );

    kv.set(ns, "plain", b"1".to_vec(), None).await.expect("set");
    assert_eq!(kv.increment(ns, "plain", 1, Some(100)).await, Ok(2));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        kv.get(ns, "plain").await,
        Ok(text("2")),
        "an increment does not add a TTL to an existing entry"
    );
}

async fn compare_and_swap_writes_only_on_a_match(kv: &KvBackend, ns: &str) {
    assert_eq!(
        kv.compare_and_swap(ns, "k", None, b"v1".to_vec(), None)
            .await,
        Ok(true),
        "absent as expected"
    );
    assert_eq!(
        kv.compare_and_swap(ns, "k", None, b"v2".to_vec(), None)
            .await,
        Ok(false),
        "present, absence expected"
    );
    assert_eq!(
        kv.compare_and_swap(ns, "k", Some(b"v0"), b"v2".to_vec(), None)
            .await,
        Ok(false)
    );
    assert_eq!(kv.get(ns, "k").await, Ok(text("v1")));
    assert_eq!(
        kv.compare_and_swap(ns, "k", Some(b"v1"), b"v2".to_vec(), None)
            .await,
        Ok(true)
    );
    assert_eq!(kv.get(ns, "k").await, Ok(text("v2")));
    assert_eq!(
        kv.compare_and_swap(ns, "missing", Some(b"v"), b"w".to_vec(), None)
            .await,
        Ok(false)
    );
    assert_eq!(kv.get(ns, "missing").await, Ok(None));
    kv.set(ns, "empty", Vec::new(), None).await.expect("set");
    assert_eq!(
        kv.compare_and_swap(ns, "empty", None, b"w".to_vec(), None)
            .await,
        Ok(false),
        "an empty value is not absent"
    );
    assert_eq!(
        kv.compare_and_swap(ns, "empty", Some(b""), b"w".to_vec(), None)
            .await,
        Ok(true)
    );
}

async fn compare_and_swap_sets_or_drops_the_ttl(kv: &KvBackend, ns: &str) {
    assert_eq!(
        kv.compare_and_swap(ns, "k", None, b"v1".to_vec(), Some(150))
            .await,
        Ok(true)
    );
    assert_eq!(kv.get(ns, "k").await, Ok(text("v1")));
    wait_until_absent(kv, ns, "k", Duration::from_secs(3)).await;
    assert_eq!(
        kv.compare_and_swap(ns, "k", None, b"v2".to_vec(), None)
            .await,
        Ok(true),
        "an expired entry counts as absent"
    );

    kv.set(ns, "t", b"v".to_vec(), Some(200))
        .await
        .expect("set");
    assert_eq!(
        kv.compare_and_swap(ns, "t", Some(b"v"), b"w".to_vec(), None)
            .await,
        Ok(true)
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        kv.get(ns, "t").await,
        Ok(text("w")),
        "a swap without a TTL drops the old one"
    );
}

async fn keys_and_values_over_the_limits_are_refused_alike(kv: &KvBackend, ns: &str) {
    let long = "k".repeat(65);
    let large = vec![b'v'; 257];
    let key_too_long = Err(KvError::Refused(Refusal::KeyTooLong(65, 64)));
    let too_large = Err(KvError::Refused(Refusal::ValueTooLarge(257, 256)));
    assert_eq!(kv.set(ns, &long, b"v".to_vec(), None).await, key_too_long);
    assert_eq!(kv.set(ns, "k", large.clone(), None).await, too_large);
    assert_eq!(
        kv.set(ns, &long, large.clone(), None).await,
        key_too_long,
        "the key is checked first"
    );
    assert_eq!(
        kv.increment(ns, &long, 1, None).await.map(|_| ()),
        key_too_long
    );
    assert_eq!(
        kv.compare_and_swap(ns, &long, None, b"v".to_vec(), None)
            .await
            .map(|_| ()),
        key_too_long
    );
    assert_eq!(
        kv.compare_and_swap(ns, "k", None, large, None)
            .await
            .map(|_| ()),
        too_large
    );
    assert_eq!(kv.get(ns, &long).await, Ok(None));
    assert_eq!(kv.delete(ns, &long).await, Ok(false));
    assert_eq!(kv.get(ns, "k").await, Ok(None), "nothing was written");
    let at_limit = "k".repeat(64);
    kv.set(ns, &at_limit, vec![b'v'; 256], None)
        .await
        .expect("a key and value at the limits");
    assert_eq!(kv.get(ns, &at_limit).await, Ok(Some(vec![b'v'; 256])));
}

async fn namespaces_do_not_see_each_other(kv: &KvBackend, ns: &str) {
    let other = format!("{ns}-other");
    kv.set(ns, "k", b"mine".to_vec(), None).await.expect("set");
    kv.set(&other, "k", b"theirs".to_vec(), None)
        .await
        .expect("set");
    assert_eq!(kv.increment(ns, "n", 1, None).await, Ok(1));
    assert_eq!(kv.increment(&other, "n", 1, None).await, Ok(1));
    assert_eq!(kv.get(ns, "k").await, Ok(text("mine")));
    assert_eq!(kv.get(&other, "k").await, Ok(text("theirs")));
    assert_eq!(kv.delete(ns, "k").await, Ok(true));
    assert_eq!(kv.get(&other, "k").await, Ok(text("theirs")));
    // A filter's key cannot reach into another namespace, whatever it holds.
    assert_eq!(kv.get(ns, "-other:k").await, Ok(None));
}

/// Runs every case on a fresh memory store and on a fresh Redis, in a namespace named after it.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod on_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let kv = gateway_kv::KvBackend::Memory(std::sync::Arc::new(
                        gateway_kv::MemoryStore::new(super::LIMITS),
                    ));
                    super::$case(&kv, stringify!($case)).await;
                }
            )*
        }

        mod on_redis {
            $(
                #[tokio::test]
                async fn $case() {
                    let server = gateway_tests::RedisServer::start();
                    let kv = gateway_kv::KvBackend::Redis(super::redis_store(&super::settings(&server)));
                    super::$case(&kv, stringify!($case)).await;
                }
            )*
        }
    };
}

conformance!(
    values_are_stored_overwritten_and_kept_as_bytes,
    values_expire_at_their_ttl,
    a_zero_ttl_is_expired_at_once,
    delete_says_whether_the_entry_was_there,
    increments_count_from_zero_in_decimal_text,
    increments_are_exact_to_the_end_of_i64_and_refuse_overflow,
    only_integers_can_be_incremented,
    an_increments_ttl_applies_only_when_it_creates_the_counter,
    compare_and_swap_writes_only_on_a_match,
    compare_and_swap_sets_or_drops_the_ttl,
    keys_and_values_over_the_limits_are_refused_alike,
    namespaces_do_not_see_each_other,
);

#[test]
fn the_memory_store_reports_itself_connected_with_its_entries() {
    let store = MemoryStore::new(LIMITS);
    store.set("f", "k", b"v".to_vec(), None).expect("set");
    let status = KvBackend::Memory(Arc::new(store)).status();
    assert_eq!(status.backend, "memory");
    assert_eq!(status.state, BackendState::Connected);
    assert_eq!(status.entries, Some(1));
    assert_eq!(status.operations, 1);
}

// Redis only.

/// Runs `tasks` tasks of `work` on a current-thread runtime of its own thread, as the gateway's
/// workers do; returns when all are done.
fn on_a_worker_thread<F, Fut>(tasks: usize, work: F) -> std::thread::JoinHandle<()>
where
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let handles: Vec<_> = (0..tasks)
                .map(|n| tokio::task::spawn_local(work(n)))
                .collect();
            for handle in handles {
                handle.await.expect("the task finished");
            }
        });
    })
}

#[test]
fn connections_made_on_the_redis_thread_serve_callers_on_other_runtimes() {
    let server = RedisServer::start();
    // Started outside any runtime: the connections belong to the store's own thread.
    let store = redis_store(&settings(&server));
    let first = std::thread::spawn({
        let store = store.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                store.set("f", "k", b"v", None).await.expect("set");
            });
        }
    });
    first.join().expect("the first caller finished");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        assert_eq!(store.get("f", "k").await, Ok(Some(b"v".to_vec())));
    });
    // A runtime that is gone takes nothing of the store with it.
    drop(runtime);
    let again = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    again.block_on(async {
        assert_eq!(store.delete("f", "k").await, Ok(true));
    });
}

#[test]
fn concurrent_increments_from_two_runtimes_are_all_counted() {
    let server = RedisServer::start();
    let store = redis_store(&settings(&server));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            on_a_worker_thread(4, move |_| {
                let store = store.clone();
                async move {
                    for _ in 0..250 {
                        store
                            .increment("rate", "client", 1, Some(60_000))
                            .await
                            .expect("increment");
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("the worker finished");
    }
    assert_eq!(server.command(&["GET", "gateway:rate:client"]), "2000");
    let status = store.status();
    assert_eq!(status.operations, 2000);
    assert_eq!((status.errors, status.timeouts), (0, 0));
    assert!(status.mean_latency_us.is_some() && status.max_latency_us.is_some());
}

#[test]
fn compare_and_swap_loops_never_lose_an_update() {
    let server = RedisServer::start();
    let store = redis_store(&settings(&server));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            on_a_worker_thread(4, move |_| {
                let store = store.clone();
                async move {
                    for _ in 0..50 {
                        loop {
                            let current = store.get("cas", "n").await.expect("get");
                            let next = current.as_deref().map_or(0, |text| {
                                std::str::from_utf8(text)
                                    .expect("text")
                                    .parse::<u64>()
                                    .expect("a number")
                            }) + 1;
                            let swapped = store
                                .compare_and_swap(
                                    "cas",
                                    "n",
                                    current.as_deref(),
                                    next.to_string().as_bytes(),
                                    None,
                                )
                                .await
                                .expect("compare and swap");
                            if swapped {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("the worker finished");
    }
    assert_eq!(server.command(&["GET", "gateway:cas:n"]), "400");
}

#[tokio::test]
async fn keys_are_laid_out_as_documented_for_redis_cli() {
    let server = RedisServer::start();
    let store = redis_store(&RedisSettings {
        key_prefix: "edge".to_owned(),
        ..settings(&server)
    });
    let key = store.redis_key("rate-limit", "client:203.0.113.7");
    assert_eq!(key, "edge:rate-limit:client:203.0.113.7");
    assert_eq!(
        store
            .increment("rate-limit", "client:203.0.113.7", 17, Some(60_000))
            .await,
        Ok(17)
    );
    assert_eq!(server.command(&["GET", &key]), "17");
    let ttl: u64 = server.command(&["PTTL", &key]).parse().expect("a PTTL");
    assert!(ttl > 50_000 && ttl <= 60_000, "PTTL {ttl}");
    store
        .set("cache", "page", b"<html>", None)
        .await
        .expect("set");
    assert_eq!(server.command(&["GET", "edge:cache:page"]), "<html>");
    assert_eq!(server.command(&["PTTL", "edge:cache:page"]), "-1");
    server.command(&["SET", "edge:cache:written-by-hand", "hello"]);
    assert_eq!(
        store.get("cache", "written-by-hand").await,
        Ok(Some(b"hello".to_vec()))
    );
}

/// Polls the store with a `get` until it answers; panics after `within`.
async fn wait_until_answering(store: &RedisStore, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match store.get("f", "probe").await {
            Ok(_) => return,
            Err(error) => assert!(
                Instant::now() < deadline,
                "still failing after {within:?}: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stopped_redis_fails_operations_at_once_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let store = redis_store(&settings(&server));
    store.set("f", "k", b"v", None).await.expect("set");
    assert_eq!(store.status().state, BackendState::Connected);

    server.stop();
    let started = Instant::now();
    let failed = store.get("f", "k").await;
    assert!(matches!(failed, Err(KvError::Unavailable(_))), "{failed:?}");
    assert!(
        started.elapsed() < GENEROUS / 4,
        "took {:?}: an operation on a dead connection must not wait for its timeout",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while store.status().state != BackendState::Down {
        assert!(
            Instant::now() < deadline,
            "still connected: {:?}",
            store.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    for _ in 0..100 {
        let failed = store.increment("f", "n", 1, None).await;
        assert!(matches!(failed, Err(KvError::Unavailable(_))), "{failed:?}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "100 operations while down took {:?}",
        started.elapsed()
    );
    let status = store.status();
    assert!(status.errors >= 101, "{status:?}");
    assert!(status.last_error.is_some(), "{status:?}");

    server.restart();
    wait_until_answering(&store, Duration::from_secs(5)).await;
    assert_eq!(store.status().state, BackendState::Connected);
    store.set("f", "k", b"again", None).await.expect("set");
    assert_eq!(store.get("f", "k").await, Ok(Some(b"again".to_vec())));
    assert_eq!(
        store.increment("f", "n", 1, None).await,
        Ok(1),
        "the scripts work on the restarted, empty Redis"
    );
}

#[test]
fn a_slow_redis_times_out_without_losing_the_connection() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(50);
    let store = redis_store(&RedisSettings {
        operation_timeout: timeout,
        connections: 1,
        ..settings(&server)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime
        .block_on(store.set("f", "k", b"v", None))
        .expect("set");
    let watched = Instant::now();
    let since_before = store.status().since_ms;
    std::thread::scope(|scope| {
        let sleeper = scope.spawn(|| server.command(&["DEBUG", "SLEEP", "0.3"]));
        // Let DEBUG SLEEP reach Redis first.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            runtime.block_on(store.get("f", "k")),
            Err(KvError::Timeout(timeout))
        );
        assert_eq!(sleeper.join().expect("the sleeper finished"), "OK");
    });
    assert_eq!(
        runtime.block_on(store.get("f", "k")),
        Ok(Some(b"v".to_vec())),
        "the connection is usable once Redis answers again"
    );
    let status = store.status();
    assert_eq!(status.state, BackendState::Connected);
    assert_eq!(status.timeouts, 1);
    let watched_ms = u64::try_from(watched.elapsed().as_millis()).expect("ms");
    assert!(
        status.since_ms + 5 >= since_before + watched_ms,
        "the state changed while Redis slept: {status:?}"
    );
}

#[test]
fn a_redis_silent_for_longer_than_any_operation_may_wait_is_treated_as_gone() {
    let server = RedisServer::start();
    let store = redis_store(&RedisSettings {
        operation_timeout: Duration::from_millis(50),
        connect_timeout: Duration::from_millis(200),
        connections: 1,
        ..settings(&server)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // The socket stays open, as with a host gone or a partition: only the PING notices.
    let url = server.url();
    let sleeper =
        std::thread::spawn(move || RedisServer::command_at(&url, &["DEBUG", "SLEEP", "2.5"]));
    let deadline = Instant::now() + Duration::from_millis(2000);
    while store.status().state != BackendState::Down {
        assert!(
            Instant::now() < deadline,
            "still connected: {:?}",
            store.status()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let failed = runtime.block_on(store.get("f", "k"));
    assert!(
        matches!(&failed, Err(KvError::Unavailable(reason)) if reason.contains("PING")),
        "{failed:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(20), "failed fast");
    assert_eq!(sleeper.join().expect("the sleeper finished"), "OK");
    runtime.block_on(wait_until_answering(&store, Duration::from_secs(5)));
    assert_eq!(store.status().state, BackendState::Connected);
}

#[tokio::test]
async fn a_wrong_or_missing_password_is_reported_as_refused() {
    let server = RedisServer::start_with_password("right");
    for url in [
        format!("redis://:hunter2@127.0.0.1:{}", server.port()),
        format!("redis://127.0.0.1:{}", server.port()),
    ] {
        let store = redis_store(&RedisSettings {
            url: url.clone(),
            ..settings(&server)
        });
        let refused = store.get("f", "k").await;
        match &refused {
            Err(KvError::Unavailable(reason)) => assert!(
                reason.contains("password") && reason.contains("refused the gateway"),
                "{url}: {reason}"
            ),
            other => panic!("{url}: {other:?}"),
        }
        let status = store.status();
        assert_eq!(status.state, BackendState::Down, "{url}");
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|error| !error.contains("hunter2")),
            "the reason never shows a password: {status:?}"
        );
    }
    let store = redis_store(&settings(&server));
    assert_eq!(store.status().state, BackendState::Connected);
    assert_eq!(store.increment("f", "n", 1, None).await, Ok(1));
}

#[tokio::test]
async fn a_store_started_before_redis_connects_once_it_is_up() {
    let mut server = RedisServer::start();
    server.stop();
    let started = Instant::now();
    let store = redis_store(&settings(&server));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "start took {:?}, more than about connect_timeout",
        started.elapsed()
    );
    let status = store.status();
    assert_eq!(status.state, BackendState::Down);
    assert!(status.last_error.is_some(), "{status:?}");
    let started = Instant::now();
    let failed = store.set("f", "k", b"v", None).await;
    assert!(matches!(failed, Err(KvError::Unavailable(_))), "{failed:?}");
    assert!(started.elapsed() < Duration::from_millis(100));

    server.restart();
    wait_until_answering(&store, Duration::from_secs(5)).await;
    store.set("f", "k", b"v", None).await.expect("set");
    assert_eq!(store.status().state, BackendState::Connected);
}

/// Every log line of this process, kept for the test that counts them.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .with_writer(move || Capture(logs))
            .init();
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn going_down_and_coming_back_are_logged_once_each() {
    let logs = captured_logs();
    let mut server = RedisServer::start();
    let field = format!("redis=127.0.0.1:{}", server.port());
    let store = redis_store(&settings(&server));
    server.stop();
    for _ in 0..50 {
        let _ = store.get("f", "k").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..50 {
        let _ = store.get("f", "k").await;
    }
    server.restart();
    wait_until_answering(&store, Duration::from_secs(5)).await;
    let lines: Vec<String> = String::from_utf8_lossy(&logs.lock().expect("log lock"))
        .lines()
        .filter(|line| line.split_whitespace().any(|word| word == field))
        .map(str::to_owned)
        .collect();
    let count = |level: &str| lines.iter().filter(|line| line.contains(level)).count();
    assert_eq!(count(" WARN "), 1, "{lines:#?}");
    // One when it first connected, one when it came back.
    assert_eq!(count(" INFO "), 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("WARN") && line.contains("reason=")),
        "the warning gives the reason: {lines:#?}"
    );
}
