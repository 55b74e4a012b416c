//! The registry's operations on Redis: register, heartbeat, deregister and read.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use gateway_upstream::Source;

use crate::layout::Layout;
use crate::registration::{self, Registered, Registration};
use crate::{Error, Result};

/// Keys read with one `MGET`: large enough for few round trips, small enough that Redis is
/// never blocked long by one.
const MGET_BATCH: usize = 500;

/// A Redis holding a registry.
#[derive(Clone)]
pub struct Store {
    client: redis::Client,
    layout: Layout,
    timeout: Duration,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The key was there: its TTL starts again.
    Renewed,
    /// The key was gone (expired, or Redis lost it): registered again.
    Recreated,
}

/// What a read of the whole registry found.
pub struct Snapshot {
    /// Every valid registration.
    pub instances: Vec<Registered>,
    /// Members whose key holds something that is not a valid registration, and why.
    pub invalid: Vec<(String, String)>,
    /// The registry's marker key was missing: Redis lost its data (a restart without
    /// persistence, a flush) since the last read, or this is the first read ever.
    pub lost: bool,
}

impl Store {
    /// The registry at `url` under `prefix`; each command waits at most `timeout`.
    pub fn open(url: &str, prefix: &str, timeout: Duration) -> Result<Store> {
        Ok(Store {
            client: redis::Client::open(url)?,
            layout: Layout::new(prefix),
            timeout,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A new connection; whoever holds it opens another after an error.
    pub async fn connect(&self) -> Result<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Registers `registration` as an instance of `service` for `ttl`, and tells gateways.
    pub async fn register(
        &self,
        connection: &mut MultiplexedConnection,
        service: &str,
        registration: &Registration,
        ttl: Duration,
    ) -> Result<()> {
        let member = self.member(service, registration)?;
        let value = serde_json::to_string(registration)
            .map_err(|error| Error::Invalid(error.to_string()))?;
        let () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.layout.instance_key(&member))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .ignore()
            .sadd(self.layout.index_key(), &member)
            .ignore()
            .publish(self.layout.channel(), &member)
            .ignore()
            .query_async(connection)
            .await?;
        Ok(())
    }

    /// Renews the registration's TTL, or registers it again if its key is gone.
    pub async fn heartbeat(
        &self,
        connection: &mut MultiplexedConnection,
        service: &str,
        registration: &Registration,
        ttl: Duration,
    ) -> Result<Heartbeat> {
        let member = self.member(service, registration)?;
        let value = serde_json::to_string(registration)
            .map_err(|error| Error::Invalid(error.to_string()))?;
        // `XX`: only an existing key is renewed, so that a key Redis lost is noticed. The
        // index entry is added again as well: a gateway may have removed it in the instant
        // between the key's expiry and this renewal.
        let (renewed,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(self.layout.instance_key(&member))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .arg("XX")
            .sadd(self.layout.index_key(), &member)
            .ignore()
            .query_async(connection)
            .await?;
        if renewed.is_some() {
            return Ok(Heartbeat::Renewed);
        }
        self.register(connection, service, registration, ttl)
            .await?;
        Ok(Heartbeat::Recreated)
    }

    /// Removes the instance at `url` of `service`, and tells gateways.
    pub async fn deregister(
        &self,
        connection: &mut MultiplexedConnection,
        service: &str,
        url: &str,
    ) -> Result<bool> {
        let member = self.member(service, &Registration::of_url(url))?;
        let (removed,): (u32,) = redis::pipe()
            .atomic()
            .del(self.layout.instance_key(&member))
            .srem(self.layout.index_key(), &member)
            .ignore()
            .publish(self.layout.channel(), &member)
            .ignore()
            .query_async(connection)
            .await?;
        Ok(removed > 0)
    }

    /// Reads every registration, and removes the index entries whose key has expired.
    pub async fn read(&self, connection: &mut MultiplexedConnection) -> Result<Snapshot> {
        let index = self.layout.index_key();
        // Set once and never expiring: its absence says the registrations went with it.
        let created: Option<String> = redis::cmd("SET")
            .arg(self.layout.marker_key())
            .arg("1")
            .arg("NX")
            .query_async(connection)
            .await?;
        let members: Vec<String> = connection.smembers(&index).await?;
        let mut snapshot = Snapshot {
            instances: Vec::with_capacity(members.len()),
            invalid: Vec::new(),
            lost: created.is_some(),
        };
        let mut expired = Vec::new();
        for batch in members.chunks(MGET_BATCH) {
            let keys: Vec<String> = batch
                .iter()
                .map(|member| self.layout.instance_key(member))
                .collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(connection)
                .await?;
            for (member, value) in batch.iter().zip(values) {
                let Some(value) = value else {
                    expired.push(member.clone());
                    continue;
                };
                match parse(member, &value) {
                    Ok(registered) => snapshot.instances.push(registered),
                    Err(reason) => snapshot.invalid.push((member.clone(), reason)),
                }
            }
        }
        if !expired.is_empty() {
            let _: u32 = connection.srem(&index, &expired).await?;
        }
        registration::sort(&mut snapshot.instances);
        Ok(snapshot)
    }

    fn member(&self, service: &str, registration: &Registration) -> Result<String> {
        let registered = registration
            .check(service, Source::Registry)
            .map_err(|(field, reason)| Error::Invalid(format!("{field}: {reason}")))?;
        Ok(Layout::member(
            service,
            registered.member.url.authority.as_str(),
        ))
    }
}

/// A member's registration, checked against the member's own name.
fn parse(member: &str, value: &str) -> Result<Registered, String> {
    let (service, authority) =
        Layout::split(member).ok_or_else(|| "the member has no `/`".to_owned())?;
    let registration: Registration =
        serde_json::from_str(value).map_err(|error| format!("not a registration: {error}"))?;
    let registered = registration
        .check(service, Source::Registry)
        .map_err(|(field, reason)| format!("{field}: {reason}"))?;
    if registered.member.url.authority.as_str() != authority {
        return Err(format!(
            "its url {} is not the member's address {authority}",
            registration.url
        ));
    }
    Ok(registered)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
