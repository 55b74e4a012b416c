//! Hot reload: a new state is built off the request path from the files as they are now, and
//! swapped in only if every step succeeds.
//!
//! Steps: read and validate the configuration; load every filter component (compiling only
//! what changed: compiled components are cached by content hash); create and initialise an instance of each
//! filter with each route's configuration; build the routes. Any failure leaves the current
//! state serving and is recorded, with its reason, in the status the admin API shows. Reloads
//! are triggered by [`watch`] (file changes), `POST /admin/reload` and SIGHUP, and run one at a
//! time.

pub mod watch;

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use gateway_config::{AdminToken, Config, KvSettings};
use gateway_filter::{FilterEngine, Origin};
use gateway_kv::KvStores;
use gateway_proxy::{LiveState, ServingState};

use crate::error::{Error, Result};
use crate::registry::Directory;

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Startup,
    Watch,
    Admin,
    Signal,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub trigger: Trigger,
    /// When it finished, RFC 3339.
    pub at: String,
    /// Whether the new state now serves.
    pub applied: bool,
    pub duration_ms: u64,
    /// Why it was rejected; each names the file, field or filter at fault.
    pub problems: Vec<String>,
    /// Parts of an applied configuration that only take effect on restart.
    pub warnings: Vec<String>,
}

/// A filter component the serving state runs.
#[derive(Debug, Clone, Serialize)]
pub struct FilterInfo {
    pub name: String,
    pub module: PathBuf,
    pub sha256: String,
    /// `compiled`, `memory` or `disk`: where its compiled code came from at the last load.
    pub compiled_from: &'static str,
}

/// What the admin API shows about reloads.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// Counts applied states; the start-up state is 1.
    pub generation: u64,
    pub successes: u64,
    pub failures: u64,
    pub last: Option<Attempt>,
    pub last_failure: Option<Attempt>,
    /// The latest attempts, oldest first, at most [`HISTORY`].
    pub history: VecDeque<Attempt>,
    pub filters: Vec<FilterInfo>,
}

/// Attempts the reload history keeps.
pub const HISTORY: usize = 20;

/// Owns the engine and the live state, and rebuilds the state on demand.
pub struct Reloader {
    config_path: PathBuf,
    engine: FilterEngine,
    live: Arc<LiveState>,
    /// The instances registered at run time, which every state installed keeps.
    directory: Arc<Directory>,
    /// What can only change with a restart, as started.
    fixed: Fixed,
    status: Mutex<ReloadStatus>,
    running: tokio::sync::Mutex<()>,
    /// The generation serving now, for whoever must follow state changes (the watcher).
    applied: tokio::sync::watch::Sender<u64>,
}

/// Settings read once at start-up.
#[derive(Debug, Clone, PartialEq)]
struct Fixed {
    listeners: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    admin_token: Option<AdminToken>,
    cache_dir: Option<PathBuf>,
    kv: KvSettings,
    registry: Option<gateway_config::Registry>,
    /// The span exporter, but for its sample ratio, which a reload changes.
    otlp: Option<gateway_config::Otlp>,
}

impl Fixed {
    fn of(config: &Config) -> Fixed {
        Fixed {
            listeners: config.listeners.iter().map(|l| l.address).collect(),
            admin: config.admin.as_ref().map(|admin| admin.address),
            admin_token: config.admin.as_ref().and_then(|admin| admin.token.clone()),
            cache_dir: config.cache_dir.clone(),
            kv: config.kv.clone(),
            registry: config.registry.clone(),
            otlp: config
                .tracing
                .otlp
                .clone()
                .map(|otlp| gateway_config::Otlp {
                    sample_ratio: 0.0,
                    ..otlp
                }),
        }
    }

    /// What differs in `next`, as warnings.
    fn changes(&self, next: &Fixed) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut note = |changed: bool, what: &str| {
            if changed {
                warnings.push(format!("{what} changed; it takes effect on restart"));
            }
        };
        note(self.listeners != next.listeners, "listeners");
        note(self.admin != next.admin, "admin.address");
        note(self.admin_token != next.admin_token, "the admin token");
        note(self.cache_dir != next.cache_dir, "cache_dir");
        note(self.kv != next.kv, "kv");
        note(self.registry != next.registry, "registry");
        note(
            self.otlp != next.otlp,
            "tracing.otlp (but for sample_ratio)",
        );
        warnings
    }
}

/// Builds a state from a valid configuration, or says everything that stops it.
async fn build_state(
    config_path: &Path,
    config: &Config,
    engine: &FilterEngine,
) -> Result<ServingState> {
    ServingState::build(config, engine)
        .await
        .map_err(|errors| Error::Unservable {
            path: config_path.to_owned(),
            // A problem may span lines (a regex error points at the bad character); indent its
            // continuation lines so they read as part of it, not as problems of their own.
            problems: errors
                .iter()
                .map(|error| error.to_string().replace('\n', "\n    "))
                .collect(),
        })
}

