//! Host calls inside a real gateway: straight through the generated bindings. Reads the filter
//! did not declare go to the handles here; the per-instance state the SDK keeps (the log level,
//! the metrics) lives in this instance's thread.

use std::cell::{Cell, RefCell};

use crate::kv::Failure as KvFailure;
use crate::lock::Outcome as LockOutcome;
use crate::log::Level;
use crate::metrics::Registry;
use crate::outbound::{Failure as OutboundFailure, Request, Response};
use crate::wit::gateway::filter::{clock, http as host, kv, lock, log, outbound};

/// A borrowed request handle for the duration of one call.
pub struct RequestRef<'a>(&'a host::Request);

impl<'a> RequestRef<'a> {
    pub fn new(handle: &'a host::Request) -> Self {
        RequestRef(handle)
    }

    pub fn method(&self) -> String {
        self.0.method()
    }
    pub fn path(&self) -> String {
        self.0.path()
    }
    pub fn query(&self) -> Option<String> {
        self.0.query()
    }
    pub fn authority(&self) -> Option<String> {
        self.0.authority()
    }
    pub fn client_ip(&self) -> String {
        self.0.client_ip()
    }
    pub fn route_param(&self, name: &str) -> Option<String> {
        self.0.route_param(name)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0.header_names()
    }
    pub fn context(&self, key: &str) -> Option<String> {
        self.0.context(key)
    }
}

/// A borrowed response handle for the duration of one call.
pub struct ResponseRef<'a>(&'a host::Response);

impl<'a> ResponseRef<'a> {
    pub fn new(handle: &'a host::Response) -> Self {
        ResponseRef(handle)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }
    pub fn header_names(&self) -> Vec<String> {
        self.0.header_names()
    }
}

thread_local! {
    // Until `init` says otherwise, nothing is discarded: a message from before it is rare and
    // likely to matter.
    static LOG_LEVEL: Cell<Level> = const { Cell::new(Level::Trace) };
    static METRICS: RefCell<Registry> = RefCell::default();
}

/// Keeps the level the gateway discards messages below, so they are not even sent.
pub fn set_log_level(level: log::Level) {
    let level = match level {
        log::Level::Trace => Level::Trace,
        log::Level::Debug => Level::Debug,
        log::Level::Info => Level::Info,
        log::Level::Warn => Level::Warn,
        log::Level::Error => Level::Error,
    };
    LOG_LEVEL.with(|current| current.set(level));
}

pub fn log_level() -> Level {
    LOG_LEVEL.with(Cell::get)
}

pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => log::Level::Trace,
        Level::Debug => log::Level::Debug,
        Level::Info => log::Level::Info,
        Level::Warn => log::Level::Warn,
        Level::Error => log::Level::Error,
    };
    log::log(level, message)
}

pub fn with_metrics<R>(use_metrics: impl FnOnce(&mut Registry) -> R) -> R {
    METRICS.with(|registry| use_metrics(&mut registry.borrow_mut()))
}

pub fn now_ms() -> u64 {
    clock::now_ms()
}

pub fn monotonic_ns() -> u64 {
    clock::monotonic_ns()
}

/// A store's error as the SDK reports it.
fn kv_failure(error: kv::KvError) -> KvFailure {
    match error {
        kv::KvError::Refused(reason) => KvFailure::Refused(reason),
        kv::KvError::Unavailable(reason) => KvFailure::Unavailable(reason),
        kv::KvError::Timeout => KvFailure::Timeout,
    }
}

pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
    kv::get(key).map_err(kv_failure)
}

pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvFailure> {
    kv::set(key, value, ttl_ms).map_err(kv_failure)
}

pub fn kv_delete(key: &str) -> Result<bool, KvFailure> {
    kv::delete(key).map_err(kv_failure)
}

pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvFailure> {
    kv::increment(key, delta, ttl_ms).map_err(kv_failure)
}

pub fn kv_compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: &[u8],
    ttl_ms: Option<u64>,
) -> Result<bool, KvFailure> {
    kv::compare_and_swap(key, expected, new, ttl_ms).map_err(kv_failure)
}

pub fn lock_acquire(key: &str, lease_ms: u32, wait_ms: u32) -> Result<LockOutcome, KvFailure> {
    let outcome = lock::acquire(key, lease_ms, wait_ms).map_err(kv_failure)?;
    Ok(match outcome {
        lock::AcquireOutcome::Acquired => LockOutcome::Acquired,
        lock::AcquireOutcome::Released => LockOutcome::Released,
        lock::AcquireOutcome::TimedOut => LockOutcome::TimedOut,
    })
}

pub fn lock_release(key: &str) -> Result<bool, KvFailure> {
    lock::release(key).map_err(kv_failure)
}

pub fn outbound_send(request: Request) -> Result<Response, OutboundFailure> {
    let request = outbound::OutboundRequest {
        service: request.service,
        method: request.method,
        path_and_query: request.path_and_query,
        headers: request.headers,
        body: request.body,
        timeout_ms: request.timeout_ms,
    };
    match outbound::send(&request) {
        Ok(answer) => Ok(Response {
            status: answer.status,
            headers: answer.headers,
            body: answer.body,
        }),
        Err(error) => Err(match error {
            outbound::OutboundError::NotAllowed(reason) => OutboundFailure::NotAllowed(reason),
            outbound::OutboundError::BadRequest(reason) => OutboundFailure::BadRequest(reason),
            outbound::OutboundError::Timeout => OutboundFailure::Timeout,
            outbound::OutboundError::TooLarge => OutboundFailure::TooLarge,
            outbound::OutboundError::Failed(reason) => OutboundFailure::Failed(reason),
        }),
    }
}
