//! The `websocket:` settings: the limits every relayed WebSocket meets.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::ByteSize;

/// Limits on relayed WebSockets, separate from HTTP's: a socket lives far longer than a
/// request, so its idle timeout and sizes are its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    /// How long a socket may carry no message either way before the gateway closes both sides
    /// (close code 1001).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest single frame accepted from either side; larger closes that side with 1009.
    pub max_frame_size: ByteSize,
    /// Largest message (all of its fragments) accepted from either side; larger closes that
    /// side with 1009.
    pub max_message_size: ByteSize,
    /// Send the client a ping this often; `~` (the default) for no keepalive pings.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Option<Duration>,
    /// With `ping_interval`: a client that sends nothing for this long after a ping is closed
    /// with 1011.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// The topic hub: clients subscribe on a WebSocket, services publish through
    /// `POST /admin/publish`. Off unless given.
    pub hub: Option<Hub>,
}

/// The topic hub's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hub {
    /// The path a client opens its hub socket on. A route must take it, and its filters run on
    /// the handshake (the auth filter's roles decide the topics below); no service is needed.
    pub path: String,
    /// Messages waiting for one subscriber at most; past it `overflow` applies.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// What a full queue does: `drop_subscriber` closes the socket with 1008,
    /// `drop_messages` drops the new message for that subscriber and counts it.
    #[serde(default)]
    pub overflow: Overflow,
    /// The topics clients may subscribe to, each with the roles allowed to (any of them; none
    /// listed for anyone who passed the route's filters). Other topics are refused.
    pub topics: BTreeMap<String, Topic>,
    /// Publish through Redis pub/sub (the `kv.redis` server), so that every gateway's
    /// subscribers get every message; without it a message reaches this gateway's only.
    #[serde(default)]
    pub redis: bool,
}

fn default_queue() -> usize {
    256
}

/// What a subscriber's full queue does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    #[default]
    DropSubscriber,
    DropMessages,
}

/// One hub topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// Roles (from the auth filter's `auth.roles`) any of which lets a client subscribe.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            idle_timeout: Duration::from_secs(300),
            max_frame_size: ByteSize(16 << 20),
            max_message_size: ByteSize(64 << 20),
            ping_interval: None,
            ping_timeout: Duration::from_secs(20),
            hub: None,
        }
    }
}
