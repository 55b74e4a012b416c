//! A service: its instances, how one is picked for a request, and the tries a request gets.
//!
//! [`Service::forward`] is the whole upstream side of a request, in order:
//! 1. the service's concurrency limit (`limit`), and a deposit into the retry budget;
//! 2. a pick (`balance`) among the instances that are healthy (`health`), whose breaker lets
//!    requests through (`breaker`), that have room (`limit`) and that this request has not
//!    tried yet; when none is, the answer says why (no healthy instance, breakers open, full);
//! 3. the try, on one of the calling worker's connections to the instance (`connection`),
//!    within the per-try timeout and what is left of the overall one;
//! 4. what the try says about the instance, told to its breaker and outlier detection (the
//!    client's fault says nothing);
//! 5. a retry on another instance when the failure allows it and the budget has room
//!    (`retry`); otherwise the answer, or the last failure.

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use gateway_config::{
    BalancerKind, CircuitBreaker, HashKey, HashSource, OutlierDetection, Retries,
};
use gateway_metrics::ServiceMetrics;
use gateway_wire::upstream::OutgoingHead;
use http::{HeaderMap, Method, Response, header};
use http_body::Body;

use crate::balance::Balancer;
use crate::balance::hash::key_hash;
use crate::breaker::{Breaker, Permit};
use crate::clock::{Clock, SystemClock, nanos};
use crate::connection::UpstreamBody;
use crate::health::{active, passive};
use crate::instance::{Instance, InstanceStatus};
use crate::limit::{BorrowedSlot, Counter, InFlight, Slot};
use crate::member::Member;
use crate::retry::{self, Budget};
use crate::{Error, ErrorKind, Result};

/// The latency `p2c_ewma` counts for a try that failed, at least: a second, far above any
/// answer's, which then decays away with the estimate (10 s) unless failures go on.
const FAILURE_PENALTY: u64 = 1_000_000_000;

/// A request as the service sends it.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// In origin form; the instance's own host goes as `Host` when `headers` has none.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// What `hash` may hash besides headers and cookies.
    pub client_ip: IpAddr,
    pub path: &'a str,
}

/// An answer, and the instance that gave it.
pub struct Forwarded<'s> {
    pub response: Response<UpstreamBody>,
    pub instance: &'s Instance,
}

/// A service.
pub struct Service {
    name: String,
    pub(crate) instances: Vec<Instance>,
    balancer: Balancer,
    balancer_kind: BalancerKind,
    hash_key: Option<HashKey>,
    pub(crate) health_check: Option<gateway_config::HealthCheck>,
    outlier_detection: Option<OutlierDetection>,
    breaker: Option<CircuitBreaker>,
    retries: Retries,
    pub(crate) try_timeout: Duration,
    request_timeout: Duration,
    panic_mode: bool,
    in_flight: Counter,
    budget: Budget,
    /// Retry counters, kept by name across reloads.
    metrics: Arc<ServiceMetrics>,
    /// Whether any check can take an instance out, so that picks must look.
    checks_health: bool,
    pub(crate) clock: Arc<dyn Clock>,
}

/// What the admin API shows of a service.
#[derive(Debug, Clone)]
pub struct ServiceStatus {
    pub balancer: &'static str,
    pub instances: Vec<InstanceStatus>,
}

/// Which instances a request has tried, or may not use: at most 256 (the configuration's
/// bound), so a bitset on the stack.
#[derive(Default, Clone, Copy)]
pub(crate) struct Excluded([u64; 4]);

impl Excluded {
    #[inline]
    fn contains(&self, index: usize) -> bool {
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
}

/// An instance picked for one try, with what it holds. A permit not spent on an outcome (the
/// request was dropped: the client went away) is handed back when this is dropped, so a
/// half-open breaker never loses its probe slots.
pub(crate) struct Picked<'s> {
    pub(crate) index: usize,
    breaker: Option<&'s Breaker>,
    permit: Option<Permit>,
    pub(crate) slot: Option<BorrowedSlot<'s>>,
}

