//! The gateway host: accepts client traffic, runs each request through its route's chain of
//! WebAssembly filters, and forwards it to an instance of the target service.
//!
//! Where a request goes, in order:
//! - [`server`]: listener, HTTP/1.1 and HTTP/2, edge hygiene and path normalisation;
//! - [`routing`]: which route takes the request;
//! - [`filter`]: the Wasm filter runtime (engine, bindings, instance pools, limits, chains);
//! - [`upstream`]: the service's instances, balancing and the pooled client;
//! - [`wire`]: HTTP/1.1 as the gateway reads and writes it, towards clients and instances;
//! - [`proxy`]: the pipeline tying those together, and the headers a proxy owes both sides;
//! - [`reload`]: rebuilding the state when files change, and swapping it in atomically;
//! - [`admin`]: the admin API (reload status and trigger);
//! - [`plugin`]: tools for plugin authors (`gateway plugin new`, `gateway plugin test`).

pub mod admin;
pub mod config;
mod error;
pub mod filter;
pub mod gateway;
pub mod plugin;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod upstream;
pub mod wire;

pub use error::{Error, Result};
