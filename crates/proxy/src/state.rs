//! The serving state: everything a request needs, built from one configuration (routes with
//! their filter chains, services, edge limits), and the live slot that holds the state serving
//! now.
//!
//! A reload builds a whole new [`ServingState`] and swaps it into [`LiveState`] at once. Each
//! request takes the state current when it arrives and keeps it to the end, so in-flight
//! requests finish on the state they started with and an old state is freed with its last
//! request.
//!
//! Instances registered at run time (the admin API, the Redis registry) change a state the same
//! way, without a reload: [`ServingState::with_members`] derives a new state that shares the
//! current one's routes, filter pools and every service whose instances did not change, and
//! rebuilds only the services whose did. A request to an instance that just left finishes on
//! the state it started with.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use gateway_config::{Config, EdgeLimits, PathMatch, ServiceRef};
use gateway_filter::outbound::{OutboundGrant, Services};
use gateway_filter::{FilterChain, FilterEngine, FilterPool, LoadedFilter};
use gateway_metrics::RouteMetrics;
use gateway_routing::{HostMatcher, PathMatcher, Route, Router};
use gateway_upstream::{Member, Service};

use crate::Error;
use crate::hygiene::SizeLimits;
use crate::outbound::ConfiguredServices;

/// The serving state.
pub struct ServingState {
    pub(crate) router: Router<RouteEntry>,
    pub(crate) services: Arc<HashMap<String, Arc<Service>>>,
    /// The configured limits, also read when a connection is accepted.
    pub limits: EdgeLimits,
    /// The same size limits in the form the per-request edge checks use.
    pub(crate) size_limits: SizeLimits,
    /// The filter components this state runs.
    pub filters: Vec<Arc<LoadedFilter>>,
    /// Where those components were found.
    pub plugin_dir: PathBuf,
    /// Continue or start a W3C trace for each routed request (`tracing.propagate`).
    pub(crate) propagate_traces: bool,
    /// `tracing.otlp.sample_ratio`, when spans are exported.
    pub(crate) sample_ratio: Option<f64>,
    /// The counters of requests that took no route.
    pub(crate) unrouted: Arc<RouteMetrics>,
    /// The limits relayed WebSockets meet.
    pub websocket: gateway_config::WebSocket,
    /// The configuration this state was built from: the policies of services that instances
    /// registered at run time join.
    config: Arc<Config>,
    /// The services filters' outbound calls reach, shared with every state derived from this
    /// one, whose filter pools these are.
    outbound: Arc<ArcSwap<HashMap<String, Arc<Service>>>>,
}

/// The instances registered at run time, by service name, each list without duplicate URLs.
pub type Members = BTreeMap<String, Vec<Member>>;

/// The most instances one service has (the bitset of tried instances holds 256).
pub const MAX_INSTANCES: usize = 256;

/// A state derived from another with new instances, and its services that are new.
pub struct Derived {
    pub state: ServingState,
    /// Their active checks are still to be started.
    pub rebuilt: Vec<Arc<Service>>,
}

/// A route as configured, with the filter pools of its chain.
pub struct RouteView<'s> {
    pub name: &'s str,
    /// Lower-case host or `*.domain`; any host when `None`.
    pub host: Option<String>,
    /// Any method when `None`.
    pub methods: Option<&'s [http::Method]>,
    /// The path prefix or pattern.
    pub path: String,
    /// The service's name, or `{param}` when the path names it; `None` when a filter answers.
    pub service: Option<String>,
    /// In request-phase order.
    pub filters: &'s [FilterPool],
}

/// What a route leads to.
pub(crate) struct RouteEntry {
    pub(crate) target: Target,
    /// Shared by the states derived from the one that built it.
    pub(crate) chain: Arc<FilterChain>,
    /// Paths with `/..;/` or `/.;/` segments may take this route.
    pub(crate) allow_dot_segment_params: bool,
    /// This route's counters, kept by name across reloads.
    pub(crate) metrics: Arc<RouteMetrics>,
    /// Which requests get a trace of decisions.
    pub(crate) debug_trace: Option<gateway_config::DebugTrace>,
}

/// Where a route's requests go.
pub(crate) enum Target {
    Service(Arc<Service>),
    /// The service named by this path parameter.
    ServiceFromParam(String),
    /// No service: a filter is expected to answer.
    None,
}

/// The state serving now, replaced whole by a reload.
pub struct LiveState {
    current: ArcSwap<ServingState>,
}

