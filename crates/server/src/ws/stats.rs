//! Counters for the process's WebSockets: open sockets, messages and bytes each way, closes
//! by code. Atomics shared by every worker; a close takes a lock, a message does not.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static OPEN: AtomicU64 = AtomicU64::new(0);
static MESSAGES_FROM_CLIENTS: AtomicU64 = AtomicU64::new(0);
static MESSAGES_TO_CLIENTS: AtomicU64 = AtomicU64::new(0);
static BYTES_FROM_CLIENTS: AtomicU64 = AtomicU64::new(0);
static BYTES_TO_CLIENTS: AtomicU64 = AtomicU64::new(0);
static CLOSES: Mutex<BTreeMap<u16, u64>> = Mutex::new(BTreeMap::new());

/// The WebSocket counters at one moment, for `/metrics` and `/admin/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Sockets relayed now.
    pub open: u64,
    /// Data messages (text and binary) from clients to instances, and their payload bytes.
    pub messages_from_clients: u64,
    pub bytes_from_clients: u64,
    /// Data messages from instances to clients, and their payload bytes.
    pub messages_to_clients: u64,
    pub bytes_to_clients: u64,
    /// Sockets closed, by the close code the client was sent or sent (1005 for none).
    pub closes: BTreeMap<u16, u64>,
}

/// The counters now.
pub fn status() -> Status {
    Status {
        open: OPEN.load(Ordering::Relaxed),
        messages_from_clients: MESSAGES_FROM_CLIENTS.load(Ordering::Relaxed),
        bytes_from_clients: BYTES_FROM_CLIENTS.load(Ordering::Relaxed),
        messages_to_clients: MESSAGES_TO_CLIENTS.load(Ordering::Relaxed),
        bytes_to_clients: BYTES_TO_CLIENTS.load(Ordering::Relaxed),
        closes: CLOSES
            .lock()
            .map(|closes| closes.clone())
            .unwrap_or_default(),
    }
}

/// One socket counted open until dropped, and its close code counted then.
pub(crate) struct OpenSocket {
    close_code: u16,
}

impl OpenSocket {
    pub(crate) fn new() -> OpenSocket {
        OPEN.fetch_add(1, Ordering::Relaxed);
        // 1006: closed without a close frame, until a code is known.
        OpenSocket { close_code: 1006 }
    }

    pub(crate) fn message_from_client(&self, bytes: usize) {
        MESSAGES_FROM_CLIENTS.fetch_add(1, Ordering::Relaxed);
        BYTES_FROM_CLIENTS.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn message_to_client(&self, bytes: usize) {
        MESSAGES_TO_CLIENTS.fetch_add(1, Ordering::Relaxed);
        BYTES_TO_CLIENTS.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn closed_with(&mut self, code: u16) {
        self.close_code = code;
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut closes) = CLOSES.lock() {
            *closes.entry(self.close_code).or_default() += 1;
        }
    }
}
