//! The thread that advances the engine's epoch, which is what call deadlines are counted in.
//!
//! It ticks every [`EPOCH_TICK`] while filters are being called, and sleeps once none has been
//! for [`QUIET_BEFORE_SLEEP`]: on a small machine a thread waking a thousand times a second for
//! nothing costs the gateway a measurable share of its throughput, because every wake-up takes
//! a core from the threads serving requests. The first call after a sleep wakes it again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while filters are being called.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the ticker keeps ticking after the last call began.
const QUIET_BEFORE_SLEEP: Duration = Duration::from_millis(200);

/// How often a sleeping ticker checks that its engine still exists.
const ENGINE_CHECK: Duration = Duration::from_secs(1);

/// The handle calls use to keep the ticker awake.
pub(super) struct EpochTicker {
    /// Set by every call that begins; cleared by the ticker as it looks at it.
    called: AtomicBool,
    /// The ticker is parked, or about to be: the next call must unpark it.
    asleep: AtomicBool,
    thread: Thread,
}

impl EpochTicker {
    /// Starts the ticker. It runs for as long as anything holds the engine (loaded filters and
    /// their instances do), not just the caller: filters must never be left without deadlines.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<EpochTicker>> {
        let engine = engine.weak();
        let (handle_sender, handle_receiver) = std::sync::mpsc::sync_channel(1);
        thread::Builder::new()
            .name("wasm-epoch".to_owned())
            .spawn(move || {
                let ticker = Arc::new(EpochTicker {
                    called: AtomicBool::new(false),
                    asleep: AtomicBool::new(false),
                    thread: thread::current(),
                });
                // The receiver is waiting: `start` returns only once it has this handle.
                let _ = handle_sender.send(ticker.clone());
                let quiet_ticks = QUIET_BEFORE_SLEEP.as_millis() / EPOCH_TICK.as_millis();
                let mut quiet = 0;
                while let Some(engine) = engine.upgrade() {
                    if quiet < quiet_ticks {
                        engine.increment_epoch();
                        drop(engine);
                        thread::sleep(EPOCH_TICK);
                        quiet = if ticker.called.swap(false, Ordering::SeqCst) {
                            0
                        } else {
                            quiet + 1
                        };
                    } else {
                        drop(engine);
                        if ticker.sleep() {
                            quiet = 0;
                        }
                    }
                }
            })?;
        handle_receiver
            .recv()
            .map_err(|_| std::io::Error::other("the epoch ticker stopped as it started"))
    }

    /// Says a call is about to begin; wakes the ticker if it sleeps. A relaxed load when the
    /// flag is already set, which is every call but the first in each tick.
    pub fn call_begins(&self) {
        if !self.called.load(Ordering::Relaxed) {
            self.called.store(true, Ordering::SeqCst);
        }
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            self.thread.unpark();
        }
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
