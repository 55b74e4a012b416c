//! Host side of the WIT contract: the generated bindings, and the lazy reads and capabilities a
//! filter imports.
//!
//! `kv` and `outbound` may wait on the network, so they are async host functions, and a filter
//! is linked one of two ways ([`Linkers`]):
//! - `waiting`, for a filter on Redis or granted services: called with `call_async` on a stack
//!   of its own, so a wait suspends the call and the worker serves other connections meanwhile;
//! - `immediate`, for a filter on the memory store with no services granted that does not
//!   import `lock` (a lock waits on another request even in memory): the same host
//!   functions, answered at once, called with a plain `call`. Suspending costs a stack switch
//!   each way, measured at more than a tenth of a short call (see `docs/decisions`), which a
//!   filter that never waits should not pay.
//!
//! Request and response handles are borrows with a fixed representation: the instance's store
//! holds the one request (and response) of the current call, so a handle needs no table entry.
//! Edits do not come through the handles: they come back in the call's outcome (see `edits`).

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime::{Engine, StoreContextMut};

use gateway_kv::{Acquire, KvError};

use crate::heads::{RequestHead, ResponseHead};
use crate::instance::{CallHeads, InstanceState};
use crate::outbound::{OutboundError, OutboundRequest};
use crate::{WIT_PACKAGE, WIT_VERSION};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "filter",
    imports: {
        "gateway:filter/kv": async | trappable,
        "gateway:filter/lock": async | trappable,
        "gateway:filter/outbound": async | trappable,
        default: trappable,
    },
});

pub use exports::gateway::filter::handler::Phases;
pub(crate) use exports::gateway::filter::handler::{
    Action, Environment, MetricKind, Outcome, Registration, RequestFields,
};
pub(crate) use gateway::filter::http::Reply;
use gateway::filter::{clock, http as wit_http, kv, lock, log, outbound};

/// The two ways a filter is linked: see the module documentation.
pub(crate) struct Linkers {
    pub(crate) waiting: Linker<InstanceState>,
    pub(crate) immediate: Linker<InstanceState>,
}

impl Linkers {
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Linkers> {
        let mut waiting = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut waiting)?;
        Filter::add_to_linker::<_, HasSelf<InstanceState>>(&mut waiting, |state| state)?;

        let mut immediate = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut immediate)?;
        wit_http::add_to_linker::<_, HasSelf<InstanceState>>(&mut immediate, |state| state)?;
        log::add_to_linker::<_, HasSelf<InstanceState>>(&mut immediate, |state| state)?;
        clock::add_to_linker::<_, HasSelf<InstanceState>>(&mut immediate, |state| state)?;
        add_immediate_kv(&mut immediate)?;
        add_refused_outbound(&mut immediate)?;
        Ok(Linkers { waiting, immediate })
    }
}

/// The output of a host call that cannot wait: on the memory store, every operation answers on
/// its first poll.
fn at_once<T>(call: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    let mut call = std::pin::pin!(call);
    match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => wasmtime::bail!("a kv operation of a filter linked as immediate waited"),
    }
}

/// The `kv` interface as plain host functions over the same implementation, for a filter on
/// the memory store.
fn add_immediate_kv(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    type Store<'a> = StoreContextMut<'a, InstanceState>;
    let mut kv = linker.instance(&format!("{WIT_PACKAGE}/kv@{WIT_VERSION}"))?;
    kv.func_wrap("get", |mut store: Store<'_>, (key,): (String,)| {
        Ok((at_once(kv::Host::get(store.data_mut(), key))?,))
    })?;
    kv.func_wrap(
        "set",
        |mut store: Store<'_>, (key, value, ttl_ms): (String, Vec<u8>, Option<u64>)| {
            Ok((at_once(kv::Host::set(
                store.data_mut(),
                key,
                value,
                ttl_ms,
            ))?,))
        },
    )?;
    kv.func_wrap("delete", |mut store: Store<'_>, (key,): (String,)| {
        Ok((at_once(kv::Host::delete(store.data_mut(), key))?,))
    })?;
    kv.func_wrap(
        "increment",
        |mut store: Store<'_>, (key, delta, ttl_ms): (String, i64, Option<u64>)| {
            Ok((at_once(kv::Host::increment(
                store.data_mut(),
                key,
                delta,
                ttl_ms,
            ))?,))
        },
    )?;
    kv.func_wrap(
        "compare-and-swap",
        |mut store: Store<'_>,
         (key, expected, new, ttl_ms): (String, Option<Vec<u8>>, Vec<u8>, Option<u64>)| {
            Ok((at_once(kv::Host::compare_and_swap(
                store.data_mut(),
                key,
                expected,
                new,
                ttl_ms,
            ))?,))
        },
    )?;
    Ok(())
}

/// `outbound` for a filter linked as immediate: it has no services granted, so every call is
/// refused, exactly as a waiting filter's call to a service it was not granted.
fn add_refused_outbound(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    let mut outbound = linker.instance(&format!("{WIT_PACKAGE}/outbound@{WIT_VERSION}"))?;
    outbound.func_wrap(
        "send",
        |store: StoreContextMut<'_, InstanceState>, (request,): (outbound::OutboundRequest,)| {
            let refused: Result<outbound::OutboundResponse, _> =
                Err(not_granted(&store.data().filter, &request.service));
            Ok((refused,))
        },
    )?;
    Ok(())
}

fn not_granted(filter: &str, service: &str) -> outbound::OutboundError {
    outbound::OutboundError::NotAllowed(format!(
        "this route does not grant filter `{filter}` the service `{service}`"
    ))
}

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

