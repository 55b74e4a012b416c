//! Instances registered at run time, merged with the configured ones: the admin API's, held
//! by this gateway, and the Redis registry's, shared by every gateway watching it.
//!
//! The [`Directory`] keeps each source's instances and derives a new serving state whenever
//! their union changes (`ServingState::with_members`): only the services whose instances
//! changed are rebuilt, taking on what the old ones knew of the instances both have, and
//! requests in flight finish on the state they started with. A reload installs its state
//! through the directory too, so that registered instances survive it. Both hold one lock, so
//! a change and a reload never overwrite each other.
//!
//! With `registry.redis`, the admin API's registrations are also written to Redis and renewed
//! by this gateway a third of `registry.ttl` apart, so that every gateway serves them while
//! this one runs.

pub mod cli;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use gateway_proxy::{LiveState, Members, ServingState};
use gateway_registry::{Registered, Registration, Store};
use gateway_upstream::Member;

/// How long an admin request waits for Redis before answering that the registration is this
/// gateway's only, for now (the next heartbeat shares it).
const SHARE_TIMEOUT: Duration = Duration::from_secs(2);

/// The registered instances, and the live state they are applied to.
pub struct Directory {
    live: Arc<LiveState>,
    sources: Mutex<Sources>,
    /// Where admin registrations are shared, when the registry uses Redis.
    shared: OnceLock<Shared>,
}

#[derive(Default)]
struct Sources {
    admin: Members,
    registry: Members,
    /// The union the serving state was last given.
    applied: Members,
}

struct Shared {
    store: Store,
    ttl: Duration,
}

impl Sources {
    /// Each service's instances: the admin API's first, then the registry's at other URLs.
    fn merged(&self) -> Members {
        let mut merged = self.admin.clone();
        for (service, members) in &self.registry {
            let list = merged.entry(service.clone()).or_default();
            for member in members {
                if !list.iter().any(|known| known.url == member.url) {
                    list.push(member.clone());
                }
            }
        }
        merged
    }
}

