//! The configuration file as serde reads it: every key the YAML may hold, with its default and
//! what it does. This is the configuration reference; checking turns it into
//! the checked [`Config`](crate::Config) the gateway builds from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

use crate::ByteSize;
use crate::observe::AccessLog;
use crate::upstream::{
    BalancerKind, CircuitBreaker, HashKey, HealthCheck, InstanceFile, OutlierDetection, Retries,
};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Addresses to accept client traffic on. Fixed at start-up: a reload that changes them
    /// applies everything else and says a restart is needed for these.
    pub listeners: Vec<Listener>,
    /// The admin API (reload status and trigger), on its own listener. Off unless given.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Reload automatically when this file or a component in `plugin_dir` changes.
    #[serde(default = "yes")]
    pub watch: bool,
    /// Folder for compiled components, so a restart with unchanged plugins compiles nothing;
    /// `~` keeps them in memory only. Read at start-up.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Limits applied to every client request at the edge, before routing.
    #[serde(default)]
    pub limits: EdgeLimits,
    /// Bounds on the key-value state filters keep (the `kv` capability).
    #[serde(default)]
    pub kv: KvSettings,
    /// Folder holding the filter components, relative to the config file.
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: PathBuf,
    /// The filter components, by the name routes use for them.
    #[serde(default)]
    pub filters: BTreeMap<String, FilterDefinition>,
    /// Upstream services, by the name routes use for them.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceFile>,
    /// Routes, tried in order; the first that matches a request handles it.
    pub routes: Vec<RouteFile>,
    /// The access log; on, as JSON on stderr, unless this says otherwise.
    #[serde(default)]
    pub access_log: AccessLog,
    /// W3C trace context: `traceparent` and `tracestate` read, checked and passed upstream.
    #[serde(default)]
    pub tracing: Tracing,
    /// The gateway's own metrics; counted unless this turns them off.
    #[serde(default)]
    pub metrics: crate::Metrics,
    /// Limits on relayed WebSockets (idle timeout, frame and message sizes, keepalive pings).
    #[serde(default)]
    pub websocket: crate::WebSocket,
    /// Instances registered at run time, through the admin API or Redis; off unless given.
    #[serde(default)]
    pub registry: Option<crate::Registry>,
    /// The policies of a service known only from the registry or the admin API, when no
    /// template matches its name; every default unless given.
    #[serde(default)]
    pub service_defaults: Option<ServiceFile>,
    /// Policies by service name pattern, for services known only from the registry or the
    /// admin API; the first whose `match` fits the name applies.
    #[serde(default)]
    pub service_templates: Vec<crate::ServiceTemplateFile>,
}

/// How requests take part in distributed traces.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tracing {
    /// Read a client's `traceparent` and `tracestate`, and send them upstream with the
    /// gateway's span as the new parent; a request without one starts a trace. On by default.
    pub propagate: bool,
    /// Export the spans of sampled requests (the request, each filter call, the upstream try)
    /// to an OpenTelemetry collector over OTLP/HTTP; off unless given. Read at start-up, but
    /// for `sample_ratio`.
    pub otlp: Option<Otlp>,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            propagate: true,
            otlp: None,
        }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// The collector's traces URL: `http://HOST:4318/v1/traces`.
    pub endpoint: String,
    /// The share of the traces the gateway starts that it exports, 0 to 1. A request whose
    /// caller sent a `traceparent` follows the caller's sampled flag instead, so that a trace
    /// is exported whole or not at all.
    #[serde(default = "one")]
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Longest an export may take; a failed batch is dropped, not retried.
    #[serde(default = "default_otlp_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Finished requests waiting for export at most; past it, requests are not exported (and
    /// counted), so a slow collector never grows the gateway's memory.
    #[serde(default = "default_otlp_queue")]
    pub max_queued: usize,
}

fn one() -> f64 {
    1.0
}

fn default_service_name() -> String {
    "wasm-gateway".to_owned()
}

fn default_otlp_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_otlp_queue() -> usize {
    4096
}

fn yes() -> bool {
    true
}

