//! A filter that exercises the `outbound` capability, so tests can check the gateway's grants,
//! timeouts and limits on calls to services.
//!
//! Request phase: sends `GET <path>` to `<service>`, then answers the client itself:
//! - with 200 and `{"status": <the service's status>, "body": <its body as text>,
//!   "header_x_served": <its `x-served` header, or null>}` when the service answered, whatever
//!   its status;
//! - with 502 and `{"error": <kind>, "message": <the gateway's reason>}` when the call brought
//!   no answer, `kind` one of `not_allowed`, `bad_request`, `timeout`, `too_large`, `failed`.
//!
//! The service is the request's `x-outbound-service` header, else the config's `service`; with
//! neither the call names no service, which no route grants. The path and query is the request's
//! `x-outbound-path` header, else the config's `path`, else `/`. The config's `timeout_ms` is
//! the call's timeout.

use std::time::Duration;

use gateway_sdk::serde_json::json;
use gateway_sdk::{Action, ErrorKind, Filter, Headers, Phases, Reads, Reply, Request, outbound};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The service to call when the request names none.
    #[serde(default)]
    service: Option<String>,
    /// The path and query to send when the request names none.
    #[serde(default)]
    path: Option<String>,
    /// The call's timeout; without it, the service's timeouts and the phase's deadline bound it.
    #[serde(default)]
    timeout_ms: Option<u64>,
}

pub struct OutboundProbe {
    service: String,
    path: String,
    timeout: Option<Duration>,
}

/// The name tests match on for each way a call fails.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotAllowed => "not_allowed",
        ErrorKind::Refused => "bad_request",
        ErrorKind::Timeout => "timeout",
        ErrorKind::TooLarge => "too_large",
        ErrorKind::Unavailable => "failed",
        // A kind a later SDK adds shows up by name instead of failing the build of this probe.
        _ => "unknown",
    }
}

fn json_reply(status: u16, body: &gateway_sdk::serde_json::Value) -> Action {
    Action::Respond(
        Reply::new(status)
            .with_header("content-type", "application/json")
            .with_body(body.to_string()),
    )
}

impl Filter for OutboundProbe {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(OutboundProbe {
            service: config.service.unwrap_or_default(),
            path: config.path.unwrap_or_else(|| "/".to_owned()),
            timeout: config.timeout_ms.map(Duration::from_millis),
        })
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    fn reads(&self) -> Reads {
        Reads::default()
            .request_header("x-outbound-service")
            .request_header("x-outbound-path")
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let service = request
            .header("x-outbound-service")
            .unwrap_or_else(|| self.service.clone());
        let path = request
            .header("x-outbound-path")
            .unwrap_or_else(|| self.path.clone());
        let mut call = outbound::Request::get(&service, &path);
        if let Some(timeout) = self.timeout {
            call = call.timeout(timeout);
        }
        match call.send() {
            Ok(response) => json_reply(
                200,
                &json!({
                    "status": response.status(),
                    "body": response.text(),
                    "header_x_served": response.header("x-served"),
                }),
            ),
            Err(error) => json_reply(
                502,
                &json!({ "error": kind_name(error.kind()), "message": error.message() }),
            ),
        }
    }
}

gateway_sdk::export_filter!(OutboundProbe);

#[cfg(test)]
mod tests {
    use gateway_sdk::serde_json::{Value, json};
    use gateway_sdk::testing::{OutboundFailure, TestHost, TestOutboundResponse, TestRequest};

    use super::*;

    /// The probe's answer: its status and its JSON body.
    fn answer(host: &mut TestHost<OutboundProbe>, request: TestRequest) -> (u16, Value) {
        let mut request = request;
        let action = host.on_request(&mut request);
        let reply = action.reply().expect("the probe always answers");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let body = gateway_sdk::serde_json::from_slice(&reply.body).expect("JSON");
        (reply.status, body)
    }

    fn probe(config: Value) -> TestHost<OutboundProbe> {
        TestHost::new(config).expect("accepted")
    }

    #[test]
    fn a_granted_service_answers_through_the_probe() {
        let mut host = probe(json!({ "service": "idp", "path": "/keys", "timeout_ms": 250 }));
        host.grant_service("idp", |sent| {
            Ok(TestOutboundResponse::new(404)
                .with_header("X-Served", "idp-1")
                .with_body(format!("no {}", sent.path_and_query)))
        });
        let (status, body) = answer(&mut host, TestRequest::get("/"));
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({ "status": 404, "body": "no /keys", "header_x_served": "idp-1" })
        );
        let sent = host.outbound_requests();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0].method.as_str(), sent[0].service.as_str()),
            ("GET", "idp")
        );
        assert_eq!(sent[0].timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn the_request_may_name_the_service_and_path() {
        let mut host = probe(json!({ "service": "idp" }));
        host.grant_service("other", |sent| {
            Ok(TestOutboundResponse::new(200).with_body(sent.path_and_query.clone()))
        });
        let request = TestRequest::get("/")
            .with_header("x-outbound-service", "other")
            .with_header("x-outbound-path", "/ping?x=1");
        let (status, body) = answer(&mut host, request);
        assert_eq!(status, 200);
        assert_eq!(body["body"], "/ping?x=1");
        assert_eq!(body["header_x_served"], Value::Null);
        assert_eq!(host.outbound_requests()[0].timeout, None);
    }

    #[test]
    fn a_service_not_granted_is_not_allowed() {
        let mut host = probe(json!({ "service": "idp" }));
        host.grant_service("other", |_| panic!("never called"));
        let (status, body) = answer(&mut host, TestRequest::get("/"));
        assert_eq!(status, 502);
        assert_eq!(body["error"], "not_allowed");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|message| message.contains("`idp`")),
            "{body}"
        );
        let (_, body) = answer(&mut probe(json!({})), TestRequest::get("/"));
        assert_eq!(body["error"], "not_allowed", "no service named at all");
    }

    #[test]
    fn each_failure_has_its_kind() {
        let cases = [
            (OutboundFailure::Timeout, "timeout"),
            (OutboundFailure::TooLarge, "too_large"),
            (
                OutboundFailure::Failed("connection refused".to_owned()),
                "failed",
            ),
        ];
        for (failure, kind) in cases {
            let mut host = probe(json!({ "service": "idp", "timeout_ms": 10 }));
            host.grant_service("idp", move |_| Err(failure.clone()));
            let (status, body) = answer(&mut host, TestRequest::get("/"));
            assert_eq!((status, body["error"].as_str()), (502, Some(kind)));
        }
    }

    #[test]
    fn a_path_the_gateway_cannot_send_is_a_bad_request() {
        let mut host = probe(json!({ "service": "idp" }));
        host.grant_service("idp", |_| panic!("never called"));
        let request = TestRequest::get("/").with_header("x-outbound-path", "no-slash");
        let (status, body) = answer(&mut host, request);
        assert_eq!((status, body["error"].as_str()), (502, Some("bad_request")));
        assert_eq!(
            body["message"],
            "`no-slash` is not a path and query starting with `/`"
        );
    }

    #[test]
    fn unknown_options_are_refused() {
        let refused = TestHost::<OutboundProbe>::new(json!({ "services": ["idp"] }))
            .err()
            .expect("refused");
        assert!(refused.contains("services"), "{refused}");
    }
}
