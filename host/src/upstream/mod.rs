//! Upstream services: their instances, how one is picked, and the connections that reach it.

mod connection;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Arc;

use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Response};

use crate::config;
use crate::proxy::body::RequestBody;

use self::connection::ConnectionPool;
pub use self::connection::UpstreamBody;
use crate::wire::upstream::OutgoingHead;

/// The base URL of one instance: scheme and authority, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceUrl {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl FromStr for InstanceUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| format!("`{text}` is not a URL such as http://127.0.0.1:9000"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!(
                "`{text}` is not a URL such as http://127.0.0.1:9000"
            ));
        };
        if *scheme != Scheme::HTTP {
            return Err(format!(
                "`{text}`: only http:// upstreams are supported so far"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{text}`: give only scheme, host and port; rewrite paths with the rewrite filter"
            ));
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}`: credentials in the URL are not supported"
            ));
        }
        Ok(InstanceUrl {
            scheme: scheme.clone(),
            authority: authority.clone(),
        })
    }
}

/// One instance of a service and its idle connections.
pub struct Instance {
    pub url: InstanceUrl,
    /// `service@host:port`, as logs and errors name it.
    pub label: String,
    /// The Host header for requests that came without one (HTTP/2 clients send `:authority`).
    host: HeaderValue,
    pool: Arc<ConnectionPool>,
}

impl Instance {
    /// Closes the calling worker's idle connections to this instance that are closed or stale.
    pub fn sweep_idle_connections(&self) {
        self.pool.sweep();
    }

    /// Sends the request (`uri` in origin form; the instance's own host goes as `Host` when
    /// `headers` has none) and returns the response once its head has arrived; the body streams
    /// as the client reads it. The head is only borrowed: the response phase still sees it.
    pub async fn send(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: RequestBody,
    ) -> crate::Result<Response<UpstreamBody>> {
        let head = OutgoingHead {
            method,
            target,
            headers,
            host: &self.host,
        };
        self.pool.send(&self.url, &self.label, head, body).await
    }
}

/// A service: its instances and how long a request to one may take.
pub struct Service {
    pub name: String,
    pub instances: Vec<Instance>,
    pub request_timeout: Duration,
    next: AtomicUsize,
}

impl Service {
    pub fn new(name: &str, config: &config::Service) -> Result<Service, String> {
        let instances = config
            .instances
            .iter()
            .map(|url| {
                let url: InstanceUrl = url.parse()?;
                let host = HeaderValue::from_str(url.authority.as_str())
                    .map_err(|_| format!("`{}` cannot be sent as a Host header", url.authority))?;
                Ok(Instance {
                    label: format!("{name}@{}", url.authority),
                    host,
                    url,
                    pool: ConnectionPool::new(config.connect_timeout),
                })
            })
            .collect::<Result<Vec<Instance>, String>>()?;
        Ok(Service {
            name: name.to_owned(),
            instances,
            request_timeout: config.request_timeout,
            next: AtomicUsize::new(0),
        })
    }

    /// The next instance, round robin.
    pub fn pick(&self) -> &Instance {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.instances[turn % self.instances.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls_take_only_scheme_and_authority() {
        assert!("http://127.0.0.1:9000".parse::<InstanceUrl>().is_ok());
        assert!("http://localhost:9000/".parse::<InstanceUrl>().is_ok());
        for bad in [
            "127.0.0.1:9000",
            "https://example.com",
            "http://a:1/base",
            "http://a:1/?q=1",
            "http://user:pw@a:1",
            "not a url",
        ] {
            assert!(
                bad.parse::<InstanceUrl>().is_err(),
                "{bad} should be refused"
            );
        }
    }

    #[test]
    fn instances_are_picked_round_robin() {
        let config = config::Service {
            instances: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        let service = Service::new("s", &config).expect("valid service");
        let picks: Vec<u16> = (0..4)
            .map(|_| service.pick().url.authority.port_u16().unwrap_or(0))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }
}
