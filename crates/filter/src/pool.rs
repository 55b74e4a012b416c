//! Initialised instances of one filter for one route, reused across requests.
//!
//! A call that never waits (a filter on the memory store, with no services granted) runs to its
//! end once begun, so such a pool has at most one instance per worker thread checked out at a
//! time. A call waiting on Redis or a service holds its instance while it is suspended, and the
//! requests behind it need instances of their own: the pool makes one whenever none is idle,
//! and keeps more idle when its filter may wait. A small lock-free queue holds them. An instance
//! is replaced after serving `max_uses` requests, and dropped after any failure: a trapped store
//! is poisoned, and a store that ran out of time or memory is not worth trusting again.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use gateway_config::{FailurePolicy, Isolation};
use gateway_metrics::{CallEnd, FilterMetrics, Phase};

use gateway_rules::edit;
use http::HeaderMap;

use crate::bindings::{Action, Phases, Reply};
use crate::declared::Declared;
use crate::edits;
use crate::engine::LoadedFilter;
use crate::instance::FilterInstance;
use crate::outbound::OutboundGrant;
use crate::{Error, FilterFailure, FilterReply, RequestHead, ResponseHead, Result};

/// One filter in one route's chain, with its pool of instances.
pub struct FilterPool {
    filter: Arc<LoadedFilter>,
    config_json: String,
    /// What a request gets when this filter fails.
    pub policy: FailurePolicy,
    /// What the filter registered with this route's config: its phases, what it reads, the
    /// bodies it wants and its metrics.
    declared: Declared,
    outbound: Option<OutboundGrant>,
    idle: ArrayQueue<FilterInstance>,
    /// The filter's call counters, shared by every route it serves.
    metrics: Arc<FilterMetrics>,
}

/// Idle instances kept per pool: enough for every worker thread to be in a call at once, or,
/// when calls may wait, for the calls a burst keeps suspended at once.
fn idle_capacity(calls_may_wait: bool) -> usize {
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    if calls_may_wait { 64 } else { threads * 2 }
}

impl FilterPool {
    /// Makes the first instance, which validates the route's config for this filter. `outbound`
    /// is what the route entry lets the filter call.
    pub async fn new(
        filter: Arc<LoadedFilter>,
        route: &str,
        config: &serde_json::Value,
        policy: FailurePolicy,
        outbound: Option<OutboundGrant>,
    ) -> Result<FilterPool> {
        let config_json = config.to_string();
        let refused = |reason: String| Error::Init {
            route: route.to_owned(),
            filter: filter.name.to_string(),
            reason,
        };
        let (instance, registration) = FilterInstance::new(&filter, &config_json, outbound.clone())
            .await
            .map_err(|failure| refused(failure.to_string()))?;
        let declared = Declared::new(registration, &filter.name, &filter.metrics)
            .map_err(|reason| refused(format!("registered what cannot be: {reason}")))?;
        let calls_may_wait = filter.immediate.is_none() || outbound.is_some();
        let metrics = gateway_metrics::filter(&filter.name);
        let pool = FilterPool {
            filter,
            config_json,
            policy,
            declared,
            outbound,
            idle: ArrayQueue::new(idle_capacity(calls_may_wait)),
            metrics,
        };
        pool.check_in(instance, Phases::REQUEST);
        Ok(pool)
    }

    /// Releases the locks the request still holds in this filter's store, if it takes locks:
    /// the request has ended, and a filter that failed before releasing must not hold the
    /// others back until the lease ends.
    pub(crate) async fn release_locks(&self, request: &RequestHead) {
        if !self.filter.takes_locks {
            return;
        }
        let holder = request.request_id();
        match self.filter.kv.release_all(&self.filter.name, holder).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::debug!(
                    filter = self.name(),
                    request_id = holder,
                    released,
                    "released the locks the request still held"
                );
            }
            Err(error) => {
                tracing::debug!(filter = self.name(), request_id = holder, %error, "cannot release the locks the request still holds; their leases end them");
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.filter.name
    }

    /// The loaded component this pool runs.
    pub fn filter(&self) -> &LoadedFilter {
        &self.filter
    }

    /// Instances ready for the next call; the rest are in calls now or not made yet.
    pub fn idle_instances(&self) -> usize {
        self.idle.len()
    }

    /// The phases the filter registered for with this route's config.
    #[inline]
    pub fn phases(&self) -> Phases {
        self.declared.phases
    }

    /// The longest request body the filter reads, if it reads one.
    pub fn request_body_limit(&self) -> Option<u32> {
        self.declared.request_body
    }

    /// The longest response body the filter reads, if it reads one.
    pub fn response_body_limit(&self) -> Option<u32> {
        self.declared.response_body
    }

