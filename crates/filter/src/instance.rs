//! One filter instance: its store, its limits, and the calls into it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use gateway_config::ByteSize;

use crate::bindings::{CURRENT, Filter, Outcome, Registration, environment};
use crate::edits::HeaderNames;
use crate::engine::LoadedFilter;
use crate::kv::KvStore;
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
    pub(crate) kv: Arc<KvStore>,
    pub(crate) heads: CallHeads,
    /// The header names the filter has set, kept across requests.
    pub(crate) names: HeaderNames,
    ticker: Arc<EpochTicker>,
    /// When the call in progress runs out of time.
    call_deadline: Instant,
    /// Ticks the call in progress has seen while it ran, and how many it must see before its
    /// deadline counts: a thread descheduled on a busy machine sees one tick however long it
    /// waited, so time the call did not run does not use up its deadline.
    ticks_seen: u32,
    ticks_allowed: u32,
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

/// A live, initialised instance of a filter.
pub(crate) struct FilterInstance {
    store: Store<InstanceState>,
    bindings: Filter,
    /// Requests served: request phases run. A response phase is part of its request's use.
    pub(crate) uses: u64,
}

impl FilterInstance {
    /// Instantiates the filter and hands it its configuration.
    pub(crate) fn new(
        filter: &LoadedFilter,
        config_json: &str,
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
            heads: CallHeads::default(),
            names: HeaderNames::default(),
            ticker: filter.ticker.clone(),
            call_deadline: Instant::now(),
            ticks_seen: 0,
            ticks_allowed: 1,
            hard_deadline: Instant::now(),
            cap: MemoryCap {
                limit: filter.settings.memory_limit.as_usize(),
                exceeded: false,
            },
            wasi,
            table: ResourceTable::new(),
        };
        let mut store = Store::new(filter.pre.engine(), state);
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
        let mut instance = guarded(&mut store, init_timeout, |store| {
            filter.pre.instantiate(store)
        })
        .map_err(|failure| match failure {
            FilterFailure::Trap(reason) => FilterFailure::Unavailable(reason),
            other => other,
        })
        .map(|bindings| FilterInstance {
            store,
            bindings,
            uses: 0,
        })?;
        let handler = instance.bindings.gateway_filter_handler().clone();
        let registration = guarded(&mut instance.store, init_timeout, |store| {
            handler.call_init(store, config_json, environment())
        })?
        .map_err(FilterFailure::Rejected)?;
        Ok((instance, registration))
    }

    /// The header names kept for this instance's edits.
    pub(crate) fn names(&mut self) -> &mut HeaderNames {
        &mut self.store.data_mut().names
    }

    /// Runs the request phase on `head`, which is moved in for the call (for the filter's lazy
    /// reads) and back out after it, whatever the outcome. The outcome's edits are the caller's
    /// to check and apply.
    pub(crate) fn on_request(
        &mut self,
        head: &mut RequestHead,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Outcome, FilterFailure> {
        self.uses += 1;
        self.store.data_mut().heads.request = Some(std::mem::take(head));
        let handler = self.bindings.gateway_filter_handler().clone();
        let outcome = guarded(&mut self.store, timeout, |store| {
            handler.call_on_request(store, Resource::new_borrow(CURRENT), input)
        });
        if let Some(request) = self.store.data_mut().heads.request.take() {
            *head = request;
        }
        outcome
    }

    /// Runs the response phase; both heads are moved in for the call and back out after it.
    pub(crate) fn on_response(
        &mut self,
        request: &mut RequestHead,
        response: &mut ResponseHead,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Outcome, FilterFailure> {
        let status = response.status.as_u16();
        let heads = &mut self.store.data_mut().heads;
        heads.request = Some(std::mem::take(request));
        heads.response = Some(std::mem::take(response));
        let handler = self.bindings.gateway_filter_handler().clone();
        let outcome = guarded(&mut self.store, timeout, |store| {
            handler.call_on_response(
                store,
                Resource::new_borrow(CURRENT),
                Resource::new_borrow(CURRENT),
                status,
                input,
            )
        });
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

/// Runs one call into Wasm under the deadline, turning every way it can fail into a
/// [`FilterFailure`]: traps, the deadline, the memory cap, and a panic in host code it called.
fn guarded<T>(
    store: &mut Store<InstanceState>,
    timeout: Duration,
    call: impl FnOnce(&mut Store<InstanceState>) -> wasmtime::Result<T>,
) -> Result<T, FilterFailure> {
    let ticks_allowed = store.data().ticker.call_begins(timeout);
    let state = store.data_mut();
    let now = Instant::now();
    state.call_deadline = now + timeout;
    state.hard_deadline = now + HARD_DEADLINE_FACTOR * timeout;
    state.ticks_seen = 0;
    state.ticks_allowed = ticks_allowed;
    store.set_epoch_deadline(1);
    store.data_mut().last_error = None;
    // A panic in host code called by the guest (e.g. WASI stdio, which blocks on the async
    // runtime) must cost this instance, not the worker thread.
    let outcome = catch_unwind(AssertUnwindSafe(|| call(&mut *store)));
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
