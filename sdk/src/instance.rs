//! A filter instance as both hosts run it: created from its configuration, registered, and
//! called once per phase. The Wasm export glue and the native test host differ only in where
//! the handles read from and what happens to the outcome; everything a filter sees is here,
//! once, so its unit tests exercise the code the gateway runs.

use gateway_rules::metrics::MetricSpec;

use crate::backend::{self, RequestRef, ResponseRef};
use crate::{Action, Filter, Phases, Reads, Request, Response};
use gateway_rules::changes::Writer;
use gateway_rules::input::{RequestInput, ResponseInput};

/// A created filter and what it registered.
pub(crate) struct Instance<F> {
    pub(crate) filter: F,
    pub(crate) phases: Phases,
    pub(crate) reads: Reads,
    pub(crate) metrics: Vec<MetricSpec>,
}

/// How a phase ended, before it is handed to the host.
pub(crate) struct Outcome {
    pub(crate) action: Action,
    /// Edits, context entries and metric updates, in order.
    pub(crate) changes: Writer,
}

impl<F: Filter> Instance<F> {
    /// Parses the configuration, creates the filter and collects its registration. `Err` is the
    /// message that rejects the configuration.
    pub(crate) fn new(config: &str) -> Result<Self, String> {
        let config = crate::config::parse::<F::Config>(config)?;
        let filter = F::new(config)?;
        let metrics = backend::with_metrics(|registry| registry.seal());
        gateway_rules::metrics::check(&metrics).map_err(|error| error.to_string())?;
        let phases = filter.phases();
        let reads = filter.reads();
        reads.check()?;
        Ok(Instance {
            filter,
            phases,
            reads,
            metrics,
        })
    }

    /// Runs the request phase.
    pub(crate) fn on_request(&self, handle: RequestRef<'_>, input: RequestInput) -> Outcome {
        let mut request = Request::in_request_phase(handle, &self.reads, input);
        let action = self.filter.on_request(&mut request);
        let mut changes = request.into_edits();
        backend::with_metrics(|registry| registry.hand_over(&mut changes));
        Outcome { action, changes }
    }

    /// Runs the response phase.
    pub(crate) fn on_response(
        &self,
        request: RequestRef<'_>,
        response: ResponseRef<'_>,
        status: u16,
        input: ResponseInput,
    ) -> Outcome {
        let request = Request::in_response_phase(request, &self.reads, input.context);
        let mut response = Response::new(response, &self.reads, status, input.headers, input.body);
        let action = self.filter.on_response(&request, &mut response);
        let mut changes = request.into_edits();
        // Context entries and response edits change different things: their order is free.
        changes.extend(&response.into_edits());
        backend::with_metrics(|registry| registry.hand_over(&mut changes));
        Outcome { action, changes }
    }
}
