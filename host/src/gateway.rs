//! Everything a request needs, built from one configuration: routes with their filter chains,
//! services, and edge limits; and the live slot that holds the state currently serving.
//!
//! A reload builds a whole new [`Gateway`] and swaps it into [`LiveGateway`] at once. Each
//! request takes the state current when it arrives and keeps it to the end, so in-flight
//! requests finish on the state they started with and an old state is freed with its last
//! request.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Method;

use crate::config::{self, Config};
use crate::filter::{FilterChain, FilterEngine, FilterPool, LoadedFilter};
use crate::routing::{HostMatcher, PathMatcher, Route, Router, Target, pattern};
use crate::server::hygiene::EdgeLimits;
use crate::upstream::Service;
use crate::{Error, Result};

/// The serving state.
pub struct Gateway {
    pub router: Router,
    pub services: HashMap<String, Arc<Service>>,
    /// The configured limits, also read when a connection is accepted.
    pub limits: config::EdgeLimits,
    /// The same limits in the form the per-request edge checks use.
    pub edge_limits: EdgeLimits,
    /// The filter components this state runs.
    pub filters: Vec<Arc<LoadedFilter>>,
    /// Where those components were found.
    pub plugin_dir: std::path::PathBuf,
}

/// The state serving now, replaced whole by a reload.
pub struct LiveGateway {
    current: ArcSwap<Gateway>,
}

impl LiveGateway {
    pub fn new(gateway: Gateway) -> LiveGateway {
        LiveGateway {
            current: ArcSwap::from_pointee(gateway),
        }
    }

    /// The state to serve a request with; the request keeps it until it is done.
    pub fn current(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Makes `gateway` the state every request arriving from now on sees.
    pub fn replace(&self, gateway: Gateway) {
        self.current.store(Arc::new(gateway));
    }
}

impl Gateway {
    /// Loads every filter once, initialises it with each route's config, and builds the routes.
    /// Every problem found is returned, not just the first.
    pub fn build(config: &Config, engine: &FilterEngine) -> Result<Gateway, Vec<Error>> {
        let mut problems = Vec::new();

        let mut filters: HashMap<&str, Arc<LoadedFilter>> = HashMap::new();
        for (name, definition) in &config.filters {
            let path = config.plugin_dir.join(&definition.module);
            match engine.load(name, &path, definition) {
                Ok(filter) => {
                    filters.insert(name, Arc::new(filter));
                }
                Err(error) => problems.push(error),
            }
        }

        let mut services = HashMap::new();
        for (name, definition) in &config.services {
            match Service::new(name, definition) {
                Ok(service) => {
                    services.insert(name.clone(), Arc::new(service));
                }
                Err(reason) => problems.push(Error::Config {
                    path: format!("services.{name}").into(),
                    problems: vec![reason],
                }),
            }
        }

        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            let name = config.route_name(index);
            let mut chain = FilterChain::default();
            for entry in &route.filters {
                // A filter that failed to load was reported above.
                let Some(filter) = filters.get(entry.filter.as_str()) else {
                    continue;
                };
                match FilterPool::new(filter.clone(), &name, &entry.config, entry.on_failure) {
                    Ok(pool) => chain.filters.push(pool),
                    Err(error) => problems.push(error),
                }
            }
            let target = match route.service.as_deref() {
                None => Target::None,
                Some(service) => {
                    match service.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(param) => Target::ServiceFromParam(param.to_owned()),
                        None => match services.get(service) {
                            Some(service) => Target::Service(service.clone()),
                            None => continue,
                        },
                    }
                }
            };
            let path = match (&route.matcher.path_prefix, &route.matcher.path) {
                (Some(prefix), _) => PathMatcher::prefix(prefix),
                (None, Some(path)) => match pattern::parse(path) {
                    Ok(pattern) => PathMatcher::Pattern(pattern),
                    Err(_) => continue,
                },
                (None, None) => continue,
            };
            let methods = route.matcher.methods.as_ref().map(|methods| {
                methods
                    .iter()
                    .filter_map(|method| Method::from_bytes(method.as_bytes()).ok())
                    .collect()
            });
            routes.push(Route {
                name,
                host: HostMatcher::new(route.matcher.host.as_deref()),
                methods,
                path,
                target,
                chain,
            });
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Gateway {
            router: Router { routes },
            services,
            limits: config.limits.clone(),
            edge_limits: EdgeLimits {
                max_header_bytes: config.limits.max_header_bytes.as_usize(),
                max_headers: config.limits.max_headers,
                max_uri_bytes: config.limits.max_uri_bytes.as_usize(),
            },
            filters: filters.into_values().collect(),
            plugin_dir: config.plugin_dir.clone(),
        })
    }

    /// Closes the calling worker's idle upstream connections that their instance closed or that
    /// went unused too long.
    pub fn sweep_idle_upstream_connections(&self) {
        for service in self.services.values() {
            for instance in &service.instances {
                instance.sweep_idle_connections();
            }
        }
    }
}