/// A store's error as the filter receives it.
fn kv_error(error: KvError) -> kv::KvError {
    match error {
        KvError::Refused(reason) => kv::KvError::Refused(reason.to_string()),
        KvError::Unavailable(reason) => kv::KvError::Unavailable(reason),
        KvError::Timeout(_) => kv::KvError::Timeout,
    }
}

impl InstanceState {
    /// Runs a `kv` operation: at once on the memory store, under the call's deadline on one
    /// that waits on the network.
    async fn kv_operation<T>(
        &mut self,
        operation: impl Future<Output = Result<T, KvError>>,
    ) -> wasmtime::Result<Result<T, kv::KvError>> {
        let done = if self.kv.waits() {
            self.wait(operation).await?
        } else {
            operation.await
        };
        Ok(done.map_err(kv_error))
    }
}

impl kv::Host for InstanceState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        self.kv_operation(kv.get(&filter, &key)).await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        self.kv_operation(kv.set(&filter, &key, value, ttl_ms))
            .await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, kv::KvError>> {
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        self.kv_operation(kv.delete(&filter, &key)).await
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, kv::KvError>> {
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        self.kv_operation(kv.increment(&filter, &key, delta, ttl_ms))
            .await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, kv::KvError>> {
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        self.kv_operation(kv.compare_and_swap(&filter, &key, expected.as_deref(), new, ttl_ms))
            .await
    }
}

/// The interface a filter imports to take single-flight locks: linked only as waiting.
pub(crate) const LOCK_INTERFACE: &str = "lock";

/// What a lock wait leaves of the call's deadline, so that a wait the filter asked for too
/// long ends as `timed-out` and the filter still has time to act on it.
const LOCK_MARGIN: Duration = Duration::from_millis(2);

impl lock::Host for InstanceState {
    async fn acquire(
        &mut self,
        key: String,
        lease_ms: u32,
        wait_ms: u32,
    ) -> wasmtime::Result<Result<lock::AcquireOutcome, kv::KvError>> {
        // The request holds the lock, whichever instance runs its next phase.
        let holder = self.heads.request()?.request_id().to_owned();
        let left = self
            .call_deadline
            .saturating_duration_since(std::time::Instant::now())
            .saturating_sub(LOCK_MARGIN);
        let wait = Duration::from_millis(u64::from(wait_ms)).min(left);
        let lease = Duration::from_millis(u64::from(lease_ms));
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        let acquired = self
            .wait(kv.acquire(&filter, &key, &holder, lease, wait))
            .await?;
        Ok(acquired
            .map(|outcome| match outcome {
                Acquire::Acquired => lock::AcquireOutcome::Acquired,
                Acquire::Released => lock::AcquireOutcome::Released,
                Acquire::TimedOut => lock::AcquireOutcome::TimedOut,
            })
            .map_err(kv_error))
    }

    async fn release(&mut self, key: String) -> wasmtime::Result<Result<bool, kv::KvError>> {
        let holder = self.heads.request()?.request_id().to_owned();
        let (kv, filter) = (self.kv.clone(), self.filter.clone());
        let released = self.wait(kv.release(&filter, &key, &holder)).await?;
        Ok(released.map_err(kv_error))
    }
}

/// The wait for an outbound call that asked for no timeout of its own, longer than any phase's
/// deadline may be.
const NO_TIMEOUT_ASKED: Duration = Duration::from_secs(120);

/// A filter's request as the gateway sends it, or why it cannot be sent: the rule the SDK's
/// test host applies too.
fn outbound_request(
    request: outbound::OutboundRequest,
) -> Result<OutboundRequest, outbound::OutboundError> {
    let head =
        gateway_rules::outbound::request(&request.method, request.path_and_query, request.headers)
            .map_err(|refused| outbound::OutboundError::BadRequest(refused.to_string()))?;
    Ok(OutboundRequest {
        method: head.method,
        path_and_query: head.path_and_query,
        headers: head.headers,
        body: Bytes::from(request.body),
    })
}

impl outbound::Host for InstanceState {
    async fn send(
        &mut self,
        request: outbound::OutboundRequest,
    ) -> wasmtime::Result<Result<outbound::OutboundResponse, outbound::OutboundError>> {
        let grant = match &self.outbound {
            Some(grant) if grant.allows(&request.service) => grant.clone(),
            _ => return Ok(Err(not_granted(&self.filter, &request.service))),
        };
        let service = request.service.clone();
        // Without a timeout of its own, the phase's deadline bounds the call: `wait` stops the
        // call there, which fails the filter as having run past its deadline.
        let timeout = request
            .timeout_ms
            .map_or(NO_TIMEOUT_ASKED, |ms| Duration::from_millis(ms.into()));
        let request = match outbound_request(request) {
            Ok(request) => request,
            Err(refused) => return Ok(Err(refused)),
        };
        let call = grant
            .services
            .send(&service, request, self.max_outbound_response, timeout);
        let answer = match self.wait(call).await? {
            Ok(answer) => answer,
            Err(error) => {
                return Ok(Err(match error {
                    OutboundError::Timeout(_) => outbound::OutboundError::Timeout,
                    OutboundError::TooLarge(_) => outbound::OutboundError::TooLarge,
                    OutboundError::Failed(reason) => outbound::OutboundError::Failed(reason),
                }));
            }
        };
        Ok(Ok(outbound::OutboundResponse {
            status: answer.status.as_u16(),
            headers: answer
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value_text(value)?.to_owned()))
                })
                .collect(),
            body: answer.body.into(),
        }))
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
