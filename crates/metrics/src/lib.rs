//! The gateway's own metrics: what the request path counts, and its Prometheus exposition.
//!
//! The crates that serve a request bump counters here as they go: the pipeline per route
//! ([`RouteMetrics`]), the filter pools per filter and phase ([`FilterMetrics`]), the services
//! per instance tried ([`InstanceMetrics`]) and for their retries ([`ServiceMetrics`]), the
//! server for connections and bytes ([`connection_opened`], [`bytes_read`]). Every counter is
//! sharded per thread (`cells`), so the hot path pays one uncontended relaxed add per count,
//! with no lock and no allocation; a scrape sums the shards ([`Exposition`], a
//! `prometheus-client` collector).
//!
//! Handles are looked up by name when a serving state is built ([`route`], [`filter`],
//! [`service`], [`instance`]), never per request, and the same name gets the same counters:
//! a reload keeps counting where the previous state left off, as Prometheus expects of a
//! counter. Names come from the configuration, so label values stay bounded by it; methods
//! are folded to a fixed set and statuses to their class.
//!
//! [`set_enabled`]`(false)` (`metrics.enabled: false`) turns counting off process-wide, clock
//! reads included, for benchmarks that compare the two.
//!
//! Public surface: the handle types and their recording methods, the lookups, the enable flag
//! and [`Exposition`]; what the host derives from state at scrape time (instance health,
//! breakers, reloads, kv, the filters' own metrics) is the host's.

mod cells;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use cells::{Cells, HISTOGRAM_CELLS, observe, read_histogram};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns counting on or off for the whole process (on by default).
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether counting is on: the request path asks before it reads a clock for a metric.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A clock read if counting is on, for a duration recorded later.
#[inline]
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// The methods counted by name; any other is `OTHER`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

#[inline]
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A status's class; the rare status past 599 counts with the 5xx.
#[inline]
fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Requests taking one route (or none: [`UNROUTED`]).
pub struct RouteMetrics {
    cells: Cells,
}

/// The route label of requests that matched no route (or were refused before routing).
pub const UNROUTED: &str = "-";

const ROUTE_DURATION: usize = METHODS.len() * CLASSES.len();

impl RouteMetrics {
    fn new() -> RouteMetrics {
        RouteMetrics {
            cells: Cells::new(ROUTE_DURATION + HISTOGRAM_CELLS),
        }
    }

    /// Counts one answered request, timed from `started` (see [`start`]).
    #[inline]
    pub fn record(&self, method: &Method, status: u16, started: Option<Instant>) {
        let Some(started) = started else { return };
        self.cells.add(
            method_index(method) * CLASSES.len() + class_index(status),
            1,
        );
        observe(&self.cells, ROUTE_DURATION, micros(started.elapsed()));
    }
}

/// A filter phase, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Request,
    Response,
}

const PHASES: [&str; 2] = ["request", "response"];

/// How a filter call ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEnd {
    /// It let the request go on.
    Continued,
    /// It answered (or replaced the response).
    Replied,
    Trap,
    Timeout,
    MemoryLimit,
    /// Any other failure: no instance, a refused edit or reply.
    OtherFailure,
}

const FAILURE_KINDS: [&str; 4] = ["trap", "timeout", "memory_limit", "other"];

/// Cells per phase: calls, replies, the four failure kinds, then the duration histogram.
const FILTER_DURATION: usize = 6;
const FILTER_PHASE_CELLS: usize = FILTER_DURATION + HISTOGRAM_CELLS;

/// Calls into one filter, over every route it serves.
pub struct FilterMetrics {
    cells: Cells,
}

impl FilterMetrics {
    fn new() -> FilterMetrics {
        FilterMetrics {
            cells: Cells::new(PHASES.len() * FILTER_PHASE_CELLS),
        }
    }

    /// Counts one call of `phase`, timed from `started` (see [`start`]).
    #[inline]
    pub fn record(&self, phase: Phase, end: CallEnd, started: Option<Instant>) {
        let Some(started) = started else { return };
        let at = phase as usize * FILTER_PHASE_CELLS;
        self.cells.add(at, 1);
        let extra = match end {
            CallEnd::Continued => None,
            CallEnd::Replied => Some(1),
            CallEnd::Trap => Some(2),
            CallEnd::Timeout => Some(3),
            CallEnd::MemoryLimit => Some(4),
            CallEnd::OtherFailure => Some(5),
        };
        if let Some(cell) = extra {
            self.cells.add(at + cell, 1);
        }
        observe(&self.cells, at + FILTER_DURATION, micros(started.elapsed()));
    }
}

