//! Active health checks: the gateway asks each instance `GET <path>` every `interval`, off the
//! request path.
//!
//! They run once per gateway, not once per worker: one task per instance on the runtime that
//! starts them (the control plane's), holding the service weakly, so the tasks end with the
//! service when a reload replaces it. A check passes when the whole answer comes within
//! `timeout` with one of `expected_statuses`. `unhealthy_threshold` failures in a row take the
//! instance out, `healthy_threshold` passes in a row bring it back, and a pass also ends an
//! outlier ejection. The result is published in the instance's `healthy` flag, an atomic each
//! worker reads on its picks without a lock. Each change is logged once.
//!
//! An instance starts healthy, or as the state a reload replaced last found it
//! (`Service::inherit`): a reload must not take a serving instance out, or bring a failing one
//! back, before its first checks have run. Checks go on the control plane's own connections to the instance (the
//! pool keeps one idle list per thread), so they never take a worker's.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use gateway_wire::upstream::OutgoingHead;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Empty};

use crate::service::Service;

/// Checks instance `index` of `service` until the service is dropped.
pub(crate) async fn run(service: Weak<Service>, index: usize) {
    let Some(interval) = service
        .upgrade()
        .and_then(|service| service.health_check.as_ref().map(|check| check.interval))
    else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        ticks.tick().await;
        let Some(service) = service.upgrade() else {
            return;
        };
        let Some(check) = &service.health_check else {
            return;
        };
        let instance = &service.instances[index];
        let outcome = probe(&service, index).await;
        let healthy = instance.healthy.load(Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                failures = 0;
                passes = passes.saturating_add(1);
                instance.outlier.uneject();
                if !healthy && passes >= check.healthy_threshold {
                    instance.healthy.store(true, Ordering::Relaxed);
                    tracing::info!(
                        instance = instance.label,
                        "instance healthy again: its checks pass"
                    );
                }
            }
            Err(reason) => {
                passes = 0;
                failures = failures.saturating_add(1);
                if healthy && failures >= check.unhealthy_threshold {
                    instance.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        instance = instance.label,
                        failures,
                        reason,
                        "instance unhealthy: its checks fail"
                    );
                }
            }
        }
    }
}

/// One check: the whole answer within the timeout, with an expected status.
async fn probe(service: &Service, index: usize) -> Result<(), String> {
    let Some(check) = &service.health_check else {
        return Ok(());
    };
    let instance = &service.instances[index];
    let headers = HeaderMap::new();
    let head = OutgoingHead {
        method: &Method::GET,
        target: instance.health_path.as_deref().unwrap_or(&check.path),
        headers: &headers,
        host: &instance.url.host_header,
    };
    let exchange = async {
        let response = instance
            .pool
            .send(&instance.url, &instance.label, head, Empty::<Bytes>::new())
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("the answer broke off: {error}"))?;
        if check.expected_statuses.contains(&status) {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(check.timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)))
}
