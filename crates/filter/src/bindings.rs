//! Host side of the WIT contract: the generated bindings, and the lazy reads and capabilities a
//! filter imports.
//!
//! Request and response handles are borrows with a fixed representation: the instance's store
//! holds the one request (and response) of the current call, so a handle needs no table entry.
//! Edits do not come through the handles: they come back in the call's outcome (see `edits`).

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use wasmtime::component::Resource;

use crate::heads::{RequestHead, ResponseHead};
use crate::instance::{CallHeads, InstanceState};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "filter",
    imports: { default: trappable },
});

pub use exports::gateway::filter::handler::Phases;
pub(crate) use exports::gateway::filter::handler::{
    Action, Environment, MetricKind, Outcome, Registration, RequestFields,
};
pub(crate) use gateway::filter::http::Reply;
use gateway::filter::{clock, http as wit_http, kv, log};

/// The representation of the only request and response handle a call ever sees.
pub(crate) const CURRENT: u32 = 0;

/// A header value as a filter reads it: any UTF-8, obs-text included, as the SDK's test host
/// reads it; a value that is not UTF-8 is left out.
pub(crate) fn value_text(value: &http::HeaderValue) -> Option<&str> {
    std::str::from_utf8(value.as_bytes()).ok()
}

fn first_value(headers: &HeaderMap, name: &str) -> Option<String> {
    value_text(headers.get(name)?).map(str::to_owned)
}

fn all_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value_text(value).map(str::to_owned))
        .collect()
}

fn names(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .collect()
}

/// The lowest level the gateway's log takes from filters, so the SDK need not even format what
/// would be dropped.
pub(crate) fn environment() -> Environment {
    use log::Level;
    let log_level = if tracing::enabled!(target: "filter", tracing::Level::TRACE) {
        Level::Trace
    } else if tracing::enabled!(target: "filter", tracing::Level::DEBUG) {
        Level::Debug
    } else if tracing::enabled!(target: "filter", tracing::Level::INFO) {
        Level::Info
    } else if tracing::enabled!(target: "filter", tracing::Level::WARN) {
        Level::Warn
    } else {
        Level::Error
    };
    Environment { log_level }
}

const NO_REQUEST: &str = "no request is in flight on this instance";
const NO_RESPONSE: &str = "no response is in flight on this instance";

impl wit_http::Host for InstanceState {}

impl wit_http::HostRequest for InstanceState {
    fn method(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<String> {
        Ok(self.heads.request()?.method.as_str().to_owned())
    }

    fn path(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<String> {
        Ok(self.heads.request()?.path.clone())
    }

    fn query(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.query.clone())
    }

    fn authority(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.authority.clone())
    }

    fn client_ip(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<String> {
        Ok(gateway_wire::fields::ip_string(
            self.heads.request()?.client_ip,
        ))
    }

    fn route_param(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.param(&name).map(str::to_owned))
    }

    fn header(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(first_value(&self.heads.request()?.headers, &name))
    }

    fn header_values(
        &mut self,
        _: Resource<wit_http::Request>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(all_values(&self.heads.request()?.headers, &name))
    }

    fn header_names(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<Vec<String>> {
        Ok(names(&self.heads.request()?.headers))
    }

    fn context(
        &mut self,
        _: Resource<wit_http::Request>,
        key: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.heads.request()?.context.get(&key).map(str::to_owned))
    }

    fn drop(&mut self, _: Resource<wit_http::Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl wit_http::HostResponse for InstanceState {
    fn status(&mut self, _: Resource<wit_http::Response>) -> wasmtime::Result<u16> {
        Ok(self.heads.response()?.status.as_u16())
    }

    fn header(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(first_value(&self.heads.response()?.headers, &name))
    }

    fn header_values(
        &mut self,
        _: Resource<wit_http::Response>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(all_values(&self.heads.response()?.headers, &name))
    }

    fn header_names(&mut self, _: Resource<wit_http::Response>) -> wasmtime::Result<Vec<String>> {
        Ok(names(&self.heads.response()?.headers))
    }

    fn drop(&mut self, _: Resource<wit_http::Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl log::Host for InstanceState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let filter = &*self.filter;
        let request_id = self.heads.request.as_ref().map_or("-", |r| r.request_id());
        match level {
            log::Level::Trace => tracing::trace!(target: "filter", filter, request_id, "{message}"),
            log::Level::Debug => tracing::debug!(target: "filter", filter, request_id, "{message}"),
            log::Level::Info => tracing::info!(target: "filter", filter, request_id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "filter", filter, request_id, "{message}"),
            log::Level::Error => tracing::error!(target: "filter", filter, request_id, "{message}"),
        }
        if level == log::Level::Error {
            self.last_error = Some(message);
        }
        Ok(())
    }
}

impl clock::Host for InstanceState {
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        let elapsed = crate::instance::process_start().elapsed();
        Ok(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl kv::Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv.get(&self.filter, &key))
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self
            .kv
            .set(&self.filter, &key, value, ttl_ms)
            .map_err(|error| error.to_string()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.kv.delete(&self.filter, &key))
    }

    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, String>> {
        Ok(self
            .kv
            .increment(&self.filter, &key, delta, ttl_ms)
            .map_err(|error| error.to_string()))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, String>> {
        Ok(self
            .kv
            .compare_and_swap(&self.filter, &key, expected.as_deref(), new, ttl_ms)
            .map_err(|error| error.to_string()))
    }
}

impl CallHeads {
    fn request(&self) -> wasmtime::Result<&RequestHead> {
        self.request
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!(NO_REQUEST))
    }

    fn response(&self) -> wasmtime::Result<&ResponseHead> {
        self.response
            .as_ref()
            .ok_or_else(|| wasmtime::format_err!(NO_RESPONSE))
    }
}
