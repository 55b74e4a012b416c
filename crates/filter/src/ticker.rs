//! The thread that advances the engine's epoch, which is how a call past its deadline is
//! noticed.
//!
//! Each call records its deadline as a time; each tick makes the calls in progress check theirs
//! (see `guarded` in `instance`), so a tick only decides how soon after its deadline a call is
//! stopped. The ticker therefore ticks no faster than the calls need: every tenth of the shortest
//! timeout any call has had, between [`MIN_TICK`] and [`MAX_TICK`] (every 5 ms for the default 50
//! ms timeout). It sleeps once no call has begun for [`QUIET_BEFORE_SLEEP`], and the first call
//! after that wakes it. On a small machine a thread that wakes a thousand times a second costs the
//! gateway a measurable share of its throughput: every wake-up takes a core from the threads
//! serving requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// The bounds of the tick: the precision a 1 ms timeout needs, and what a long one can bear.
const MIN_TICK: Duration = Duration::from_millis(1);
const MAX_TICK: Duration = Duration::from_millis(10);

/// How long the ticker keeps ticking after the last call began.
const QUIET_BEFORE_SLEEP: Duration = Duration::from_millis(200);

/// How often a sleeping ticker checks that its engine still exists.
const ENGINE_CHECK: Duration = Duration::from_secs(1);

/// The handle calls use to keep the ticker awake.
pub(crate) struct EpochTicker {
    /// Set by every call that begins; cleared by the ticker as it looks at it.
    called: AtomicBool,
    /// The ticker is parked, or about to be: the next call must unpark it.
    asleep: AtomicBool,
    /// The current tick, in microseconds: the shortest any call has asked for. It never grows
    /// back: lowering it is one atomic operation a call can do on its own, while raising it
    /// again safely would need to know every timeout still in use.
    tick_micros: AtomicU64,
    thread: Thread,
}

impl EpochTicker {
    /// Starts the ticker. It runs for as long as anything holds the engine (loaded filters and
    /// their instances do), not just the caller: filters must never be left without deadlines.
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Arc<EpochTicker>> {
        let engine = engine.weak();
        let (handle_sender, handle_receiver) = std::sync::mpsc::sync_channel(1);
        thread::Builder::new()
            .name("wasm-epoch".to_owned())
            .spawn(move || {
                let ticker = Arc::new(EpochTicker {
                    called: AtomicBool::new(false),
                    asleep: AtomicBool::new(false),
                    tick_micros: AtomicU64::new(micros(MAX_TICK)),
                    thread: thread::current(),
                });
                // The receiver is waiting: `start` returns only once it has this handle.
                let _ = handle_sender.send(ticker.clone());
                let mut quiet = Duration::ZERO;
                while let Some(engine) = engine.upgrade() {
                    if quiet < QUIET_BEFORE_SLEEP {
                        engine.increment_epoch();
                        drop(engine);
                        let tick =
                            Duration::from_micros(ticker.tick_micros.load(Ordering::Relaxed));
                        thread::sleep(tick);
                        quiet = if ticker.called.swap(false, Ordering::SeqCst) {
                            Duration::ZERO
                        } else {
                            quiet + tick
                        };
                    } else {
                        drop(engine);
                        if ticker.sleep() {
                            quiet = Duration::ZERO;
                        }
                    }
                }
            })?;
        handle_receiver
            .recv()
            .map_err(|_| std::io::Error::other("the epoch ticker stopped as it started"))
    }

    /// Says a call with `timeout` is about to begin: wakes the ticker if it sleeps, and makes it
    /// tick fast enough for this call. Relaxed loads only, for every call but the first in each
    /// tick and the first with a shorter timeout. Returns how many ticks the call may see while
    /// it runs before it has had its time (at least one).
    pub(crate) fn call_begins(&self, timeout: Duration) -> u32 {
        let wanted = micros(timeout / 10).clamp(micros(MIN_TICK), micros(MAX_TICK));
        let mut tick = self.tick_micros.load(Ordering::Relaxed);
        if wanted < tick {
            self.tick_micros.fetch_min(wanted, Ordering::Relaxed);
            tick = wanted;
        }
        if !self.called.load(Ordering::Relaxed) {
            self.called.store(true, Ordering::SeqCst);
        }
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.thread.unpark();
        }
        u32::try_from(micros(timeout) / tick.max(1))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// Parks the ticker until a call begins or [`ENGINE_CHECK`] passes; true if a call began.
    ///
    /// `asleep` is set before `called` is read, and a call sets `called` before it reads
    /// `asleep`, so of a call racing with this either the ticker sees the call or the call sees
    /// the ticker asleep and unparks it (an unpark that comes before the park is kept).
    fn sleep(&self) -> bool {
        self.asleep.store(true, Ordering::SeqCst);
        let mut called = self.called.swap(false, Ordering::SeqCst);
        if !called {
            thread::park_timeout(ENGINE_CHECK);
        }
        let unparked = !self.asleep.swap(false, Ordering::SeqCst);
        called |= self.called.swap(false, Ordering::SeqCst);
        called || unparked
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "{what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_tick_follows_the_shortest_timeout_and_the_ticker_sleeps_between_calls() {
        let engine =
            Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("an engine");
        let ticker = EpochTicker::start(&engine).expect("a ticker");
        let tick = || ticker.tick_micros.load(Ordering::Relaxed);
        assert_eq!(tick(), 10_000, "no call yet: the longest tick");
        ticker.call_begins(Duration::from_secs(2));
        assert_eq!(tick(), 10_000, "a long timeout bears the longest tick");
        assert_eq!(
            ticker.call_begins(Duration::from_millis(50)),
            10,
            "a call may see a tick for each tenth of its timeout while it runs"
        );
        assert_eq!(tick(), 5_000);
        assert_eq!(ticker.call_begins(Duration::from_secs(1)), 200);
        assert_eq!(
            tick(),
            5_000,
            "a longer timeout later does not slow it down"
        );
        assert_eq!(
            ticker.call_begins(Duration::from_micros(500)),
            1,
            "at least one tick"
        );
        assert_eq!(tick(), 1_000, "never under 1 ms");

        wait_until("asleep after a quiet spell", || {
            ticker.asleep.load(Ordering::SeqCst)
        });
        ticker.call_begins(Duration::from_millis(50));
        wait_until("awake once a call begins", || {
            !ticker.asleep.load(Ordering::SeqCst)
        });
        assert_eq!(tick(), 1_000, "the tick is kept across a sleep");
    }
}
