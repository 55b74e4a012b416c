//! Upstream services: their instances, how one is picked, and the pooled client that reaches it.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;
use crate::proxy::body::RequestBody;

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

/// The client type every service uses to reach its instances.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// A service: its instances and the client (with its own connection pool and timeouts).
pub struct Service {
    pub name: String,
    pub instances: Vec<InstanceUrl>,
    pub request_timeout: Duration,
    pub client: UpstreamClient,
    next: AtomicUsize,
}

impl Service {
    pub fn new(name: &str, config: &config::Service) -> Result<Service, String> {
        let instances = config
            .instances
            .iter()
            .map(|url| url.parse())
            .collect::<Result<Vec<InstanceUrl>, String>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Service {
            name: name.to_owned(),
            instances,
            request_timeout: config.request_timeout,
            client,
            next: AtomicUsize::new(0),
        })
    }

    /// The next instance, round robin.
    pub fn pick(&self) -> &InstanceUrl {
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
            .map(|_| service.pick().authority.port_u16().unwrap_or(0))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }
}
