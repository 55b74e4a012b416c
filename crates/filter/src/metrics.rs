//! The metrics filters declare, kept where the request path can update them without a lock.
//!
//! A filter declares its metrics at `init`; the registry keeps one [`Family`] per filter, metric
//! name and declaration, shared by every instance that declared it that way and kept across
//! reloads while the declaration stays the same. Each family holds one shard of cells per worker
//! thread: an update is an uncontended atomic on the calling thread's shard, and only a reader
//! (the export) adds the shards up.
//!
//! Routes configure one filter differently, and a filter's label values may follow its
//! configuration (the rate limiter labels by its scope and limit names), so one metric name can
//! have several declarations alive at once. The export merges them: one [`ExportedFamily`] per
//! filter and metric name, whose series are the union of the declarations' label values, the
//! series with the same labels added up. Counters so never go back when a reload changes a
//! declaration, and no route's series hides another's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gateway_rules::metrics::{MetricKind, MetricSpec};

/// A family's filter and metric name.
type FamilyKey = (Arc<str>, String);

/// How many declarations of one metric the registry keeps. Past it, the oldest that no instance
/// still uses is forgotten, with its values: a filter reloaded with ever new label values cannot
/// grow the registry without bound.
const DECLARATIONS_KEPT: usize = 16;

/// Every metric every filter declared.
#[derive(Default)]
pub struct MetricRegistry {
    /// Per filter and metric name, its declarations of one kind, oldest first.
    families: Mutex<HashMap<FamilyKey, Vec<Arc<Family>>>>,
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

/// One metric of one filter as the export shows it: every declaration alive, merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedFamily {
    pub filter: Arc<str>,
    pub name: String,
    /// The newest declaration's.
    pub help: String,
    pub kind: MetricKind,
    /// Ordered by labels.
    pub series: Vec<Series>,
}

impl ExportedFamily {
    /// The value of the series with exactly these labels, in any order; `None` if no
    /// declaration has it.
    pub fn value(&self, labels: &[(&str, &str)]) -> Option<&SeriesValue> {
        self.series
            .iter()
            .find(|series| {
                series.labels.len() == labels.len()
                    && labels.iter().all(|(name, value)| {
                        series
                            .labels
                            .iter()
                            .any(|(have, held)| have == name && held == value)
                    })
            })
            .map(|series| &series.value)
    }
}

impl SeriesValue {
    /// Adds another series of the same kind (and, for histograms, the same buckets).
    fn add(&mut self, other: &SeriesValue) {
        match (self, other) {
            (SeriesValue::Counter(total), SeriesValue::Counter(more)) => *total += more,
            (
                SeriesValue::Histogram {
                    buckets,
                    count,
                    sum,
                },
                SeriesValue::Histogram {
                    buckets: more_buckets,
                    count: more_count,
                    sum: more_sum,
                },
            ) => {
                for ((_, cumulative), (_, more)) in buckets.iter_mut().zip(more_buckets) {
                    *cumulative += more;
                }
                *count += more_count;
                *sum += more_sum;
            }
            _ => {}
        }
    }
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

