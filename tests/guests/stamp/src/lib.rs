//! A filter whose builds differ: the default stamps responses `x-stamp: blue`, the `green`
//! feature stamps `green`, and `broken-init` traps while starting. Hot-reload tests swap these
//! files under load and check which one answers.

// Natively the export is compiled out and nothing else uses the filter: it exists for Wasm.
#![cfg_attr(not(target_family = "wasm"), allow(dead_code))]

use gateway_sdk::{Action, Filter, Headers, Phases, Request, Response};
use serde::Deserialize;

const STAMP: &str = if cfg!(feature = "green") {
    "green"
} else {
    "blue"
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Also stamps `x-stamp-note` with this text, so config edits can be seen too.
    #[serde(default)]
    note: Option<String>,
}

struct Stamp {
    note: Option<String>,
}

impl Filter for Stamp {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if cfg!(feature = "broken-init") {
            panic!("this build cannot start");
        }
        Ok(Stamp { note: config.note })
    }

    fn phases(&self) -> Phases {
        Phases::RESPONSE
    }

    fn on_response(&self, _request: &Request, response: &mut Response) -> Action {
        // The values are constants or came through a YAML string: the host accepts them.
        let _ = response.set_header("x-stamp", STAMP);
        if let Some(note) = &self.note {
            let _ = response.set_header("x-stamp-note", note);
        }
        Action::Continue
    }
}

gateway_sdk::export_filter!(Stamp);
