//! A filter that exercises the `kv` capability, so tests can check the gateway's store.
//!
//! Request phase: a request with `x-claim: <token>` claims the token with compare-and-swap and
//! is answered 409 if another request claimed it first; every passing request increments the
//! `hits` counter (with the configured TTL) and carries the new count upstream as `x-hits`.
//! Response phase: the response carries the counter's current value as `x-hits-now`.

use std::time::Duration;

use gateway_sdk::{Action, Filter, Headers, Reply, Request, Response, kv};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How long the `hits` counter lives after its first increment.
    #[serde(default)]
    ttl_ms: Option<u64>,
}

pub struct KvProbe {
    ttl: Option<Duration>,
}

fn failed(error: &gateway_sdk::Error, request: &Request) -> Action {
    Action::Respond(Reply::error(500, "KV_FAILED", error.message(), request))
}

impl Filter for KvProbe {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(KvProbe {
            ttl: config.ttl_ms.map(Duration::from_millis),
        })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        if let Some(token) = request.header("x-claim") {
            match kv::compare_and_swap(&format!("claim:{token}"), None, b"claimed", None) {
                Ok(true) => {}
                Ok(false) => {
                    return Action::Respond(Reply::error(
                        409,
                        "ALREADY_CLAIMED",
                        "token already claimed",
                        request,
                    ));
                }
                Err(error) => return failed(&error, request),
            }
        }
        let hits = match kv::increment("hits", 1, self.ttl) {
            Ok(hits) => hits,
            Err(error) => return failed(&error, request),
        };
        match request.set_header("x-hits", &hits.to_string()) {
            Ok(()) => Action::Continue,
            Err(error) => failed(&error, request),
        }
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        let now = kv::get_string("hits").unwrap_or_else(|| "0".to_owned());
        match response.set_header("x-hits-now", &now) {
            Ok(()) => Action::Continue,
            Err(error) => failed(&error, request),
        }
    }
}

gateway_sdk::export_filter!(KvProbe);

#[cfg(test)]
mod tests {
    use gateway_sdk::serde_json::json;
    use gateway_sdk::testing::{TestHost, TestRequest, TestResponse};

    use super::*;

    #[test]
    fn counts_in_a_window_that_the_test_clock_moves() {
        let mut host = TestHost::<KvProbe>::new(json!({ "ttl_ms": 1000 })).expect("accepted");
        for expected in ["1", "2"] {
            let mut request = TestRequest::get("/");
            assert!(host.on_request(&mut request).is_continue());
            assert_eq!(request.header("x-hits").as_deref(), Some(expected));
        }
        host.advance(Duration::from_millis(1000));
        let mut request = TestRequest::get("/");
        host.on_request(&mut request);
        assert_eq!(
            request.header("x-hits").as_deref(),
            Some("1"),
            "the window ended"
        );
        let mut response = TestResponse::new(200);
        host.on_response(&request, &mut response);
        assert_eq!(response.header("x-hits-now").as_deref(), Some("1"));
    }

    #[test]
    fn a_token_is_claimed_once() {
        let mut host = TestHost::<KvProbe>::new(json!({})).expect("accepted");
        host.kv_set("claim:used", "claimed", None);
        let mut request = TestRequest::get("/").with_header("x-claim", "fresh");
        assert!(host.on_request(&mut request).is_continue());
        let mut again = TestRequest::get("/").with_header("x-claim", "fresh");
        assert_eq!(
            host.on_request(&mut again).reply().map(|r| r.status),
            Some(409)
        );
        let mut preloaded = TestRequest::get("/").with_header("x-claim", "used");
        assert_eq!(
            host.on_request(&mut preloaded).reply().map(|r| r.status),
            Some(409)
        );
        assert_eq!(host.kv_get("hits").as_deref(), Some(&b"1"[..]));
    }
}
