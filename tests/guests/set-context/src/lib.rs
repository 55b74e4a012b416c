//! A filter that copies request headers into context entries, standing in for the auth filter
//! in end-to-end tests of the filters after it: `x-test-subject` becomes `auth.subject` and
//! `x-test-consumer` becomes `auth.consumer`, as if a credential had named them.
//!
//! Config: `entries`, a map of context key to the request header it is copied from (default:
//! the two above). A header that is absent leaves its entry unset, as the auth filter leaves
//! `auth.consumer` unset when there is none.

// Natively the export is compiled out and nothing else uses the filter: it exists for Wasm.
#![cfg_attr(not(target_family = "wasm"), allow(dead_code))]

use std::collections::BTreeMap;

use gateway_sdk::{Action, Filter, Headers, Phases, Reads, Reply, Request};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Context key to the request header whose value it takes.
    #[serde(default = "default_entries")]
    entries: BTreeMap<String, String>,
}

fn default_entries() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("auth.subject".to_owned(), "x-test-subject".to_owned()),
        ("auth.consumer".to_owned(), "x-test-consumer".to_owned()),
    ])
}

struct SetContext {
    entries: BTreeMap<String, String>,
}

impl Filter for SetContext {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(SetContext {
            entries: config.entries,
        })
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    fn reads(&self) -> Reads {
        self.entries
            .values()
            .fold(Reads::default(), |reads, header| {
                reads.request_header(header)
            })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        for (key, header) in &self.entries {
            if let Some(value) = request.header(header)
                && let Err(error) = request.set_context(key, &value)
            {
                let message = format!("cannot set `{key}`: {error}");
                return Action::Respond(Reply::error(500, "FILTER_FAILED", &message, request));
            }
        }
        Action::Continue
    }
}

gateway_sdk::export_filter!(SetContext);
