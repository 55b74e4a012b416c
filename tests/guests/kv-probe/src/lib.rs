//! A filter that exercises the `kv` capability, so tests can check the gateway's stores.
//!
//! Request phase: a request with `x-claim: <token>` claims the token with compare-and-swap and
//! is answered 409 if another request claimed it first; every passing request increments the
//! `hits` counter (with the configured TTL) and carries the new count upstream as `x-hits`.
//! Response phase: the response carries the counter's current value as `x-hits-now`.
//!
//! Config:
//! - `mode`: `increment` (the default) counts with `kv::increment`; `cas` reads `hits` and
//!   writes it back with compare-and-swap, trying again when another writer got there first,
//!   at most 100 times before answering 503 `KV_CONTENDED`: concurrent requests must never lose
//!   a count either way. A compare-and-swap sets the entry's whole lifetime, so in `cas` mode
//!   the TTL restarts with each count (a sliding window, not a fixed one).
//! - `on_kv_error`: what a request gets when the store cannot answer (`is_unavailable`):
//!   `closed` (the default) answers 500 `KV_FAILED`; `open` lets it through uncounted, carrying
//!   `x-kv: unavailable` instead of `x-hits`, and the response carries `x-hits-now: unavailable`.
//!   Whatever the choice, a refusal (a counter that is not an integer) answers 500 `KV_FAILED`.

use std::time::Duration;

use gateway_sdk::{Action, Filter, Headers, Reply, Request, Response, kv};
use serde::Deserialize;

/// Compare-and-swap rounds before a count gives up.
const CAS_TRIES: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How long the `hits` counter lives after its first increment.
    #[serde(default)]
    ttl_ms: Option<u64>,
    /// How `hits` is counted.
    #[serde(default)]
    mode: Mode,
    /// What a request gets when the store cannot answer.
    #[serde(default)]
    on_kv_error: OnKvError,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Increment,
    Cas,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnKvError {
    #[default]
    Closed,
    Open,
}

pub struct KvProbe {
    ttl: Option<Duration>,
    mode: Mode,
    on_kv_error: OnKvError,
}

/// Why a request phase did not count.
enum Stop {
    /// The token was claimed before.
    Claimed,
    /// A kv operation failed.
    Kv(gateway_sdk::Error),
    /// In `cas` mode: `hits` cannot be counted on, in the store's own words.
    NotACount(&'static str),
    /// In `cas` mode: every compare-and-swap lost to another writer.
    Contended,
}

impl From<gateway_sdk::Error> for Stop {
    fn from(error: gateway_sdk::Error) -> Self {
        Stop::Kv(error)
    }
}

fn claim(token: &str) -> Result<(), Stop> {
    if kv::compare_and_swap(&format!("claim:{token}"), None, b"claimed", None)? {
        Ok(())
    } else {
        Err(Stop::Claimed)
    }
}

fn failed(message: &str, request: &Request) -> Action {
    Action::Respond(Reply::error(500, "KV_FAILED", message, request))
}

impl KvProbe {
    /// Whether the request goes on when the store cannot answer.
    fn fails_open(&self, error: &gateway_sdk::Error) -> bool {
        self.on_kv_error == OnKvError::Open && error.is_unavailable()
    }

    fn count(&self) -> Result<i64, Stop> {
        match self.mode {
            Mode::Increment => Ok(kv::increment("hits", 1, self.ttl)?),
            Mode::Cas => self.count_by_swapping(),
        }
    }

    /// Reads `hits` and writes it back one higher if nobody wrote in between, until it wins.
    fn count_by_swapping(&self) -> Result<i64, Stop> {
        for _ in 0..CAS_TRIES {
            let current = kv::get("hits")?;
            let count = match current.as_deref() {
                None => 0,
                Some(text) => std::str::from_utf8(text)
                    .ok()
                    .and_then(|text| text.parse::<i64>().ok())
                    .ok_or(Stop::NotACount("the value is not an integer"))?,
            };
            let next = count
                .checked_add(1)
                .ok_or(Stop::NotACount("the increment overflows a 64-bit integer"))?;
            if kv::compare_and_swap("hits", current.as_deref(), next.to_string(), self.ttl)? {
                return Ok(next);
            }
        }
        Err(Stop::Contended)
    }
}

impl Filter for KvProbe {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(KvProbe {
            ttl: config.ttl_ms.map(Duration::from_millis),
            mode: config.mode,
            on_kv_error: config.on_kv_error,
        })
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let counted = match request.header("x-claim") {
            Some(token) => claim(&token).and_then(|()| self.count()),
            None => self.count(),
        };
        let stamped = match counted {
            Ok(hits) => request.set_header("x-hits", &hits.to_string()),
            Err(Stop::Kv(error)) if self.fails_open(&error) => {
                request.set_header("x-kv", "unavailable")
            }
            Err(Stop::Claimed) => {
                return Action::Respond(Reply::error(
                    409,
                    "ALREADY_CLAIMED",
                    "token already claimed",
                    request,
                ));
            }
            Err(Stop::Kv(error)) => return failed(error.message(), request),
            Err(Stop::NotACount(reason)) => return failed(reason, request),
            Err(Stop::Contended) => {
                let message = format!("`hits` changed under {CAS_TRIES} compare-and-swaps");
                return Action::Respond(Reply::error(503, "KV_CONTENDED", &message, request));
            }
        };
        match stamped {
            Ok(()) => Action::Continue,
            Err(error) => failed(error.message(), request),
        }
    }

