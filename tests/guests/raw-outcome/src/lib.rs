//! A filter that goes around the SDK's checks and returns, through the raw bindings, an outcome the
//! SDK would refuse where the filter made it: the gateway must refuse it too, since a filter
//! need not be written with the SDK.
//!
//! Its configuration is the name of the outcome (a JSON string); the request phase returns it:
//! - `"oversized-body"`: a body longer than the 16-byte limit it declared;
//! - `"context-flood"`: more context entries than a request may hold;
//! - `"invalid-header"`: a header value with a line break;
//! - `"unknown-metric"`: an update of a metric it never declared;
//! - `"fine"`: a valid header edit, `x-raw: ok`, so a test can see the filter ran.

// Natively the export is compiled out and nothing else uses the filter: it exists for Wasm.
#![cfg_attr(not(target_family = "wasm"), allow(dead_code, unused_imports))]

use std::cell::RefCell;

use gateway_rules::changes::{Change, Writer};
use gateway_sdk::wit::exports::gateway::filter::handler::{
    Action, Environment, Guest, Outcome, Phases, Registration, RequestFields,
};
use gateway_sdk::wit::gateway::filter::http::{Request, Response};

thread_local! {
    static OUTCOME: RefCell<String> = const { RefCell::new(String::new()) };
}

struct RawOutcome;

fn outcome(name: &str) -> Outcome {
    let mut changes = Writer::default();
    match name {
        "oversized-body" => changes.push(&Change::SetBody(&[b'x'; 17])),
        "context-flood" => {
            for index in 0..40 {
                changes.push(&Change::SetContext(&format!("flood.{index}"), "v"));
            }
        }
        "invalid-header" => changes.push(&Change::SetHeader("x-raw", "line\r\nbreak")),
        "unknown-metric" => changes.push(&Change::Metric {
            metric: 7,
            series: 0,
            value: 1.0,
        }),
        _ => changes.push(&Change::SetHeader("x-raw", "ok")),
    }
    Outcome {
        changes: changes.finish(),
        action: Action::Continue,
    }
}

impl Guest for RawOutcome {
    fn init(config: String, _environment: Environment) -> Result<Registration, String> {
        let name: String = gateway_sdk::serde_json::from_str(&config)
            .map_err(|error| format!("the config is the outcome's name: {error}"))?;
        OUTCOME.with(|outcome| *outcome.borrow_mut() = name);
        Ok(Registration {
            phases: Phases::REQUEST,
            request_fields: RequestFields::empty(),
            request_headers: Vec::new(),
            response_headers: Vec::new(),
            context_keys: Vec::new(),
            request_body: Some(16),
            response_body: None,
            metrics: Vec::new(),
        })
    }

    fn on_request(_request: &Request, _input: Option<Vec<u8>>) -> Outcome {
        OUTCOME.with(|name| outcome(&name.borrow()))
    }

    fn on_response(
        _request: &Request,
        _response: &Response,
        _status: u16,
        _input: Option<Vec<u8>>,
    ) -> Outcome {
        Outcome {
            changes: Vec::new(),
            action: Action::Continue,
        }
    }
}

#[cfg(target_family = "wasm")]
gateway_sdk::wit::__export_filter_world!(RawOutcome with_types_in gateway_sdk::wit);
