//! How a service spreads requests over its instances and protects them: the balancer, health
//! checks, outlier detection, the circuit breaker, retries and concurrency limits, as the file
//! gives them under a service. Every section but `retries` is off unless given; a section given
//! empty (`circuit_breaker: {}`) takes its defaults.

use std::time::Duration;

use serde::Deserialize;

/// One entry of a service's `instances`: a base URL, or a URL with a weight.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InstanceFile {
    /// `http://127.0.0.1:9000`, weight 1.
    Url(String),
    Weighted(WeightedInstance),
}

/// An instance with a weight: `{ url: http://127.0.0.1:9000, weight: 3 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedInstance {
    /// The instance's base URL.
    pub url: String,
    /// Its share of requests relative to the other instances' weights, 1 to 100. Read by
    /// `weighted`, `random`, `least_connections`, `p2c_ewma` and `hash`; `round_robin`
    /// ignores it.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl InstanceFile {
    pub fn url(&self) -> &str {
        match self {
            InstanceFile::Url(url) => url,
            InstanceFile::Weighted(weighted) => &weighted.url,
        }
    }

    pub fn weight(&self) -> u32 {
        match self {
            InstanceFile::Url(_) => 1,
            InstanceFile::Weighted(weighted) => weighted.weight,
        }
    }
}

/// How a service picks the instance for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancerKind {
    /// Each instance in turn, weights ignored.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin, as nginx's: weight 3 next to weight 1 gives `a a b a`, not
    /// `a a a b`.
    Weighted,
    /// The instance with the fewest requests in flight for its weight; ties broken at random.
    LeastConnections,
    /// An instance at random, in proportion to its weight.
    Random,
    /// Power of two choices: of two instances drawn at random, the one whose peak-EWMA latency
    /// times requests in flight (plus one) is lower, as linkerd and Finagle do.
    P2cEwma,
    /// Consistent hashing on `hash_key`: a key keeps its instance while others come and go.
    Hash,
}

/// What `hash` hashes: `{ header: NAME }`, `{ cookie: NAME }`, `client_ip` or `path`.
/// Requests without it are spread at random.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HashKey {
    /// The value of this request header.
    Header { header: String },
    /// The value of this cookie.
    Cookie { cookie: String },
    /// A property of the request itself.
    Request(HashSource),
}

/// What of the request itself `hash` may hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashSource {
    /// The client's IP address.
    ClientIp,
    /// The request path, normalised.
    Path,
}

/// Active health checks: the gateway asks every instance itself, once per gateway (not per
/// worker), off the request path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// The path asked with `GET`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between two checks of one instance.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Longest wait for a check's whole answer; past it the check failed.
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The statuses that pass a check.
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<u16>,
    /// Passing checks in a row that bring an unhealthy instance back.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failing checks in a row that take a healthy instance out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_health_path() -> String {
    "/health".to_owned()
}

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_expected_statuses() -> Vec<u16> {
    vec![200]
}

fn default_healthy_threshold() -> u32 {
    2
}

fn default_unhealthy_threshold() -> u32 {
    3
}

/// Passive health checks (outlier detection): failures seen on real traffic eject an instance
/// for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row (5xx answers, connect failures, resets, timeouts) that eject an
    /// instance.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; the Nth lasts N times as long.
    #[serde(default = "default_base_ejection_time", with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts, however often the instance was ejected.
    #[serde(default = "default_max_ejection_time", with = "humantime_serde")]
    pub max_ejection_time: Duration,
    /// The largest share of the service's instances ejected at once, in percent: the rest keep
    /// serving whatever they answer.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection_time() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}

fn default_max_ejection_percent() -> u32 {
    50
}

/// A circuit breaker per instance: closed, open, half-open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Failures in a row that open the breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker refuses requests before it lets probes through (half-open).
    #[serde(default = "default_open_duration", with = "humantime_serde")]
    pub open_duration: Duration,
    /// Requests let through at once while half-open; the first to succeed closes the breaker,
    /// one that fails opens it again.
    #[serde(default = "one")]
    pub half_open_requests: u32,
    /// Upstream statuses that count as failures, besides connect failures, resets and
    /// timeouts.
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
}

fn default_failure_threshold() -> u32 {
    5
}

fn default_open_duration() -> Duration {
    Duration::from_secs(60)
}

fn default_failure_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}

/// Retries, on another instance when there is one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Retries after the first try, at most; 0 turns retries off. Connect failures are always
    /// retried; resets before sending, per-try timeouts and 502, 503 and 504 answers are
    /// retried for idempotent requests without a body.
    #[serde(default = "one")]
    pub attempts: u32,
    /// Longest wait for one try's response head; defaults to the service's `request_timeout`,
    /// which bounds all tries together.
    #[serde(default, with = "humantime_serde")]
    pub try_timeout: Option<Duration>,
    /// Retries allowed as a percentage of the requests of the last 10 seconds.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries allowed per second whatever the traffic, so a quiet service can still retry.
    #[serde(default = "default_budget_min_per_second")]
    pub budget_min_per_second: u32,
}

fn default_budget_percent() -> u32 {
    20
}

fn default_budget_min_per_second() -> u32 {
    10
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            attempts: 1,
            try_timeout: None,
            budget_percent: default_budget_percent(),
            budget_min_per_second: default_budget_min_per_second(),
        }
    }
}
