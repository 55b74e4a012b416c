//! The topic hub: clients subscribe to topics on a WebSocket at `websocket.hub.path`, and
//! whatever is published to a topic reaches each of its subscribers.
//!
//! Client messages: `{"type":"subscribe","topic":"t"}` and `{"type":"unsubscribe","topic":"t"}`,
//! answered with `subscribed` / `unsubscribed`, or `{"type":"error","topic":...,"error":...}`
//! (a topic not configured, or none of the roles it asks for). Deliveries are
//! `{"type":"message","topic":"t","data":...}`.
//!
//! Publishing is [`publish`] (`POST /admin/publish`): with `websocket.hub.redis`, through one
//! Redis pub/sub channel that every gateway subscribes to (started by [`start_redis`]), so each
//! gateway delivers to its own subscribers; without it, to this gateway's directly.
//!
//! The hub is one per process, shared by every worker: a lock over the topics, taken to
//! (un)subscribe and once per published message. Each subscriber has a bounded queue; when it
//! is full, `overflow` either drops the subscriber (close 1008) or drops the message for it and
//! counts it. A queued message is shared by all its subscribers (one `Arc<str>`), so memory
//! is bounded by `queue` messages per subscriber.
//!
//! Hub sockets have no idle timeout (a subscriber waits by nature), but keepalive pings and the
//! size limits of `websocket:` apply as on relayed sockets.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use gateway_config::{Hub as Settings, Overflow};

use super::relay::sent_within;
use super::stats::OpenSocket;

/// Topics one socket may hold at once: a client cannot make the hub's map grow without bound.
const MAX_TOPICS_PER_SOCKET: usize = 64;

/// How long a failed Redis subscription waits before it is opened again.
const REDIS_RETRY: Duration = Duration::from_secs(1);

static HUB: LazyLock<Hub> = LazyLock::new(Hub::default);
static REDIS: OnceLock<Redis> = OnceLock::new();

#[derive(Default)]
struct Hub {
    topics: Mutex<HashMap<String, Vec<Subscriber>>>,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped_messages: AtomicU64,
    dropped_subscribers: AtomicU64,
}

struct Subscriber {
    id: u64,
    queue: mpsc::Sender<Arc<str>>,
    overflow: Overflow,
    dropped: Arc<Dropped>,
}

/// Set once a subscriber is dropped for a full queue; its socket then closes with 1008.
#[derive(Default)]
struct Dropped {
    flag: AtomicBool,
    notify: Notify,
}

/// The hub's topics and counters at one moment, for `/metrics` and `/admin/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStatus {
    /// Subscribers per topic, on this gateway.
    pub topics: BTreeMap<String, usize>,
    /// Messages published (through this gateway, or received from Redis).
    pub published: u64,
    /// Messages queued for a subscriber.
    pub delivered: u64,
    /// Messages a full queue dropped (`drop_messages`).
    pub dropped_messages: u64,
    /// Subscribers closed for a full queue (`drop_subscriber`).
    pub dropped_subscribers: u64,
}

/// The hub's counters now.
pub fn hub_status() -> HubStatus {
    let topics = HUB
        .topics
        .lock()
        .map(|topics| {
            topics
                .iter()
                .map(|(topic, subscribers)| (topic.clone(), subscribers.len()))
                .collect()
        })
        .unwrap_or_default();
    HubStatus {
        topics,
        published: HUB.published.load(Ordering::Relaxed),
        delivered: HUB.delivered.load(Ordering::Relaxed),
        dropped_messages: HUB.dropped_messages.load(Ordering::Relaxed),
        dropped_subscribers: HUB.dropped_subscribers.load(Ordering::Relaxed),
    }
}

/// Why a message could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot publish through Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// How a publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Handed to Redis, which told this many gateways.
    Redis { gateways: i64 },
    /// Queued for this many of this gateway's subscribers.
    Local { subscribers: usize },
}

/// Publishes `data` to `topic`: through Redis once [`start_redis`] has run, else to this
/// gateway's subscribers.
pub async fn publish(topic: &str, data: &serde_json::Value) -> Result<Published, PublishError> {
    if let Some(redis) = REDIS.get() {
        let envelope = serde_json::json!({ "topic": topic, "data": data }).to_string();
        let mut connection = redis.connection().await?;
        let gateways: i64 = redis::cmd("PUBLISH")
            .arg(&redis.channel)
            .arg(envelope)
            .query_async(&mut connection)
            .await?;
        return Ok(Published::Redis { gateways });
    }
    Ok(Published::Local {
        subscribers: deliver(topic, data),
    })
}

