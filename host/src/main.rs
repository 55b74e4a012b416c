//! `gateway`: serve traffic from a YAML configuration, check one, or test a plugin.
//!
//! This crate is the control plane and the command line; the request path lives in the crates
//! below it, one per layer, each depending only on those under it:
//!
//! ```text
//! gateway-wire, gateway-routing      HTTP/1.1 on the wire; the generic router
//!   -> gateway-config                the file, checked into typed, bounded values
//!   -> gateway-filter                the Wasm filter runtime (the only crate linking wasmtime)
//!      gateway-upstream              instances, their connections, errors with a kind
//!   -> gateway-proxy                 the serving state and the request pipeline
//!   -> gateway-server                listeners, the HTTP/1 and HTTP/2 connection loops
//!   -> gateway-host (this binary)    reload and watch, the admin API, plugin tools
//! ```
//!
//! - `reload`: rebuilding the serving state when files change, and swapping it in atomically;
//! - `admin`: the admin API (reload status and trigger);
//! - `plugin`: tools for plugin authors (`gateway plugin new`, `gateway plugin test`);
//! - `auth`: `gateway auth hash-password`, for the auth filter's users;
//! - `telemetry`: log lines, human or JSON.
//!
//! Glossary:
//! - **instance**: one server of an upstream service (`service@host:port`). A **filter
//!   instance** is something else: one instantiated Wasm component, in its own store.
//! - **state** (serving state): everything built from one configuration (routes, their filter
//!   chains, services); a reload builds a new one and swaps it in whole. Each applied state
//!   is one **generation**.
//! - **head**: a request's or response's method or status, target and headers: what filters
//!   see, without the body.
//! - **phase**: one pass of a request through a filter, the request phase on the way in and
//!   the response phase on the way back.
//! - **chain**: a route's filters in order; the request phase runs front to back, the response
//!   phase back to front.
//! - **pool**: a route's initialised filter instances of one filter, reused across requests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use gateway_config::Config;
use gateway_filter::FilterEngine;
use gateway_kv::KvStores;

use crate::plugin::scaffold::{self, SdkSource};
use crate::reload::{Reloader, Trigger};
use crate::telemetry::LogFormat;

