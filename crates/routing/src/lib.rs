//! A router: which route takes a request. Routes are tried in configuration order and the first
//! whose host, methods and path all match wins.
//!
//! The router is generic over what a route leads to: [`Router<T>`] hands back the matched
//! route's value and the parameters its path pattern captured, and the caller decides what the
//! value means (the proxy's is a filter chain and a service). Paths are matched as given: the
//! caller normalises them first, once, so that every later step sees the same path.
//!
//! - [`normalize`]: the one path normalisation every later step sees, which callers run before
//!   [`Router::route`].
//! - [`pattern`]: path patterns such as `/api/v1/{service}/{*rest}`, parsed once.

pub mod normalize;
pub mod pattern;

use std::sync::Arc;

use http::Method;
use pattern::PathPattern;

/// How a route matches paths.
#[derive(Clone)]
pub enum PathMatcher {
    /// Whole-segment prefix, stored without a trailing slash (`/` is the empty prefix).
    Prefix(String),
    Pattern(PathPattern),
}

impl PathMatcher {
    pub fn prefix(prefix: &str) -> PathMatcher {
        PathMatcher::Prefix(prefix.trim_end_matches('/').to_owned())
    }

    /// The path as configured: the prefix (`/` for every path), or the pattern.
    pub fn describe(&self) -> String {
        match self {
            PathMatcher::Prefix(prefix) if prefix.is_empty() => "/".to_owned(),
            PathMatcher::Prefix(prefix) => prefix.clone(),
            PathMatcher::Pattern(pattern) => pattern.to_string(),
        }
    }

    /// Whether `path` matches; the parameters captured, if it does.
    fn matches(&self, path: &str) -> Option<Vec<(Arc<str>, String)>> {
        match self {
            PathMatcher::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/')).then(Vec::new)
            }
            PathMatcher::Pattern(pattern) => {
                let params = pattern.matches(path)?;
                Some(
                    params
                        .iter()
                        .map(|(name, value)| (Arc::from(name), value.to_owned()))
                        .collect(),
                )
            }
        }
    }
}

/// How a route matches hosts.
#[derive(Clone)]
pub enum HostMatcher {
    Any,
    /// Lower-case exact host.
    Exact(String),
    /// Lower-case suffix including the leading dot, from `*.example.com`.
    Subdomain(String),
}

impl HostMatcher {
    pub fn new(host: Option<&str>) -> HostMatcher {
        match host.map(str::to_ascii_lowercase) {
            None => HostMatcher::Any,
            Some(host) => match host.strip_prefix('*') {
                Some(suffix) => HostMatcher::Subdomain(suffix.to_owned()),
                None => HostMatcher::Exact(host),
            },
        }
    }

    /// The host as configured (`*.example.com` for subdomains); `None` for any host.
    pub fn pattern(&self) -> Option<String> {
        match self {
            HostMatcher::Any => None,
            HostMatcher::Exact(host) => Some(host.clone()),
            HostMatcher::Subdomain(suffix) => Some(format!("*{suffix}")),
        }
    }