/// Reads and validates the configuration and builds a state from it.
pub(crate) async fn build(
    config_path: &Path,
    engine: &FilterEngine,
) -> Result<(Config, ServingState)> {
    let config = Config::load(config_path)?;
    let gateway = build_state(config_path, &config, engine).await?;
    Ok((config, gateway))
}

fn filter_infos(gateway: &ServingState) -> Vec<FilterInfo> {
    let mut infos: Vec<FilterInfo> = gateway
        .filters
        .iter()
        .map(|filter| FilterInfo {
            name: filter.name.to_string(),
            module: filter.settings.module.clone(),
            sha256: filter.hash.to_string(),
            compiled_from: match filter.origin {
                Origin::Compiled => "compiled",
                Origin::Memory => "memory",
                Origin::Disk => "disk",
            },
        })
        .collect();
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    infos
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Reloader {
    /// Builds the first state; an error is the reason the gateway cannot start.
    pub async fn start(config_path: &Path) -> Result<(Arc<Reloader>, Config)> {
        let started = Instant::now();
        let config = Config::load(config_path)?;
        gateway_metrics::set_enabled(config.metrics.enabled);
        let engine = FilterEngine::new(KvStores::start(&config.kv)?, config.cache_dir.clone())?;
        let gateway = build_state(config_path, &config, &engine).await?;
        let attempt = Attempt {
            trigger: Trigger::Startup,
            at: timestamp(),
            applied: true,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let status = ReloadStatus {
            generation: 1,
            successes: 0,
            failures: 0,
            last: Some(attempt.clone()),
            last_failure: None,
            history: VecDeque::from([attempt]),
            filters: filter_infos(&gateway),
        };
        // Once per gateway, on this (the control plane's) runtime.
        gateway.start_health_checks();
        let live = Arc::new(LiveState::new(gateway));
        let reloader = Reloader {
            config_path: config_path.to_owned(),
            engine,
            directory: Arc::new(Directory::new(live.clone())),
            live,
            fixed: Fixed::of(&config),
            status: Mutex::new(status),
            running: tokio::sync::Mutex::new(()),
            applied: tokio::sync::watch::Sender::new(1),
        };
        Ok((Arc::new(reloader), config))
    }

    /// The slot requests take their state from.
    pub fn live(&self) -> Arc<LiveState> {
        self.live.clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The instances registered at run time.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The plugin folder of the state serving now.
    pub fn plugin_dir(&self) -> PathBuf {
        self.live.current().plugin_dir.clone()
    }

    /// Changes whenever a new state is swapped in, whatever triggered it.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The metrics the serving filters declared, kept across reloads.
    pub fn filter_metrics(&self) -> &gateway_filter::metrics::MetricRegistry {
        self.engine.metrics()
    }

    /// The key-value stores the filters use, kept across reloads.
    pub fn kv(&self) -> &KvStores {
        self.engine.kv()
    }

    pub fn status(&self) -> ReloadStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ReloadStatus> {
        // Status updates are plain field assignments: a poisoned lock holds a usable status.
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rebuilds the state from the files and swaps it in if every step succeeds.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> Attempt {
        let _one_at_a_time = self.running.lock().await;
        let started = Instant::now();
        let this = self.clone();
        // Compiling and initialising filters is CPU work: keep it off the request threads, and
        // off this runtime's thread, which drives the timers of a filter's init that waits.
        let built = tokio::task::spawn_blocking(move || {
            tokio::runtime::Handle::current().block_on(build(&this.config_path, &this.engine))
        })
        .await
        .unwrap_or_else(|error| Err(Error::ReloadTask(error.to_string())));
        let mut attempt = Attempt {
            trigger,
            at: String::new(),
            applied: false,
            duration_ms: 0,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        let filters = match built {
            Ok((config, gateway)) => {
                attempt.applied = true;
                gateway_metrics::set_enabled(config.metrics.enabled);
                attempt.warnings = self.fixed.changes(&Fixed::of(&config));
                let filters = filter_infos(&gateway);
                let in_use: HashSet<_> = gateway.filters.iter().map(|filter| filter.hash).collect();
                self.directory.install(gateway);
                self.engine.retain_components(&in_use);
                Some(filters)
            }
            Err(error) => {
                attempt.problems = error.problems();
                None
            }
        };
        attempt.at = timestamp();
        attempt.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

        let mut status = self.lock_status();
        if let Some(filters) = filters {
            status.generation += 1;
            status.successes += 1;
            status.filters = filters;
            self.applied.send_replace(status.generation);
            tracing::info!(
                trigger = ?trigger,
                generation = status.generation,
                duration_ms = attempt.duration_ms,
                warnings = ?attempt.warnings,
                "reloaded"
            );
        } else {
            status.failures += 1;
            status.last_failure = Some(attempt.clone());
            tracing::error!(
                trigger = ?trigger,
                problems = ?attempt.problems,
                "reload rejected; the previous state keeps serving"
            );
        }
        if status.history.len() == HISTORY {
            status.history.pop_front();
        }
        status.history.push_back(attempt.clone());
        status.last = Some(attempt.clone());
        attempt
    }
}
