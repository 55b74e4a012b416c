//! Host calls in native builds: answered by the in-process test host of [`crate::testing`].
//! Reads the filter did not declare go to the test message as it was when the call began, as
//! the gateway's handles show it; the capabilities go to the test host's state. Key-value
//! operations meet the limits before the store, as in the gateway's stores: a refusal does not
//! depend on whether the store is failing (`TestHost::kv_fails`).

use gateway_rules::kv::KvError;

use crate::kv::Failure as KvFailure;
use crate::lock::Outcome as LockOutcome;
use crate::log::Level;
use crate::metrics::Registry;
use crate::outbound::{Failure as OutboundFailure, Request, Response};
use crate::testing::{self, RequestState, ResponseState};

/// A request in a test, for the duration of one call.
pub struct RequestRef<'a>(&'a RequestState);

impl<'a> RequestRef<'a> {
    pub fn new(state: &'a RequestState) -> Self {
        RequestRef(state)
    }

    pub fn method(&self) -> String {
        self.0.method.clone()
    }
    pub fn path(&self) -> String {
        self.0.path.clone()
    }
    pub fn query(&self) -> Option<String> {
        self.0.query.clone()
    }
    pub fn authority(&self) -> Option<String> {
        self.0.authority.clone()
    }
    pub fn client_ip(&self) -> String {
        self.0.client_ip.clone()
    }
    pub fn route_param(&self, name: &str) -> Option<String> {
        self.0
            .params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
    pub fn header(&self, name: &str) -> Option<String> {
        testing::header_values(&self.0.headers, name)
            .into_iter()
            .next()
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        testing::header_values(&self.0.headers, name)
    }
    pub fn header_names(&self) -> Vec<String> {
        testing::header_names(&self.0.headers)
    }
    pub fn context(&self, key: &str) -> Option<String> {
        self.0.context.get(key).map(str::to_owned)
    }
}

/// A response in a test, for the duration of one call.
pub struct ResponseRef<'a>(&'a ResponseState);

impl<'a> ResponseRef<'a> {
    pub fn new(state: &'a ResponseState) -> Self {
        ResponseRef(state)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        testing::header_values(&self.0.headers, name)
            .into_iter()
            .next()
    }
    pub fn header_values(&self, name: &str) -> Vec<String> {
        testing::header_values(&self.0.headers, name)
    }
    pub fn header_names(&self) -> Vec<String> {
        testing::header_names(&self.0.headers)
    }
}

/// The test host keeps every line, so a test can assert on debug output.
pub fn log_level() -> Level {
    Level::Trace
}

pub fn log(level: Level, message: &str) {
    testing::with_host(|host| host.log(level, message))
}

pub fn with_metrics<R>(use_metrics: impl FnOnce(&mut Registry) -> R) -> R {
    testing::with_host(|host| use_metrics(&mut host.metrics))
}

pub fn now_ms() -> u64 {
    testing::with_host(|host| host.now_ms)
}

pub fn monotonic_ns() -> u64 {
    testing::with_host(|host| host.monotonic_ns)
}

/// What a store refuses whatever its state, in the rule's words.
fn refused(error: KvError) -> KvFailure {
    KvFailure::Refused(error.to_string())
}

pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvFailure> {
    testing::with_host(|host| {
        // No key over the limit can be stored, so the gateway's stores answer without asking.
        if host.kv_limits.check_key(key).is_err() {
            return Ok(None);
        }
        let (map, now) = host.kv_store()?;
        Ok(map.get(key, now))
    })
}

pub fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvFailure> {
    testing::with_host(|host| {
        let limits = host.kv_limits;
        limits.check_key(key).map_err(refused)?;
        limits.check_value(value).map_err(refused)?;
        let (map, now) = host.kv_store()?;
        map.set(key, value.to_vec(), ttl_ms, now).map_err(refused)
    })
}

pub fn kv_delete(key: &str) -> Result<bool, KvFailure> {
    testing::with_host(|host| {
        if host.kv_limits.check_key(key).is_err() {
            return Ok(false);
        }
        let (map, now) = host.kv_store()?;
        Ok(map.delete(key, now))
    })
}

pub fn kv_increment(key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvFailure> {
    testing::with_host(|host| {
        host.kv_limits.check_key(key).map_err(refused)?;
        let (map, now) = host.kv_store()?;
        map.increment(key, delta, ttl_ms, now).map_err(refused)
    })
}

pub fn kv_compare_and_swap(
    key: &str,
    expected: Option<&[u8]>,
    new: &[u8],
    ttl_ms: Option<u64>,
) -> Result<bool, KvFailure> {
    testing::with_host(|host| {
        let limits = host.kv_limits;
        limits.check_key(key).map_err(refused)?;
        limits.check_value(new).map_err(refused)?;
        let (map, now) = host.kv_store()?;
        map.compare_and_swap(key, expected, new.to_vec(), ttl_ms, now)
            .map_err(refused)
    })
}

pub fn lock_acquire(key: &str, lease_ms: u32, _wait_ms: u32) -> Result<LockOutcome, KvFailure> {
    testing::with_host(|host| {
        host.kv_limits.check_key(key).map_err(refused)?;
        host.lock_acquire(key, lease_ms)
    })
}

pub fn lock_release(key: &str) -> Result<bool, KvFailure> {
    testing::with_host(|host| {
        host.kv_limits.check_key(key).map_err(refused)?;
        host.lock_release(key)
    })
}

pub fn outbound_send(request: Request) -> Result<Response, OutboundFailure> {
    testing::send_outbound(request)
}