    /// Every series, summed over the shards.
    fn series(&self) -> Vec<Series> {
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
    /// the same way keeps its family and its values; one declared with other label values or
    /// help gets a family of its own beside the others, merged with them in the export; one
    /// declared as another kind (a counter become a histogram, new buckets: a new version of the
    /// filter) replaces them all and starts over.
    pub(crate) fn register(&self, filter: &Arc<str>, specs: Vec<MetricSpec>) -> Vec<Arc<Family>> {
        let mut families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        specs
            .into_iter()
            .map(|spec| {
                let declarations = families
                    .entry((filter.clone(), spec.name.clone()))
                    .or_default();
                if let Some(family) = declarations.iter().find(|family| family.spec == spec) {
                    return family.clone();
                }
                if declarations
                    .first()
                    .is_some_and(|family| family.spec.kind != spec.kind)
                {
                    declarations.clear();
                }
                if declarations.len() >= DECLARATIONS_KEPT
                    && let Some(unused) = declarations
                        .iter()
                        .position(|family| Arc::strong_count(family) == 1)
                {
                    declarations.remove(unused);
                }
                let family = Arc::new(Family::new(filter.clone(), spec));
                declarations.push(family.clone());
                family
            })
            .collect()
    }

    /// Every metric of every filter, ordered by filter and metric name, its declarations merged.
    pub fn export(&self) -> Vec<ExportedFamily> {
        let families = self
            .families
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut exported: Vec<ExportedFamily> = families
            .iter()
            .filter_map(|((filter, name), declarations)| {
                let newest = declarations.last()?;
                let mut series: Vec<Series> = Vec::new();
                for family in declarations {
                    for one in family.series() {
                        match series.iter_mut().find(|held| held.labels == one.labels) {
                            Some(held) => held.value.add(&one.value),
                            None => series.push(one),
                        }
                    }
                }
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
                Some(ExportedFamily {
                    filter: filter.clone(),
                    name: name.clone(),
                    help: newest.spec.help.clone(),
                    kind: newest.spec.kind.clone(),
                    series,
                })
            })
            .collect();
        exported.sort_by(|a, b| (&a.filter, &a.name).cmp(&(&b.filter, &b.name)));
        exported
    }

    /// One series' value: `None` if not declared.
    #[cfg(test)]
    fn value(&self, filter: &str, metric: &str, labels: &[(&str, &str)]) -> Option<SeriesValue> {
        self.export()
            .into_iter()
            .find(|family| &*family.filter == filter && family.name == metric)?
            .value(labels)
            .cloned()
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
            registry.value("f", "size", &[("kind", "b")]),
            Some(SeriesValue::Histogram {
                buckets: vec![(10.0, 4), (100.0, 8), (f64::INFINITY, 12)],
                count: 12,
                sum: 2220.0,
            })
        );
        let untouched = registry.value("f", "size", &[("kind", "a")]);
        assert!(matches!(
            untouched,
            Some(SeriesValue::Histogram { count: 0, .. })
        ));
    }

    fn hits(labels: &[&str]) -> MetricSpec {
        MetricSpec {
            name: "hits".into(),
            help: String::new(),
            kind: MetricKind::Counter,
            labels: vec![Label {
                name: "scope".into(),
                values: labels.iter().map(|value| (*value).to_owned()).collect(),
            }],
        }
    }

    #[test]
    fn a_declaration_made_again_keeps_its_values() {
        let registry = MetricRegistry::default();
        let filter: Arc<str> = Arc::from("f");
        let first = registry.register(&filter, vec![hits(&["a"])]);
        first[0].record(0, 2.0);
        let again = registry.register(&filter, vec![hits(&["a"])]);
        again[0].record(0, 3.0);
        assert_eq!(
            registry.value("f", "hits", &[("scope", "a")]),
            Some(SeriesValue::Counter(5.0))
        );
    }

    #[test]
    fn routes_declaring_other_label_values_are_exported_together() {
        let registry = MetricRegistry::default();
        let filter: Arc<str> = Arc::from("f");
        let route_a = registry.register(&filter, vec![hits(&["a", "shared"])]);
        let route_b = registry.register(&filter, vec![hits(&["shared", "b"])]);
        route_a[0].record(0, 1.0);
        route_a[0].record(1, 10.0);
        route_b[0].record(0, 100.0);
        route_b[0].record(1, 1000.0);
        assert_eq!(
            registry.value("f", "hits", &[("scope", "a")]),
            Some(SeriesValue::Counter(1.0))
        );
        assert_eq!(
            registry.value("f", "hits", &[("scope", "shared")]),
            Some(SeriesValue::Counter(110.0))
        );
        assert_eq!(
            registry.value("f", "hits", &[("scope", "b")]),
            Some(SeriesValue::Counter(1000.0))
        );
        assert_eq!(registry.export()[0].series.len(), 3);
    }

    #[test]
    fn another_kind_starts_over_and_unused_declarations_are_bounded() {
        let registry = MetricRegistry::default();
        let filter: Arc<str> = Arc::from("f");
        let held = registry.register(&filter, vec![hits(&["kept"])]);
        held[0].record(0, 7.0);
        for index in 0..2 * DECLARATIONS_KEPT {
            registry.register(&filter, vec![hits(&[&format!("gone-{index}")])]);
        }
        let exported = registry.export();
        assert!(exported[0].series.len() <= DECLARATIONS_KEPT);
        assert_eq!(
            exported[0].value(&[("scope", "kept")]),
            Some(&SeriesValue::Counter(7.0)),
            "a declaration an instance still holds is never forgotten"
        );
        let histogram = MetricSpec {
            kind: MetricKind::Histogram(vec![1.0]),
            ..hits(&["kept"])
        };
        registry.register(&filter, vec![histogram]);
        assert!(matches!(
            registry.value("f", "hits", &[("scope", "kept")]),
            Some(SeriesValue::Histogram { count: 0, .. })
        ));
    }
}
