//! A route's filters in order: the request phase front to back, the response phase back to
//! front, and each filter's failure policy applied on the way.

use std::ops::Range;
use std::time::Instant;

use bytes::Bytes;

use gateway_config::FailurePolicy;

use crate::pool::FilterPool;
use crate::{Error, FilterFailure, FilterReply, Phases, RequestHead, ResponseHead};

/// The filters of one route.
#[derive(Default)]
pub struct FilterChain {
    pub filters: Vec<FilterPool>,
}

/// One filter call as a route's `debug_trace` reports it.
#[derive(Debug, Clone)]
pub struct Step {
    /// The filter's name (or `upstream`, for the try the proxy adds).
    pub name: String,
    pub phase: &'static str,
    /// `continue`, `reply <status>`, `replace <status>`, or `skipped after <kind>` /
    /// `refused after <kind>` for a failure (`trap`, `timeout`, `memory-limit`, ...); never a
    /// comma, which separates steps in the header.
    pub decision: String,
    /// When the call started, for exported spans.
    pub started: Instant,
    pub micros: u64,
}

/// Where the steps of one traced request go; `None` for the requests not traced, which then
/// read no clock for it.
pub type Trace<'t> = Option<&'t mut Vec<Step>>;

fn record(
    trace: &mut Trace<'_>,
    pool: &FilterPool,
    phase: &'static str,
    started: Option<Instant>,
    decision: impl FnOnce() -> String,
) {
    if let (Some(steps), Some(started)) = (trace.as_deref_mut(), started) {
        steps.push(Step {
            name: pool.name().to_owned(),
            phase,
            decision: decision(),
            started,
            micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }
}

fn failed(pool: &FilterPool, failure: &FilterFailure) -> String {
    let outcome = match pool.policy {
        FailurePolicy::Open => "skipped",
        FailurePolicy::Closed => "refused",
    };
    format!("{outcome} after {}", failure.kind())
}

/// How the request phase ended.
pub struct RequestPhase {
    /// How many filters, from the front, took part; their response phases run later.
    pub ran: usize,
    pub outcome: Result<Option<FilterReply>, Error>,
}

impl FilterChain {
    /// Where the request phase first needs the request body: the index of the first filter
    /// that reads it, and the longest limit of the filters from there on that do. The body is
    /// read once, just before that filter, so the filters in front of it (auth, say) can refuse
    /// a request before its body is waited for.
    pub fn request_body_need(&self) -> Option<(usize, u32)> {
        let first = self.filters.iter().position(|pool| {
            pool.phases().contains(Phases::REQUEST) && pool.request_body_limit().is_some()
        })?;
        let limit = self.filters[first..]
            .iter()
            .filter(|pool| pool.phases().contains(Phases::REQUEST))
            .filter_map(FilterPool::request_body_limit)
            .max()?;
        Some((first, limit))
    }

    /// The longest response body the response phases of the first `ran` filters read, if any
    /// reads one.
    pub fn response_body_need(&self, ran: usize) -> Option<u32> {
        self.filters[..ran.min(self.filters.len())]
            .iter()
            .filter(|pool| pool.phases().contains(Phases::RESPONSE))
            .filter_map(FilterPool::response_body_limit)
            .max()
    }

    /// Runs the request phase of the filters in `filters`, in order, until one answers or
    /// fails closed.
    pub async fn on_request(
        &self,
        head: &mut RequestHead,
        filters: Range<usize>,
        mut trace: Trace<'_>,
    ) -> RequestPhase {
        let end = filters.end.min(self.filters.len());
        for (index, pool) in self
            .filters
            .iter()
            .enumerate()
            .take(end)
            .skip(filters.start)
        {
            if !pool.phases().contains(Phases::REQUEST) {
                continue;
            }
            let started = trace.is_some().then(Instant::now);
            let called = pool.on_request(head).await;
            record(&mut trace, pool, "request", started, || match &called {
                Ok(None) => "continue".to_owned(),
                Ok(Some(reply)) => format!("reply {}", reply.status.as_u16()),
                Err(failure) => failed(pool, failure),
            });
            match called {
                Ok(None) => {}
                Ok(Some(reply)) => {
                    return RequestPhase {
                        ran: index + 1,
                        outcome: Ok(Some(reply)),
                    };
                }
                Err(failure) => {
                    if let Some(error) = apply_policy(pool, head, failure, "request") {
                        return RequestPhase {
                            ran: index,
                            outcome: Err(error),
                        };
                    }
                }
            }
        }
        RequestPhase {
            ran: end,
            outcome: Ok(None),
        }
    }

    /// Runs the response phase of the first `ran` filters, last to first. Returns the body of
    /// the reply a filter replaced the response with, if one did.
    pub async fn on_response(
        &self,
        ran: usize,
        request: &mut RequestHead,
        response: &mut ResponseHead,
        mut trace: Trace<'_>,
    ) -> Result<Option<Bytes>, Error> {
        let mut replaced_body = None;
        let mut refused = None;
        let ran = &self.filters[..ran.min(self.filters.len())];
        for pool in ran.iter().rev() {
            if !pool.phases().contains(Phases::RESPONSE) {
                continue;
            }
            let started = trace.is_some().then(Instant::now);
            let called = pool.on_response(request, response).await;
            record(&mut trace, pool, "response", started, || match &called {
                Ok(None) => "continue".to_owned(),
                Ok(Some(reply)) => format!("replace {}", reply.status.as_u16()),
                Err(failure) => failed(pool, failure),
            });
            match called {
                Ok(None) => {}
                Ok(Some(reply)) => {
                    response.status = reply.status;
                    response.headers = reply.headers;
                    replaced_body = Some(reply.body);
                }
                Err(failure) => {
                    if let Some(error) = apply_policy(pool, request, failure, "response") {
                        refused = Some(error);
                        break;
                    }
                }
            }
        }
        // The filters are done with the request: what it still holds, it holds by mistake.
        for pool in ran {
            pool.release_locks(request).await;
        }
        match refused {
            Some(error) => Err(error),
            None => Ok(replaced_body),
        }
    }
}

/// Logs a failure and decides: `None` to go on without the filter, `Some` to fail the request.
fn apply_policy(
    pool: &FilterPool,
    head: &RequestHead,
    failure: FilterFailure,
    phase: &str,
) -> Option<Error> {
    let filter = pool.name();
    let request_id = head.request_id();
    match pool.policy {
        FailurePolicy::Open => {
            tracing::warn!(filter, request_id, phase, %failure, "filter failed; skipped (fail open)");
            None
        }
        FailurePolicy::Closed => {
            tracing::error!(filter, request_id, phase, %failure, "filter failed; request refused (fail closed)");
            Some(Error::Failed {
                filter: filter.to_owned(),
                failure,
            })
        }
    }
}