/// `$XDG_CACHE_HOME/wasm-gateway`, else `$HOME/.cache/wasm-gateway`, else none.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("wasm-gateway").join("components"))
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `IP:port` of the admin API; loopback by default, since it can trigger reloads.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// The environment variable holding the bearer token every admin request must carry
    /// (`Authorization: Bearer ...`). The token stays out of the file, which is often kept in
    /// version control. Required, or `token_file`, when `address` is not loopback.
    pub token_env: Option<String>,
    /// A file holding the bearer token (surrounding whitespace ignored), as secrets are
    /// mounted in containers. Resolved against the configuration file's folder.
    pub token_file: Option<PathBuf>,
    /// The token read from `token_env` or `token_file` when the configuration was checked.
    #[serde(skip)]
    pub token: Option<AdminToken>,
}

/// The admin API's bearer token. Its `Debug` leaves the secret out, so that configuration
/// dumps and logs never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Shortest token accepted: a guessable one would defeat the check.
    pub const MIN_LENGTH: usize = 16;

    /// Checks a token read from the environment or a file.
    pub fn new(token: &str) -> Result<AdminToken, String> {
        let token = token.trim();
        if token.len() < AdminToken::MIN_LENGTH {
            return Err(format!(
                "the token must have at least {} characters",
                AdminToken::MIN_LENGTH
            ));
        }
        // What an `Authorization` header can carry without quoting (RFC 6750 b64token).
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
        if !token.chars().all(allowed) {
            return Err("the token may hold only letters, digits and -._~+/=".to_owned());
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// Whether `presented` is this token; takes the same time wherever the two differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut difference = expected.len() ^ presented.len();
        for (index, byte) in expected.iter().enumerate() {
            difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
        }
        difference == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AdminToken(..)")
    }
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

fn default_plugin_dir() -> PathBuf {
    PathBuf::from("plugins")
}

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `IP:port` to bind; port 0 picks a free port (the bound address is logged).
    #[serde(deserialize_with = "socket_address")]
    pub address: SocketAddr,
}

/// `IP:port`, refused with the expected form rather than std's bare "invalid syntax".
fn socket_address<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        de::Error::custom(format!(
            "`{text}` is not an address: write IP:port, e.g. 0.0.0.0:8080 or 127.0.0.1:0"
        ))
    })
}

/// Limits on what a client may send. Requests over a limit are refused at the edge with the
/// documented JSON error and never reach a filter or an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeLimits {
    /// Largest request head (all header names and values) accepted; larger gets 431.
    pub max_header_bytes: ByteSize,
    /// Most header lines accepted; more gets 431.
    pub max_headers: usize,
    /// Longest request target (path and query) accepted; longer gets 414.
    pub max_uri_bytes: ByteSize,
    /// Time a client has to send a complete request head before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests before it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body; a slower client gets 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Bytes per second a request body must average once `body_read_timeout` has passed since
    /// it began (a client trickling below it gets 408); `0` for no minimum.
    pub body_min_rate: ByteSize,
    /// Longest a write to a client may wait for it to take bytes; past it the connection is
    /// closed (as nginx's `send_timeout`).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            max_header_bytes: ByteSize(16 * 1024),
            max_headers: 100,
            max_uri_bytes: ByteSize(8 * 1024),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            body_min_rate: ByteSize(500),
            send_timeout: Duration::from_secs(60),
        }
    }
}

/// The key-value state filters keep (the `kv` capability): where it lives, and its bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvSettings {
    /// The store filters use unless their definition names another: `memory` (this gateway
    /// alone) or `redis` (shared by every gateway using the same Redis; needs `redis`).
    pub backend: KvBackendKind,
    /// Most entries the memory store holds across all filters; past it, expired entries and
    /// then the least recently used ones are evicted, as a cache does.
    pub max_entries: usize,
    /// Largest value a filter may store, on either backend.
    pub max_value_size: ByteSize,
    /// Most bytes of keys and values the memory store holds across all filters; past it, the
    /// least recently used entries are evicted.
    pub max_memory: ByteSize,
    /// The Redis that the `redis` backend talks to.
    pub redis: Option<RedisSettings>,
}