/// One filter phase's calls since start, as the admin API shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTotals {
    pub calls: u64,
    pub replies: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_limits: u64,
    pub other_failures: u64,
    /// Mean call duration in microseconds, `None` before the first call.
    pub mean_micros: Option<u64>,
}

/// The calls counted for the filter named `name`, per phase (request, response); zeros for a
/// filter never called.
pub fn filter_totals(name: &str) -> [PhaseTotals; 2] {
    let registry = registry();
    let Some(metrics) = registry.filters.get(name) else {
        return [PhaseTotals::default(); 2];
    };
    [0, 1].map(|phase| {
        let at = phase * FILTER_PHASE_CELLS;
        let cell = |offset: usize| metrics.cells.sum(at + offset);
        let duration = read_histogram(&metrics.cells, at + FILTER_DURATION);
        PhaseTotals {
            calls: cell(0),
            replies: cell(1),
            traps: cell(2),
            timeouts: cell(3),
            memory_limits: cell(4),
            other_failures: cell(5),
            mean_micros: (duration.count > 0)
                .then(|| (duration.sum * 1e6 / duration.count as f64).round() as u64),
        }
    })
}

/// How one try at an instance ended: its answer's class, or no answer.
const TRY_OUTCOMES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
const TRY_DURATION: usize = TRY_OUTCOMES.len();

/// Tries sent to one instance of a service.
pub struct InstanceMetrics {
    cells: Cells,
}

impl InstanceMetrics {
    fn new() -> InstanceMetrics {
        InstanceMetrics {
            cells: Cells::new(TRY_DURATION + HISTOGRAM_CELLS),
        }
    }

    /// Counts one try: `status` is its answer's, `None` if none came; timed from `started`
    /// (see [`start`]) to the answer's head.
    #[inline]
    pub fn record(&self, status: Option<u16>, started: Option<Instant>) {
        let Some(started) = started else { return };
        self.cells
            .add(status.map_or(TRY_OUTCOMES.len() - 1, class_index), 1);
        observe(&self.cells, TRY_DURATION, micros(started.elapsed()));
    }
}

/// A service's retries: tries after the first, and retries the budget refused.
pub struct ServiceMetrics {
    cells: Cells,
}

impl ServiceMetrics {
    fn new() -> ServiceMetrics {
        ServiceMetrics {
            cells: Cells::new(2),
        }
    }

    /// Counts a retry sent.
    #[inline]
    pub fn retried(&self) {
        if enabled() {
            self.cells.add(0, 1);
        }
    }

    /// Counts a retry the budget (or the overall deadline) did not allow.
    #[inline]
    pub fn budget_exhausted(&self) {
        if enabled() {
            self.cells.add(1, 1);
        }
    }
}

/// Connections and bytes on the traffic listeners: opened, closed, read, written.
static SERVER: LazyLock<Cells> = LazyLock::new(|| Cells::new(4));

/// Counts a client connection accepted; [`connection_closed`] when it ends.
#[inline]
pub fn connection_opened() {
    if enabled() {
        SERVER.add(0, 1);
    }
}

/// Counts a client connection closed.
#[inline]
pub fn connection_closed() {
    if enabled() {
        SERVER.add(1, 1);
    }
}

/// Counts bytes read from clients.
#[inline]
pub fn bytes_read(n: usize) {
    if enabled() {
        SERVER.add(2, n as u64);
    }
}

/// Counts bytes written to clients.
#[inline]
pub fn bytes_written(n: usize) {
    if enabled() {
        SERVER.add(3, n as u64);
    }
}

