//! The request pipeline, and the serving state it runs on.
//!
//! A request the server has read goes through [`serve`], which never fails: every error becomes
//! the documented JSON answer ([`error_response`], with the status chosen in one place,
//! [`Error::to_client`]). In order:
//! - `hygiene`: the framing, Host and size checks every request meets before routing;
//! - routing, over the [`ServingState`]'s routes;
//! - the route's filter chain, request phase;
//! - the upstream call, with the client's body bounded in time (`body`);
//! - the response phase, and the headers a proxy owes both sides (`headers`).
//!
//! A WebSocket handshake goes through [`approve_handshake`] instead: the same steps up to the
//! filters; the server's relay then picks an instance ([`Approved::pick`]), a hub socket does
//! not need one.
//!
//! Filters' calls to configured services go through `outbound`.
//!
//! The state itself ([`ServingState`], [`LiveState`]) is built here from a checked
//! configuration and swapped whole by a reload.

mod body;
mod error;
mod headers;
mod hygiene;
mod outbound;
mod pipeline;
pub mod spans;
mod state;
mod trace;

pub use body::{ResponseBody, full};
pub use error::{ClientError, Error, Result};
pub use headers::request_id;
pub use hygiene::Violation;
pub use pipeline::{
    Approved, Handshake, Peer, approve_handshake, error_response, refuse_unreadable, serve,
};
pub use state::{Derived, LiveState, MAX_INSTANCES, Members, RouteView, ServingState};
