//! The `websocket:` settings: the limits every relayed WebSocket meets.

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
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            idle_timeout: Duration::from_secs(300),
            max_frame_size: ByteSize(16 << 20),
            max_message_size: ByteSize(64 << 20),
            ping_interval: None,
            ping_timeout: Duration::from_secs(20),
        }
    }
}