impl Directory {
    pub fn new(live: Arc<LiveState>) -> Directory {
        Directory {
            live,
            sources: Mutex::new(Sources::default()),
            shared: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Sources> {
        // Every update leaves the sources whole: a poisoned lock holds usable ones.
        self.sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes a state a reload built the serving one: with every registered instance, taking
    /// on what the serving state knows of the instances both have, its health checks started.
    pub fn install(&self, built: ServingState) {
        let mut sources = self.lock();
        let merged = sources.merged();
        let state = match built.with_members(&merged) {
            Some(derived) => derived.state,
            None => built,
        };
        state.inherit_upstream_state(&self.live.current());
        state.start_health_checks();
        self.live.replace(state);
        sources.applied = merged;
    }

    /// Derives a new serving state if the union of the sources changed.
    fn apply(&self, sources: &mut Sources) {
        let merged = sources.merged();
        if merged == sources.applied {
            return;
        }
        if let Some(derived) = self.live.current().with_members(&merged) {
            for service in &derived.rebuilt {
                service.start_health_checks();
            }
            self.live.replace(derived.state);
        }
        sources.applied = merged;
    }

    /// The registry's instances now, replacing the ones it had.
    pub fn set_registry(&self, instances: Vec<Registered>) {
        let mut registry = Members::new();
        for registered in instances {
            registry
                .entry(registered.service)
                .or_default()
                .push(registered.member);
        }
        let mut sources = self.lock();
        if sources.registry == registry {
            return;
        }
        sources.registry = registry;
        self.apply(&mut sources);
    }

    /// Adds or replaces an admin registration; true if its URL was new for the service.
    pub fn register(&self, registered: Registered) -> bool {
        let mut sources = self.lock();
        let list = sources.admin.entry(registered.service).or_default();
        let new = match list
            .iter_mut()
            .find(|known| known.url == registered.member.url)
        {
            Some(known) => {
                *known = registered.member;
                false
            }
            None => {
                list.push(registered.member);
                true
            }
        };
        self.apply(&mut sources);
        new
    }

    /// Removes an admin registration; false if there was none at that address.
    pub fn deregister(&self, service: &str, authority: &str) -> bool {
        let mut sources = self.lock();
        let Some(list) = sources.admin.get_mut(service) else {
            return false;
        };
        let before = list.len();
        list.retain(|member| member.url.authority.as_str() != authority);
        let removed = list.len() != before;
        if list.is_empty() {
            sources.admin.remove(service);
        }
        self.apply(&mut sources);
        removed
    }

    /// The admin API's registrations, by service.
    fn admin_members(&self) -> BTreeMap<String, Vec<Member>> {
        self.lock().admin.clone()
    }

    /// Watches the Redis registry and shares the admin registrations through it, on the
    /// calling runtime, for the life of the process.
    pub fn start_redis(self: &Arc<Self>, store: Store, resync: Duration, ttl: Duration) {
        let directory = self.clone();
        tokio::spawn(gateway_registry::watch(
            store.clone(),
            resync,
            ttl,
            move |instances| directory.set_registry(instances),
        ));
        if self.shared.set(Shared { store, ttl }).is_ok() {
            tokio::spawn(share(self.clone()));
        }
    }

    /// Writes an admin registration to Redis, when shared: whether it was written now.
    pub async fn share_registration(&self, service: &str, registration: &Registration) -> bool {
        let Some(shared) = self.shared.get() else {
            return false;
        };
        let write = async {
            let mut connection = shared.store.connect().await?;
            shared
                .store
                .register(&mut connection, service, registration, shared.ttl)
                .await
        };
        match tokio::time::timeout(SHARE_TIMEOUT, write).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::debug!(%error, service, "an admin registration is not shared yet");
                false
            }
            Err(_) => false,
        }
    }

    /// Removes an admin registration from Redis, when shared.
    pub async fn unshare_registration(&self, service: &str, url: &str) {
        let Some(shared) = self.shared.get() else {
            return;
        };
        let remove = async {
            let mut connection = shared.store.connect().await?;
            shared.store.deregister(&mut connection, service, url).await
        };
        match tokio::time::timeout(SHARE_TIMEOUT, remove).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, service, url, "an admin deregistration did not reach Redis: other gateways drop the instance when its TTL ends")
            }
            Err(_) => {
                tracing::warn!(
                    service,
                    url,
                    "an admin deregistration timed out on Redis: other gateways drop the instance when its TTL ends"
                )
            }
        }
    }
}

/// Renews the admin registrations in Redis a third of their TTL apart; says once when Redis
/// goes away and once when it is back.
async fn share(directory: Arc<Directory>) {
    let Some(shared) = directory.shared.get() else {
        return;
    };
    let mut connection = None;
    let mut down = false;
    loop {
        tokio::time::sleep(shared.ttl / 3).await;
        let admin = directory.admin_members();
        if admin.is_empty() {
            continue;
        }
        let renew = async {
            let connection = match &mut connection {
                Some(connection) => connection,
                None => connection.insert(shared.store.connect().await?),
            };
            for (service, members) in &admin {
                for member in members {
                    shared
                        .store
                        .heartbeat(connection, service, &registration_of(member), shared.ttl)
                        .await?;
                }
            }
            Ok::<_, gateway_registry::Error>(())
        };
        match renew.await {
            Ok(()) if down => {
                down = false;
                tracing::info!("the admin registrations are in the registry's Redis again");
            }
            Ok(()) => {}
            Err(error) => {
                connection = None;
                if !down {
                    down = true;
                    tracing::warn!(%error, "cannot renew the admin registrations in Redis: other gateways drop them when their TTL ends, until it is back");
                }
            }
        }
    }
}

/// A member as the registry stores it.
pub(crate) fn registration_of(member: &Member) -> Registration {
    let mut meta = member.meta.clone();
    Registration {
        url: format!("{}://{}", member.url.scheme, member.url.authority),
        weight: member.weight,
        health_path: member.health_path.clone(),
        version: meta.remove("version"),
        zone: meta.remove("zone"),
        meta,
    }
}
