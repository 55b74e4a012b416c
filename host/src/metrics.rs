//! `GET /metrics`: every metric of the gateway in the OpenMetrics text format.
//!
//! Two collectors feed one `prometheus-client` registry per scrape: `gateway-metrics`'s, which
//! sums the per-worker counters of the request path, and [`StateSnapshot`], which reads what the
//! gateway's state already keeps (instance health and breakers, reloads, the kv stores, the
//! filters' own metrics) so that none of it is counted twice. The snapshot is taken before
//! encoding, so no lock of the serving path is held while text is written.

use std::fmt;
use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use gateway_filter::metrics::{ExportedFamily, SeriesValue};
use gateway_kv::BackendStatus;
use gateway_rules::metrics::MetricKind;

use crate::reload::{ReloadStatus, Reloader};

/// The content type of what `render` writes: `prometheus-client` writes the OpenMetrics text
/// format (Prometheus's text format with `# EOF` and counters' `_total` suffix), which
/// Prometheus asks for first.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What one scrape reads of one instance.
#[derive(Debug)]
struct InstanceRead {
    service: String,
    /// `host:port`, as `gateway-metrics` labels the instance's tries.
    upstream: String,
    healthy: bool,
    ejected: bool,
    breaker: Option<&'static str>,
    breaker_opened: u32,
    in_flight: u32,
}

/// What the gateway's state says at scrape time.
#[derive(Debug)]
struct StateSnapshot {
    reloads: ReloadStatus,
    instances: Vec<InstanceRead>,
    kv: Vec<BackendStatus>,
    filter_metrics: Vec<ExportedFamily>,
}

impl StateSnapshot {
    fn take(reloader: &Reloader) -> StateSnapshot {
        let state = reloader.live().current();
        let instances = state
            .services()
            .flat_map(|(name, service)| {
                service
                    .status()
                    .instances
                    .into_iter()
                    .map(move |instance| InstanceRead {
                        service: name.to_owned(),
                        upstream: instance
                            .label
                            .strip_prefix(&format!("{name}@"))
                            .unwrap_or(&instance.label)
                            .to_owned(),
                        healthy: instance.healthy,
                        ejected: instance.ejected,
                        breaker: instance.breaker.map(|state| state.as_str()),
                        breaker_opened: instance.breaker_opened,
                        in_flight: instance.in_flight,
                    })
            })
            .collect();
        let stores = reloader.kv();
        let kv = std::iter::once(stores.memory.status())
            .chain(stores.redis.as_ref().map(|redis| redis.status()))
            .collect();
        StateSnapshot {
            reloads: reloader.status(),
            instances,
            kv,
            filter_metrics: reloader.filter_metrics().export(),
        }
    }
}

/// The filter-declared metric's exported name: `filter_<filter>_<metric>`, as the admin API's
/// `/admin/filter-metrics` names it, with `_total` left for the encoder to add to counters.
fn filter_metric_name(family: &ExportedFamily) -> String {
    let name = match family.kind {
        MetricKind::Counter => family.name.strip_suffix("_total").unwrap_or(&family.name),
        MetricKind::Histogram(_) => &family.name,
    };
    format!("filter_{}_{name}", family.filter.replace('-', "_"))
}

fn gauge(value: i64) -> ConstGauge<i64> {
    ConstGauge::new(value)
}