/// Queues `data` for this gateway's subscribers of `topic`; how many got it.
fn deliver(topic: &str, data: &serde_json::Value) -> usize {
    HUB.published.fetch_add(1, Ordering::Relaxed);
    let message: Arc<str> = serde_json::json!({ "type": "message", "topic": topic, "data": data })
        .to_string()
        .into();
    let Ok(mut topics) = HUB.topics.lock() else {
        return 0;
    };
    let Some(subscribers) = topics.get_mut(topic) else {
        return 0;
    };
    let mut delivered = 0;
    subscribers.retain(
        |subscriber| match subscriber.queue.try_send(message.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => match subscriber.overflow {
                Overflow::DropMessages => {
                    HUB.dropped_messages.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Overflow::DropSubscriber => {
                    if !subscriber.dropped.flag.swap(true, Ordering::AcqRel) {
                        HUB.dropped_subscribers.fetch_add(1, Ordering::Relaxed);
                        subscriber.dropped.notify.notify_one();
                    }
                    false
                }
            },
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        },
    );
    if subscribers.is_empty() {
        topics.remove(topic);
    }
    HUB.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
    delivered
}

/// The Redis link of a hub shared by several gateways.
struct Redis {
    client: redis::Client,
    channel: String,
    connection: tokio::sync::OnceCell<redis::aio::MultiplexedConnection>,
}

impl Redis {
    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_multiplexed_async_connection())
            .await
            .cloned()
    }
}

/// Publishes through Redis from now on, and delivers what any gateway publishes there to this
/// one's subscribers: subscribes to `channel` on the server at `url`, on the calling runtime,
/// for the life of the process (opened again after a failure).
pub fn start_redis(url: &str, channel: String) -> Result<(), PublishError> {
    let client = redis::Client::open(url)?;
    let redis = REDIS.get_or_init(|| Redis {
        client,
        channel,
        connection: tokio::sync::OnceCell::new(),
    });
    let (client, channel) = (redis.client.clone(), redis.channel.clone());
    tokio::spawn(async move {
        loop {
            match subscribe(&client, &channel).await {
                Ok(()) => tracing::warn!(%channel, "the hub's Redis subscription ended"),
                Err(error) => {
                    tracing::warn!(%channel, %error, "the hub's Redis subscription failed")
                }
            }
            tokio::time::sleep(REDIS_RETRY).await;
        }
    });
    Ok(())
}

async fn subscribe(client: &redis::Client, channel: &str) -> redis::RedisResult<()> {
    #[derive(Deserialize)]
    struct Envelope {
        topic: String,
        data: serde_json::Value,
    }
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    tracing::info!(%channel, "the hub listens on Redis");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let payload: Vec<u8> = message.get_payload()?;
        match serde_json::from_slice::<Envelope>(&payload) {
            Ok(envelope) => {
                deliver(&envelope.topic, &envelope.data);
            }
            Err(error) => tracing::warn!(%error, "a hub message on Redis is not {{topic, data}}"),
        }
    }
    Ok(())
}

/// What a client sends on its hub socket.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Command {
    Subscribe { topic: String },
    Unsubscribe { topic: String },
}

/// One client's hub socket, accepted: its settings and roles, as the handshake found them.
pub(crate) struct HubSocket {
    pub(crate) settings: Settings,
    /// The roles the route's filters found (`auth.roles`).
    pub(crate) roles: Vec<String>,
    pub(crate) config: WebSocketConfig,
    /// How long a write may wait for the client to take bytes (`limits.send_timeout`).
    pub(crate) send_timeout: Duration,
    /// `websocket.ping_interval` and `ping_timeout`, as relayed sockets have them.
    pub(crate) ping_interval: Option<Duration>,
    pub(crate) ping_timeout: Duration,
}