impl Default for KvSettings {
    fn default() -> Self {
        let limits = gateway_rules::kv::Limits::default();
        KvSettings {
            backend: KvBackendKind::Memory,
            max_entries: limits.max_entries,
            max_value_size: ByteSize(limits.max_value_bytes as u64),
            max_memory: ByteSize(limits.max_bytes as u64),
            redis: None,
        }
    }
}

impl KvSettings {
    pub fn limits(&self) -> gateway_rules::kv::Limits {
        gateway_rules::kv::Limits {
            max_entries: self.max_entries,
            max_value_bytes: self.max_value_size.as_usize(),
            max_bytes: self.max_memory.as_usize(),
            ..gateway_rules::kv::Limits::default()
        }
    }
}

/// Which store a filter's `kv` operations go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvBackendKind {
    /// This gateway's memory: nothing shared, nothing to run, every operation answers at once.
    #[default]
    Memory,
    /// The Redis of `kv.redis`, shared by every gateway that uses it.
    Redis,
}

/// How the gateway reaches Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/database]`; `rediss://` is not supported.
    pub url: String,
    /// Longest an operation may wait for Redis; past it the filter receives a timeout error
    /// and decides what to do. Keep it under the timeouts of the filters that use Redis: the
    /// wait counts against their call's deadline.
    #[serde(default = "default_redis_operation_timeout", with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Longest a connection attempt may take.
    #[serde(default = "default_redis_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Prefix of every key the gateway writes: `<prefix>:<filter>:<key>`.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
    /// Multiplexed connections kept open; operations are spread over them.
    #[serde(default = "default_redis_connections")]
    pub connections: usize,
}

fn default_redis_operation_timeout() -> Duration {
    Duration::from_millis(20)
}

fn default_redis_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_redis_key_prefix() -> String {
    "gateway".to_owned()
}

fn default_redis_connections() -> usize {
    1
}

/// A filter component and how its instances run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDefinition {
    /// The `.wasm` component file, relative to `plugin_dir`.
    pub module: PathBuf,
    /// `pooled` (default) reuses instances across requests; `per-request` gives every call a
    /// fresh instance (the request and response phases of one request each get their own), for
    /// code that must not see traces of other requests.
    #[serde(default)]
    pub isolation: Isolation,
    /// A pooled instance is replaced after serving this many requests, bounding what leaks can
    /// accumulate.
    #[serde(default = "default_max_uses")]
    pub max_uses: u64,
    /// Longest a single call into the filter may run before it is stopped.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most linear memory one instance may grow to.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// The store of this filter's `kv` operations, when not `kv.backend`.
    #[serde(default)]
    pub kv: Option<KvBackendKind>,
    /// Largest answer the filter may receive from an outbound call; a larger one fails the call
    /// with `too-large`.
    #[serde(default = "default_max_outbound_response")]
    pub max_outbound_response: ByteSize,
}

impl FilterDefinition {
    /// A filter with every setting at its default.
    pub fn with_module(module: &Path) -> FilterDefinition {
        FilterDefinition {
            module: module.to_owned(),
            isolation: Isolation::default(),
            max_uses: default_max_uses(),
            timeout: default_call_timeout(),
            memory_limit: default_memory_limit(),
            kv: None,
            max_outbound_response: default_max_outbound_response(),
        }
    }
}

fn default_max_uses() -> u64 {
    10_000
}

fn default_call_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_memory_limit() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}

fn default_max_outbound_response() -> ByteSize {
    ByteSize(1 << 20)
}

/// How filter instances are shared between requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Instances are reused from a pool and replaced after `max_uses` requests or any failure.
    #[default]
    Pooled,
    /// Every call gets a fresh instance, dropped afterwards.
    PerRequest,
}

