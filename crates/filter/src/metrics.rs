//! The metrics filters declare, kept where the request path can update them without a lock.
//!
//! A filter declares its metrics at `init`; the registry keeps one [`Family`] per filter and
//! metric name, shared by every route and instance of that filter and kept across reloads while
//! the declaration stays the same. Each family holds one shard of cells per worker thread: an
//! update is an uncontended atomic on the calling thread's shard, and only a reader (the export)
//! adds the shards up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gateway_rules::metrics::{MetricKind, MetricSpec};

/// A family's filter and metric name.
type FamilyKey = (Arc<str>, String);

/// Every metric every filter declared.
#[derive(Default)]
pub struct MetricRegistry {
    families: Mutex<HashMap<FamilyKey, Arc<Family>>>,
}

/// One declared metric of one filter, with its cells.
pub struct Family {
    pub filter: Arc<str>,
    pub spec: MetricSpec,
    /// Cells per series: a counter has one (its total); a histogram one per bucket, one for
    /// `+Inf`, then its count and its sum.
    cells_per_series: usize,
    shards: Box<[Shard]>,
}

/// One worker's cells, on cache lines of their own so that workers never share one.
#[repr(align(128))]
struct Shard(Box<[AtomicU64]>);

/// What a series holds, summed over the shards.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesValue {
    Counter(f64),
    /// Cumulative counts per bucket upper bound (the last is `+Inf`), then count and sum.
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

/// One series of a family as the export reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: SeriesValue,
}

fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 2)
}

/// The shard of the calling thread: threads take shards in turn the first time they update.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SHARD.with(|shard| *shard)
}

/// Adds to an `f64` kept as bits. Each shard has one writer in the common case, so the loop
/// runs once.
fn add_f64(cell: &AtomicU64, amount: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + amount).to_bits())
    });
}

impl Family {
    fn new(filter: Arc<str>, spec: MetricSpec) -> Family {
        let cells_per_series = match &spec.kind {
            MetricKind::Counter => 1,
            MetricKind::Histogram(bounds) => bounds.len() + 3,
        };
        let cells = cells_per_series * spec.series();
        let shards = (0..shard_count())
            .map(|_| Shard((0..cells).map(|_| AtomicU64::new(0)).collect()))
            .collect();
        Family {
            filter,
            spec,
            cells_per_series,
            shards,
        }
    }

    /// Adds to a counter's series or observes a value in a histogram's. The update was checked
    /// against the declaration with `gateway_rules::metrics::update`.
    pub(crate) fn record(&self, series: u32, value: f64) {
        let shard = &self.shards[thread_shard() % self.shards.len()];
        let cells = &shard.0[series as usize * self.cells_per_series..][..self.cells_per_series];
        match &self.spec.kind {
            MetricKind::Counter => add_f64(&cells[0], value),
            MetricKind::Histogram(bounds) => {
                let bucket = bounds
                    .iter()
                    .position(|bound| value <= *bound)
                    .unwrap_or(bounds.len());
                cells[bucket].fetch_add(1, Ordering::Relaxed);
                cells[bounds.len() + 1].fetch_add(1, Ordering::Relaxed);
                add_f64(&cells[bounds.len() + 2], value);
            }
        }
    }

    /// The value of the series with these label values (in declaration order), summed over the
    /// shards; `None` if a value was not declared.
    pub fn value(&self, labels: &[&str]) -> Option<SeriesValue> {
        let series = self.spec.series_index(labels)?;
        self.series()
            .into_iter()
            .nth(series as usize)
            .map(|series| series.value)
    }

