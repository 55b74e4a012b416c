//! The access log: one line per request, cheap enough to leave on.
//!
//! Each worker thread formats its lines straight into a buffer of its own ([`write`]); a full
//! buffer is handed to the writer thread, which also takes every partly filled buffer once per
//! flush interval, as nginx's `access_log ... buffer= flush=` does. The request path never
//! touches the destination. When the destination is slower than the traffic, at most
//! `max_pending_buffers` full buffers wait; past them, lines are dropped and counted, and a
//! warning at most once a second says how many, so a stuck disk or pipe bounds memory instead of
//! growing it.
//!
//! The log is process-wide, like the `tracing` subscriber it took over from: [`start`]
//! installs it once at start-up (the destination is not part of a reload), and the pipeline
//! asks [`enabled`] before it reads a clock for the line. [`AccessLog::finish`] writes
//! whatever is still buffered at shutdown; [`reopen`] makes the writer reopen its file (SIGUSR1,
//! after logrotate moved it).

mod format;

use std::cell::OnceCell;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use gateway_config::{AccessLogDestination, AccessLogFormat};

pub use format::Line;

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log file could not be opened for appending.
    #[error("cannot open the access log {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The writer thread could not be started.
    #[error("cannot start the access-log writer: {0}")]
    Thread(std::io::Error),

    /// [`start`] was called twice in one process.
    #[error("the access log is already started")]
    Started,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The running log, installed by [`start`].
static SINK: OnceLock<Arc<Shared>> = OnceLock::new();

thread_local! {
    /// This thread's buffer, registered with the writer on the thread's first line.
    static SHARD: OnceCell<Arc<Shard>> = const { OnceCell::new() };
}

/// Lines gathered in one buffer, and how many there are (counted when a buffer is dropped).
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

/// One thread's buffer. The lock is the writer's way in at flush time; the owning thread is
/// otherwise its only user, so taking it costs an uncontended atomic.
#[derive(Default)]
struct Shard {
    batch: Mutex<Batch>,
}

enum Handoff {
    Full(Batch),
    /// Look at the flags now (reopen, finish) rather than at the next flush.
    Wake,
}

struct Shared {
    format: AccessLogFormat,
    buffer: usize,
    shards: Mutex<Vec<Arc<Shard>>>,
    handoff: SyncSender<Handoff>,
    /// Written buffers kept for reuse, so a busy log does not allocate one per flush.
    spare: ArrayQueue<Vec<u8>>,
    dropped: AtomicU64,
    /// How many of `dropped` a warning has told of.
    reported: AtomicU64,
    /// When the last warning about drops was written, in milliseconds after `started`.
    last_warning: AtomicU64,
    started: Instant,
    reopen: AtomicBool,
    finish: AtomicBool,
}

/// How the access log is set up: the checked `access_log` section.
pub type Settings = gateway_config::AccessLog;

/// The handle of the started log; [`AccessLog::finish`] writes what is buffered and stops it.
pub struct AccessLog {
    /// Closed by the writer thread as it ends.
    done: Receiver<()>,
    shared: Arc<Shared>,
}

/// How long shutdown waits for the last lines: a destination that takes longer (a stalled
/// pipe) must not keep the gateway from exiting.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest time between two warnings about dropped lines.
const DROP_WARNING_INTERVAL_MS: u64 = 1000;

/// Starts the writer thread and installs the log for [`write`]. The file, if the destination
/// is one, is opened here so that a path that cannot be written stops the start with a clear
/// message.
pub fn start(settings: &Settings) -> Result<AccessLog> {
    let destination = Destination::open(&settings.destination)?;
    let (handoff, pending) = std::sync::mpsc::sync_channel(settings.max_pending_buffers);
    let shared = Arc::new(Shared {
        format: settings.format,
        buffer: settings.buffer.as_usize(),
        shards: Mutex::new(Vec::new()),
        handoff,
        spare: ArrayQueue::new(settings.max_pending_buffers + 1),
        dropped: AtomicU64::new(0),
        reported: AtomicU64::new(0),
        last_warning: AtomicU64::new(0),
        started: Instant::now(),
        reopen: AtomicBool::new(false),
        finish: AtomicBool::new(false),
    });
    SINK.set(shared.clone()).map_err(|_| Error::Started)?;
    let writer = Writer {
        shared: shared.clone(),
        destination,
        pending,
        flush_interval: settings.flush_interval,
        failing: false,
    };
    let (finished, done) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("gateway-access-log".to_owned())
        .spawn(move || {
            writer.run();
            let _ = finished.send(());
        })
        .map_err(Error::Thread)?;
    Ok(AccessLog { done, shared })
}

impl AccessLog {
    /// Writes every line still buffered and stops the writer. Call it once no request can
    /// still be logged (the workers have stopped); lines written after it are lost.
    pub fn finish(self) {
        self.shared.finish.store(true, Ordering::Release);
        // A full queue means the writer is busy and sees the flag when it next looks.
        let _ = self.shared.handoff.try_send(Handoff::Wake);
        match self.done.recv_timeout(FINISH_TIMEOUT) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => tracing::error!(
                "the access log's destination took more than {FINISH_TIMEOUT:?}; its last lines are lost"
            ),
            Err(RecvTimeoutError::Disconnected) => {
                tracing::error!("the access-log writer panicked; buffered lines are lost")
            }
        }
    }
}

