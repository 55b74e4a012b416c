//! One instance of a service: its address, its idle connections (per worker), and its shared
//! state (health, ejection, breaker, requests in flight, latency), which every worker reads
//! and writes through atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::BTreeMap;

use gateway_config::InstanceUrl;
use gateway_metrics::InstanceMetrics;

use crate::balance::p2c_ewma::PeakEwma;
use crate::breaker::{Breaker, BreakerState};
use crate::connection::ConnectionPool;
use crate::health::passive::Outlier;
use crate::limit::Counter;
use crate::member::{Member, Source};

/// One instance of a service.
pub struct Instance {
    pub(crate) url: InstanceUrl,
    /// `service@host:port`, as logs and errors name it.
    pub label: String,
    pub(crate) weight: u32,
    pub(crate) source: Source,
    /// Asked by the active checks instead of the service's `health_check.path`.
    pub(crate) health_path: Option<String>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) pool: Arc<ConnectionPool>,
    pub(crate) in_flight: Counter,
    /// As the active checks last found it; healthy until a check says otherwise.
    pub(crate) healthy: AtomicBool,
    pub(crate) outlier: Outlier,
    pub(crate) breaker: Option<Breaker>,
    pub(crate) latency: PeakEwma,
    /// Its try counters, kept by service and address across reloads.
    pub(crate) metrics: Arc<InstanceMetrics>,
}

/// What the admin API shows of an instance.
#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub label: String,
    pub url: String,
    pub weight: u32,
    pub source: Source,
    pub health_path: Option<String>,
    pub meta: BTreeMap<String, String>,
    /// As the active checks last found it (always true without them).
    pub healthy: bool,
    /// Ejected by outlier detection now.
    pub ejected: bool,
    /// Times it has been ejected.
    pub ejections: u32,
    /// `None` without a breaker.
    pub breaker: Option<BreakerState>,
    /// Times its breaker opened.
    pub breaker_opened: u32,
    pub in_flight: u32,
    /// The peak-EWMA latency estimate, in milliseconds; measured for `p2c_ewma` only, once
    /// the instance has answered.
    pub ewma_ms: Option<f64>,
}

impl Instance {
    /// The instances of service `name`: its members, with the service's policies.
    pub(crate) fn all(
        name: &str,
        config: &gateway_config::Service,
        members: &[Member],
    ) -> Vec<Instance> {
        members
            .iter()
            .map(|member| Instance {
                label: format!("{name}@{}", member.url.authority),
                url: member.url.clone(),
                weight: member.weight,
                source: member.source,
                health_path: member.health_path.clone(),
                meta: member.meta.clone(),
                pool: ConnectionPool::new(config.connect_timeout, config.read_timeout),
                in_flight: Counter::new(config.max_concurrent_requests_per_instance),
                healthy: AtomicBool::new(true),
                outlier: Outlier::default(),
                breaker: config.circuit_breaker.as_ref().map(Breaker::new),
                latency: PeakEwma::default(),
                metrics: gateway_metrics::instance(name, member.url.authority.as_str()),
            })
            .collect()
    }

    /// Whether this instance is `member`, as its source describes it now.
    pub(crate) fn is(&self, member: &Member) -> bool {
        self.url == member.url
            && self.weight == member.weight
            && self.source == member.source
            && self.health_path == member.health_path
            && self.meta == member.meta
    }

    /// Requests in flight to this instance, from every worker.
    #[inline]
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// Closes the calling worker's idle connections to this instance that are closed or stale.
    pub fn sweep_idle_connections(&self) {
        self.pool.sweep();
    }

    /// Takes on what `previous` (the same instance in the state a reload replaces) knows of
    /// it: health, ejection, breaker, latency. Requests in flight stay counted there.
    pub(crate) fn inherit(&self, previous: &Instance) {
        self.healthy
            .store(previous.healthy.load(Ordering::Relaxed), Ordering::Relaxed);
        self.outlier.inherit(&previous.outlier);
        if let (Some(breaker), Some(old)) = (&self.breaker, &previous.breaker) {
            breaker.inherit(old);
        }
        self.latency.inherit(&previous.latency);
    }

    pub(crate) fn is_healthy(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.outlier.is_ejected(now)
    }

    pub(crate) fn status(&self, now: u64, measured: bool) -> InstanceStatus {
        InstanceStatus {
            label: self.label.clone(),
            url: format!("{}://{}", self.url.scheme, self.url.authority),
            weight: self.weight,
            source: self.source,
            health_path: self.health_path.clone(),
            meta: self.meta.clone(),
            healthy: self.healthy.load(Ordering::Relaxed),
            ejected: self.outlier.is_ejected(now),
            ejections: self.outlier.ejections(),
            breaker: self.breaker.as_ref().map(|breaker| breaker.state(now)),
            breaker_opened: self.breaker.as_ref().map_or(0, Breaker::times_opened),
            in_flight: self.in_flight(),
            ewma_ms: measured
                .then(|| self.latency.estimate(now))
                .flatten()
                .map(|nanos| nanos / 1_000_000.0),
        }
    }

    /// Counts a request in flight, as a test of the balancers needs it.
    #[cfg(test)]
    pub(crate) fn start(&self) -> crate::limit::BorrowedSlot<'_> {
        self.in_flight.borrow().expect("no limit in tests")
    }
}
