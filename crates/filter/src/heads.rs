//! The request and response heads a filter reaches through its handles.
//!
//! The proxy owns these. For a call, a head is moved into the filter instance's store and moved
//! back out afterwards: only what the filter declared it reads is copied into the call, and
//! its lazy reads copy exactly what they ask for.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use gateway_rules::context::Context;
use http::{HeaderMap, Method, StatusCode};

/// A message body as the filters see it: not read, read whole, or found too large to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeldBody {
    /// No filter asked for it: it streams.
    #[default]
    Streaming,
    /// The whole body, as received or as a filter replaced it.
    Complete(Bytes),
    /// Longer than every limit that asked for it: it streams on untouched.
    TooLarge,
}

/// What the gateway knows about a request while it crosses the filter chain.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    /// Normalised, without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The host the client asked for, without port.
    pub authority: Option<String>,
    pub client_ip: IpAddr,
    /// Parameters captured by the route's path pattern, in pattern order.
    pub params: Vec<(Arc<str>, String)>,
    /// Entries filters set for the filters after them; never sent upstream as such.
    pub context: Context,
    /// The request body, once the pipeline read it for a filter that asked.
    pub body: HeldBody,
}

/// An empty head, which allocates nothing: it is what a head moved into a filter call leaves
/// behind, twice per filter per request.
impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Method::GET,
            path: String::new(),
            query: None,
            headers: HeaderMap::new(),
            authority: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            params: Vec::new(),
            context: Context::default(),
            body: HeldBody::Streaming,
        }
    }
}

impl RequestHead {
    /// The request id the gateway assigned, for logs.
    pub fn request_id(&self) -> &str {
        self.headers
            .get(gateway_wire::fields::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| &**key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A response's status and headers while it crosses the filter chain back.
#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The response body, once the pipeline read it for a filter that asked.
    pub body: HeldBody,
}

/// A complete answer a filter produced instead of the upstream's.
#[derive(Debug, Clone)]
pub struct FilterReply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}
