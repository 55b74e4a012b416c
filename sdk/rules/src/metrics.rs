//! The metrics a filter may declare, and the updates it may make: names Prometheus accepts,
//! label values fixed up front, so a filter can never create series without bound.
//!
//! The gateway checks a filter's declarations at `init` and every update it sends with these
//! functions, and so does the SDK's test host.
//!
//! ```
//! use gateway_rules::metrics::{self, Label, MetricKind, MetricSpec};
//!
//! let decisions = MetricSpec {
//!     name: "decisions_total".into(),
//!     help: "Requests decided, by outcome".into(),
//!     kind: MetricKind::Counter,
//!     labels: vec![Label { name: "outcome".into(), values: vec!["allow".into(), "deny".into()] }],
//! };
//! metrics::check(std::slice::from_ref(&decisions)).expect("a valid declaration");
//! assert_eq!(decisions.series_index(&["deny"]), Some(1));
//! assert_eq!(decisions.series_index(&["maybe"]), None);
//! ```

/// Metrics one filter may declare.
pub const MAX_METRICS: usize = 32;
/// Labels one metric may have.
pub const MAX_LABELS: usize = 4;
/// Series one metric may have: the product of its labels' value counts.
pub const MAX_SERIES: usize = 256;
/// Buckets one histogram may have.
pub const MAX_BUCKETS: usize = 32;
/// The longest name or label value, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The longest help text, in bytes.
pub const MAX_HELP_LEN: usize = 256;

/// A metric as a filter declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    Counter,
    /// The buckets' upper bounds, increasing.
    Histogram(Vec<f64>),
}

/// A label and every value it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    pub values: Vec<String>,
}

/// Why a declaration or an update was refused. The text is what the filter (or its operator)
/// reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("a filter declares at most {MAX_METRICS} metrics")]
    TooMany,
    #[error(
        "`{0}` is not a valid metric or label name: 1 to 64 bytes of lower-case ASCII letters, digits and `_`, not starting with a digit or `__`"
    )]
    Name(String),
    #[error("metric `{0}` is declared twice")]
    Duplicate(String),
    #[error("the help of metric `{0}` is longer than 256 bytes")]
    Help(String),
    #[error("metric `{metric}`: {reason}")]
    Labels { metric: String, reason: String },
    #[error("histogram `{0}` needs 1 to 32 finite bucket bounds, strictly increasing")]
    Buckets(String),
    #[error("no metric {0} was declared")]
    UnknownMetric(u32),
    #[error("metric `{metric}` has no series {series}")]
    UnknownSeries { metric: String, series: u32 },
    #[error("metric `{metric}`: {value} is not a valid update")]
    Value { metric: String, value: f64 },
}

fn name(name: &str) -> Result<(), MetricError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && !bytes[0].is_ascii_digit()
        && !name.starts_with("__")
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(MetricError::Name(
            name.chars().take(MAX_NAME_LEN + 1).collect(),
        ))
    }
}

impl MetricSpec {
    /// How many series the metric has: one per combination of label values.
    pub fn series(&self) -> usize {
        self.labels.iter().map(|label| label.values.len()).product()
    }

    /// The series of these label values, given in the order the labels were declared: the last
    /// label varies fastest. `None` if a value was not declared or the count is wrong.
    pub fn series_index(&self, values: &[&str]) -> Option<u32> {
        if values.len() != self.labels.len() {
            return None;
        }
        let mut index = 0;
        for (label, value) in self.labels.iter().zip(values) {
            let position = label.values.iter().position(|known| known == value)?;
            index = index * label.values.len() + position;
        }
        u32::try_from(index).ok()
    }

    /// The label values of a series, the inverse of [`MetricSpec::series_index`].
    pub fn label_values(&self, series: u32) -> Vec<(&str, &str)> {
        let mut rest = series as usize;
        let mut values = Vec::with_capacity(self.labels.len());
        for label in self.labels.iter().rev() {
            let count = label.values.len();
            values.push((label.name.as_str(), label.values[rest % count].as_str()));
            rest /= count;
        }
        values.reverse();
        values
    }

    /// Checks an update of this metric: a series it has, a finite value, and no negative amount
    /// for a counter. [`update`] applies it to the metric an update names; a filter that holds
    /// its metric applies it directly.
    ///
    /// ```
    /// use gateway_rules::metrics::{MetricKind, MetricSpec};
    ///
    /// let latency = MetricSpec {
    ///     name: "latency_seconds".into(),
    ///     help: String::new(),
    ///     kind: MetricKind::Histogram(vec![0.1, 1.0]),
    ///     labels: vec![],
    /// };
    /// assert!(latency.check_update(0, 0.25).is_ok());
    /// assert!(latency.check_update(0, f64::NAN).is_err());
    /// assert!(latency.check_update(1, 0.25).is_err());
    /// ```
    pub fn check_update(&self, series: u32, value: f64) -> Result<(), MetricError> {
        if series as usize >= self.series() {
            return Err(MetricError::UnknownSeries {
                metric: self.name.clone(),
                series,
            });
        }
        let valid =
            value.is_finite() && (value >= 0.0 || matches!(self.kind, MetricKind::Histogram(_)));
        if !valid {
            return Err(MetricError::Value {
                metric: self.name.clone(),
                value,
            });
        }
        Ok(())
    }

