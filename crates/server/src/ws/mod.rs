//! WebSockets: an HTTP/1.1 upgrade, relayed to an instance of the route's service once the
//! route's filters approve the handshake.
//!
//! - `handshake`: the client's handshake checked, the filters run (through
//!   [`gateway_proxy::approve_handshake`]), the instance's handshake made and its `101` checked;
//! - `relay`: the two sockets, frame by frame, with the limits of `websocket:` in the
//!   configuration (sizes, idle timeout, keepalive pings) and close codes passed both ways;
//! - `hub`: the topic hub, on its own path behind the route's filters, published to through
//!   [`hub::publish`] (and Redis pub/sub across gateways);
//! - `stats`: counters for every socket of the process, read with [`status`].
//!
//! Frames go through `tokio-tungstenite` on both sides, since the relay inspects every one:
//! sizes (1009), close codes, pings. Messages are relayed whole: a fragmented message reaches
//! the other side reassembled, as a proxy may (RFC 6455, 5.4). Extensions are not offered to
//! the instance, so nothing compressed ever needs inflating here. WebSocket over HTTP/2
//! (RFC 8441) is not served: an HTTP/2 client falls back to HTTP/1.1 for it.
//!
//! Why the relay is native and frame-aware: `docs/decisions/0012-websocket-relay.md`.

mod handshake;
pub mod hub;
mod relay;
mod stats;

pub(crate) use handshake::{accept, is_upgrade};
pub use stats::{Status, status};
