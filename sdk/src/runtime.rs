//! Glue between the generated component exports and a [`Filter`]. Called by
//! [`export_filter!`](crate::export_filter); not for direct use.

use std::any::Any;
use std::cell::RefCell;

use crate::backend::{RequestRef, ResponseRef};
use crate::instance::{Instance, Outcome};
use crate::wit::exports::gateway::filter::handler::{
    self as wit, Environment, Label, Metric, MetricKind, Registration,
};
use crate::wit::gateway::filter::http as host;
use crate::{Action, Filter};
use gateway_rules::input::{RequestInput, ResponseInput};

thread_local! {
    // A component instance is single-threaded and holds exactly one filter, created by `init`.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

fn metric(spec: gateway_rules::metrics::MetricSpec) -> Metric {
    Metric {
        name: spec.name,
        help: spec.help,
        kind: match spec.kind {
            gateway_rules::metrics::MetricKind::Counter => MetricKind::Counter,
            gateway_rules::metrics::MetricKind::Histogram(bounds) => MetricKind::Histogram(bounds),
        },
        labels: spec
            .labels
            .into_iter()
            .map(|label| Label {
                name: label.name,
                values: label.values,
            })
            .collect(),
    }
}

/// Parses the configuration, creates the filter and reports what it registers.
pub fn init<F: Filter>(config: &str, environment: Environment) -> Result<Registration, String> {
    // The default hook writes to stderr, which a filter does not have; send panics to the
    // gateway's log instead, where they are tagged with the filter and the request.
    std::panic::set_hook(Box::new(|info| {
        crate::wit::gateway::filter::log::log(
            crate::wit::gateway::filter::log::Level::Error,
            &format!("filter panicked: {info}"),
        )
    }));
    crate::backend::set_log_level(environment.log_level);
    let instance = Instance::<F>::new(config)?;
    let reads = &instance.reads;
    let registration = Registration {
        phases: instance.phases,
        request_fields: reads.fields,
        request_headers: reads.request_headers.clone(),
        response_headers: reads.response_headers.clone(),
        context_keys: reads.context_keys.clone(),
        request_body: reads.request_body,
        response_body: reads.response_body,
        metrics: instance.metrics.iter().cloned().map(metric).collect(),
    };
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(instance)));
    Ok(registration)
}

fn with_instance<F: Filter, R>(run: impl FnOnce(&Instance<F>) -> R) -> R {
    INSTANCE.with(|slot| {
        let slot = slot.borrow();
        // The gateway always calls `init` first; a trap here makes that contract violation loud.
        let instance = slot
            .as_ref()
            .and_then(|instance| instance.downcast_ref::<Instance<F>>())
            .expect("the gateway calls init before any phase");
        run(instance)
    })
}

fn outcome(outcome: Outcome) -> wit::Outcome {
    wit::Outcome {
        changes: outcome.changes.finish(),
        action: match outcome.action {
            Action::Continue => wit::Action::Continue,
            Action::Respond(reply) => wit::Action::Respond(reply.into_wit()),
        },
    }
}

/// Runs the request phase.
pub fn on_request<F: Filter>(request: &host::Request, input: Option<Vec<u8>>) -> wit::Outcome {
    // A gateway built for this contract always sends a readable input: a trap makes it loud.
    let input = input.map_or(Ok(RequestInput::default()), |bytes| {
        RequestInput::decode(&bytes)
    });
    let input = input.unwrap_or_else(|error| panic!("{error}"));
    outcome(with_instance::<F, _>(|instance| {
        instance.on_request(RequestRef::new(request), input)
    }))
}

/// Runs the response phase.
pub fn on_response<F: Filter>(
    request: &host::Request,
    response: &host::Response,
    status: u16,
    input: Option<Vec<u8>>,
) -> wit::Outcome {
    let input = input.map_or(Ok(ResponseInput::default()), |bytes| {
        ResponseInput::decode(&bytes)
    });
    let input = input.unwrap_or_else(|error| panic!("{error}"));
    outcome(with_instance::<F, _>(|instance| {
        instance.on_response(
            RequestRef::new(request),
            ResponseRef::new(response),
            status,
            input,
        )
    }))
}
