//! One filter instance: its store, its limits, and the calls into it.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::component::{ComponentNamedList, Lift, Lower, Resource, ResourceTable, TypedFunc};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use gateway_config::ByteSize;
use gateway_kv::KvBackend;

use crate::bindings::{CURRENT, Environment, Outcome, Registration, environment};
use crate::edits::HeaderNames;
use crate::engine::LoadedFilter;
use crate::outbound::OutboundGrant;
use crate::ticker::EpochTicker;
use crate::{FilterFailure, RequestHead, ResponseHead};

pub(crate) fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The request and response of the call in progress, moved in for the call and out after it.
#[derive(Default)]
pub(crate) struct CallHeads {
    pub request: Option<RequestHead>,
    /// Present only during the response phase; its presence makes the request read-only.
    pub response: Option<ResponseHead>,
}

/// Caps an instance's memory and remembers that it tried to go past the cap, so the failure can
/// be reported as what it was rather than as a generic trap.
pub(crate) struct MemoryCap {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} exceeded", ByteSize(self.limit as u64));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a filter never needs many.
        Ok(desired <= 100_000)
    }
}

/// Everything a filter instance's store holds.
pub(crate) struct InstanceState {
    pub(crate) filter: Arc<str>,
    /// The last error the filter logged during the current call: when the call traps, this is
    /// usually why (the SDK logs a panic's message before the trap).
    pub(crate) last_error: Option<String>,
    pub(crate) kv: KvBackend,
    /// The services this instance's route entry lets it call, if any.
    pub(crate) outbound: Option<OutboundGrant>,
    pub(crate) max_outbound_response: usize,
    pub(crate) heads: CallHeads,
    /// The header names the filter has set, kept across requests.
    pub(crate) names: HeaderNames,
    ticker: Arc<EpochTicker>,
    /// When the call in progress runs out of time.
    pub(crate) call_deadline: Instant,
    /// Ticks the call in progress has seen while it ran, and how many it must see before its
    /// deadline counts: a thread descheduled on a busy machine sees one tick however long it
    /// waited, so time the call did not run does not use up its deadline.
    ticks_seen: u32,
    ticks_allowed: u32,
    /// The length of a tick during the call in progress, to count time spent waiting in a host
    /// call (on Redis, on a service) as ticks seen.
    tick: Duration,
    /// When the call is stopped however few ticks it saw: a call that blocks its thread in a
    /// host call (a WASI sleep) sees few ticks too, and must not hold a worker without bound.
    hard_deadline: Instant,
    cap: MemoryCap,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

type RequestHandle = Resource<crate::bindings::gateway::filter::http::Request>;
type ResponseHandle = Resource<crate::bindings::gateway::filter::http::Response>;

/// The filter's exports, typed once per instance. Inputs are passed owned: the types then need
/// no lifetime, and the input is built for the call anyway.
struct Handler {
    init: TypedFunc<(String, Environment), (Result<Registration, String>,)>,
    on_request: TypedFunc<(RequestHandle, Option<Vec<u8>>), (Outcome,)>,
    on_response: TypedFunc<ResponseParams, (Outcome,)>,
}

/// The request, the response, the status and the declared input.
type ResponseParams = (RequestHandle, ResponseHandle, u16, Option<Vec<u8>>);

/// A live, initialised instance of a filter.
pub(crate) struct FilterInstance {
    store: Store<InstanceState>,
    handler: Handler,
    /// Linked as waiting: its calls run on a stack of their own and may suspend.
    waits: bool,
    /// Requests served: request phases run. A response phase is part of its request's use.
    pub(crate) uses: u64,
}

impl FilterInstance {
    /// Instantiates the filter and hands it its configuration. It is linked as waiting when its
    /// store may wait or it may call services, as immediate otherwise.
    pub(crate) async fn new(
        filter: &LoadedFilter,
        config_json: &str,
        outbound: Option<OutboundGrant>,
    ) -> Result<(FilterInstance, Registration), FilterFailure> {
        // Filters get no environment, arguments, files or sockets: an empty, locked-down WASI.
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = InstanceState {
            filter: filter.name.clone(),
            last_error: None,
            kv: filter.kv.clone(),
            outbound,
            max_outbound_response: filter.settings.max_outbound_response.as_usize(),
            heads: CallHeads::default(),
            names: HeaderNames::default(),
            ticker: filter.ticker.clone(),
            call_deadline: Instant::now(),
            ticks_seen: 0,
            ticks_allowed: 1,
            tick: Duration::ZERO,
            hard_deadline: Instant::now(),
            cap: MemoryCap {
                limit: filter.settings.memory_limit.as_usize(),
                exceeded: false,
            },
            wasi,
            table: ResourceTable::new(),
        };
        let (pre, waits) = match (&filter.immediate, &state.outbound) {
            (Some(immediate), None) => (immediate, false),
            _ => (&filter.waiting, true),
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.cap);
        // Each tick during a call asks whether its time is up: the tick's length then decides
        // only how soon after its deadline a call is stopped, not how long it may run. The time
        // must also have been spent running: the ticks seen while running count it, since a
        // call that waited for a core (a compile at reload, a busy machine) sees one tick for
        // the whole wait.
        store.epoch_deadline_callback(|mut store| {
            let state = store.data_mut();
            state.ticks_seen = state.ticks_seen.saturating_add(1);
            let ran_its_time = state.ticks_seen >= state.ticks_allowed;
            let now = Instant::now();
            let over = now >= state.call_deadline && (ran_its_time || now >= state.hard_deadline);
            Ok(if over {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        // Init may compile patterns or parse large configs; give it more room than a request.
        let init_timeout = filter.settings.timeout.max(Duration::from_secs(1));
        begin_call(&mut store, init_timeout);
        let instantiated = if waits {
            caught(pre.instantiate_async(&mut store)).await
        } else {
            caught_now(|| pre.instantiate(&mut store))
        };
        let instance =
            settle(&mut store, instantiated, init_timeout).map_err(|failure| match failure {
                FilterFailure::Trap(reason) => FilterFailure::Unavailable(reason),
                other => other,
            })?;
        let exports = &filter.exports;
        let mut typed = || -> wasmtime::Result<Handler> {
            Ok(Handler {
                init: instance.get_typed_func(&mut store, exports.init)?,
                on_request: instance.get_typed_func(&mut store, exports.on_request)?,
                on_response: instance.get_typed_func(&mut store, exports.on_response)?,
            })
        };
        let handler = typed().map_err(|error| FilterFailure::Unavailable(format!("{error:#}")))?;
        let mut instance = FilterInstance {
            store,
            handler,
            waits,
            uses: 0,
        };
        let init = instance.handler.init;
        let (registration,) = instance
            .run(&init, (config_json.to_owned(), environment()), init_timeout)
            .await?;
        Ok((instance, registration.map_err(FilterFailure::Rejected)?))
    }

    /// The header names kept for this instance's edits.
    pub(crate) fn names(&mut self) -> &mut HeaderNames {
        &mut self.store.data_mut().names
    }

    /// Runs the request phase on `head`, which is moved in for the call (for the filter's lazy
    /// reads) and back out after it, whatever the outcome. The outcome's edits are the caller's
    /// to check and apply.
    pub(crate) async fn on_request(
        &mut self,
        head: &mut RequestHead,
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Outcome, FilterFailure> {
        self.uses += 1;
        self.store.data_mut().heads.request = Some(std::mem::take(head));
        let on_request = self.handler.on_request;
        let outcome = self
            .run(&on_request, (Resource::new_borrow(CURRENT), input), timeout)
            .await;
        if let Some(request) = self.store.data_mut().heads.request.take() {
            *head = request;
        }
        outcome.map(|(outcome,)| outcome)
    }

    /// Runs the response phase; both heads are moved in for the call and back out after it.
    pub(crate) async fn on_response(
        &mut self,
        request: &mut RequestHead,
        response: &mut ResponseHead,
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Outcome, FilterFailure> {
        let status = response.status.as_u16();
        let heads = &mut self.store.data_mut().heads;
        heads.request = Some(std::mem::take(request));
        heads.response = Some(std::mem::take(response));
        let on_response = self.handler.on_response;
        let handles = (Resource::new_borrow(CURRENT), Resource::new_borrow(CURRENT));
        let outcome = self
            .run(&on_response, (handles.0, handles.1, status, input), timeout)
            .await
            .map(|(outcome,)| outcome);
        let heads = &mut self.store.data_mut().heads;
        if let Some(head) = heads.request.take() {
            *request = head;
        }
        if let Some(head) = heads.response.take() {
            *response = head;
        }
        outcome
    }
}

impl FilterInstance {
    /// One call into the filter under its deadline and memory cap: on a stack of its own if the
    /// instance is linked as waiting, so a wait suspends it, else a plain call.
    async fn run<Params, Return>(
        &mut self,
        function: &TypedFunc<Params, Return>,
        params: Params,
        timeout: Duration,
    ) -> Result<Return, FilterFailure>
    where
        Params: ComponentNamedList + Lower + Send + Sync,
        Return: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        begin_call(&mut self.store, timeout);
        let outcome = if self.waits {
            caught(function.call_async(&mut self.store, params)).await
        } else {
            caught_now(|| function.call(&mut self.store, params))
        };
        settle(&mut self.store, outcome, timeout)
    }
}

impl InstanceState {
    /// Waits for a host call's `operation` (on Redis, on a service) with the filter's call
    /// suspended. The wait counts against the call's deadline, both ways: it ends at the
    /// deadline, which stops the call, and the time waited counts as time the call ran.
    pub(crate) async fn wait<T>(
        &mut self,
        operation: impl Future<Output = T>,
    ) -> wasmtime::Result<T> {
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(self.call_deadline.into(), operation).await;
        let waited = started.elapsed();
        let ticks = waited.as_micros() / self.tick.as_micros().max(1);
        self.ticks_seen = self
            .ticks_seen
            .saturating_add(u32::try_from(ticks).unwrap_or(u32::MAX));
        outcome.map_err(|_| Trap::Interrupt.into())
    }
}

/// How many timeouts a call may take, waiting included, before it is stopped whatever it ran.
const HARD_DEADLINE_FACTOR: u32 = 4;

/// A trap in a line an operator can act on: what the filter said before it (its panic message,
/// if it panicked), and the kind of trap, without the wasm backtrace of anonymous functions.
fn describe_trap(error: &wasmtime::Error, last_error: Option<String>) -> String {
    let kind = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    };
    match last_error {
        Some(said) => format!("{said} ({kind})"),
        None => kind,
    }
}

/// Sets the deadline of the call about to begin.
fn begin_call(store: &mut Store<InstanceState>, timeout: Duration) {
    let ticks_allowed = store.data().ticker.call_begins(timeout);
    let state = store.data_mut();
    let now = Instant::now();
    state.call_deadline = now + timeout;
    state.hard_deadline = now + HARD_DEADLINE_FACTOR * timeout;
    state.ticks_seen = 0;
    state.ticks_allowed = ticks_allowed;
    state.tick = timeout / ticks_allowed;
    state.last_error = None;
    store.set_epoch_deadline(1);
}

/// A call into Wasm, with a panic in host code it called caught: it must cost this instance,
/// not the worker thread (WASI stdio, for one, blocks on the async runtime, which panics on a
/// worker's).
async fn caught<T>(
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<wasmtime::Result<T>, Box<dyn Any + Send>> {
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|context| {
        match catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(context))) {
            Ok(Poll::Ready(outcome)) => Poll::Ready(Ok(outcome)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

/// [`caught`] for a call that never waits.
fn caught_now<T>(
    call: impl FnOnce() -> wasmtime::Result<T>,
) -> Result<wasmtime::Result<T>, Box<dyn Any + Send>> {
    catch_unwind(AssertUnwindSafe(call))
}

/// Turns every way a call can fail into a [`FilterFailure`]: traps, the deadline, the memory
/// cap, and a panic in host code it called.
fn settle<T>(
    store: &mut Store<InstanceState>,
    outcome: Result<wasmtime::Result<T>, Box<dyn Any + Send>>,
    timeout: Duration,
) -> Result<T, FilterFailure> {
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            if store.data().cap.exceeded {
                Err(FilterFailure::MemoryLimit(ByteSize(
                    store.data().cap.limit as u64,
                )))
            } else if matches!(error.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                Err(FilterFailure::Timeout(timeout))
            } else {
                Err(FilterFailure::Trap(describe_trap(
                    &error,
                    store.data_mut().last_error.take(),
                )))
            }
        }
        Err(_) => Err(FilterFailure::Trap(
            "host code called by the filter panicked (see the log)".to_owned(),
        )),
    }
}
