//! Glue between the generated component exports and a [`Filter`]. Called by
//! [`export_filter!`](crate::export_filter); not for direct use.

use std::any::Any;
use std::cell::RefCell;

use crate::wit::exports::gateway::filter::handler::{Registration, RequestAction, ResponseAction};
use crate::wit::gateway::filter::http as host;
use crate::{Action, Filter, Request, Response};

thread_local! {
    // A component instance is single-threaded and holds exactly one filter, created by `init`.
    static INSTANCE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Parses the configuration, creates the filter and reports its phases.
pub fn init<F: Filter>(config: &str) -> Result<Registration, String> {
    // The default hook writes to stderr, which a filter does not have; send panics to the
    // gateway's log instead, where they are tagged with the filter and the request.
    std::panic::set_hook(Box::new(|info| {
        crate::wit::gateway::filter::log::log(
            crate::wit::gateway::filter::log::Level::Error,
            &format!("filter panicked: {info}"),
        )
    }));
    let config = crate::config::parse::<F::Config>(config)?;
    let filter = F::new(config)?;
    let phases = filter.phases();
    INSTANCE.with(|slot| *slot.borrow_mut() = Some(Box::new(filter)));
    Ok(Registration { phases })
}

fn with_filter<F: Filter, R>(run: impl FnOnce(&F) -> R) -> R {
    INSTANCE.with(|slot| {
        let slot = slot.borrow();
        // The gateway always calls `init` first; a trap here makes that contract violation loud.
        let filter = slot
            .as_ref()
            .and_then(|instance| instance.downcast_ref::<F>())
            .expect("the gateway calls init before any phase");
        run(filter)
    })
}

/// Runs the request phase.
pub fn on_request<F: Filter>(request: &host::Request) -> RequestAction {
    let mut request = Request::from_handle(request);
    match with_filter::<F, _>(|filter| filter.on_request(&mut request)) {
        Action::Continue => RequestAction::Continue,
        Action::Respond(reply) => RequestAction::Respond(reply.into_wit()),
    }
}

/// Runs the response phase.
pub fn on_response<F: Filter>(
    request: &host::Request,
    response: &host::Response,
) -> ResponseAction {
    let request = Request::from_handle(request);
    let mut response = Response::from_handle(response);
    match with_filter::<F, _>(|filter| filter.on_response(&request, &mut response)) {
        Action::Continue => ResponseAction::Continue,
        Action::Respond(reply) => ResponseAction::Respond(reply.into_wit()),
    }
}