/// Every handle handed out, by name, so that a name keeps its counters across reloads.
#[derive(Default)]
struct Registry {
    routes: BTreeMap<String, Arc<RouteMetrics>>,
    filters: BTreeMap<String, Arc<FilterMetrics>>,
    services: BTreeMap<String, Arc<ServiceMetrics>>,
    instances: BTreeMap<(String, String), Arc<InstanceMetrics>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // Entries are inserted whole: a poisoned lock still holds a usable map.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn get_or_insert<K: Ord, V>(map: &mut BTreeMap<K, Arc<V>>, key: K, new: fn() -> V) -> Arc<V> {
    map.entry(key).or_insert_with(|| Arc::new(new())).clone()
}

/// The counters of route `name` ([`UNROUTED`] for requests no route took).
pub fn route(name: &str) -> Arc<RouteMetrics> {
    get_or_insert(&mut registry().routes, name.to_owned(), RouteMetrics::new)
}

/// The counters of filter `name`.
pub fn filter(name: &str) -> Arc<FilterMetrics> {
    get_or_insert(&mut registry().filters, name.to_owned(), FilterMetrics::new)
}

/// The counters of service `name`.
pub fn service(name: &str) -> Arc<ServiceMetrics> {
    get_or_insert(
        &mut registry().services,
        name.to_owned(),
        ServiceMetrics::new,
    )
}

/// The counters of the instance labelled `instance` (`service@host:port`) of `service`.
pub fn instance(service: &str, instance: &str) -> Arc<InstanceMetrics> {
    get_or_insert(
        &mut registry().instances,
        (service.to_owned(), instance.to_owned()),
        InstanceMetrics::new,
    )
}

/// The requests counted over every route, by status class: for totals such as the admin API's
/// stats.
pub fn requests_by_class() -> [u64; 5] {
    let mut totals = [0; 5];
    for metrics in registry().routes.values() {
        for method in 0..METHODS.len() {
            for (class, total) in totals.iter_mut().enumerate() {
                *total += metrics.cells.sum(method * CLASSES.len() + class);
            }
        }
    }
    totals
}

