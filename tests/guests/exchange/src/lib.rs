//! A filter that uses what contract 0.2 added, driven by its config, so end-to-end tests can
//! check bodies, the request context and filter metrics through the SDK and the real gateway.
//!
//! Request phase, in this order:
//! - with `request_body` set (a limit), reads the request body: stamps its length as
//!   `x-request-body-length` (or `too-large`), answers `too_large_status` if the body is too
//!   large and that is set, panics if `panic_with_body` is set, and appends `append_to_request`
//!   to the body if set;
//! - sets each `set_context` entry;
//! - copies each `context_to_request_header` entry (key: header) into the request, if present.
//!
//! Response phase:
//! - copies each `context_to_response_header` entry into the response, if present;
//! - with `response_body` set, stamps `x-response-body-length` and, if `upper_response`, replaces
//!   the body with its upper-case form.
//!
//! Every phase counts itself in `phases_total{phase=...}`, and every body read is observed in
//! the `body_bytes` histogram.

use std::collections::BTreeMap;

use gateway_sdk::metrics::{Counter, Histogram};
use gateway_sdk::{Action, Body, Filter, Headers, Reads, Reply, Request, Response};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    request_body: Option<u32>,
    #[serde(default)]
    response_body: Option<u32>,
    #[serde(default)]
    too_large_status: Option<u16>,
    #[serde(default)]
    panic_with_body: bool,
    #[serde(default)]
    append_to_request: Option<String>,
    #[serde(default)]
    upper_response: bool,
    #[serde(default)]
    set_context: BTreeMap<String, String>,
    #[serde(default)]
    context_to_request_header: BTreeMap<String, String>,
    #[serde(default)]
    context_to_response_header: BTreeMap<String, String>,
}

pub struct Exchange {
    config: Config,
    phases: Counter,
    body_bytes: Histogram,
}

fn length_of(body: &Body) -> String {
    match body.bytes() {
        Some(bytes) => bytes.len().to_string(),
        None => "too-large".to_owned(),
    }
}

fn failed(reason: &gateway_sdk::Error, request: &Request) -> Action {
    Action::Respond(Reply::error(
        500,
        "EXCHANGE_FAILED",
        reason.message(),
        request,
    ))
}

impl Filter for Exchange {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Exchange {
            config,
            phases: Counter::with_labels(
                "phases_total",
                "Phases run",
                &[("phase", &["request", "response"])],
            ),
            body_bytes: Histogram::new("body_bytes", "Sizes of bodies read", &[16.0, 1024.0]),
        })
    }

    fn reads(&self) -> Reads {
        let mut reads = Reads::default();
        if let Some(limit) = self.config.request_body {
            reads = reads.request_body(limit);
        }
        if let Some(limit) = self.config.response_body {
            reads = reads.response_body(limit);
        }
        for key in self
            .config
            .context_to_request_header
            .keys()
            .chain(self.config.context_to_response_header.keys())
        {
            reads = reads.context(key);
        }
        reads
    }

    fn on_request(&self, request: &mut Request) -> Action {
        self.phases.inc_with(&["request"]);
        if let Some(body) = request.body() {
            if let Some(bytes) = body.bytes() {
                self.body_bytes.observe(bytes.len() as f64);
            }
            if let Err(error) = request.set_header("x-request-body-length", &length_of(&body)) {
                return failed(&error, request);
            }
            if body.is_too_large()
                && let Some(status) = self.config.too_large_status
            {
                return Action::Respond(Reply::error(
                    status,
                    "BODY_TOO_LARGE",
                    "the request body is too large",
                    request,
                ));
            }
            assert!(!self.config.panic_with_body, "panicking with a body held");
            if let (Some(bytes), Some(suffix)) = (body.bytes(), &self.config.append_to_request) {
                let mut replaced = bytes.to_vec();
                replaced.extend_from_slice(suffix.as_bytes());
                if let Err(error) = request.set_body(replaced) {
                    return failed(&error, request);
                }
            }
        }
        for (key, value) in &self.config.set_context {
            if let Err(error) = request.set_context(key, value) {
                return failed(&error, request);
            }
        }
        for (key, header) in &self.config.context_to_request_header {
            if let Some(value) = request.context(key)
                && let Err(error) = request.set_header(header, &value)
            {
                return failed(&error, request);
            }
        }
        Action::Continue
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        self.phases.inc_with(&["response"]);
        for (key, header) in &self.config.context_to_response_header {
            if let Some(value) = request.context(key)
                && let Err(error) = response.set_header(header, &value)
            {
                return failed(&error, request);
            }
        }
        if let Some(body) = response.body() {
            if let Some(bytes) = body.bytes() {
                self.body_bytes.observe(bytes.len() as f64);
            }
            if let Err(error) = response.set_header("x-response-body-length", &length_of(&body)) {
                return failed(&error, request);
            }
            if self.config.upper_response
                && let Some(bytes) = body.bytes()
                && let Err(error) = response.set_body(bytes.to_ascii_uppercase())
            {
                return failed(&error, request);
            }
        }
        Action::Continue
    }
}

gateway_sdk::export_filter!(Exchange);