    fn matches(&self, host: Option<&str>) -> bool {
        match (self, host) {
            (HostMatcher::Any, _) => true,
            (_, None) => false,
            (HostMatcher::Exact(expected), Some(host)) => host.eq_ignore_ascii_case(expected),
            (HostMatcher::Subdomain(suffix), Some(host)) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A route: which requests it takes, and what they lead to.
pub struct Route<T> {
    /// The name logs and errors use.
    pub name: String,
    pub host: HostMatcher,
    /// The methods it takes; any method when `None`.
    pub methods: Option<Vec<Method>>,
    pub path: PathMatcher,
    pub value: T,
}

/// The routes, in order.
pub struct Router<T> {
    routes: Vec<Route<T>>,
}

/// A routing decision: the route and what its path pattern captured.
pub struct Matched<'r, T> {
    pub route: &'r Route<T>,
    /// Each captured parameter, in pattern order.
    pub params: Vec<(Arc<str>, String)>,
}

impl<T> Router<T> {
    /// A router trying `routes` in this order.
    pub fn new(routes: Vec<Route<T>>) -> Router<T> {
        Router { routes }
    }

    /// The routes, in the order they are tried.
    pub fn routes(&self) -> &[Route<T>] {
        &self.routes
    }

    /// The same routes, in the same order, each leading to what `lead` makes of its value.
    pub fn map<U>(&self, mut lead: impl FnMut(&T) -> U) -> Router<U> {
        Router {
            routes: self
                .routes
                .iter()
                .map(|route| Route {
                    name: route.name.clone(),
                    host: route.host.clone(),
                    methods: route.methods.clone(),
                    path: route.path.clone(),
                    value: lead(&route.value),
                })
                .collect(),
        }
    }

    /// The first route that takes this request.
    pub fn route(&self, method: &Method, host: Option<&str>, path: &str) -> Option<Matched<'_, T>> {
        self.routes.iter().find_map(|route| {
            if !route.host.matches(host) {
                return None;
            }
            if let Some(methods) = &route.methods
                && !methods.contains(method)
            {
                return None;
            }
            let params = route.path.matches(path)?;
            Some(Matched { route, params })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        name: &str,
        host: Option<&str>,
        methods: Option<&[&str]>,
        path: PathMatcher,
    ) -> Route<()> {
        Route {
            name: name.to_owned(),
            host: HostMatcher::new(host),
            methods: methods.map(|m| m.iter().map(|m| m.parse().expect("method")).collect()),
            path,
            value: (),
        }
    }

    fn router() -> Router<()> {
        Router::new(vec![
            route(
                "admin-host",
                Some("admin.example.com"),
                None,
                PathMatcher::prefix("/"),
            ),
            route("wild", Some("*.tenant.io"), None, PathMatcher::prefix("/")),
            route(
                "api-get",
                None,
                Some(&["GET"]),
                PathMatcher::prefix("/api/"),
            ),
            route(
                "by-service",
                None,
                None,
                PathMatcher::Pattern(pattern::parse("/svc/{service}/{*rest}").expect("pattern")),
            ),
            route("root", None, None, PathMatcher::prefix("/")),
        ])
    }

    #[test]
    fn first_matching_route_wins() {
        let router = router();
        let cases = [
            ("GET", Some("admin.example.com"), "/x", "admin-host"),
            ("GET", Some("ADMIN.example.com"), "/x", "admin-host"),
            ("GET", Some("a.tenant.io"), "/x", "wild"),
            ("GET", Some("tenant.io"), "/x", "root"),
            ("GET", None, "/api", "api-get"),
            ("GET", None, "/api/users", "api-get"),
            ("POST", None, "/api/users", "root"),
            ("GET", None, "/apis", "root"),
            ("GET", None, "/svc/users/1/2", "by-service"),
            ("GET", None, "/svc", "root"),
        ];
        for (method, host, path, expected) in cases {
            let method: Method = method.parse().expect("method");
            let matched = router.route(&method, host, path).expect("a route");
            assert_eq!(matched.route.name, expected, "{method} {host:?} {path}");
        }
    }

    #[test]
    fn patterns_capture_parameters() {
        let router = router();
        let matched = router
            .route(&Method::GET, None, "/svc/users/1/2")
            .expect("a route");
        let params: Vec<(&str, &str)> = matched
            .params
            .iter()
            .map(|(k, v)| (&**k, v.as_str()))
            .collect();
        assert_eq!(params, [("service", "users"), ("rest", "1/2")]);
    }

    #[test]
    fn no_route_without_a_catch_all() {
        let router = Router::new(vec![route(
            "only",
            None,
            None,
            PathMatcher::prefix("/only"),
        )]);
        assert!(router.route(&Method::GET, None, "/other").is_none());
    }
}
