//! Counters and histograms a filter keeps, exported by the gateway as
//! `filter_<filter name>_<name>`.
//!
//! A filter creates its metrics in [`Filter::new`](crate::Filter::new) and keeps them in
//! `self`. Every label value a metric can take is declared up front, so a filter can never grow
//! the gateway's series without bound; the declarations are checked when the instance starts,
//! and a bad one refuses the configuration as `new` returning `Err` would. Updates are buffered
//! and go out with the call, so counting costs no crossing.
//!
//! ```
//! use gateway_sdk::metrics::{Counter, Histogram};
//!
//! struct Metrics {
//!     decisions: Counter,
//!     body_bytes: Histogram,
//! }
//!
//! let metrics = Metrics {
//!     decisions: Counter::with_labels(
//!         "decisions_total",
//!         "Requests decided, by outcome",
//!         &[("outcome", &["allow", "deny"])],
//!     ),
//!     body_bytes: Histogram::new("body_bytes", "Request body sizes", &[1024.0, 65536.0]),
//! };
//! metrics.decisions.inc_with(&["deny"]);
//! metrics.body_bytes.observe(512.0);
//! ```
//!
//! An update the declaration does not allow (label values never declared, a value that is not
//! a finite number) is dropped, with one warning in the log per metric rather than one per
//! request. A metric created after `new` has returned is not known to the gateway: its updates
//! are dropped too, with a warning when it is created.

use std::cell::Cell;

use gateway_rules::metrics::{Label, MetricKind, MetricSpec};

use crate::backend;
use gateway_rules::changes::{Change, Writer};

/// The metrics of one filter instance: declared while the filter is created, then sealed into
/// its registration; and the updates waiting for the next call to return.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    specs: Vec<MetricSpec>,
    sealed: bool,
    updates: Writer,
}

impl Registry {
    /// The metric's index in the registration, or `None` once the registration has gone.
    fn declare(&mut self, spec: &MetricSpec) -> Option<u32> {
        if self.sealed {
            return None;
        }
        let index = u32::try_from(self.specs.len()).ok()?;
        self.specs.push(spec.clone());
        Some(index)
    }

    /// The declarations, for the registration; later ones are refused.
    pub(crate) fn seal(&mut self) -> Vec<MetricSpec> {
        self.sealed = true;
        std::mem::take(&mut self.specs)
    }

    /// Moves the updates made since the last call returned into this one's changes.
    pub(crate) fn hand_over(&mut self, changes: &mut Writer) {
        changes.extend(&std::mem::take(&mut self.updates));
    }
}

fn labels(labels: &[(&str, &[&str])]) -> Vec<Label> {
    labels
        .iter()
        .map(|(name, values)| Label {
            name: (*name).to_owned(),
            values: values.iter().map(|value| (*value).to_owned()).collect(),
        })
        .collect()
}

/// What counters and histograms share: the declaration, and its index in the registration.
struct Metric {
    spec: MetricSpec,
    index: Option<u32>,
    /// Whether a dropped update was logged already: once per metric, not per request.
    warned: Cell<bool>,
}

impl Metric {
    fn declare(spec: MetricSpec) -> Metric {
        let index = backend::with_metrics(|registry| registry.declare(&spec));
        if index.is_none() {
            crate::log::warn(&format!(
                "metric `{}` was created after Filter::new returned, so the gateway does not \
                 know it: its updates are dropped (create metrics in Filter::new)",
                spec.name
            ));
        }
        Metric {
            spec,
            index,
            warned: Cell::new(false),
        }
    }

    fn update(&self, label_values: &[&str], value: f64) {
        let Some(metric) = self.index else {
            return;
        };
        let series = self.spec.series_index(label_values).ok_or_else(|| {
            format!(
                "the label values {label_values:?} were not declared for it, so the update is \
                 dropped"
            )
        });
        let checked = series.and_then(|series| {
            self.spec
                .check_update(series, value)
                .map(|()| series)
                .map_err(|error| format!("{error}, so the update is dropped"))
        });
        match checked {
            Ok(series) => backend::with_metrics(|registry| {
                registry.updates.push(&Change::Metric {
                    metric,
                    series,
                    value,
                })
            }),
            Err(reason) => {
                if !self.warned.replace(true) {
                    crate::log::warn(&format!(
                        "metric `{}`: {reason} (later bad updates of it are dropped silently)",
                        self.spec.name
                    ));
                }
            }
        }
    }
}

/// A total that only grows: requests seen, refusals, bytes rewritten.
///
/// ```
/// # use gateway_sdk::metrics::Counter;
/// let refused = Counter::new("refused_total", "Requests refused");
/// refused.inc();
/// ```
pub struct Counter(Metric);