    async fn check_out(&self) -> Result<FilterInstance, FilterFailure> {
        if let Some(instance) = self.idle.pop() {
            return Ok(instance);
        }
        FilterInstance::new(&self.filter, &self.config_json, self.outbound.clone())
            .await
            .map(|(instance, _)| instance)
            .map_err(|failure| match failure {
                FilterFailure::Unavailable(reason) => FilterFailure::Unavailable(reason),
                other => FilterFailure::Unavailable(format!("a new instance {other}")),
            })
    }

    fn check_in(&self, instance: FilterInstance, after: Phases) {
        let settings = &self.filter.settings;
        if settings.isolation != Isolation::Pooled {
            return;
        }
        // Retiring an instance as soon as its last request phase ends would hand that request's
        // response phase to a brand-new instance; keep it for the response phase, unless that
        // phase never came (the client left) and the instance is already past its limit.
        let worn_out = if after == Phases::REQUEST && self.phases().contains(Phases::RESPONSE) {
            instance.uses > settings.max_uses
        } else {
            instance.uses >= settings.max_uses
        };
        if !worn_out {
            // A full queue means more instances exist than threads can use: drop the extra.
            let _ = self.idle.push(instance);
        }
    }

    /// Runs the request phase and applies its edits; `Some` is the filter's early answer.
    pub async fn on_request(
        &self,
        head: &mut RequestHead,
    ) -> Result<Option<FilterReply>, FilterFailure> {
        let started = gateway_metrics::start();
        let result = self.request_call(head).await;
        self.metrics
            .record(Phase::Request, call_end(&result), started);
        result
    }

    async fn request_call(
        &self,
        head: &mut RequestHead,
    ) -> Result<Option<FilterReply>, FilterFailure> {
        let input = self.declared.request_input(head);
        let mut instance = self.check_out().await?;
        let outcome = instance
            .on_request(head, input, self.filter.settings.timeout)
            .await?;
        let applied =
            edits::apply_to_request(&self.declared, instance.names(), head, &outcome.changes);
        self.check_in(instance, Phases::REQUEST);
        applied.map_err(FilterFailure::BadEdit)?;
        answer(outcome.action)
    }

    /// Runs the response phase and applies its edits; `Some` is a reply that replaces the
    /// response.
    pub async fn on_response(
        &self,
        request: &mut RequestHead,
        response: &mut ResponseHead,
    ) -> Result<Option<FilterReply>, FilterFailure> {
        let started = gateway_metrics::start();
        let result = self.response_call(request, response).await;
        self.metrics
            .record(Phase::Response, call_end(&result), started);
        result
    }

    async fn response_call(
        &self,
        request: &mut RequestHead,
        response: &mut ResponseHead,
    ) -> Result<Option<FilterReply>, FilterFailure> {
        let input = self.declared.response_input(request, response);
        let mut instance = self.check_out().await?;
        let outcome = instance
            .on_response(request, response, input, self.filter.settings.timeout)
            .await?;
        let applied = edits::apply_to_response(
            &self.declared,
            instance.names(),
            request,
            response,
            &outcome.changes,
        );
        self.check_in(instance, Phases::RESPONSE);
        applied.map_err(FilterFailure::BadEdit)?;
        answer(outcome.action)
    }
}

/// How a call ended, as the metrics count it.
fn call_end(result: &Result<Option<FilterReply>, FilterFailure>) -> CallEnd {
    match result {
        Ok(None) => CallEnd::Continued,
        Ok(Some(_)) => CallEnd::Replied,
        Err(FilterFailure::Trap(_)) => CallEnd::Trap,
        Err(FilterFailure::Timeout(_)) => CallEnd::Timeout,
        Err(FilterFailure::MemoryLimit(_)) => CallEnd::MemoryLimit,
        Err(_) => CallEnd::OtherFailure,
    }
}

fn answer(action: Action) -> Result<Option<FilterReply>, FilterFailure> {
    match action {
        Action::Continue => Ok(None),
        Action::Respond(reply) => convert_reply(reply)
            .map(Some)
            .map_err(FilterFailure::BadReply),
    }
}

/// A reply from a filter as the gateway sends it, or why it cannot be sent.
fn convert_reply(reply: Reply) -> Result<FilterReply, String> {
    let status = edit::status(reply.status).map_err(|error| format!("reply status {error}"))?;
    let mut headers = HeaderMap::with_capacity(reply.headers.len());
    for (name, value) in reply.headers {
        headers.append(
            edit::header_name(&name).map_err(|error| error.to_string())?,
            edit::header_value(value).map_err(|error| error.to_string())?,
        );
    }
    Ok(FilterReply {
        status,
        headers,
        body: reply.body.into(),
    })
}
