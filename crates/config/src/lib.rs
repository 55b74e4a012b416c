//! The gateway's YAML configuration: what the file may say, and the checked, typed form the
//! gateway builds its state from.
//!
//! Loading happens in two steps. Parsing ([`file`]) turns the text into the file's types; a
//! syntax error, a wrong type or an unknown key stops it at the first problem, named with its
//! field path and line. Checking ([`validate`]) then turns the file into a [`Config`]: instance
//! URLs, path patterns, service references and methods become typed values, every number is
//! bounded both ways, and the parts must fit together (routes name services and filters that
//! exist). It reports every problem it finds at once, so one run of `gateway validate` shows
//! everything to fix. Whatever builds from a [`Config`] can take it as it is: nothing in it is
//! left for a later step to check.

mod file;
mod include;
mod instance;
mod observe;
mod registry;
mod size;
mod upstream;
mod validate;
mod websocket;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

pub use file::{
    Admin, AdminToken, ConfigFile, DebugTraceFile, EdgeLimits, FailurePolicy, FilterDefinition,
    Isolation, KvBackendKind, KvSettings, Listener, Otlp, RedisSettings, RouteFile, RouteFilter,
    RouteMatch, ServiceFile, Tracing,
};
pub use gateway_routing::pattern::PathPattern;
pub use instance::InstanceUrl;
pub use observe::{AccessLog, AccessLogDestination, AccessLogFormat, Metrics};
pub use registry::{
    MAX_SERVICE_NAME, Registry, ServiceTemplate, ServiceTemplateFile, check_service_name,
};
pub use size::ByteSize;
pub use upstream::{
    BalancerKind, CircuitBreaker, HashKey, HashSource, HealthCheck, InstanceFile, OutlierDetection,
    Retries, WeightedInstance,
};
pub use websocket::{Hub, Overflow, Topic, WebSocket};

/// The largest `memory_limit` a filter may be given.
pub const MAX_MEMORY_LIMIT: ByteSize = ByteSize(256 << 20);

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The configuration file has problems; each names its field path.
    #[error("{} is not a valid configuration:\n  - {}", path.display(), problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Error {
    /// The separate problems this error reports, for lists such as the reload status.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Error::Invalid { path, problems } => problems
                .iter()
                .map(|problem| format!("{}: {problem}", path.display()))
                .collect(),
            Error::Read { .. } => vec![self.to_string()],
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<Listener>,
    pub admin: Option<Admin>,
    pub watch: bool,
    /// Resolved against the configuration file's folder.
    pub cache_dir: Option<PathBuf>,
    pub limits: EdgeLimits,
    pub kv: KvSettings,
    /// Resolved against the configuration file's folder.
    pub plugin_dir: PathBuf,
    pub filters: BTreeMap<String, FilterDefinition>,
    pub services: BTreeMap<String, Service>,
    pub routes: Vec<Route>,
    /// `destination` is resolved against the configuration file's folder.
    pub access_log: AccessLog,
    pub tracing: Tracing,
    pub metrics: Metrics,
    pub websocket: WebSocket,
    pub registry: Option<Registry>,
    /// The policies of services only the registry or the admin API knows, when no template
    /// matches; `instances` is empty.
    pub service_defaults: Service,
    /// In the file's order; the first that matches a name applies.
    pub service_templates: Vec<ServiceTemplate>,
}

impl Config {
    /// The policies of service `name`: its own when the file lists it, else the first
    /// matching template's, else `service_defaults`.
    pub fn policies_of(&self, name: &str) -> &Service {
        self.services.get(name).unwrap_or_else(|| {
            self.service_templates
                .iter()
                .find(|template| template.matches(name))
                .map_or(&self.service_defaults, |template| &template.service)
        })
    }
}

