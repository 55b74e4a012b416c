//! Upstream services: their instances, how one is picked, how they are kept healthy, and the
//! HTTP/1.1 connections that reach them.
//!
//! The public surface is what the proxy and the admin API need: build a [`Service`] from its
//! checked configuration, [`Service::forward`] a request (pick, try, retry), pick an instance
//! for a WebSocket with [`Service::pick_for_upgrade`] (held as one request in flight while the
//! socket lives), start its active health checks with [`Service::start_health_checks`] on the
//! control plane's runtime, and read its [`Service::status`]. A failure comes back as an [`Error`] whose [`ErrorKind`] says what
//! happened (connect refused, timeout, reset before or after the request was sent, protocol,
//! the client's body, or no instance could take the request: none healthy, breakers open,
//! overloaded), so that whoever counts failures classifies them without parsing text.
//!
//! The modules, in the order a request meets them:
//! - `service`: the request's way through the rest, and its tries;
//! - `limit`: requests in flight, per service and per instance, and the limits on them;
//! - `balance`: one file per balancer;
//! - `health`: `active` checks, once per gateway, and `passive` ones (outlier detection);
//! - `breaker`: a circuit breaker per instance;
//! - `member`: where instances come from (the configuration, the admin API, the registry);
//! - `upgrade`: an instance picked for a WebSocket, held for the socket's life;
//! - `connection`: the per-worker idle connections, and the HTTP/1.1 exchange itself;
//! - `retry`: what is retried, and the budget;
//! - `clock`: the time all of them read, which unit tests move by hand.
//!
//! What is per worker and what is shared: only the idle connections are per worker (a socket
//! belongs to the runtime that opened it, 0003). Everything else about an instance (health,
//! ejection, breaker, requests in flight, latency estimate, round-robin cursors, the retry
//! budget) is shared by every worker in atomics, read on the request path without a lock: an
//! instance that fails on one worker is avoided by all.

mod balance;
mod breaker;
mod clock;
mod connection;
mod health;
mod instance;
mod limit;
mod member;
mod retry;
mod service;
mod upgrade;

use std::fmt;
use std::time::Duration;

pub use self::breaker::BreakerState;
pub use self::connection::{Transport, UpstreamBody};
pub use self::instance::{Instance, InstanceStatus};
pub use self::member::{Member, Source};
pub use self::service::{Forwarded, Outgoing, Service, ServiceStatus};
pub use self::upgrade::{Upgrade, UpgradeSlot};

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
    /// Every instance is unhealthy (active checks) or ejected (outlier detection), and the
    /// service has no panic mode.
    NoHealthyInstance,
    /// Every healthy instance's circuit breaker is open; [`Error::retry_after`] says when the
    /// first lets a probe through.
    CircuitOpen,
    /// The service, or every instance, has as many requests in flight as its limit allows.
    Overloaded,
}

impl ErrorKind {
    /// Whether the instance is to blame, as breakers and health checks count it.
    pub fn is_instance_fault(self) -> bool {
        !matches!(
            self,
            ErrorKind::ClientBody
                | ErrorKind::NoHealthyInstance
                | ErrorKind::CircuitOpen
                | ErrorKind::Overloaded
        )
    }
}

/// A request that did not get a response head from its instance.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// The instance's label, `service@host:port`; the service's name when no instance could
    /// take the request.
    pub instance: String,
    /// What happened, for the log.
    pub reason: String,
    /// The client body's own error, for [`ErrorKind::ClientBody`].
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// For [`ErrorKind::CircuitOpen`]: how long until a breaker lets a probe through.
    pub retry_after: Option<Duration>,
}

impl Error {
    fn new(kind: ErrorKind, instance: &str, reason: impl Into<String>) -> Error {
        Error {
            kind,
            instance: instance.to_owned(),
            reason: reason.into(),
            source: None,
            retry_after: None,
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
            ErrorKind::NoHealthyInstance | ErrorKind::CircuitOpen | ErrorKind::Overloaded => {
                write!(f, "service {instance}: {reason}")
            }
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
        for kind in [ClientBody, NoHealthyInstance, CircuitOpen, Overloaded] {
            assert!(!kind.is_instance_fault(), "{kind:?}");
        }
    }
}