/// An upstream service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// The service's instances: base URLs such as `http://127.0.0.1:9000`, or
    /// `{ url: ..., weight: N }`; at most 256. May be empty when `registry` is given: the
    /// instances then come from it.
    #[serde(default)]
    pub instances: Vec<InstanceFile>,
    /// How an instance is picked for each request.
    #[serde(default)]
    pub balancer: BalancerKind,
    /// What the `hash` balancer hashes; required by it, refused with any other.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// Active health checks; off unless given.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive health checks on real traffic; off unless given.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// A circuit breaker per instance; off unless given.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Retries and their budget; one retry on another instance by default.
    #[serde(default)]
    pub retries: Retries,
    /// When no instance is healthy, use them all rather than answer 503 `NO_HEALTHY_UPSTREAM`.
    #[serde(default)]
    pub panic_mode: bool,
    /// Requests in flight to the whole service at once; past it 503 `OVERLOADED` at once.
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    /// Requests in flight to any one instance at once; a full instance is skipped, and when
    /// all are full the request gets 503 `OVERLOADED` at once.
    #[serde(default)]
    pub max_concurrent_requests_per_instance: Option<u32>,
    /// Longest wait for a TCP connection to an instance; past it the request gets 502.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for an instance's response head after the request was sent, all tries
    /// together; past it the request gets 504.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Longest wait between two reads of an instance's response body, once its head has come;
    /// past it, the client's response ends with an error and the connection is closed (as
    /// nginx's `proxy_read_timeout`).
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A route: which requests it takes, the filters they pass through, where they go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Name used in logs and errors; defaults to `route-N` (N counting from 0).
    #[serde(default)]
    pub name: Option<String>,
    /// Which requests this route takes.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// The service requests go to: a name from `services`, or `{param}` to take the name from a
    /// parameter of the path pattern. May be omitted only if a filter always answers.
    #[serde(default)]
    pub service: Option<String>,
    /// Filters run in this order on the request and in reverse order on the response.
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
    /// Let through paths with a dot segment that carries a `;` parameter (`/..;/`, `/.;/`).
    /// Refused with `BAD_PATH` by default: the gateway does not read them as dot segments, but
    /// Java servers do, so `/public/..;/admin` would reach `/admin` behind the gateway's back.
    #[serde(default)]
    pub allow_dot_segment_params: bool,
    /// Answers to the clients this allows carry `x-gateway-trace`: each filter call with its
    /// phase, decision and time, and the upstream try. Off unless given.
    #[serde(default)]
    pub debug_trace: Option<DebugTraceFile>,
}

/// Which requests of a route get a trace of the decisions taken on them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugTraceFile {
    /// Client addresses or CIDR ranges (`127.0.0.1`, `10.0.0.0/8`, `::1`); at least one.
    pub allow: Vec<String>,
    /// Trace only requests that carry this header too (any value), so that an allowed client
    /// asks for it; every request of an allowed client is traced without it.
    #[serde(default)]
    pub when_header: Option<String>,
    /// Write the trace in the access log line as well.
    #[serde(default)]
    pub access_log: bool,
}

/// The conditions a request must meet to take a route. All given conditions must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Path prefix, matched on whole segments: `/api` takes `/api` and `/api/x`, not `/apis`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Path pattern: literal segments, `{name}` for one segment, `{*name}` for the rest.
    #[serde(default)]
    pub path: Option<String>,
    /// Host the client asked for, without port; `*.example.com` matches any subdomain.
    #[serde(default)]
    pub host: Option<String>,
    /// Methods accepted; any method when omitted.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
}

/// A filter's place in a route's chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFilter {
    /// A name from `filters`.
    pub filter: String,
    /// The filter's configuration for this route, handed to its `init` as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// What a request gets when this filter fails (traps, times out, exceeds its memory):
    /// `closed` answers with a JSON error, `open` skips the filter and goes on.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Services, by name from `services`, this filter may call on this route (the `outbound`
    /// capability); it may call no other, and nothing else on the network.
    #[serde(default)]
    pub allow_services: Vec<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// What happens to a request when a filter fails on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Answer with a JSON error (500, or 503 when no instance could be made).
    #[default]
    Closed,
    /// Skip the filter, log it, and go on as if it had passed the request.
    Open,
}