    /// Every series, summed over the shards.
    pub fn series(&self) -> Vec<Series> {
        (0..self.spec.series())
            .map(|series| {
                let cell = |index: usize| {
                    self.shards
                        .iter()
                        .map(move |shard| &shard.0[series * self.cells_per_series + index])
                };
                let value = match &self.spec.kind {
                    MetricKind::Counter => SeriesValue::Counter(
                        cell(0)
                            .map(|cell| f64::from_bits(cell.load(Ordering::Relaxed)))
                            .sum(),
                    ),
                    MetricKind::Histogram(bounds) => {
                        let count_of = |index| -> u64 {
                            cell(index).map(|cell| cell.load(Ordering::Relaxed)).sum()
                        };
                        let mut cumulative = 0;
                        let buckets = bounds
                            .iter()
                            .copied()
                            .chain([f64::INFINITY])
                            .enumerate()
                            .map(|(index, bound)| {
                                cumulative += count_of(index);
                                (bound, cumulative)
                            })
                            .collect();
                        SeriesValue::Histogram {
                            buckets,
                            count: count_of(bounds.len() + 1),
                            sum: cell(bounds.len() + 2)
                                .map(|cell| f64::from_bits(cell.load(Ordering::Relaxed)))
                                .sum(),
                        }
                    }
                };
                let labels = self
                    .spec
                    .label_values(series as u32)
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect();
                Series { labels, value }
            })
            .collect()
    }
}

impl MetricRegistry {
    /// The families for a filter's declarations, in declaration order. A metric declared before
    /// with the same shape keeps its family and its values; one declared anew with another shape
    /// (a new version of the filter, say) starts a new family, which the export shows from then on.
    pub(crate) fn register(&self, filter: &Arc<str>, specs: Vec<MetricSpec>) -> Vec<Arc<Family>> {
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        specs
            .into_iter()
            .map(|spec| {
                let key = (filter.clone(), spec.name.clone());
                match families.get(&key) {
                    Some(family) if family.spec == spec => family.clone(),
                    _ => {
                        let family = Arc::new(Family::new(filter.clone(), spec));
                        families.insert(key, family.clone());
                        family
                    }
                }
            })
            .collect()
    }

    /// Every family, ordered by filter and metric name.
    pub fn families(&self) -> Vec<Arc<Family>> {
        let families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<Arc<Family>> = families.values().cloned().collect();
        all.sort_by(|a, b| (&a.filter, &a.spec.name).cmp(&(&b.filter, &b.spec.name)));
        all
    }

    /// One series' value: `None` if not declared.
    #[cfg(test)]
    fn value(&self, filter: &str, metric: &str, labels: &[&str]) -> Option<SeriesValue> {
        self.families()
            .into_iter()
            .find(|family| &*family.filter == filter && family.spec.name == metric)?
            .value(labels)
    }
}

#[cfg(test)]
mod tests {
    use gateway_rules::metrics::Label;

    use super::*;

    fn histogram() -> MetricSpec {
        MetricSpec {
            name: "size".into(),
            help: "sizes".into(),
            kind: MetricKind::Histogram(vec![10.0, 100.0]),
            labels: vec![Label {
                name: "kind".into(),
                values: vec!["a".into(), "b".into()],
            }],
        }
    }

    #[test]
    fn updates_from_many_threads_add_up_per_series() {
        let registry = MetricRegistry::default();
        let filter: Arc<str> = Arc::from("f");
        let families = registry.register(&filter, vec![histogram()]);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for value in [5.0, 50.0, 500.0] {
                        families[0].record(1, value);
                    }
                });
            }
        });
        assert_eq!(
            registry.value("f", "size", &["b"]),
            Some(SeriesValue::Histogram {
                buckets: vec![(10.0, 4), (100.0, 8), (f64::INFINITY, 12)],
                count: 12,
                sum: 2220.0,
            })
        );
        let untouched = registry.value("f", "size", &["a"]);
        assert!(matches!(
            untouched,
            Some(SeriesValue::Histogram { count: 0, .. })
        ));
    }

    #[test]
    fn a_declaration_made_again_keeps_its_values_and_a_new_shape_starts_over() {
        let registry = MetricRegistry::default();
        let filter: Arc<str> = Arc::from("f");
        let counter = MetricSpec {
            name: "hits".into(),
            help: String::new(),
            kind: MetricKind::Counter,
            labels: Vec::new(),
        };
        registry.register(&filter, vec![counter.clone()])[0].record(0, 2.0);
        registry.register(&filter, vec![counter.clone()])[0].record(0, 3.0);
        assert_eq!(
            registry.value("f", "hits", &[]),
            Some(SeriesValue::Counter(5.0))
        );
        let reshaped = MetricSpec {
            help: "now with help".into(),
            ..counter
        };
        registry.register(&filter, vec![reshaped]);
        assert_eq!(
            registry.value("f", "hits", &[]),
            Some(SeriesValue::Counter(0.0))
        );
    }
}