/// The counters above in the Prometheus text format, as a `prometheus-client` collector.
#[derive(Debug, Default)]
pub struct Exposition;

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn histogram(
    mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    cells: &Cells,
    at: usize,
) -> fmt::Result {
    let read = read_histogram(cells, at);
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        read.sum,
        read.count,
        &read.buckets,
        None,
    )
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let registry = registry();

        let mut family = encoder.encode_descriptor(
            "gateway_requests",
            "Requests answered, by route, method and status class",
            None,
            MetricType::Counter,
        )?;
        for (route, metrics) in &registry.routes {
            for (m, method) in METHODS.iter().enumerate() {
                for (c, class) in CLASSES.iter().enumerate() {
                    let value = metrics.cells.sum(m * CLASSES.len() + c);
                    if value == 0 {
                        continue;
                    }
                    let labels = [
                        ("route", route.as_str()),
                        ("method", method),
                        ("status", class),
                    ];
                    counter(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "gateway_request_duration_seconds",
            "Time from a request's arrival to its response head, by route",
            None,
            MetricType::Histogram,
        )?;
        for (route, metrics) in &registry.routes {
            histogram(
                family.encode_family(&[("route", route.as_str())])?,
                &metrics.cells,
                ROUTE_DURATION,
            )?;
        }

        let mut family = encoder.encode_descriptor(
            "gateway_filter_calls",
            "Filter calls, by filter and phase",
            None,
            MetricType::Counter,
        )?;
        for (filter, metrics) in &registry.filters {
            for (p, phase) in PHASES.iter().enumerate() {
                let labels = [("filter", filter.as_str()), ("phase", phase)];
                counter(metrics.cells.sum(p * FILTER_PHASE_CELLS))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "gateway_filter_replies",
            "Filter calls that answered the request or replaced the response, by filter and phase",
            None,
            MetricType::Counter,
        )?;
        for (filter, metrics) in &registry.filters {
            for (p, phase) in PHASES.iter().enumerate() {
                let labels = [("filter", filter.as_str()), ("phase", phase)];
                counter(metrics.cells.sum(p * FILTER_PHASE_CELLS + 1))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "gateway_filter_failures",
            "Filter calls that failed, by filter, phase and kind (trap, timeout, memory_limit, other)",
            None,
            MetricType::Counter,
        )?;
        for (filter, metrics) in &registry.filters {
            for (p, phase) in PHASES.iter().enumerate() {
                for (k, kind) in FAILURE_KINDS.iter().enumerate() {
                    let labels = [
                        ("filter", filter.as_str()),
                        ("phase", phase),
                        ("kind", kind),
                    ];
                    counter(metrics.cells.sum(p * FILTER_PHASE_CELLS + 2 + k))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "gateway_filter_duration_seconds",
            "Time in filter calls, by filter and phase",
            None,
            MetricType::Histogram,
        )?;
        for (filter, metrics) in &registry.filters {
            for (p, phase) in PHASES.iter().enumerate() {
                let labels = [("filter", filter.as_str()), ("phase", phase)];
                histogram(
                    family.encode_family(&labels)?,
                    &metrics.cells,
                    p * FILTER_PHASE_CELLS + FILTER_DURATION,
                )?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "gateway_upstream_requests",
            "Tries sent to upstream instances, by service, instance and outcome (status class or error)",
            None,
            MetricType::Counter,
        )?;
        for ((service, instance), metrics) in &registry.instances {
            for (o, outcome) in TRY_OUTCOMES.iter().enumerate() {
                let value = metrics.cells.sum(o);
                if value == 0 {
                    continue;
                }
                let labels = [
                    ("service", service.as_str()),
                    ("upstream", instance.as_str()),
                    ("outcome", outcome),
                ];
                counter(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "gateway_upstream_duration_seconds",
            "Time from sending a try to its answer's head, by service and instance",
            None,
            MetricType::Histogram,
        )?;
        for ((service, instance), metrics) in &registry.instances {
            let labels = [
                ("service", service.as_str()),
                ("upstream", instance.as_str()),
            ];
            histogram(family.encode_family(&labels)?, &metrics.cells, TRY_DURATION)?;
        }
        for (cell, name, help) in [
            (0, "gateway_upstream_retries", "Retries sent, by service"),
            (
                1,
                "gateway_upstream_retry_budget_exhausted",
                "Retries not sent because the retry budget or the deadline had no room, by service",
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (service, metrics) in &registry.services {
                counter(metrics.cells.sum(cell))
                    .encode(family.encode_family(&[("service", service.as_str())])?)?;
            }
        }
        drop(registry);

        let opened = SERVER.sum(0);
        let closed = SERVER.sum(1);
        ConstGauge::new(i64::try_from(opened.saturating_sub(closed)).unwrap_or(i64::MAX)).encode(
            encoder.encode_descriptor(
                "gateway_connections_open",
                "Client connections open on the traffic listeners",
                None,
                MetricType::Gauge,
            )?,
        )?;
        counter(opened).encode(encoder.encode_descriptor(
            "gateway_connections_accepted",
            "Client connections accepted on the traffic listeners",
            None,
            MetricType::Counter,
        )?)?;
        counter(SERVER.sum(2)).encode(encoder.encode_descriptor(
            "gateway_received_bytes",
            "Bytes read from clients",
            None,
            MetricType::Counter,
        )?)?;
        counter(SERVER.sum(3)).encode(encoder.encode_descriptor(
            "gateway_sent_bytes",
            "Bytes written to clients",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_fold_to_a_fixed_set_and_statuses_to_their_class() {
        let odd = Method::from_bytes(b"PROPFIND").expect("a valid method");
        assert_eq!(METHODS[method_index(&odd)], "OTHER");
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(599)], "5xx");
        assert_eq!(CLASSES[class_index(999)], "5xx");
        assert_eq!(CLASSES[class_index(100)], "1xx");
    }

    #[test]
    fn the_exposition_names_counters_with_total_and_histograms_cumulatively() {
        let metrics = route("exposed");
        metrics.record(&Method::DELETE, 503, start());
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(Exposition));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("the exposition encodes");
        assert!(
            text.contains(
                r#"gateway_requests_total{route="exposed",method="DELETE",status="5xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gateway_request_duration_seconds_bucket{le="+Inf",route="exposed"} 1"#
            ) || text.contains(
                r#"gateway_request_duration_seconds_bucket{route="exposed",le="+Inf"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gateway_connections_open gauge"),
            "{text}"
        );
    }

    #[test]
    fn a_name_keeps_its_counters() {
        let first = route("keeps");
        first.record(&Method::GET, 200, start());
        let again = route("keeps");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(again.cells.sum(class_index(200)), 1);
    }
}
