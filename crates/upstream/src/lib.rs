//! Upstream services: their instances, how one is picked, and the HTTP/1.1 connections that
//! reach it.
//!
//! The public surface is what the proxy needs: build a [`Service`] from its checked
//! configuration, [`Service::pick`] an [`Instance`], and [`Instance::send`] a request to it. A
//! failure comes back as an [`Error`] whose [`ErrorKind`] says what happened (connect refused,
//! timeout, reset before or after the request was sent, protocol, the client's body), so that
//! whoever counts failures against an instance classifies them without parsing text.

mod connection;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_config::InstanceUrl;
use gateway_wire::upstream::OutgoingHead;
use http::{HeaderMap, Method, Response};
use http_body::Body;

use self::connection::ConnectionPool;
pub use self::connection::{Transport, UpstreamBody};

/// What went wrong on the way to an instance or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection could be opened: refused, unreachable, or not resolved.
    ConnectRefused,
    /// Opening a connection took longer than the service's `connect_timeout`.
    ConnectTimeout,
    /// The connection failed before the whole request had been sent.
    ResetBeforeSent,
    /// The connection failed after the request was sent, before a whole response head came.
    ResetAfterSent,
    /// No response head came within the service's `request_timeout`.
    ResponseTimeout,
    /// The instance answered with something that is not HTTP/1.1.
    Protocol,
    /// The client's request body failed while it was being sent: cut short, malformed, or too
    /// slow. The client's fault, never the instance's.
    ClientBody,
}

impl ErrorKind {
    /// Whether the instance is to blame, as breakers and health checks count it.
    pub fn is_instance_fault(self) -> bool {
        self != ErrorKind::ClientBody
    }
}

/// A request that did not get a response head from its instance.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// The instance's label, `service@host:port`.
    pub instance: String,
    /// What happened, for the log.
    pub reason: String,
    /// The client body's own error, for [`ErrorKind::ClientBody`].
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn new(kind: ErrorKind, instance: &str, reason: impl Into<String>) -> Error {
        Error {
            kind,
            instance: instance.to_owned(),
            reason: reason.into(),
            source: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Error {
            instance, reason, ..
        } = self;
        match self.kind {
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout => {
                write!(f, "upstream {instance} unreachable: {reason}")
            }
            ErrorKind::ResponseTimeout => write!(f, "upstream {instance} {reason}"),
            ErrorKind::ResetBeforeSent | ErrorKind::ResetAfterSent | ErrorKind::Protocol => {
                write!(f, "upstream {instance} failed: {reason}")
            }
            ErrorKind::ClientBody => write!(
                f,
                "the client's request body failed on its way to {instance}: {reason}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One instance of a service and its idle connections.
pub struct Instance {
    url: InstanceUrl,
    /// `service@host:port`, as logs and errors name it.
    pub label: String,
    request_timeout: Duration,
    pool: Arc<ConnectionPool>,
}

impl Instance {
    /// Closes the calling worker's idle connections to this instance that are closed or stale.
    pub fn sweep_idle_connections(&self) {
        self.pool.sweep();
    }

    /// Sends the request (`target` in origin form; the instance's own host goes as `Host` when
    /// `headers` has none) and returns the response once its head has arrived, within the
    /// service's `request_timeout`; the body streams as the client reads it. The head is only
    /// borrowed: the response phase still sees it.
    pub async fn send<B>(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Response<UpstreamBody>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let head = OutgoingHead {
            method,
            target,
            headers,
            host: &self.url.host_header,
        };
        let sent = self.pool.send(&self.url, &self.label, head, body);
        tokio::time::timeout(self.request_timeout, sent)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::ResponseTimeout,
                    &self.label,
                    format!("did not answer within {:?}", self.request_timeout),
                ))
            })
    }
}

/// A service: its instances, and which one the next request goes to.
pub struct Service {
    pub instances: Vec<Instance>,
    next: AtomicUsize,
}

impl Service {
    /// The service `name` as the configuration describes it.
    pub fn new(name: &str, config: &gateway_config::Service) -> Service {
        let instances = config
            .instances
            .iter()
            .map(|url| Instance {
                label: format!("{name}@{}", url.authority),
                url: url.clone(),
                request_timeout: config.request_timeout,
                pool: ConnectionPool::new(config.connect_timeout, config.read_timeout),
            })
            .collect();
        Service {
            instances,
            next: AtomicUsize::new(0),
        }
    }

    /// The next instance, round robin.
    #[inline]
    pub fn pick(&self) -> &Instance {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.instances[turn % self.instances.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clients_fault_is_not_the_instances() {
        use ErrorKind::*;
        for kind in [
            ConnectRefused,
            ConnectTimeout,
            ResetBeforeSent,
            ResetAfterSent,
            ResponseTimeout,
            Protocol,
        ] {
            assert!(kind.is_instance_fault(), "{kind:?}");
        }
        assert!(!ClientBody.is_instance_fault());
    }

    #[test]
    fn instances_are_picked_round_robin() {
        let config = gateway_config::Service {
            instances: ["http://127.0.0.1:1", "http://127.0.0.1:2"]
                .map(|url| url.parse().expect("a valid URL"))
                .to_vec(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        let service = Service::new("s", &config);
        let picks: Vec<u16> = (0..4)
            .map(|_| service.pick().url.authority.port_u16().unwrap_or(0))
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }
}