/// Whether lines are logged at all: the pipeline skips its clock reads when not.
#[inline]
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Appends `line` to this thread's buffer; hands the buffer to the writer once it is full.
pub fn write(line: &Line<'_>) {
    let Some(shared) = SINK.get() else {
        return;
    };
    SHARD.with(|shard| {
        let shard = shard.get_or_init(|| shared.register());
        let mut batch = shard.batch.lock().unwrap_or_else(PoisonError::into_inner);
        if batch.bytes.capacity() == 0 {
            batch.bytes = shared.fresh_buffer();
        }
        format::write(shared.format, line, &mut batch.bytes);
        batch.lines += 1;
        if batch.bytes.len() >= shared.buffer {
            let full = std::mem::take(&mut *batch);
            drop(batch);
            shared.hand_off(full);
        }
    });
}

/// Asks the writer to reopen its file (after logrotate renamed it); nothing for stderr.
pub fn reopen() {
    if let Some(shared) = SINK.get() {
        shared.reopen.store(true, Ordering::Release);
        let _ = shared.handoff.try_send(Handoff::Wake);
    }
}

impl Shared {
    fn register(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::default());
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shard.clone());
        shard
    }

    /// A buffer for a worker, with room for its lines and one more.
    fn fresh_buffer(&self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.buffer + 1024))
    }

    fn hand_off(&self, batch: Batch) {
        match self.handoff.try_send(Handoff::Full(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(Handoff::Full(batch)))
            | Err(TrySendError::Disconnected(Handoff::Full(batch))) => {
                self.count_dropped(batch.lines);
                self.recycle(batch.bytes);
            }
            Err(TrySendError::Full(Handoff::Wake))
            | Err(TrySendError::Disconnected(Handoff::Wake)) => {}
        }
    }

    /// Counts lines that were lost, and warns about them at most once a second: the writer
    /// may be the thread stuck on the destination, so whoever drops lines tells.
    fn count_dropped(&self, lines: u64) {
        self.dropped.fetch_add(lines, Ordering::Relaxed);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < DROP_WARNING_INTERVAL_MS {
            return;
        }
        let won = self
            .last_warning
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if won {
            self.warn_dropped();
        }
    }

    fn warn_dropped(&self) {
        let total = self.dropped.load(Ordering::Relaxed);
        let reported = self.reported.swap(total, Ordering::Relaxed);
        if total > reported {
            tracing::warn!(
                dropped = total - reported,
                total,
                "access-log lines dropped: the destination is slower than the traffic"
            );
        }
    }

    fn recycle(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        // A full spare queue already holds as many buffers as can be in use.
        let _ = self.spare.push(bytes);
    }
}

/// Where the writer writes.
enum Destination {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Destination {
    fn open(destination: &AccessLogDestination) -> Result<Destination> {
        match destination {
            AccessLogDestination::Stderr => Ok(Destination::Stderr),
            AccessLogDestination::File(path) => Ok(Destination::File {
                file: append(path)?,
                path: path.clone(),
            }),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            // One locked write per buffer: the other log lines on stderr, written under the
            // same lock, fall between whole lines, never inside one.
            Destination::Stderr => std::io::stderr().lock().write_all(bytes),
            Destination::File { file, .. } => file.write_all(bytes),
        }
    }

    fn reopen(&mut self) {
        if let Destination::File { path, file } = self {
            match append(path) {
                Ok(reopened) => {
                    *file = reopened;
                    tracing::info!(path = %path.display(), "access log reopened");
                }
                Err(error) => {
                    tracing::error!(%error, "cannot reopen the access log; still writing to the file open before")
                }
            }
        }
    }
}

fn append(path: &Path) -> Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    destination: Destination,
    pending: Receiver<Handoff>,
    flush_interval: Duration,
    /// Whether the last write failed, so a failing destination is reported once, not per
    /// buffer.
    failing: bool,
}

impl Writer {
    fn run(mut self) {
        let mut next_flush = Instant::now() + self.flush_interval;
        loop {
            let wait = next_flush.saturating_duration_since(Instant::now());
            match self.pending.recv_timeout(wait) {
                Ok(Handoff::Full(batch)) => self.write(batch),
                Ok(Handoff::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.shared.reopen.swap(false, Ordering::AcqRel) {
                self.destination.reopen();
            }
            if self.shared.finish.load(Ordering::Acquire) {
                break;
            }
            if Instant::now() >= next_flush {
                self.flush_shards();
                next_flush = Instant::now() + self.flush_interval;
            }
        }
        while let Ok(handoff) = self.pending.try_recv() {
            if let Handoff::Full(batch) = handoff {
                self.write(batch);
            }
        }
        self.flush_shards();
        self.shared.warn_dropped();
    }

    /// Takes every worker's partly filled buffer and writes it.
    fn flush_shards(&mut self) {
        let shards = self
            .shared
            .shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for shard in shards {
            let batch = {
                let mut batch = shard.batch.lock().unwrap_or_else(PoisonError::into_inner);
                if batch.lines == 0 {
                    continue;
                }
                std::mem::take(&mut *batch)
            };
            self.write(batch);
        }
    }

    fn write(&mut self, batch: Batch) {
        match self.destination.write_all(&batch.bytes) {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!("the access log is written again");
                }
            }
            Err(error) => {
                self.shared.count_dropped(batch.lines);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(%error, "cannot write the access log; lines are dropped until it can");
                }
            }
        }
        self.shared.recycle(batch.bytes);
    }
}