fn encode_instances(snapshot: &StateSnapshot, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    type Read = fn(&InstanceRead) -> i64;
    let gauges: [(&str, &str, Read); 3] = [
        (
            "gateway_upstream_healthy",
            "1 if the instance's active health checks last found it healthy (always 1 without them)",
            |instance| i64::from(instance.healthy),
        ),
        (
            "gateway_upstream_ejected",
            "1 while outlier detection keeps the instance out",
            |instance| i64::from(instance.ejected),
        ),
        (
            "gateway_upstream_in_flight",
            "Requests in flight to the instance, from every worker",
            |instance| i64::from(instance.in_flight),
        ),
    ];
    for (name, help, read) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for instance in &snapshot.instances {
            let labels = [
                ("service", instance.service.as_str()),
                ("upstream", instance.upstream.as_str()),
            ];
            gauge(read(instance)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "gateway_upstream_breaker_state",
        "1 for the state the instance's circuit breaker is in (closed, open, half_open); instances without a breaker have no series",
        None,
        MetricType::Gauge,
    )?;
    for instance in &snapshot.instances {
        let Some(current) = instance.breaker else {
            continue;
        };
        for state in ["closed", "open", "half_open"] {
            let labels = [
                ("service", instance.service.as_str()),
                ("upstream", instance.upstream.as_str()),
                ("state", state),
            ];
            gauge(i64::from(state == current)).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = encoder.encode_descriptor(
        "gateway_upstream_breaker_opened",
        "Times the instance's circuit breaker opened",
        None,
        MetricType::Counter,
    )?;
    for instance in &snapshot.instances {
        if instance.breaker.is_none() {
            continue;
        }
        let labels = [
            ("service", instance.service.as_str()),
            ("upstream", instance.upstream.as_str()),
        ];
        ConstCounter::new(u64::from(instance.breaker_opened))
            .encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_reloads(reloads: &ReloadStatus, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        "gateway_reloads",
        "Reloads since start, by result (applied or rejected)",
        None,
        MetricType::Counter,
    )?;
    for (result, count) in [
        ("applied", reloads.successes),
        ("rejected", reloads.failures),
    ] {
        ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
    }
    gauge(i64::try_from(reloads.generation).unwrap_or(i64::MAX)).encode(encoder.encode_descriptor(
        "gateway_generation",
        "The configuration generation serving now; the start-up state is 1",
        None,
        MetricType::Gauge,
    )?)
}

fn encode_kv(stores: &[BackendStatus], encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    type Read = fn(&BackendStatus) -> u64;
    let counters: [(&str, &str, Read); 3] = [
        (
            "gateway_kv_operations",
            "Operations asked of the kv store, whatever their outcome, by backend",
            |store| store.operations,
        ),
        (
            "gateway_kv_errors",
            "kv operations that failed because the store was unavailable, by backend",
            |store| store.errors,
        ),
        (
            "gateway_kv_timeouts",
            "kv operations not answered in time, by backend",
            |store| store.timeouts,
        ),
    ];
    for (name, help, read) in counters {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for store in stores {
            ConstCounter::new(read(store))
                .encode(family.encode_family(&[("backend", store.backend)])?)?;
        }
    }
    type Latency = fn(&BackendStatus) -> Option<u64>;
    let latencies: [(&str, &str, Latency); 2] = [
        (
            "gateway_kv_latency_mean_seconds",
            "Mean time of the kv operations the store answered, by backend (timed backends only)",
            |store| store.mean_latency_us,
        ),
        (
            "gateway_kv_latency_max_seconds",
            "Longest time of a kv operation the store answered, by backend (timed backends only)",
            |store| store.max_latency_us,
        ),
    ];
    for (name, help, read) in latencies {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for store in stores {
            if let Some(us) = read(store) {
                ConstGauge::new(us as f64 / 1e6)
                    .encode(family.encode_family(&[("backend", store.backend)])?)?;
            }
        }
    }
    Ok(())
}

fn encode_filter_metrics(
    families: &[ExportedFamily],
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    for exported in families {
        let kind = match exported.kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Histogram(_) => MetricType::Histogram,
        };
        let name = filter_metric_name(exported);
        let mut family = encoder.encode_descriptor(&name, &exported.help, None, kind)?;
        for series in &exported.series {
            let mut metric = family.encode_family(&series.labels)?;
            match &series.value {
                SeriesValue::Counter(total) => ConstCounter::new(*total).encode(metric)?,
                SeriesValue::Histogram {
                    buckets,
                    count,
                    sum,
                } => {
                    // The export's buckets are cumulative; the encoder accumulates them again.
                    let mut below = 0;
                    let per_bucket: Vec<(f64, u64)> = buckets
                        .iter()
                        .map(|&(bound, cumulative)| {
                            let in_bucket = cumulative.saturating_sub(below);
                            below = cumulative;
                            (bound, in_bucket)
                        })
                        .collect();
                    metric.encode_histogram::<NoLabelSet>(*sum, *count, &per_bucket, None)?;
                }
            }
        }
    }
    Ok(())
}

impl Collector for StateSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        encode_instances(self, &mut encoder)?;
        encode_reloads(&self.reloads, &mut encoder)?;
        encode_kv(&self.kv, &mut encoder)?;
        encode_filter_metrics(&self.filter_metrics, &mut encoder)
    }
}

/// The whole exposition, in the Prometheus text format.
pub(crate) fn render(reloader: &Reloader) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(gateway_metrics::Exposition));
    registry.register_collector(Box::new(StateSnapshot::take(reloader)));
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Whether the filter with this module is the plugin named by `stem` (its file name without
/// `.wasm`), as the stats find the rate-limit and cache filters.
pub(crate) fn module_is(module: &Path, stem: &str) -> bool {
    module.file_stem().is_some_and(|found| found == stem)
}
