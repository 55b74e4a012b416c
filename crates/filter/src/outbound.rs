//! The `outbound` capability: what a filter's request to a configured service goes through.
//!
//! This crate knows nothing of upstreams: the layer that owns them implements [`Services`], and
//! each route entry's pool holds an [`OutboundGrant`] naming the services its filter may call.
//! A call not granted is refused here, before anything leaves the process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

/// A filter's request, checked and typed.
#[derive(Debug)]
pub struct OutboundRequest {
    pub method: Method,
    /// Starts with `/`.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A service's whole answer.
#[derive(Debug)]
pub struct OutboundResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a call brought no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Failed(String),
}

/// The future of one outbound call.
pub type OutboundCall =
    Pin<Box<dyn Future<Output = Result<OutboundResponse, OutboundError>> + Send>>;

/// The services outbound calls go to, as the layer that owns the upstreams provides them.
pub trait Services: Send + Sync {
    /// Sends `request` to an instance of `service`, chosen and connected to as for proxied
    /// traffic; the answer's body is read whole, up to `max_body` bytes, all within `timeout`.
    fn send(
        &self,
        service: &str,
        request: OutboundRequest,
        max_body: usize,
        timeout: Duration,
    ) -> OutboundCall;
}

/// The services one route entry lets its filter call.
#[derive(Clone)]
pub struct OutboundGrant {
    pub allowed: Arc<[String]>,
    pub services: Arc<dyn Services>,
}

impl OutboundGrant {
    pub fn allows(&self, service: &str) -> bool {
        self.allowed.iter().any(|allowed| allowed == service)
    }
}
