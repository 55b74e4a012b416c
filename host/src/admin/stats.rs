//! `GET /admin/stats` (and the seeds' `GET /api/v1/gateway/stats`): totals an operator reads
//! at a glance, from the same counters `/metrics` shows.
//!
//! - `requests`: answered since start, in total and by status class (`gateway-metrics`);
//! - `rate_limits`: the rate-limit filters' decisions, `limited` and `shadow_limited` (their
//!   `requests_total` metric);
//! - `breakers`: instances whose breaker is closed, open or half-open now, and how often
//!   breakers opened;
//! - `cache`: the cache filters' `hit`s and `miss`es (an expired entry counts as a miss), and
//!   the hit ratio of the two, `null` before either.
//!
//! The rate-limit and cache filters are found by their module (`gateway_plugin_rate_limit`,
//! `gateway_plugin_cache`), whatever the configuration names them.

use std::collections::HashSet;

use gateway_filter::metrics::{ExportedFamily, SeriesValue};

use crate::metrics::module_is;
use crate::reload::Reloader;

/// Sums, over the families of `filters` named `requests_total`, the series whose `label` is
/// one of `values`.
fn sum_requests(
    families: &[ExportedFamily],
    filters: &HashSet<String>,
    label: &str,
    values: &[&str],
) -> u64 {
    families
        .iter()
        .filter(|family| family.name == "requests_total" && filters.contains(&*family.filter))
        .flat_map(|family| &family.series)
        .filter(|series| {
            series
                .labels
                .iter()
                .any(|(name, value)| name == label && values.contains(&value.as_str()))
        })
        .map(|series| match series.value {
            // Counters hold whole counts; a filter's counter is an f64 only on the wire.
            SeriesValue::Counter(total) => total as u64,
            SeriesValue::Histogram { count, .. } => count,
        })
        .sum()
}

/// The stats, as JSON.
pub(crate) fn stats(reloader: &Reloader) -> serde_json::Value {
    let by_class = gateway_metrics::requests_by_class();
    let filters = reloader.status().filters;
    let named = |stem: &str| -> HashSet<String> {
        filters
            .iter()
            .filter(|filter| module_is(&filter.module, stem))
            .map(|filter| filter.name.clone())
            .collect()
    };
    let rate_limiters = named("gateway_plugin_rate_limit");
    let caches = named("gateway_plugin_cache");
    let families = reloader.filter_metrics().export();
    let hits = sum_requests(&families, &caches, "status", &["hit"]);
    let misses = sum_requests(&families, &caches, "status", &["miss", "expired"]);

    let (mut closed, mut open, mut half_open, mut opened) = (0u64, 0u64, 0u64, 0u64);
    let state = reloader.live().current();
    for (_, service) in state.services() {
        for instance in service.status().instances {
            match instance.breaker.map(|state| state.as_str()) {
                Some("closed") => closed += 1,
                Some("open") => open += 1,
                Some("half_open") => half_open += 1,
                _ => continue,
            }
            opened += u64::from(instance.breaker_opened);
        }
    }

    serde_json::json!({
        "requests": {
            "total": by_class.iter().sum::<u64>(),
            "1xx": by_class[0],
            "2xx": by_class[1],
            "3xx": by_class[2],
            "4xx": by_class[3],
            "5xx": by_class[4],
        },
        "rate_limits": {
            "limited": sum_requests(&families, &rate_limiters, "outcome", &["limited"]),
            "shadow_limited": sum_requests(&families, &rate_limiters, "outcome", &["shadow_limited"]),
        },
        "breakers": {
            "closed": closed,
            "open": open,
            "half_open": half_open,
            "opened_total": opened,
        },
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_ratio": (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        },
    })
}