/// An upstream service: its instances, timeouts and policies (see [`ServiceFile`]).
#[derive(Debug, Clone)]
pub struct Service {
    /// At most 256; empty only with a registry, which then brings them.
    pub instances: Vec<InstanceUrl>,
    /// One per instance, each 1 to 100.
    pub weights: Vec<u32>,
    pub connect_timeout: Duration,
    /// All tries together.
    pub request_timeout: Duration,
    pub read_timeout: Duration,
    pub balancer: BalancerKind,
    /// Given exactly when `balancer` is `hash`.
    pub hash_key: Option<HashKey>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breaker: Option<CircuitBreaker>,
    /// `try_timeout` is filled in (never longer than `request_timeout`).
    pub retries: Retries,
    pub panic_mode: bool,
    pub max_concurrent_requests: Option<u32>,
    pub max_concurrent_requests_per_instance: Option<u32>,
}

impl Service {
    /// A service of these instances with every default, as a configuration without any policy
    /// key gives it.
    pub fn with_instances(instances: Vec<InstanceUrl>) -> Service {
        Service {
            weights: vec![1; instances.len()],
            instances,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            balancer: BalancerKind::RoundRobin,
            hash_key: None,
            health_check: None,
            outlier_detection: None,
            circuit_breaker: None,
            retries: Retries::default(),
            panic_mode: false,
            max_concurrent_requests: None,
            max_concurrent_requests_per_instance: None,
        }
    }
}

/// A route (see [`RouteFile`]).
#[derive(Debug, Clone)]
pub struct Route {
    /// Its own, or `route-N`; unique.
    pub name: String,
    pub path: PathMatch,
    /// Lower-case host, or `*.` and a lower-case domain.
    pub host: Option<String>,
    /// Any method when `None`.
    pub methods: Option<Vec<Method>>,
    /// `None` only for a route with filters.
    pub service: Option<ServiceRef>,
    /// Each names a filter of [`Config::filters`].
    pub filters: Vec<RouteFilter>,
    pub allow_dot_segment_params: bool,
    pub debug_trace: Option<DebugTrace>,
}

/// A route's trace of decisions (see [`DebugTraceFile`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugTrace {
    /// Never empty.
    pub allow: Vec<ipnet::IpNet>,
    pub when_header: Option<http::HeaderName>,
    pub access_log: bool,
}

impl DebugTrace {
    /// Whether a request from `client` with these `headers` is traced.
    pub fn applies(&self, client: std::net::IpAddr, headers: &http::HeaderMap) -> bool {
        self.allow.iter().any(|range| range.contains(&client))
            && self
                .when_header
                .as_ref()
                .is_none_or(|name| headers.contains_key(name))
    }
}

/// How a route matches paths.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// A whole-segment prefix, starting with `/`.
    Prefix(String),
    Pattern(PathPattern),
}

/// The service a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRef {
    /// A name from [`Config::services`].
    Named(String),
    /// The service named by this parameter of the route's path pattern.
    FromParam(String),
}

impl Config {
    /// Reads, parses and checks a configuration file. Relative paths in it are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_yaml(&text, base).map_err(|problems| Error::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and checks configuration text whose relative paths are relative to `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, Vec<String>> {
        let mut file = ConfigFile::parse(text)?;
        include::resolve(&mut file, base)?;
        file.plugin_dir = base.join(&file.plugin_dir);
        file.cache_dir = file.cache_dir.map(|dir| base.join(dir));
        if let Some(admin) = &mut file.admin {
            admin.token_file = admin.token_file.take().map(|path| base.join(path));
        }
        if let AccessLogDestination::File(path) = &mut file.access_log.destination {
            *path = base.join(&*path);
        }
        validate::check(file)
    }
}

impl ConfigFile {
    /// Parses configuration text; a problem is named with its field path and position.
    pub fn parse(text: &str) -> Result<ConfigFile, Vec<String>> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            // serde_yaml_ng ends the message with the line and column, and starts it with its own
            // field path when it has one: the path of the node it was reading, which for an
            // unknown key is the map around it. Keep the position, and only the fuller path.
            let message = match message.split_once(": ") {
                Some((its_path, rest)) if is_same_or_parent(its_path, &path) => rest.to_owned(),
                _ => message,
            };
            vec![if path == "." {
                message
            } else {
                format!("{path}: {message}")
            }]
        })
    }
}

/// Whether field path `parent` is `path` or leads to it (`routes[1]` leads to `routes[1].name`).
fn is_same_or_parent(parent: &str, path: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}