    fn check(&self) -> Result<(), MetricError> {
        name(&self.name)?;
        if self.help.len() > MAX_HELP_LEN {
            return Err(MetricError::Help(self.name.clone()));
        }
        let labels = |reason: String| MetricError::Labels {
            metric: self.name.clone(),
            reason,
        };
        if self.labels.len() > MAX_LABELS {
            return Err(labels(format!("at most {MAX_LABELS} labels")));
        }
        for (index, label) in self.labels.iter().enumerate() {
            name(&label.name)?;
            if label.name == "le" || self.labels[..index].iter().any(|l| l.name == label.name) {
                return Err(labels(format!(
                    "label `{}` is reserved or repeated",
                    label.name
                )));
            }
            if label.values.is_empty() {
                return Err(labels(format!("label `{}` has no values", label.name)));
            }
            for (position, value) in label.values.iter().enumerate() {
                let printable = value.chars().all(|c| !c.is_control());
                if value.is_empty() || value.len() > MAX_NAME_LEN || !printable {
                    return Err(labels(format!(
                        "label `{}` value `{value}` must be 1 to 64 printable bytes",
                        label.name
                    )));
                }
                if label.values[..position].contains(value) {
                    return Err(labels(format!(
                        "label `{}` value `{value}` is repeated",
                        label.name
                    )));
                }
            }
        }
        // Checked without multiplying first, which could overflow.
        let mut series: usize = 1;
        for label in &self.labels {
            series = series.saturating_mul(label.values.len());
            if series > MAX_SERIES {
                return Err(labels(format!("more than {MAX_SERIES} series")));
            }
        }
        if let MetricKind::Histogram(bounds) = &self.kind {
            let increasing = bounds.windows(2).all(|pair| pair[0] < pair[1]);
            let finite = bounds.iter().all(|bound| bound.is_finite());
            if bounds.is_empty() || bounds.len() > MAX_BUCKETS || !increasing || !finite {
                return Err(MetricError::Buckets(self.name.clone()));
            }
        }
        Ok(())
    }
}

/// Checks a filter's declarations: each valid, no name twice, no more than [`MAX_METRICS`].
pub fn check(metrics: &[MetricSpec]) -> Result<(), MetricError> {
    if metrics.len() > MAX_METRICS {
        return Err(MetricError::TooMany);
    }
    for (index, metric) in metrics.iter().enumerate() {
        metric.check()?;
        if metrics[..index]
            .iter()
            .any(|other| other.name == metric.name)
        {
            return Err(MetricError::Duplicate(metric.name.clone()));
        }
    }
    Ok(())
}

/// Checks an update against the declarations: a declared metric and series, a finite value,
/// and no negative amount for a counter.
///
/// ```
/// use gateway_rules::metrics::{self, MetricKind, MetricSpec};
///
/// let spec = MetricSpec { name: "hits".into(), help: String::new(), kind: MetricKind::Counter, labels: vec![] };
/// let declared = [spec];
/// assert!(metrics::update(&declared, 0, 0, 1.0).is_ok());
/// assert!(metrics::update(&declared, 0, 0, -1.0).is_err());
/// assert!(metrics::update(&declared, 1, 0, 1.0).is_err());
/// ```
pub fn update(
    metrics: &[MetricSpec],
    metric: u32,
    series: u32,
    value: f64,
) -> Result<&MetricSpec, MetricError> {
    let spec = metrics
        .get(metric as usize)
        .ok_or(MetricError::UnknownMetric(metric))?;
    spec.check_update(series, value)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(labels: &[(&str, &[&str])]) -> MetricSpec {
        MetricSpec {
            name: "m".into(),
            help: String::new(),
            kind: MetricKind::Counter,
            labels: labels
                .iter()
                .map(|(name, values)| Label {
                    name: (*name).into(),
                    values: values.iter().map(|v| (*v).into()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn series_indexes_and_label_values_are_inverse() {
        let metric = spec(&[("a", &["x", "y", "z"]), ("b", &["p", "q"])]);
        assert_eq!(metric.series(), 6);
        for series in 0..6 {
            let values = metric.label_values(series);
            let names: Vec<&str> = values.iter().map(|(_, v)| *v).collect();
            assert_eq!(metric.series_index(&names), Some(series));
        }
        assert_eq!(metric.series_index(&["y", "q"]), Some(3));
        assert_eq!(metric.series_index(&["y"]), None);
    }

    #[test]
    fn declarations_out_of_bounds_are_refused() {
        let values: Vec<String> = (0..20).map(|n| n.to_string()).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let too_many_series = spec(&[("a", &values), ("b", &values)]);
        assert!(matches!(
            check(&[too_many_series]),
            Err(MetricError::Labels { .. })
        ));
        let mut bad_name = spec(&[]);
        bad_name.name = "Requests".into();
        assert!(matches!(check(&[bad_name]), Err(MetricError::Name(_))));
        let mut bad_buckets = spec(&[]);
        bad_buckets.kind = MetricKind::Histogram(vec![1.0, 1.0]);
        assert!(matches!(
            check(&[bad_buckets]),
            Err(MetricError::Buckets(_))
        ));
        assert!(matches!(
            check(&[spec(&[]), spec(&[])]),
            Err(MetricError::Duplicate(_))
        ));
        assert!(matches!(
            check(&[spec(&[("le", &["1"])])]),
            Err(MetricError::Labels { .. })
        ));
    }
}