impl Drop for Picked<'_> {
    fn drop(&mut self) {
        if let (Some(breaker), Some(permit)) = (self.breaker, self.permit.take()) {
            breaker.released(permit);
        }
    }
}

/// How one try went, as breakers and outlier detection count it.
pub(crate) enum Verdict {
    /// An answer with this status: a failure for the breaker if it is one of its
    /// `failure_statuses`, for outlier detection if it is a 5xx.
    Answered(u16),
    /// No answer, the instance's fault: a connect failure, reset, timeout or broken answer.
    Failed,
    /// The client's fault: nothing to say about the instance.
    Neither,
}

impl Service {
    /// The service `name` as the configuration describes it.
    pub fn new(name: &str, config: &gateway_config::Service) -> Service {
        Service::with_members(name, config, &Member::configured(config))
    }

    /// The service `name` with the policies `config` gives it and these instances, which
    /// may be none: every request then gets `NoHealthyInstance`.
    pub fn with_members(
        name: &str,
        config: &gateway_config::Service,
        members: &[Member],
    ) -> Service {
        Service::build(name, config, members, Arc::new(SystemClock))
    }

    #[cfg(test)]
    pub(crate) fn with_clock(
        name: &str,
        config: &gateway_config::Service,
        clock: Arc<dyn Clock>,
    ) -> Service {
        Service::build(name, config, &Member::configured(config), clock)
    }

