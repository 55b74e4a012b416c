//! The bundled `rewrite` filter: rewrites the path, query and headers of a request on its way
//! upstream, and the headers of the response on its way back.
//!
//! Request phase, in order: the path (prefix operations, then `regex`), the query (`remove`,
//! `set`, `add`), the request headers (`remove`, `set`, `add`). Response phase: the response
//! headers (`remove`, `set`, `add`). The filter only registers for the phases its configuration
//! uses, and has the path and query handed over with the call only when a rule rewrites them.
//! See [`config::Config`] for every key.
//!
//! The rules are checked when the route is loaded, so a request only fails if the host refuses an
//! edit (for example a path the regex made invalid): it is then answered with a 500 and a JSON
//! body, `{"error":"rewrite failed: <reason>","code":"FILTER_FAILED"}`.

pub mod config;
mod rules;
#[cfg(test)]
mod tests;

use gateway_sdk::{Action, Filter, Phases, Reads, Reply, Request, Response};

use crate::config::Config;
use crate::rules::Rules;

/// The filter, with its rules compiled once per instance from the route's [`Config`].
pub struct Rewrite {
    rules: Rules,
}

impl Filter for Rewrite {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Rewrite {
            rules: Rules::new(config)?,
        })
    }

    fn phases(&self) -> Phases {
        let mut phases = Phases::empty();
        if self.rules.edits_request() {
            phases |= Phases::REQUEST;
        }
        if self.rules.edits_response() {
            phases |= Phases::RESPONSE;
        }
        phases
    }

    // Handed over with the call: the path and query when a rule rewrites them. Header rules
    // only write, so they read nothing.
    fn reads(&self) -> Reads {
        let mut reads = Reads::default();
        if !self.rules.path.is_empty() {
            reads = reads.path();
        }
        if !self.rules.query.is_empty() {
            reads = reads.query();
        }
        reads
    }

    fn on_request(&self, request: &mut Request) -> Action {
        match self.rewrite_request(request) {
            Ok(()) => Action::Continue,
            Err(reason) => failed(&reason, request),
        }
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        match self.rules.response_headers.apply(response) {
            Ok(()) => Action::Continue,
            Err(reason) => failed(&reason, request),
        }
    }
}

impl Rewrite {
    /// Stops at the first edit the host refuses and says which.
    fn rewrite_request(&self, request: &mut Request) -> Result<(), String> {
        // Only read what a rule needs: that is what `reads` declares.
        if !self.rules.path.is_empty()
            && let Some(path) = self.rules.path.rewrite(&request.path())
        {
            request
                .set_path(&path)
                .map_err(|reason| format!("cannot set path `{path}`: {reason}"))?;
        }
        if !self.rules.query.is_empty() {
            let query = request.query();
            let rewritten = self.rules.query.rewrite(query.as_deref());
            if rewritten != query {
                request
                    .set_query(rewritten.as_deref())
                    .map_err(|reason| format!("cannot set query: {reason}"))?;
            }
        }
        self.rules.request_headers.apply(request)
    }
}

/// Logs a refused edit and answers with the filter's one error reply.
fn failed(reason: &str, request: &Request) -> Action {
    let message = format!("rewrite failed: {reason}");
    gateway_sdk::log::warn(&message);
    Action::Respond(Reply::error(500, "FILTER_FAILED", &message, request))
}

// Only a component exports the handler: the export names (`gateway:filter/handler@0.2.0#init`)
// cannot go into a native shared library, and native builds exist only for the unit tests.
gateway_sdk::export_filter!(Rewrite);