impl HubSocket {
    /// Serves the socket until it closes, the subscriber is dropped, or the gateway shuts down.
    pub(crate) async fn serve<S>(
        self,
        client: S,
        tail: Vec<u8>,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut client =
            WebSocketStream::from_partially_read(client, tail, Role::Server, Some(self.config))
                .await;
        let mut socket = OpenSocket::new();
        let id = HUB.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, mut queued) = mpsc::channel::<Arc<str>>(self.settings.queue);
        let dropped = Arc::new(Dropped::default());
        let mut subscribed = HashSet::new();
        let mut client_code = None;
        // Keepalive pings, as on relayed sockets: when one went out with no frame since.
        let mut ping_sent: Option<Instant> = None;
        let mut next_ping = self.ping_interval.map(|every| Instant::now() + every);
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let code = loop {
            let pong_due = ping_sent.map(|sent| sent + self.ping_timeout);
            let due = [pong_due, next_ping].into_iter().flatten().min();
            if let Some(due) = due
                && timer.deadline() != due
            {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                biased;
                () = async { drop(shutdown.wait_for(|stop| *stop).await) } => break close(CloseCode::Away, "the gateway is shutting down"),
                () = dropped.notify.notified() => break close(CloseCode::Policy, "too slow: the subscriber's queue is full"),
                () = &mut timer, if due.is_some() => {
                    let now = Instant::now();
                    if pong_due.is_some_and(|due| now >= due) {
                        break close(CloseCode::Error, "keepalive ping unanswered");
                    }
                    if let (Some(at), Some(every)) = (next_ping, self.ping_interval)
                        && now >= at
                    {
                        next_ping = Some(now + every);
                        ping_sent.get_or_insert(now);
                        if !sent_within(self.send_timeout, client.send(Message::Ping(Default::default()))).await {
                            break None;
                        }
                    }
                }
                read = client.next() => match read {
                    Some(Ok(Message::Text(text))) => {
                        ping_sent = None;
                        socket.message_from_client(text.len());
                        let answer = self.command(text.as_str(), id, &queue, &dropped, &mut subscribed);
                        socket.message_to_client(answer.len());
                        if !sent_within(self.send_timeout, client.send(Message::text(answer))).await {
                            break None;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => break close(CloseCode::Unsupported, "the hub takes JSON text messages"),
                    Some(Ok(Message::Close(frame))) => {
                        let _ = client.flush().await;
                        client_code = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                        break None;
                    }
                    Some(Ok(_)) => {
                        ping_sent = None;
                        let _ = client.flush().await;
                    }
                    Some(Err(WsError::Capacity(_))) => break close(CloseCode::Size, "message too large"),
                    Some(Err(_)) | None => break None,
                },
                Some(message) = queued.recv() => {
                    socket.message_to_client(message.len());
                    tokio::select! {
                        sent = sent_within(self.send_timeout, client.send(Message::text(&*message))) => if !sent { break None },
                        () = dropped.notify.notified() => break close(CloseCode::Policy, "too slow: the subscriber's queue is full"),
                    }
                }
            }
        };
        unsubscribe_all(id, &subscribed);
        let sent_code = code.as_ref().map(|frame| u16::from(frame.code));
        socket.closed_with(sent_code.or(client_code).unwrap_or(1006));
        if let Some(frame) = code {
            let _ = tokio::time::timeout(super::relay::CLOSE_GRACE, async {
                if client.close(Some(frame)).await.is_ok() {
                    while let Some(Ok(_)) = client.next().await {}
                }
            })
            .await;
        }
    }

    /// Carries out one client command; the answer to send back.
    fn command(
        &self,
        text: &str,
        id: u64,
        queue: &mpsc::Sender<Arc<str>>,
        dropped: &Arc<Dropped>,
        subscribed: &mut HashSet<String>,
    ) -> String {
        let answer = |kind: &str, topic: &str| {
            serde_json::json!({ "type": kind, "topic": topic }).to_string()
        };
        let refuse = |topic: Option<&str>, error: &str| {
            serde_json::json!({ "type": "error", "topic": topic, "error": error }).to_string()
        };
        let command = match serde_json::from_str::<Command>(text) {
            Ok(command) => command,
            Err(_) => {
                return refuse(
                    None,
                    r#"expected {"type":"subscribe"|"unsubscribe","topic":"..."}"#,
                );
            }
        };
        match command {
            Command::Subscribe { topic } => {
                let Some(rules) = self.settings.topics.get(&topic) else {
                    return refuse(Some(&topic), "no such topic");
                };
                let allowed = rules.roles.is_empty()
                    || rules.roles.iter().any(|role| self.roles.contains(role));
                if !allowed {
                    return refuse(
                        Some(&topic),
                        "not allowed: a role this topic needs is missing",
                    );
                }
                if subscribed.contains(&topic) {
                    return answer("subscribed", &topic);
                }
                if subscribed.len() >= MAX_TOPICS_PER_SOCKET {
                    return refuse(Some(&topic), "too many topics on one socket");
                }
                if let Ok(mut topics) = HUB.topics.lock() {
                    topics.entry(topic.clone()).or_default().push(Subscriber {
                        id,
                        queue: queue.clone(),
                        overflow: self.settings.overflow,
                        dropped: dropped.clone(),
                    });
                }
                let reply = answer("subscribed", &topic);
                subscribed.insert(topic);
                reply
            }
            Command::Unsubscribe { topic } => {
                if subscribed.remove(&topic) {
                    unsubscribe(id, &topic);
                }
                answer("unsubscribed", &topic)
            }
        }
    }
}

fn close(code: CloseCode, reason: &'static str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

fn unsubscribe(id: u64, topic: &str) {
    if let Ok(mut topics) = HUB.topics.lock()
        && let Some(subscribers) = topics.get_mut(topic)
    {
        subscribers.retain(|subscriber| subscriber.id != id);
        if subscribers.is_empty() {
            topics.remove(topic);
        }
    }
}

fn unsubscribe_all(id: u64, subscribed: &HashSet<String>) {
    for topic in subscribed {
        unsubscribe(id, topic);
    }
}