    fn build(
        name: &str,
        config: &gateway_config::Service,
        members: &[Member],
        clock: Arc<dyn Clock>,
    ) -> Service {
        let instances = Instance::all(name, config, members);
        Service {
            name: name.to_owned(),
            balancer: Balancer::new(config.balancer, &instances),
            balancer_kind: config.balancer,
            instances,
            hash_key: config.hash_key.clone(),
            health_check: config.health_check.clone(),
            outlier_detection: config.outlier_detection.clone(),
            breaker: config.circuit_breaker.clone(),
            retries: config.retries.clone(),
            try_timeout: config
                .retries
                .try_timeout
                .unwrap_or(config.request_timeout)
                .min(config.request_timeout),
            request_timeout: config.request_timeout,
            panic_mode: config.panic_mode,
            in_flight: Counter::new(config.max_concurrent_requests),
            budget: Budget::new(&config.retries),
            metrics: gateway_metrics::service(name),
            checks_health: config.health_check.is_some() || config.outlier_detection.is_some(),
            clock,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its instances, in the configuration's order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Whether its instances are exactly `members`, in that order.
    pub fn has_members(&self, members: &[Member]) -> bool {
        self.instances.len() == members.len()
            && self
                .instances
                .iter()
                .zip(members)
                .all(|(instance, member)| instance.is(member))
    }

    /// Starts the active health checks, if the service has them, on the calling runtime: one
    /// task per instance, each ending once the service is dropped.
    pub fn start_health_checks(self: &Arc<Self>) {
        if self.health_check.is_none() {
            return;
        }
        for index in 0..self.instances.len() {
            tokio::spawn(active::run(Arc::downgrade(self) as Weak<Service>, index));
        }
    }

    /// Takes on what `previous`, the service of this name in the state a reload replaces,
    /// knows of the instances both list (by URL): their health, ejections, breakers and
    /// latency estimates. A reload then neither brings back an instance that was out nor
    /// forgets one that was failing. Active checks start afresh, from the inherited health.
    pub fn inherit(&self, previous: &Service) {
        for instance in &self.instances {
            if let Some(old) = previous
                .instances
                .iter()
                .find(|old| old.url == instance.url)
            {
                instance.inherit(old);
            }
        }
    }

    /// What the admin API shows.
    pub fn status(&self) -> ServiceStatus {
        let now = self.clock.now();
        let measured = self.balancer.reads_latency();
        ServiceStatus {
            balancer: match self.balancer_kind {
                BalancerKind::RoundRobin => "round_robin",
                BalancerKind::Weighted => "weighted",
                BalancerKind::LeastConnections => "least_connections",
                BalancerKind::Random => "random",
                BalancerKind::P2cEwma => "p2c_ewma",
                BalancerKind::Hash => "hash",
            },
            instances: self
                .instances
                .iter()
                .map(|instance| instance.status(now, measured))
                .collect(),
        }
    }

    /// Sends the request to an instance, and on to others as the retry rules allow, and
    /// returns the first answer that is not retried, once its head has arrived; the body
    /// streams as the client reads it.
    pub async fn forward<B>(&self, request: Outgoing<'_>, mut body: B) -> Result<Forwarded<'_>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = self.clock.now();
        self.budget.deposit(started);
        let service_slot =
            if self.in_flight.is_limited() {
                Some(self.in_flight.acquire().ok_or_else(|| {
                    self.error(ErrorKind::Overloaded, "too many requests in flight")
                })?)
            } else {
                None
            };
        let key = self.request_key(&request);
        let bodiless = body.is_end_stream();
        let deadline = started.saturating_add(nanos(self.request_timeout));
        let mut tried = Excluded::default();
        let mut tries = 0;
        let mut last: Option<Result<Forwarded<'_>>> = None;
        loop {
            let now = if tries == 0 {
                started
            } else {
                self.clock.now()
            };
            let picked = match self.pick(tried, key, now) {
                Ok(picked) => picked,
                Err(error) => {
                    let previous = last.unwrap_or(Err(error));
                    return previous.map(|forwarded| forwarded.holding(service_slot));
                }
            };
            if let Some(previous) = last.take() {
                let budget_allows = now < deadline && self.budget.withdraw(now);
                if !budget_allows {
                    self.metrics.budget_exhausted();
                    drop(picked);
                    return previous.map(|forwarded| forwarded.holding(service_slot));
                }
            }
            if tries > 0 {
                self.metrics.retried();
            }
            let mut picked = picked;
            tried.insert(picked.index);
            tries += 1;
            let instance = &self.instances[picked.index];
            let timeout = self
                .try_timeout
                .min(Duration::from_nanos(deadline.saturating_sub(now)));
            let head = OutgoingHead {
                method: request.method,
                target: request.target,
                headers: request.headers,
                host: &instance.url.host_header,
            };
            let try_started = gateway_metrics::start();
            let sent = instance
                .pool
                .send(&instance.url, &instance.label, head, &mut body);
            let result = tokio::time::timeout(timeout, sent)
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::ResponseTimeout,
                        &instance.label,
                        format!("did not answer within {timeout:?}"),
                    ))
                });
            instance.metrics.record(
                result
                    .as_ref()
                    .ok()
                    .map(|response| response.status().as_u16()),
                try_started,
            );
            // Only what reads the time of the outcome costs a clock read.
            let finished = if self.balancer.reads_latency()
                || picked.permit.is_some()
                || self.outlier_detection.is_some()
            {
                self.clock.now()
            } else {
                now
            };
            if self.balancer.reads_latency() {
                // A failure is often fast (a refused connection, a quick 503): measured as it
                // is, it would make a failing instance look like the fastest one.
                let failed = match &result {
                    Ok(response) => response.status().is_server_error(),
                    Err(error) => error.kind.is_instance_fault(),
                };
                let rtt = finished.saturating_sub(now);
                let rtt = if failed {
                    rtt.max(FAILURE_PENALTY)
                } else {
                    rtt
                };
                instance.latency.observe(rtt, finished);
            }
            let may_retry = tries <= self.retries.attempts as usize;
            match result {
                Ok(mut response) => {
                    let status = response.status();
                    self.record(&mut picked, Verdict::Answered(status.as_u16()), finished);
                    let retry =
                        may_retry && retry::status_is_retryable(status, request.method, bodiless);
                    // A body still arriving keeps its instance busy; one read whole with its
                    // head frees the slot now.
                    if let Some(slot) = picked.slot.take()
                        && response.body().is_streaming()
                    {
                        response
                            .body_mut()
                            .hold(InFlight::instance(slot.into_owned()));
                    }
                    let forwarded = Forwarded { response, instance };
                    if !retry {
                        return Ok(forwarded.holding(service_slot));
                    }
                    last = Some(Ok(forwarded));
                }
                Err(error) => {
                    let verdict = if error.kind.is_instance_fault() {
                        Verdict::Failed
                    } else {
                        Verdict::Neither
                    };
                    self.record(&mut picked, verdict, finished);
                    drop(picked);
                    let retry = may_retry
                        && retry::failure_is_retryable(error.kind, request.method, bodiless);
                    if !retry {
                        return Err(error);
                    }
                    last = Some(Err(error));
                }
            }
        }
    }

    fn error(&self, kind: ErrorKind, reason: &str) -> Error {
        Error::new(kind, &self.name, reason)
    }

    /// Tells the instance's breaker and outlier detection how a try went.
    pub(crate) fn record(&self, picked: &mut Picked<'_>, verdict: Verdict, now: u64) {
        let instance = &self.instances[picked.index];
        let (breaker_failed, outlier_failed) = match verdict {
            Verdict::Answered(status) => (
                self.breaker
                    .as_ref()
                    .is_some_and(|breaker| breaker.failure_statuses.contains(&status)),
                status >= 500,
            ),
            Verdict::Failed => (true, true),
            Verdict::Neither => {
                if let (Some(breaker), Some(permit)) = (picked.breaker, picked.permit.take()) {
                    breaker.released(permit);
                }
                return;
            }
        };
        if let (Some(breaker), Some(permit)) = (picked.breaker, picked.permit.take()) {
            if breaker_failed {
                breaker.failed(permit, now, &instance.label);
            } else {
                breaker.succeeded(permit, &instance.label);
            }
        }
        if let Some(config) = &self.outlier_detection {
            if !outlier_failed {
                instance.outlier.succeeded();
            } else if instance.outlier.failed(config, now) {
                self.eject(picked.index, config, now);
            }
        }
    }

    fn eject(&self, index: usize, config: &OutlierDetection, now: u64) {
        let ejected = self
            .instances
            .iter()
            .filter(|instance| instance.outlier.is_ejected(now))
            .count();
        let instance = &self.instances[index];
        if !passive::may_eject(config, ejected, self.instances.len()) {
            tracing::debug!(
                instance = instance.label,
                ejected,
                "not ejected: max_ejection_percent reached"
            );
            return;
        }
        let time = instance.outlier.eject(config, now);
        tracing::warn!(
            instance = instance.label,
            ejections = instance.outlier.ejections(),
            ejected_for = ?Duration::from_nanos(time),
            "instance ejected after failures in a row"
        );
    }

    /// The hash of the request's key, for `hash`.
    pub(crate) fn request_key(&self, request: &Outgoing<'_>) -> Option<u64> {
        let key = self.hash_key.as_ref()?;
        match key {
            HashKey::Header { header: name } => request
                .headers
                .get(name.as_str())
                .map(|value| key_hash(value.as_bytes())),
            HashKey::Cookie { cookie: name } => request
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(cookie, _)| cookie == name)
                .map(|(_, value)| key_hash(value.as_bytes())),
            HashKey::Request(HashSource::ClientIp) => Some(match request.client_ip {
                IpAddr::V4(ip) => key_hash(&ip.octets()),
                IpAddr::V6(ip) => key_hash(&ip.octets()),
            }),
            HashKey::Request(HashSource::Path) => Some(key_hash(request.path.as_bytes())),
        }
    }

    /// Picks an instance not in `tried` and takes its breaker permit and limit slot; or says
    /// why there is none.
    pub(crate) fn pick(&self, tried: Excluded, key: Option<u64>, now: u64) -> Result<Picked<'_>> {
        if self.instances.is_empty() {
            return Err(self.error(ErrorKind::NoHealthyInstance, "no instance is registered"));
        }
        let healthy = |index: usize| !self.checks_health || self.instances[index].is_healthy(now);
        // Panic mode: with no instance healthy, health is not asked at all.
        let panic =
            self.checks_health && self.panic_mode && !(0..self.instances.len()).any(healthy);
        let mut excluded = tried;
        loop {
            let eligible = |index: usize| {
                let instance = &self.instances[index];
                !excluded.contains(index)
                    && (panic || healthy(index))
                    && instance
                        .breaker
                        .as_ref()
                        .is_none_or(|breaker| breaker.allows(now))
                    && instance.in_flight.has_room()
            };
            let Some(index) = self.balancer.pick(&self.instances, key, now, &eligible) else {
                return Err(self.why_none(tried, panic, now));
            };
            let instance = &self.instances[index];
            let permit = match &instance.breaker {
                Some(breaker) => match breaker.acquire(now) {
                    Some(permit) => Some(permit),
                    None => {
                        excluded.insert(index);
                        continue;
                    }
                },
                None => None,
            };
            let Some(slot) = instance.in_flight.borrow() else {
                if let (Some(breaker), Some(permit)) = (&instance.breaker, permit) {
                    breaker.released(permit);
                }
                excluded.insert(index);
                continue;
            };
            return Ok(Picked {
                index,
                breaker: instance.breaker.as_ref(),
                permit,
                slot: Some(slot),
            });
        }
    }

    /// Why no instance outside `tried` could take a request.
    fn why_none(&self, tried: Excluded, panic: bool, now: u64) -> Error {
        let untried = || {
            self.instances
                .iter()
                .enumerate()
                .filter(move |(index, _)| !tried.contains(*index))
                .map(|(_, instance)| instance)
        };
        let mut usable = untried()
            .filter(|instance| panic || !self.checks_health || instance.is_healthy(now))
            .peekable();
        if usable.peek().is_none() {
            return self.error(ErrorKind::NoHealthyInstance, "no healthy instance");
        }
        let refusing: Vec<_> = usable
            .filter_map(|instance| instance.breaker.as_ref())
            .filter(|breaker| !breaker.allows(now))
            .collect();
        if refusing.is_empty() {
            return self.error(ErrorKind::Overloaded, "every instance is at its limit");
        }
        // A half-open breaker with its probes out may close any moment: it says nothing of
        // when; the open ones do.
        let retry_after = refusing
            .iter()
            .filter(|breaker| breaker.state(now) == crate::BreakerState::Open)
            .map(|breaker| breaker.retry_after(now))
            .min()
            .unwrap_or(Duration::ZERO);
        Error {
            retry_after: Some(retry_after),
            ..self.error(ErrorKind::CircuitOpen, "every circuit breaker is open")
        }
    }
}

