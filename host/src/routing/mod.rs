//! Which route takes a request: routes are tried in configuration order and the first whose
//! host, methods and path all match wins.

pub mod pattern;

use std::sync::Arc;

use http::Method;

use crate::filter::FilterChain;
use crate::upstream::Service;
use pattern::PathPattern;

/// How a route matches paths.
pub enum PathMatcher {
    /// Whole-segment prefix, stored without a trailing slash (`/` is the empty prefix).
    Prefix(String),
    Pattern(PathPattern),
}

impl PathMatcher {
    pub fn prefix(prefix: &str) -> PathMatcher {
        PathMatcher::Prefix(prefix.trim_end_matches('/').to_owned())
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

/// Where a route's requests go.
pub enum Target {
    Service(Arc<Service>),
    /// The service named by this path parameter.
    ServiceFromParam(String),
    /// No service: a filter is expected to answer.
    None,
}

/// A route, ready to serve.
pub struct Route {
    pub name: String,
    pub host: HostMatcher,
    pub methods: Option<Vec<Method>>,
    pub path: PathMatcher,
    pub target: Target,
    pub chain: FilterChain,
}

/// The routes, in order.
#[derive(Default)]
pub struct Router {
    pub routes: Vec<Route>,
}

/// A routing decision: the route and what its path pattern captured.
pub struct Matched<'r> {
    pub route: &'r Route,
    pub params: Vec<(Arc<str>, String)>,
}

impl Router {
    /// The first route that takes this request.
    pub fn route(&self, method: &Method, host: Option<&str>, path: &str) -> Option<Matched<'_>> {
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

    fn route(name: &str, host: Option<&str>, methods: Option<&[&str]>, path: PathMatcher) -> Route {
        Route {
            name: name.to_owned(),
            host: HostMatcher::new(host),
            methods: methods.map(|m| m.iter().map(|m| m.parse().expect("method")).collect()),
            path,
            target: Target::None,
            chain: FilterChain::default(),
        }
    }

    fn router() -> Router {
        Router {
            routes: vec![
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
                    PathMatcher::Pattern(
                        pattern::parse("/svc/{service}/{*rest}").expect("pattern"),
                    ),
                ),
                route("root", None, None, PathMatcher::prefix("/")),
            ],
        }
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
        let router = Router {
            routes: vec![route("only", None, None, PathMatcher::prefix("/only"))],
        };
        assert!(router.route(&Method::GET, None, "/other").is_none());
    }
}
