//! An instance picked for a protocol upgrade (a WebSocket): the balancer's pick, then a socket
//! that is not one of the pool's connections.
//!
//! The upgraded socket lives for as long as the client keeps it, so it counts as one request
//! in flight to its instance until it closes: `least_connections` and the per-instance limits
//! see long-lived sockets as the load they are. The breaker and outlier detection hear only
//! how the handshake went, which is all an upgrade says about the instance's health.

use http::HeaderValue;

use crate::limit::Slot;
use crate::service::{Picked, Service, Verdict};
use crate::{Error, ErrorKind, Outgoing, Result};

/// An instance picked for an upgrade, until its handshake has an outcome.
pub struct Upgrade<'s> {
    service: &'s Service,
    picked: Picked<'s>,
    slot: Option<Slot>,
}

/// An upgraded socket's place among its instance's requests in flight; freed when dropped.
pub struct UpgradeSlot {
    _slot: Option<Slot>,
}

impl Service {
    /// Picks an instance for an upgrade the way [`Service::forward`] picks one for a request
    /// (balancer, health, breaker, limits), without retries: a handshake that fails is the
    /// client's to repeat.
    pub fn pick_for_upgrade(&self, request: Outgoing<'_>) -> Result<Upgrade<'_>> {
        let now = self.clock.now();
        let key = self.request_key(&request);
        let mut picked = self.pick(Default::default(), key, now)?;
        let slot = picked.slot.take().map(|slot| slot.into_owned());
        Ok(Upgrade {
            service: self,
            picked,
            slot,
        })
    }
}

impl Upgrade<'_> {
    /// The instance's `host:port`, to connect to.
    pub fn authority(&self) -> &str {
        self.instance().url.authority.as_str()
    }

    /// The instance's authority as a `Host` header.
    pub fn host_header(&self) -> &HeaderValue {
        &self.instance().url.host_header
    }

    /// `service@host:port`, as logs name it.
    pub fn label(&self) -> &str {
        &self.instance().label
    }

    /// How long connecting and the handshake may take: the service's `try_timeout`.
    pub fn timeout(&self) -> std::time::Duration {
        self.service.try_timeout
    }

    /// The instance answered the handshake with `status` (101 when it accepted): the socket
    /// keeps its slot for as long as the returned value lives.
    pub fn answered(mut self, status: u16) -> UpgradeSlot {
        let now = self.service.clock.now();
        self.service
            .record(&mut self.picked, Verdict::Answered(status), now);
        UpgradeSlot {
            _slot: self.slot.take(),
        }
    }

    /// The instance could not be reached or broke the handshake: counted against it, and the
    /// error the client's answer is chosen from.
    pub fn failed(mut self, kind: ErrorKind, reason: impl Into<String>) -> Error {
        let now = self.service.clock.now();
        self.service.record(&mut self.picked, Verdict::Failed, now);
        Error::new(kind, &self.instance().label, reason)
    }

    fn instance(&self) -> &crate::Instance {
        &self.service.instances[self.picked.index]
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::{HeaderMap, Method};

    use super::*;

    #[test]
    fn an_upgraded_socket_counts_in_flight_until_its_slot_is_dropped() {
        let url = "http://127.0.0.1:9".parse().expect("a URL");
        let service = Service::new(
            "market",
            &gateway_config::Service::with_instances(vec![url]),
        );
        let headers = HeaderMap::new();
        let in_flight = || service.status().instances[0].in_flight;
        let upgrade = service
            .pick_for_upgrade(Outgoing {
                method: &Method::GET,
                target: "/ws",
                headers: &headers,
                client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                path: "/ws",
            })
            .expect("an instance");
        assert_eq!(upgrade.authority(), "127.0.0.1:9");
        assert_eq!(upgrade.label(), "market@127.0.0.1:9");
        assert_eq!(in_flight(), 1, "counted from the pick");
        let slot = upgrade.answered(101);
        assert_eq!(in_flight(), 1, "and for as long as the socket lives");
        drop(slot);
        assert_eq!(in_flight(), 0);
    }
}
