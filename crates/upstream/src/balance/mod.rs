//! The balancers: which of a service's instances a request goes to, one file each.
//!
//! Every balancer picks among the instances a predicate calls eligible (healthy, not ejected,
//! breaker letting requests through, under its concurrency limit, not tried yet for this
//! request), so health, breakers and retries work the same whichever balancer a service uses.
//! The service calls [`Balancer::pick`], then takes the instance's breaker permit and limit
//! slot; if another worker took the last one meanwhile, it asks again without that instance.
//!
//! What is shared and what is per worker: all of a balancer's state (round-robin cursors, the
//! requests in flight per instance, latency estimates) is shared by every worker in atomics,
//! so the order is the service's and not each worker's, and a request costs no lock. Random
//! draws use each thread's own generator (`fastrand`).
//!
//! Why not `tower::balance::p2c`: it balances over a set of tower `Service`s, each owning its
//! connections and polled for readiness. Here an instance's idle connections are per worker,
//! and a request is sent by its own task on a connection it checks out (0002), so there is no
//! ready service to poll; the same algorithm runs over the instances' shared counters instead
//! (`p2c_ewma`, with the arithmetic of `tower::load::PeakEwma`).

pub(crate) mod hash;
mod least_connections;
pub(crate) mod p2c_ewma;
mod random;
mod round_robin;
mod weighted;

use gateway_config::BalancerKind;

use crate::instance::Instance;

/// A service's balancer.
pub(crate) enum Balancer {
    RoundRobin(round_robin::RoundRobin),
    Weighted(weighted::Weighted),
    LeastConnections,
    Random,
    P2cEwma,
    Hash(hash::Ring),
}

impl Balancer {
    pub(crate) fn new(kind: BalancerKind, instances: &[Instance]) -> Balancer {
        match kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin(round_robin::RoundRobin::default()),
            BalancerKind::Weighted => Balancer::Weighted(weighted::Weighted::new(instances)),
            BalancerKind::LeastConnections => Balancer::LeastConnections,
            BalancerKind::Random => Balancer::Random,
            BalancerKind::P2cEwma => Balancer::P2cEwma,
            BalancerKind::Hash => Balancer::Hash(hash::Ring::new(instances)),
        }
    }

    /// Whether instances' latencies are to be measured for this balancer.
    pub(crate) fn reads_latency(&self) -> bool {
        matches!(self, Balancer::P2cEwma)
    }

    /// The index of the instance for a request, among those `eligible` accepts; `key` is the
    /// request's hash key, for `hash`.
    #[inline]
    pub(crate) fn pick(
        &self,
        instances: &[Instance],
        key: Option<u64>,
        now: u64,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(cursor) => cursor.pick(instances.len(), eligible),
            Balancer::Weighted(weighted) => weighted.pick(instances.len(), eligible),
            Balancer::LeastConnections => least_connections::pick(instances, eligible),
            Balancer::Random => random::pick(instances, eligible),
            Balancer::P2cEwma => p2c_ewma::pick(instances, now, eligible),
            Balancer::Hash(ring) => match key {
                Some(key) => ring.pick(key, eligible),
                None => random::pick(instances, eligible),
            },
        }
    }
}

/// The first eligible index at or after `start`, going round.
fn first_from(start: usize, count: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
    (0..count)
        .map(|offset| (start + offset) % count)
        .find(|&index| eligible(index))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use crate::instance::Instance;

    /// `weights.len()` instances on ports 1, 2, ... with these weights.
    pub(crate) fn instances(weights: &[u32]) -> Vec<Instance> {
        let config = gateway_config::Service {
            weights: weights.to_vec(),
            ..gateway_config::Service::with_instances(
                (1..=weights.len())
                    .map(|port| {
                        format!("http://127.0.0.1:{port}")
                            .parse()
                            .expect("a valid URL")
                    })
                    .collect(),
            )
        };
        Instance::all("s", &config, &crate::Member::configured(&config))
    }

    /// How many of `picks` went to each index.
    pub(crate) fn counts(picks: impl Iterator<Item = Option<usize>>) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for pick in picks {
            *counts.entry(pick.expect("a pick")).or_insert(0) += 1;
        }
        counts
    }
}