mod admin;
mod auth;
mod error;
mod metrics;
mod otlp;
mod plugin;
mod registry;
mod reload;
mod telemetry;

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "An API gateway whose filters are WebAssembly components"
)]
struct Cli {
    /// How log lines are written.
    #[arg(long, value_enum, default_value = "human", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads serving traffic (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Check a configuration, including loading and initialising every filter, and report every
    /// problem found.
    Validate {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Tools for plugin authors.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Tools for the auth filter's configuration.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Register a service's instance in the Redis registry, and keep it there (see the
    /// README's "Services that register themselves").
    #[command(subcommand)]
    Registry(registry::cli::RegistryCommand),
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Read a password from stdin and print its hash for a user's `password_hash`.
    HashPassword {
        /// The hash to write.
        #[arg(long, value_enum, default_value = "argon2id")]
        scheme: auth::Scheme,
        /// Argon2id memory, in KiB.
        #[arg(long, default_value_t = 19_456)]
        memory_kib: u32,
        /// Argon2id passes.
        #[arg(long, default_value_t = 2)]
        passes: u32,
        /// Argon2id lanes.
        #[arg(long, default_value_t = 1)]
        lanes: u32,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a filter crate with an example filter, unit tests and a cases file.
    New {
        /// The plugin's name: lower-case letters, digits and dashes (e.g. ip-allow-list).
        name: String,
        /// The folder to create it in (default: the current folder).
        #[arg(long, default_value = ".")]
        path: PathBuf,
        /// Depend on the SDK at this path (default: the SDK this gateway was built from).
        #[arg(long, conflicts_with = "sdk_git")]
        sdk_path: Option<PathBuf>,
        /// Depend on the SDK from this git repository.
        #[arg(long)]
        sdk_git: Option<String>,
    },
    /// Run a compiled filter in the gateway's runtime against a YAML list of cases; exits
    /// non-zero if any case fails.
    Test {
        /// The filter component (`.wasm`).
        component: PathBuf,
        /// The cases file.
        cases: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}

/// Prints why the gateway stopped: the error, then each cause its message does not already
/// include. Never a backtrace, even with `RUST_BACKTRACE` set: this is a report for whoever runs
/// the gateway (usually about their configuration), not a crash.
fn report(error: &anyhow::Error) {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    eprintln!("error: {message}");
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Auth(AuthCommand::HashPassword {
            scheme,
            memory_kib,
            passes,
            lanes,
        }) => {
            let password = auth::read_password(std::io::stdin().lock())?;
            let cost = auth::Argon2Cost {
                memory_kib,
                passes,
                lanes,
            };
            println!("{}", auth::hash(&password, scheme, cost)?);
            Ok(())
        }
        Command::Plugin(PluginCommand::New {
            name,
            path,
            sdk_path,
            sdk_git,
        }) => {
            let sdk = match (sdk_path, sdk_git) {
                (Some(path), _) => Some(SdkSource::Path(
                    std::path::absolute(&path).context("cannot resolve --sdk-path")?,
                )),
                (None, Some(url)) => Some(SdkSource::Git(url)),
                (None, None) => None,
            };
            let scaffold = scaffold::create(&name, &path, sdk)?;
            if scaffold.member {
                println!(
                    "created {} (a member of this workspace)",
                    scaffold.dir.display()
                );
            } else {
                println!("created {}", scaffold.dir.display());
            }
            for file in &scaffold.files {
                println!("  {}", file.display());
            }
            println!("next:");
            println!("  cd {}", scaffold.dir.display());
            println!("  cargo test");
            println!("  {}", scaffold.build);
            println!("  gateway plugin test {} cases.yaml", scaffold.wasm_path);
            Ok(())
        }
        Command::Plugin(PluginCommand::Test { component, cases }) => {
            let report = plugin::cases::run(&component, &cases)?;
            print!("{}", report.text);
            if report.failed > 0 {
                bail!(
                    "{} of {} cases failed",
                    report.failed,
                    report.failed + report.passed
                );
            }
            Ok(())
        }
        Command::Serve { config, workers } => {
            let workers = match workers {
                Some(0) => bail!("--workers must be at least 1"),
                Some(count) => count,
                None => std::thread::available_parallelism().map_or(1, |count| count.get()),
            };
            // Reloads, the admin API, the watcher and signals; traffic has its own threads.
            let control = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            control.block_on(serve(&config, workers))
        }
        Command::Registry(command) => registry::cli::run(command),
        Command::Validate { config } => {
            validate(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}

/// Loads the configuration and builds a serving state from it, or explains every problem.
fn validate(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let engine = FilterEngine::new(KvStores::start(&config.kv)?, config.cache_dir.clone())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(reload::build(path, &engine))?;
    Ok(())
}

async fn serve(path: &Path, workers: usize) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (reloader, config) = Reloader::start(path).await?;
    let access_log = config
        .access_log
        .enabled
        .then(|| gateway_access_log::start(&config.access_log))
        .transpose()?;
    reopen_access_log_on_usr1();
    // The hub's Redis link lives for the process: a reload that turns it on needs a restart.
    if let Some(hub) = config.websocket.hub.as_ref().filter(|hub| hub.redis)
        && let Some(redis) = &config.kv.redis
    {
        let channel = format!("{}hub", redis.key_prefix);
        gateway_server::ws::hub::start_redis(&redis.url, channel)
            .with_context(|| format!("the hub on {} cannot use Redis", hub.path))?;
    }
    // So does the span exporter: a reload may change the sample ratio, not the collector.
    if let Some(otlp) = &config.tracing.otlp {
        otlp::start(otlp)?;
    }
    // The registry's watch lives for the process too.
    if let Some(registry) = config.registry.as_ref().filter(|registry| registry.redis)
        && let Some(redis) = &config.kv.redis
    {
        // A read of the whole registry may take longer than a filter's kv operation may.
        let timeout = redis.connect_timeout.max(std::time::Duration::from_secs(1));
        let store = gateway_registry::Store::open(&redis.url, &redis.key_prefix, timeout)
            .context("the registry cannot use kv.redis")?;
        reloader
            .directory()
            .start_redis(store, registry.resync_interval, registry.ttl);
        tracing::info!(url = %redis.url, "watching the registry on Redis");
    }
    let addresses: Vec<_> = config.listeners.iter().map(|l| l.address).collect();
    let listeners = gateway_server::bind(&addresses).await?;
    if let Some(admin) = &config.admin {
        let listener = gateway_server::bind(&[admin.address]).await?.remove(0);
        let address = listener
            .local_addr()
            .context("cannot read the admin address")?;
        tracing::info!(%address, "admin listening");
        let admin = admin::Admin {
            reloader: reloader.clone(),
            token: admin.token.clone(),
            listeners: listeners
                .iter()
                .filter_map(|listener| listener.local_addr().ok())
                .collect(),
            address,
            workers,
            started,
            started_at: std::time::SystemTime::now() - started.elapsed(),
        };
        admin::spawn(admin, listener);
    }
    // Without a watcher, the admin API and SIGHUP still reload: serve rather than refuse.
    if config.watch
        && let Err(error) = reload::watch::spawn(reloader.clone())
    {
        tracing::error!(%error, "cannot watch the configuration and plugins; reload with SIGHUP or the admin API");
    }
    reload_on_hangup(reloader.clone());
    for listener in &listeners {
        let address = listener
            .local_addr()
            .context("cannot read the bound address")?;
        tracing::info!(%address, startup_ms = started.elapsed().as_millis() as u64, "listening");
    }
    let listeners = listeners
        .into_iter()
        .map(|listener| listener.into_std())
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot hand the listeners to the workers")?;
    let workers = gateway_server::Workers::start(reloader.live(), &listeners, workers)?;
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; draining in-flight requests");
    tokio::task::spawn_blocking(move || workers.stop())
        .await
        .context("the workers did not stop cleanly")?;
    if let Some(access_log) = access_log {
        access_log.finish();
    }
    tracing::info!("all connections closed");
    Ok(())
}

/// SIGHUP reloads, as operators expect of a long-running server.
fn reload_on_hangup(reloader: Arc<Reloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        reloader.reload(Trigger::Signal).await;
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP; reload through the admin API")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = reloader;
}

/// SIGUSR1 reopens the access log's file, as logrotate expects after it moved the file away.
fn reopen_access_log_on_usr1() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::user_defined1()) {
            Ok(mut signals) => {
                tokio::spawn(async move {
                    while signals.recv().await.is_some() {
                        gateway_access_log::reopen();
                    }
                });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGUSR1; the access log file is never reopened")
            }
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the gateway");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
