//! A gateway's watch on the registry: a read at every resync and at every published change,
//! and the instances of each read handed over whole.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Result;
use crate::registration::{self, Registered};
use crate::store::Store;

/// Time between two attempts to subscribe to the change channel again.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Reads the registry every `resync` and whenever a change is published, and hands each
/// read's instances to `update`, sorted by service and address. While Redis is away, nothing
/// is handed over: whoever keeps the instances keeps the last ones. When Redis comes back
/// without its data (restarted without persistence), the instances last read are kept for
/// `grace` beside the ones read, so that their heartbeats have time to register them again
/// (a heartbeat finding its key gone registers anew). Runs until dropped.
pub async fn watch(
    store: Store,
    resync: Duration,
    grace: Duration,
    mut update: impl FnMut(Vec<Registered>),
) {
    let changed = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(store.clone(), changed.clone()));
    let _listener = AbortOnDrop(listener);
    let mut connection = None;
    let mut down = false;
    let mut reported_invalid = HashSet::new();
    let mut last: Vec<Registered> = Vec::new();
    let mut grace_until: Option<Instant> = None;
    let mut ticks = tokio::time::interval(resync);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = changed.notified() => {}
        }
        let read = async {
            let connection = match &mut connection {
                Some(connection) => connection,
                None => connection.insert(store.connect().await?),
            };
            store.read(connection).await
        };
        match read.await {
            Ok(snapshot) => {
                if down {
                    down = false;
                    tracing::info!(
                        instances = snapshot.instances.len(),
                        "the registry's Redis is back: its instances are read again"
                    );
                }
                // Once per bad entry while it stays bad, not once per read.
                let invalid: HashSet<String> = snapshot
                    .invalid
                    .iter()
                    .map(|(member, _)| member.clone())
                    .collect();
                for (member, reason) in &snapshot.invalid {
                    if !reported_invalid.contains(member) {
                        tracing::warn!(member, reason, "a registry entry is left out");
                    }
                }
                reported_invalid = invalid;
                let now = Instant::now();
                if snapshot.lost && !last.is_empty() {
                    grace_until = Some(now + grace);
                    tracing::warn!(
                        instances = last.len(),
                        ?grace,
                        "the registry's Redis lost its data: the instances known before stay until they register again or this grace ends"
                    );
                }
                let mut instances = snapshot.instances;
                if grace_until.is_some_and(|until| now < until) {
                    for known in &last {
                        let read = instances.iter().any(|registered| {
                            registered.service == known.service
                                && registered.member.url == known.member.url
                        });
                        if !read {
                            instances.push(known.clone());
                        }
                    }
                    registration::sort(&mut instances);
                } else {
                    grace_until = None;
                }
                last = instances.clone();
                update(instances);
            }
            Err(error) => {
                connection = None;
                if !down {
                    down = true;
                    tracing::warn!(
                        %error,
                        "cannot read the registry's Redis: the instances last read keep serving until it is back"
                    );
                }
            }
        }
    }
}

/// Wakes the watch for every message on the change channel, and once after each
/// subscription, for the changes missed while unsubscribed.
async fn listen(store: Store, changed: Arc<Notify>) {
    loop {
        if let Err(error) = subscribe(&store, &changed).await {
            // The watch's reads report Redis going away; this only retries.
            tracing::debug!(%error, "the registry's change channel is unavailable");
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

async fn subscribe(store: &Store, changed: &Notify) -> Result<()> {
    let mut pubsub = store.client().get_async_pubsub().await?;
    pubsub.subscribe(store.layout().channel()).await?;
    changed.notify_one();
    let mut messages = pubsub.on_message();
    while messages.next().await.is_some() {
        changed.notify_one();
    }
    Ok(())
}

/// Stops the listener with the watch.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