impl Forwarded<'_> {
    /// The service's slot goes with the answer the client gets.
    fn holding(mut self, service_slot: Option<Slot>) -> Self {
        if let Some(slot) = service_slot {
            self.response.body_mut().hold(InFlight::service(slot));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::manual::ManualClock;

    fn build(configure: impl FnOnce(&mut gateway_config::Service)) -> (Service, Arc<ManualClock>) {
        let mut config = gateway_config::Service::with_instances(
            (1..=3)
                .map(|port| format!("http://127.0.0.1:{port}").parse().expect("a URL"))
                .collect(),
        );
        configure(&mut config);
        let clock = Arc::new(ManualClock::default());
        (Service::with_clock("s", &config, clock.clone()), clock)
    }

    #[test]
    fn a_service_without_instances_says_none_is_registered_whatever_its_balancer() {
        for balancer in [
            BalancerKind::RoundRobin,
            BalancerKind::Weighted,
            BalancerKind::P2cEwma,
        ] {
            let mut config = gateway_config::Service::with_instances(Vec::new());
            config.balancer = balancer;
            let service = Service::with_members("s", &config, &[]);
            let error = service
                .pick(Excluded::default(), Some(7), 0)
                .err()
                .expect("no pick");
            assert_eq!(error.kind, ErrorKind::NoHealthyInstance);
        }
    }

    #[test]
    fn a_new_member_list_is_told_from_the_same_one() {
        let (service, _) = build(|_| {});
        let config = gateway_config::Service::with_instances(Vec::new());
        let mut members = Member::configured(&gateway_config::Service::with_instances(
            (1..=3)
                .map(|port| format!("http://127.0.0.1:{port}").parse().expect("a URL"))
                .collect(),
        ));
        assert!(service.has_members(&members));
        members[1].weight = 5;
        assert!(!service.has_members(&members));
        members.pop();
        let smaller = Service::with_members("s", &config, &members);
        assert!(!service.has_members(&members) && smaller.has_members(&members));
    }

    #[test]
    fn instances_are_picked_round_robin_by_default() {
        let (service, clock) = build(|_| {});
        let picks: Vec<usize> = (0..4)
            .map(|_| {
                service
                    .pick(Excluded::default(), None, clock.now())
                    .expect("a pick")
                    .index
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0]);
    }

    #[test]
    fn unhealthy_instances_get_nothing_and_with_none_healthy_the_answer_says_so_or_panic_mode_uses_all()
     {
        let (service, clock) = build(|config| {
            config.health_check = Some(serde_health_check());
        });
        service.instances[1]
            .healthy
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..6 {
            let picked = service
                .pick(Excluded::default(), None, clock.now())
                .expect("a pick");
            assert_ne!(picked.index, 1);
        }
        for instance in &service.instances {
            instance
                .healthy
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        let error = service
            .pick(Excluded::default(), None, clock.now())
            .err()
            .expect("none healthy");
        assert_eq!(error.kind, ErrorKind::NoHealthyInstance);

        let (panicking, clock) = build(|config| {
            config.health_check = Some(serde_health_check());
            config.panic_mode = true;
        });
        for instance in &panicking.instances {
            instance
                .healthy
                .store(false, std::sync::atomic::Ordering::SeqCst);
        }
        assert!(
            panicking
                .pick(Excluded::default(), None, clock.now())
                .is_ok()
        );
    }

    #[test]
    fn open_breakers_are_skipped_and_with_all_open_the_answer_says_when_to_come_back() {
        let (service, clock) = build(|config| {
            config.circuit_breaker = Some(gateway_config::CircuitBreaker {
                failure_threshold: 1,
                open_duration: Duration::from_secs(30),
                half_open_requests: 1,
                failure_statuses: vec![503],
            });
        });
        for expected in 0..3 {
            let mut picked = service
                .pick(Excluded::default(), None, clock.now())
                .expect("a pick");
            assert_eq!(picked.index, expected, "the open ones are skipped");
            service.record(&mut picked, Verdict::Failed, clock.now());
            clock.advance(Duration::from_secs(10));
        }
        // Opened 30 s, 20 s and 10 s ago: the first lets a probe through now, the others not.
        let mut probe = service
            .pick(Excluded::default(), None, clock.now())
            .expect("a probe");
        assert_eq!((probe.index, probe.permit), (0, Some(Permit::Probe)));
        let error = service
            .pick(Excluded::default(), None, clock.now())
            .err()
            .expect("the probe is out, the others open");
        assert_eq!(error.kind, ErrorKind::CircuitOpen);
        assert_eq!(error.retry_after, Some(Duration::from_secs(10)));
        service.record(&mut probe, Verdict::Answered(200), clock.now());
        let picked = service
            .pick(Excluded::default(), None, clock.now())
            .expect("closed");
        assert_eq!((picked.index, picked.permit), (0, Some(Permit::Normal)));
    }

    #[test]
    fn a_client_s_fault_never_counts_against_an_instance() {
        let (service, clock) = build(|config| {
            config.circuit_breaker = Some(gateway_config::CircuitBreaker {
                failure_threshold: 2,
                open_duration: Duration::from_secs(30),
                half_open_requests: 1,
                failure_statuses: vec![503],
            });
            config.outlier_detection = Some(gateway_config::OutlierDetection {
                consecutive_failures: 2,
                base_ejection_time: Duration::from_secs(30),
                max_ejection_time: Duration::from_secs(60),
                max_ejection_percent: 100,
            });
        });
        let excluded_but_first = {
            let mut excluded = Excluded::default();
            excluded.insert(1);
            excluded.insert(2);
            excluded
        };
        for _ in 0..10 {
            let mut picked = service
                .pick(excluded_but_first, None, clock.now())
                .expect("a pick");
            service.record(&mut picked, Verdict::Neither, clock.now());
        }
        assert!(service.instances[0].is_healthy(clock.now()));
        for _ in 0..2 {
            let mut picked = service
                .pick(excluded_but_first, None, clock.now())
                .expect("a pick");
            service.record(&mut picked, Verdict::Failed, clock.now());
        }
        assert!(service.instances[0].outlier.is_ejected(clock.now()));
        assert_eq!(
            service.status().instances[0].breaker,
            Some(crate::BreakerState::Open)
        );
    }

    #[test]
    fn the_hash_key_comes_from_the_header_cookie_client_ip_or_path_configured() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().expect("a value"));
        headers.append(
            header::COOKIE,
            "theme=dark; session=s1".parse().expect("a value"),
        );
        headers.append(header::COOKIE, "other=1".parse().expect("a value"));
        let request = Outgoing {
            method: &Method::GET,
            target: "/a?b",
            headers: &headers,
            client_ip: IpAddr::from([10, 0, 0, 7]),
            path: "/a",
        };
        let key = |hash_key: HashKey| {
            let (service, _) = build(|config| {
                config.balancer = BalancerKind::Hash;
                config.hash_key = Some(hash_key);
            });
            service.request_key(&request)
        };
        let header_key = |name: &str| HashKey::Header {
            header: name.to_owned(),
        };
        let cookie_key = |name: &str| HashKey::Cookie {
            cookie: name.to_owned(),
        };
        assert_eq!(key(header_key("x-user")), Some(key_hash(b"alice")));
        assert_eq!(key(header_key("x-missing")), None);
        assert_eq!(key(cookie_key("session")), Some(key_hash(b"s1")));
        assert_eq!(key(cookie_key("other")), Some(key_hash(b"1")));
        assert_eq!(key(cookie_key("sess")), None);
        assert_eq!(
            key(HashKey::Request(HashSource::ClientIp)),
            Some(key_hash(&[10, 0, 0, 7]))
        );
        assert_eq!(
            key(HashKey::Request(HashSource::Path)),
            Some(key_hash(b"/a"))
        );
    }

    #[test]
    fn a_reloaded_service_keeps_what_it_knew_of_the_instances_it_still_lists() {
        let breaker = gateway_config::CircuitBreaker {
            failure_threshold: 1,
            open_duration: Duration::from_secs(30),
            half_open_requests: 1,
            failure_statuses: vec![503],
        };
        let outlier = gateway_config::OutlierDetection {
            consecutive_failures: 1,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 100,
        };
        let (old, clock) = build(|config| {
            config.circuit_breaker = Some(breaker.clone());
            config.outlier_detection = Some(outlier.clone());
        });
        let mut first = old
            .pick(Excluded::default(), None, clock.now())
            .expect("a pick");
        old.record(&mut first, Verdict::Failed, clock.now());
        drop(first);
        old.instances[1]
            .healthy
            .store(false, std::sync::atomic::Ordering::SeqCst);

        // The new state lists the second and third instances, and a new one.
        let mut config = gateway_config::Service::with_instances(
            [2, 3, 4]
                .map(|port| format!("http://127.0.0.1:{port}").parse().expect("a URL"))
                .to_vec(),
        );
        config.circuit_breaker = Some(breaker);
        config.outlier_detection = Some(outlier);
        let new = Service::with_clock("s", &config, clock.clone());
        new.inherit(&old);
        let status = new.status();
        assert!(!status.instances[0].healthy, "still unhealthy");
        assert!(status.instances[1].healthy && status.instances[2].healthy);

        // And the one that failed, listed again: still ejected, its breaker still open.
        let mut config = config.clone();
        config.instances[2] = "http://127.0.0.1:1".parse().expect("a URL");
        let again = Service::with_clock("s", &config, clock.clone());
        again.inherit(&old);
        let status = again.status();
        assert!(status.instances[2].ejected);
        assert_eq!(status.instances[2].ejections, 1);
        assert_eq!(status.instances[2].breaker, Some(crate::BreakerState::Open));
    }

    #[test]
    fn a_probe_whose_request_was_dropped_hands_its_slot_back() {
        let (service, clock) = build(|config| {
            config.instances.truncate(1);
            config.weights.truncate(1);
            config.circuit_breaker = Some(gateway_config::CircuitBreaker {
                failure_threshold: 1,
                open_duration: Duration::from_secs(1),
                half_open_requests: 1,
                failure_statuses: vec![503],
            });
        });
        let mut picked = service
            .pick(Excluded::default(), None, clock.now())
            .expect("closed");
        service.record(&mut picked, Verdict::Failed, clock.now());
        clock.advance(Duration::from_secs(1));
        let probe = service
            .pick(Excluded::default(), None, clock.now())
            .expect("a probe");
        assert_eq!(probe.permit, Some(Permit::Probe));
        // The client went away: the request's future, and its probe, are dropped.
        drop(probe);
        let probe = service
            .pick(Excluded::default(), None, clock.now())
            .expect("the probe's slot is free again");
        assert_eq!(probe.permit, Some(Permit::Probe));
    }

    #[test]
    fn the_breaker_counts_its_failure_statuses_and_outlier_detection_every_5xx() {
        let (service, clock) = build(|config| {
            config.instances.truncate(1);
            config.weights.truncate(1);
            config.circuit_breaker = Some(gateway_config::CircuitBreaker {
                failure_threshold: 2,
                open_duration: Duration::from_secs(30),
                half_open_requests: 1,
                failure_statuses: vec![503],
            });
            config.outlier_detection = Some(gateway_config::OutlierDetection {
                consecutive_failures: 2,
                base_ejection_time: Duration::from_secs(30),
                max_ejection_time: Duration::from_secs(60),
                max_ejection_percent: 100,
            });
        });
        for status in [500, 500] {
            let mut picked = service
                .pick(Excluded::default(), None, clock.now())
                .expect("a pick");
            service.record(&mut picked, Verdict::Answered(status), clock.now());
        }
        let status = service.status();
        assert!(status.instances[0].ejected, "two 5xx in a row");
        assert_eq!(
            status.instances[0].breaker,
            Some(crate::BreakerState::Closed),
            "500 is not one of its failure statuses"
        );
    }

    #[test]
    fn a_full_instance_is_skipped_and_all_full_is_overloaded() {
        let (service, clock) = build(|config| {
            config.max_concurrent_requests_per_instance = Some(1);
        });
        let held: Vec<Picked<'_>> = (0..3)
            .map(|_| {
                service
                    .pick(Excluded::default(), None, clock.now())
                    .expect("room")
            })
            .collect();
        let mut indexes: Vec<usize> = held.iter().map(|picked| picked.index).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, [0, 1, 2]);
        let error = service
            .pick(Excluded::default(), None, clock.now())
            .err()
            .expect("full");
        assert_eq!(error.kind, ErrorKind::Overloaded);
        drop(held);
        assert!(service.pick(Excluded::default(), None, clock.now()).is_ok());
    }

    fn serde_health_check() -> gateway_config::HealthCheck {
        gateway_config::HealthCheck {
            path: "/health".to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            expected_statuses: vec![200],
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        }
    }
}