impl LiveState {
    pub fn new(state: ServingState) -> LiveState {
        LiveState {
            current: ArcSwap::from_pointee(state),
        }
    }

    /// The state to serve a request with; the request keeps it until it is done.
    #[inline]
    pub fn current(&self) -> Arc<ServingState> {
        self.current.load_full()
    }

    /// Makes `state` the state every request arriving from now on sees.
    pub fn replace(&self, state: ServingState) {
        self.current.store(Arc::new(state));
    }
}

impl ServingState {
    /// Loads every filter once, initialises it with each route's config, and builds the routes.
    /// Every problem found is returned, not just the first.
    pub async fn build(config: &Config, engine: &FilterEngine) -> Result<ServingState, Vec<Error>> {
        let mut problems = Vec::new();

        let mut filters: HashMap<&str, Arc<LoadedFilter>> = HashMap::new();
        for (name, definition) in &config.filters {
            let path = config.plugin_dir.join(&definition.module);
            match engine.load(name, &path, definition) {
                Ok(filter) => {
                    filters.insert(name, Arc::new(filter));
                }
                Err(error) => problems.push(Error::Filter(error)),
            }
        }

        let services: Arc<HashMap<String, Arc<Service>>> = Arc::new(
            config
                .services
                .iter()
                .map(|(name, service)| (name.clone(), Arc::new(Service::new(name, service))))
                .collect(),
        );
        let outbound_services = Arc::new(ArcSwap::new(services.clone()));
        let outbound: Arc<dyn Services> = Arc::new(ConfiguredServices {
            services: outbound_services.clone(),
        });

        let mut routes = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let mut chain = FilterChain::default();
            for entry in &route.filters {
                // A filter that failed to load was reported above.
                let Some(filter) = filters.get(entry.filter.as_str()) else {
                    continue;
                };
                let grant = (!entry.allow_services.is_empty()).then(|| OutboundGrant {
                    allowed: entry.allow_services.clone().into(),
                    services: outbound.clone(),
                });
                let pool = FilterPool::new(
                    filter.clone(),
                    &route.name,
                    &entry.config,
                    entry.on_failure,
                    grant,
                )
                .await;
                match pool {
                    Ok(pool) => chain.filters.push(pool),
                    Err(error) => problems.push(Error::Filter(error)),
                }
            }
            let target = match &route.service {
                None => Target::None,
                Some(ServiceRef::FromParam(param)) => Target::ServiceFromParam(param.clone()),
                Some(ServiceRef::Named(name)) => match services.get(name) {
                    Some(service) => Target::Service(service.clone()),
                    None => {
                        problems.push(Error::RouteService {
                            route: route.name.clone(),
                            service: name.clone(),
                        });
                        continue;
                    }
                },
            };
            let path = match &route.path {
                PathMatch::Prefix(prefix) => PathMatcher::prefix(prefix),
                PathMatch::Pattern(pattern) => PathMatcher::Pattern(pattern.clone()),
            };
            routes.push(Route {
                name: route.name.clone(),
                host: HostMatcher::new(route.host.as_deref()),
                methods: route.methods.clone(),
                path,
                value: RouteEntry {
                    target,
                    chain: Arc::new(chain),
                    allow_dot_segment_params: route.allow_dot_segment_params,
                    metrics: gateway_metrics::route(&route.name),
                    debug_trace: route.debug_trace.clone(),
                },
            });
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ServingState {
            router: Router::new(routes),
            services,
            size_limits: SizeLimits::of(&config.limits),
            limits: config.limits.clone(),
            filters: filters.into_values().collect(),
            plugin_dir: config.plugin_dir.clone(),
            propagate_traces: config.tracing.propagate,
            sample_ratio: config.tracing.otlp.as_ref().map(|otlp| otlp.sample_ratio),
            unrouted: gateway_metrics::route(gateway_metrics::UNROUTED),
            websocket: config.websocket.clone(),
            config: Arc::new(config.clone()),
            outbound: outbound_services,
        })
    }

    /// This state with `dynamic`'s instances added to the configured ones: `None` when every
    /// service already has exactly those. A service the configuration does not name takes its
    /// policies from the first matching template or `service_defaults`, and exists while it
    /// has an instance. Rebuilt services take on what this state knows of their instances.
    pub fn with_members(&self, dynamic: &Members) -> Option<Derived> {
        let names: BTreeSet<&str> = self
            .config
            .services
            .keys()
            .chain(dynamic.keys())
            .map(String::as_str)
            .collect();
        let mut services = HashMap::with_capacity(names.len());
        let mut rebuilt = Vec::new();
        for name in names {
            let policies = self.config.policies_of(name);
            let mut members = Member::configured(policies);
            for member in dynamic.get(name).into_iter().flatten() {
                if members.iter().any(|known| known.url == member.url) {
                    continue;
                }
                if members.len() == MAX_INSTANCES {
                    tracing::warn!(
                        service = name,
                        "more than {MAX_INSTANCES} instances registered: the rest are left out"
                    );
                    break;
                }
                members.push(member.clone());
            }
            if members.is_empty() && !self.config.services.contains_key(name) {
                continue;
            }
            let service = match self.services.get(name) {
                Some(current) if current.has_members(&members) => current.clone(),
                current => {
                    let service = Arc::new(Service::with_members(name, policies, &members));
                    if let Some(current) = current {
                        service.inherit(current);
                    }
                    tracing::info!(
                        service = name,
                        instances = members.len(),
                        "the service's instances changed"
                    );
                    rebuilt.push(service.clone());
                    service
                }
            };
            services.insert(name.to_owned(), service);
        }
        if rebuilt.is_empty() && services.len() == self.services.len() {
            return None;
        }
        for gone in self
            .services
            .keys()
            .filter(|name| !services.contains_key(*name))
        {
            tracing::info!(
                service = gone,
                "the service has no instance left: it is gone"
            );
        }
        let services = Arc::new(services);
        let router = self.router.map(|entry| RouteEntry {
            target: match &entry.target {
                // A configured service is in every derived state.
                Target::Service(service) => Target::Service(services[service.name()].clone()),
                Target::ServiceFromParam(param) => Target::ServiceFromParam(param.clone()),
                Target::None => Target::None,
            },
            chain: entry.chain.clone(),
            allow_dot_segment_params: entry.allow_dot_segment_params,
            metrics: entry.metrics.clone(),
            debug_trace: entry.debug_trace.clone(),
        });
        self.outbound.store(services.clone());
        Some(Derived {
            state: ServingState {
                router,
                services,
                limits: self.limits.clone(),
                size_limits: self.size_limits,
                filters: self.filters.clone(),
                plugin_dir: self.plugin_dir.clone(),
                propagate_traces: self.propagate_traces,
                sample_ratio: self.sample_ratio,
                unrouted: self.unrouted.clone(),
                websocket: self.websocket.clone(),
                config: self.config.clone(),
                outbound: self.outbound.clone(),
            },
            rebuilt,
        })
    }

    /// The configuration this state was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Closes the calling worker's idle upstream connections that their instance closed or that
    /// went unused too long.
    pub fn sweep_idle_upstream_connections(&self) {
        for service in self.services.values() {
            for instance in service.instances() {
                instance.sweep_idle_connections();
            }
        }
    }

    /// Starts the services' active health checks on the calling runtime (the control
    /// plane's): once per gateway, not per worker. They end when this state is dropped.
    pub fn start_health_checks(&self) {
        for service in self.services.values() {
            service.start_health_checks();
        }
    }

    /// Takes on what `previous`, the state this one replaces, knows of the upstream instances
    /// both have: their health, ejections, breakers and latency estimates (see
    /// `Service::inherit`).
    pub fn inherit_upstream_state(&self, previous: &ServingState) {
        for (name, service) in self.services.iter() {
            if let Some(old) = previous.services.get(name) {
                service.inherit(old);
            }
        }
    }

    /// The routes, in the order they are tried, as the admin API shows them.
    pub fn routes(&self) -> impl Iterator<Item = RouteView<'_>> {
        self.router.routes().iter().map(|route| RouteView {
            name: &route.name,
            host: route.host.pattern(),
            methods: route.methods.as_deref(),
            path: route.path.describe(),
            service: match &route.value.target {
                Target::Service(service) => Some(service.name().to_owned()),
                Target::ServiceFromParam(param) => Some(format!("{{{param}}}")),
                Target::None => None,
            },
            filters: &route.value.chain.filters,
        })
    }

    /// The services, by name, as the admin API shows them.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Service)> {
        self.services
            .iter()
            .map(|(name, service)| (name.as_str(), &**service))
    }
}