impl Counter {
    /// A counter without labels.
    ///
    /// ```
    /// let hits = gateway_sdk::metrics::Counter::new("hits_total", "Cache hits");
    /// # let _ = hits;
    /// ```
    pub fn new(name: &str, help: &str) -> Counter {
        Counter::with_labels(name, help, &[])
    }

    /// A counter with labels, each with every value it may take. The gateway keeps one series
    /// per combination of values.
    ///
    /// ```
    /// let decisions = gateway_sdk::metrics::Counter::with_labels(
    ///     "decisions_total",
    ///     "Requests decided, by outcome and list",
    ///     &[("outcome", &["allow", "deny"]), ("list", &["allow", "deny", "none"])],
    /// );
    /// # let _ = decisions;
    /// ```
    pub fn with_labels(name: &str, help: &str, labels: &[(&str, &[&str])]) -> Counter {
        Counter(Metric::declare(MetricSpec {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: MetricKind::Counter,
            labels: self::labels(labels),
        }))
    }

    /// Adds one, to a counter without labels.
    ///
    /// ```
    /// # let requests = gateway_sdk::metrics::Counter::new("requests_total", "Requests");
    /// requests.inc();
    /// ```
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `amount`, to a counter without labels.
    ///
    /// ```
    /// # let bytes = gateway_sdk::metrics::Counter::new("bytes_total", "Bytes rewritten");
    /// bytes.add(512);
    /// ```
    pub fn add(&self, amount: u64) {
        self.add_with(&[], amount);
    }

    /// Adds one to the series of these label values, given in the order the labels were
    /// declared.
    ///
    /// ```
    /// # let decisions = gateway_sdk::metrics::Counter::with_labels(
    /// #     "decisions_total", "Decisions", &[("outcome", &["allow", "deny"])]);
    /// decisions.inc_with(&["allow"]);
    /// ```
    pub fn inc_with(&self, label_values: &[&str]) {
        self.add_with(label_values, 1);
    }

    /// Adds `amount` to the series of these label values.
    ///
    /// ```
    /// # let bytes = gateway_sdk::metrics::Counter::with_labels(
    /// #     "bytes_total", "Bytes, by direction", &[("direction", &["in", "out"])]);
    /// bytes.add_with(&["out"], 2048);
    /// ```
    pub fn add_with(&self, label_values: &[&str], amount: u64) {
        // Exact up to 2^53, far beyond what one call adds.
        self.0.update(label_values, amount as f64);
    }
}

/// Observations counted into buckets: sizes, durations, scores.
///
/// ```
/// # use gateway_sdk::metrics::Histogram;
/// let sizes = Histogram::new("body_bytes", "Body sizes", &[1024.0, 65536.0, 1048576.0]);
/// sizes.observe(4096.0);
/// ```
pub struct Histogram(Metric);

impl Histogram {
    /// A histogram without labels, with these bucket upper bounds (strictly increasing; the
    /// gateway adds `+Inf`).
    ///
    /// ```
    /// let latency = gateway_sdk::metrics::Histogram::new(
    ///     "upstream_seconds",
    ///     "Time from request phase to response phase",
    ///     &[0.005, 0.05, 0.5, 5.0],
    /// );
    /// # let _ = latency;
    /// ```
    pub fn new(name: &str, help: &str, buckets: &[f64]) -> Histogram {
        Histogram::with_labels(name, help, buckets, &[])
    }

    /// A histogram with labels, each with every value it may take.
    ///
    /// ```
    /// let sizes = gateway_sdk::metrics::Histogram::with_labels(
    ///     "body_bytes",
    ///     "Body sizes, by direction",
    ///     &[1024.0, 65536.0],
    ///     &[("direction", &["request", "response"])],
    /// );
    /// # let _ = sizes;
    /// ```
    pub fn with_labels(
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[(&str, &[&str])],
    ) -> Histogram {
        Histogram(Metric::declare(MetricSpec {
            name: name.to_owned(),
            help: help.to_owned(),
            kind: MetricKind::Histogram(buckets.to_vec()),
            labels: self::labels(labels),
        }))
    }

    /// Records an observation, in a histogram without labels.
    ///
    /// ```
    /// # let sizes = gateway_sdk::metrics::Histogram::new("body_bytes", "Sizes", &[1024.0]);
    /// sizes.observe(300.0);
    /// ```
    pub fn observe(&self, value: f64) {
        self.observe_with(&[], value);
    }

    /// Records an observation in the series of these label values.
    ///
    /// ```
    /// # let sizes = gateway_sdk::metrics::Histogram::with_labels(
    /// #     "body_bytes", "Sizes", &[1024.0], &[("direction", &["request", "response"])]);
    /// sizes.observe_with(&["response"], 2048.0);
    /// ```
    pub fn observe_with(&self, label_values: &[&str], value: f64) {
        self.0.update(label_values, value);
    }
}