    fn on_response(&self, request: &Request, response: &mut Response) -> Action {
        let now = match kv::get_string("hits") {
            Ok(hits) => hits.unwrap_or_else(|| "0".to_owned()),
            Err(error) if self.fails_open(&error) => "unavailable".to_owned(),
            Err(error) => return failed(error.message(), request),
        };
        match response.set_header("x-hits-now", &now) {
            Ok(()) => Action::Continue,
            Err(error) => failed(error.message(), request),
        }
    }
}

gateway_sdk::export_filter!(KvProbe);

#[cfg(test)]
mod tests {
    use gateway_sdk::serde_json::json;
    use gateway_sdk::testing::{KvFailure, TestHost, TestRequest, TestResponse};

    use super::*;

    fn status(action: &Action) -> Option<u16> {
        action.reply().map(|reply| reply.status)
    }

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
        assert_eq!(status(&host.on_request(&mut again)), Some(409));
        let mut preloaded = TestRequest::get("/").with_header("x-claim", "used");
        assert_eq!(status(&host.on_request(&mut preloaded)), Some(409));
        assert_eq!(host.kv_get("hits").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn counts_with_compare_and_swap_from_preloaded_state() {
        let mut host = TestHost::<KvProbe>::new(json!({ "mode": "cas" })).expect("accepted");
        let mut request = TestRequest::get("/");
        assert!(host.on_request(&mut request).is_continue());
        assert_eq!(request.header("x-hits").as_deref(), Some("1"));
        host.kv_set("hits", "41", None);
        let mut request = TestRequest::get("/");
        host.on_request(&mut request);
        assert_eq!(request.header("x-hits").as_deref(), Some("42"));
        assert_eq!(host.kv_get("hits").as_deref(), Some(&b"42"[..]));
    }

    #[test]
    fn a_counter_that_is_not_an_integer_is_reported_in_both_modes() {
        for mode in ["increment", "cas"] {
            let mut host = TestHost::<KvProbe>::new(json!({ "mode": mode })).expect("accepted");
            host.kv_set("hits", "lots", None);
            let action = host.on_request(&mut TestRequest::get("/"));
            assert_eq!(status(&action), Some(500), "{mode}");
            let body = action.reply().map(Reply::body_text).unwrap_or_default();
            assert!(body.contains("not an integer"), "{mode}: {body}");
        }
    }

    #[test]
    fn an_unavailable_store_fails_closed_by_default() {
        for mode in ["increment", "cas"] {
            let mut host = TestHost::<KvProbe>::new(json!({ "mode": mode })).expect("accepted");
            host.kv_fails(KvFailure::Unavailable);
            let mut request = TestRequest::get("/");
            let action = host.on_request(&mut request);
            assert_eq!(status(&action), Some(500), "{mode}");
            let body = action.reply().map(Reply::body_text).unwrap_or_default();
            assert!(body.contains("KV_FAILED"), "{mode}: {body}");
            let mut response = TestResponse::new(200);
            let action = host.on_response(&request, &mut response);
            assert_eq!(status(&action), Some(500), "{mode}");
        }
    }

    #[test]
    fn an_unavailable_store_lets_requests_through_when_open() {
        for failure in [KvFailure::Unavailable, KvFailure::Timeout] {
            for mode in ["increment", "cas"] {
                let config = json!({ "mode": mode, "on_kv_error": "open" });
                let mut host = TestHost::<KvProbe>::new(config).expect("accepted");
                host.kv_fails(failure);
                let mut request = TestRequest::get("/").with_header("x-claim", "t1");
                assert!(host.on_request(&mut request).is_continue(), "{mode}");
                assert_eq!(request.header("x-kv").as_deref(), Some("unavailable"));
                assert_eq!(request.header("x-hits"), None);
                let mut response = TestResponse::new(200);
                assert!(host.on_response(&request, &mut response).is_continue());
                assert_eq!(
                    response.header("x-hits-now").as_deref(),
                    Some("unavailable")
                );

                host.kv_recovers();
                let mut request = TestRequest::get("/");
                host.on_request(&mut request);
                assert_eq!(request.header("x-hits").as_deref(), Some("1"), "{mode}");
            }
        }
    }

    #[test]
    fn a_refusal_is_not_failed_open() {
        let config = json!({ "on_kv_error": "open" });
        let mut host = TestHost::<KvProbe>::new(config).expect("accepted");
        host.kv_set("hits", "lots", None);
        assert_eq!(
            status(&host.on_request(&mut TestRequest::get("/"))),
            Some(500)
        );
    }

    #[test]
    fn unknown_options_are_refused() {
        let refused = TestHost::<KvProbe>::new(json!({ "on_kv_error": "maybe" }))
            .err()
            .expect("refused");
        assert!(refused.contains("on_kv_error"), "{refused}");
    }
}
