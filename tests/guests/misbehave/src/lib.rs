//! A filter that misbehaves when asked to, so tests can check the gateway contains it.
//!
//! The request header `x-misbehave` picks the behaviour for the request phase and
//! `x-misbehave-response` for the response phase: `trap` panics, `loop` never returns, `alloc`
//! allocates until the memory cap stops it, `probe` tries to reach the environment, the file
//! system and the network and reports what it got in the request header `x-probe`. Any other
//! value, or none, passes the request on; the response is stamped with `x-misbehave-calls`,
//! this instance's count of request phases, so tests can see instances being reused and replaced.

// Natively the export is compiled out and nothing else uses the filter: it exists for Wasm.
#![cfg_attr(not(target_family = "wasm"), allow(dead_code))]

use std::cell::Cell;

use gateway_sdk::{Action, Filter, Headers, Request, Response};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// When set, init rejects the configuration with this message.
    #[serde(default)]
    reject: Option<String>,
}

struct Misbehave {
    calls: Cell<u64>,
}

fn act(behaviour: Option<String>) {
    match behaviour.as_deref() {
        Some("trap") => panic!("misbehaving on purpose"),
        Some("loop") => {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        Some("alloc") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => {}
    }
}

/// What a filter can reach of the machine: each part is `denied` unless it got something.
fn probe() -> String {
    let variables = std::env::vars().count();
    let arguments = std::env::args().count();
    let files = match std::fs::read_dir("/") {
        Ok(entries) => format!("listed {}", entries.count()),
        Err(_) => "denied".to_owned(),
    };
    let network = match std::net::TcpStream::connect("127.0.0.1:80") {
        Ok(_) => "connected".to_owned(),
        Err(_) => "denied".to_owned(),
    };
    format!("env={variables};args={arguments};fs={files};net={network}")
}

impl Filter for Misbehave {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        match config.reject {
            Some(message) => Err(message),
            None => Ok(Misbehave {
                calls: Cell::new(0),
            }),
        }
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let behaviour = request.header("x-misbehave");
        if behaviour.as_deref() == Some("probe")
            && let Err(error) = request.set_header("x-probe", &probe())
        {
            panic!("cannot report the probe: {error}");
        }
        act(behaviour);
        self.calls.set(self.calls.get() + 1);
        Action::Continue
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        act(request.header("x-misbehave-response"));
        // A header the host refuses would be a bug in this test filter, not something to hide.
        if let Err(error) = response.set_header("x-misbehave-calls", &self.calls.get().to_string())
        {
            panic!("cannot stamp the response: {error}");
        }
        Action::Continue
    }
}

gateway_sdk::export_filter!(Misbehave);
