//! The serving state: everything a request needs, built from one configuration (routes with
//! their filter chains, services, edge limits), and the live slot that holds the state serving
//! now.
//!
//! A reload builds a whole new [`ServingState`] and swaps it into [`LiveState`] at once. Each
//! request takes the state current when it arrives and keeps it to the end, so in-flight
//! requests finish on the state they started with and an old state is freed with its last
//! request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use gateway_config::{Config, EdgeLimits, PathMatch, ServiceRef};
use gateway_filter::outbound::{OutboundGrant, Services};
use gateway_filter::{FilterChain, FilterEngine, FilterPool, LoadedFilter};
use gateway_metrics::RouteMetrics;
use gateway_routing::{HostMatcher, PathMatcher, Route, Router};
use gateway_upstream::Service;

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
    /// The counters of requests that took no route.
    pub(crate) unrouted: Arc<RouteMetrics>,
    /// The limits relayed WebSockets meet.
    pub websocket: gateway_config::WebSocket,
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
    pub(crate) chain: FilterChain,
    /// Paths with `/..;/` or `/.;/` segments may take this route.
    pub(crate) allow_dot_segment_params: bool,
    /// This route's counters, kept by name across reloads.
    pub(crate) metrics: Arc<RouteMetrics>,
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
        let outbound: Arc<dyn Services> = Arc::new(ConfiguredServices {
            services: services.clone(),
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
                    chain,
                    allow_dot_segment_params: route.allow_dot_segment_params,
                    metrics: gateway_metrics::route(&route.name),
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
            unrouted: gateway_metrics::route(gateway_metrics::UNROUTED),
            websocket: config.websocket.clone(),
        })
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
