//! `gateway registry`: the registering side, for a service that cannot talk to Redis itself.
//! Run beside it (a sidecar, or a second process in its container), `register` keeps its
//! instance in the registry with heartbeats until stopped, then takes it out.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use gateway_registry::{Heartbeat, Registration, Store};

/// Longest a Redis command may wait.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Register an instance and keep it registered with heartbeats until interrupted
    /// (SIGINT or SIGTERM), then deregister it.
    Register {
        #[command(flatten)]
        redis: RedisArgs,
        /// The service's name: 1 to 63 of a-z, 0-9 and `-`.
        #[arg(long)]
        service: String,
        /// The instance's base URL: http://HOST:PORT.
        #[arg(long)]
        url: String,
        /// How long the registration outlives the last heartbeat; heartbeats go a third of it
        /// apart.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// 1 to 100, for the `weighted` balancer.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// The path the gateways' active health checks ask this instance.
        #[arg(long)]
        health_path: Option<String>,
        /// Metadata, KEY=VALUE, repeated; `version` and `zone` are shown as such.
        #[arg(long = "meta", value_parser = key_value)]
        meta: Vec<(String, String)>,
    },
    /// Take an instance out of the registry now.
    Deregister {
        #[command(flatten)]
        redis: RedisArgs,
        #[arg(long)]
        service: String,
        #[arg(long)]
        url: String,
    },
    /// Print every registered instance, one JSON object per line.
    List {
        #[command(flatten)]
        redis: RedisArgs,
        /// Only this service's instances.
        #[arg(long)]
        service: Option<String>,
    },
}

#[derive(Args)]
pub struct RedisArgs {
    /// The registry's Redis: redis://HOST:PORT[/DB].
    #[arg(long)]
    redis: String,
    /// The key prefix the gateways use (their `kv.redis.key_prefix`).
    #[arg(long, default_value = "gateway")]
    prefix: String,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

impl RedisArgs {
    fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.redis, &self.prefix, COMMAND_TIMEOUT)
            .with_context(|| format!("`{}` is not a Redis URL", self.redis))
    }
}

pub fn run(command: RegistryCommand) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async move {
            match command {
                RegistryCommand::Register {
                    redis,
                    service,
                    url,
                    ttl,
                    weight,
                    health_path,
                    meta,
                } => {
                    let mut registration = Registration::of_url(&url);
                    registration.weight = weight;
                    registration.health_path = health_path;
                    for (key, value) in meta {
                        match key.as_str() {
                            "version" => registration.version = Some(value),
                            "zone" => registration.zone = Some(value),
                            _ => {
                                registration.meta.insert(key, value);
                            }
                        }
                    }
                    register(&redis.store()?, &service, &registration, ttl).await
                }
                RegistryCommand::Deregister {
                    redis,
                    service,
                    url,
                } => {
                    let store = redis.store()?;
                    let mut connection = store.connect().await.context("cannot reach Redis")?;
                    if store.deregister(&mut connection, &service, &url).await? {
                        println!("deregistered {service} {url}");
                    } else {
                        println!("{service} {url} was not registered");
                    }
                    Ok(())
                }
                RegistryCommand::List { redis, service } => {
                    let store = redis.store()?;
                    let mut connection = store.connect().await.context("cannot reach Redis")?;
                    let snapshot = store.read(&mut connection).await?;
                    for registered in snapshot.instances.iter().filter(|registered| {
                        service
                            .as_ref()
                            .is_none_or(|name| *name == registered.service)
                    }) {
                        let registration = super::registration_of(&registered.member);
                        let mut line = serde_json::to_value(&registration)?;
                        line["service"] = serde_json::Value::from(registered.service.as_str());
                        println!("{line}");
                    }
                    for (member, reason) in &snapshot.invalid {
                        eprintln!("left out {member}: {reason}");
                    }
                    Ok(())
                }
            }
        })
}

/// Registers, then heartbeats until a signal; says once when Redis goes away and once when the
/// registration is back.
async fn register(
    store: &Store,
    service: &str,
    registration: &Registration,
    ttl: Duration,
) -> anyhow::Result<()> {
    if ttl < Duration::from_secs(1) {
        bail!("--ttl must be at least 1s: heartbeats go a third of it apart");
    }
    if let Err((field, reason)) = registration.check(service, gateway_upstream::Source::Registry) {
        bail!("--{}: {reason}", field.replace('_', "-"));
    }
    let mut connection = store.connect().await.context("cannot reach Redis")?;
    store
        .register(&mut connection, service, registration, ttl)
        .await
        .context("cannot register")?;
    tracing::info!(service, url = registration.url, ?ttl, "registered");
    let mut connection = Some(connection);
    let mut down = false;
    let mut beats = tokio::time::interval(ttl / 3);
    beats.tick().await;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = beats.tick() => {}
            () = &mut stop => break,
        }
        let beat = async {
            let live = match &mut connection {
                Some(connection) => connection,
                None => connection.insert(store.connect().await?),
            };
            store.heartbeat(live, service, registration, ttl).await
        };
        match beat.await {
            Ok(heartbeat) => {
                if down || heartbeat == Heartbeat::Recreated {
                    tracing::info!(service, url = registration.url, "registered again");
                }
                down = false;
            }
            Err(error) => {
                connection = None;
                if !down {
                    down = true;
                    tracing::warn!(%error, "a heartbeat failed: retrying until Redis answers");
                }
            }
        }
    }
    let mut connection = store
        .connect()
        .await
        .context("cannot reach Redis to deregister")?;
    store
        .deregister(&mut connection, service, &registration.url)
        .await
        .context("cannot deregister")?;
    tracing::info!(service, url = registration.url, "deregistered");
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
