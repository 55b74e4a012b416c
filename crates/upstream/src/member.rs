//! The instances a service has, wherever they come from: the configuration file, the admin API
//! on one gateway, or the Redis registry that several gateways watch. A service is built from
//! one list of members; when the list changes, a new service is built from the new list and
//! takes on what the old one knew of the members both have (`Service::inherit`).

use std::collections::BTreeMap;

use gateway_config::InstanceUrl;

/// Where an instance was learnt from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The configuration file's `services.<name>.instances`.
    Config,
    /// `POST /admin/services/{name}/instances` on this gateway.
    Admin,
    /// The Redis registry, shared by every gateway watching it.
    Registry,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
            Source::Registry => "registry",
        }
    }
}

/// One instance of a service, as its source describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub url: InstanceUrl,
    /// 1 to 100, as the `weighted` balancer reads it.
    pub weight: u32,
    pub source: Source,
    /// The path the service's active checks ask this instance, instead of `health_check.path`.
    pub health_path: Option<String>,
    /// What the instance said of itself besides (version, zone, ...), shown by the admin API.
    pub meta: BTreeMap<String, String>,
}

impl Member {
    /// The instances the configuration lists for a service.
    pub fn configured(config: &gateway_config::Service) -> Vec<Member> {
        config
            .instances
            .iter()
            .zip(&config.weights)
            .map(|(url, &weight)| Member {
                url: url.clone(),
                weight,
                source: Source::Config,
                health_path: None,
                meta: BTreeMap::new(),
            })
            .collect()
    }
}
