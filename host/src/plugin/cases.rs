//! `gateway plugin test`: runs a compiled filter in the gateway's own runtime against a YAML list
//! of cases and reports every mismatch.
//!
//! A case gives the filter's config, a request, and what should happen:
//!
//! ```yaml
//! cases:
//!   - name: strips the prefix
//!     config: { path: { strip_prefix: /users } }
//!     request: { method: GET, path: "/users/42?x=1", headers: { cookie: a=b } }
//!     expect:
//!       action: continue              # or respond
//!       path: /42
//!       query: x=1
//!       headers: { x-tenant: acme }   # each present with exactly these values
//!       absent_headers: [cookie]
//!     response: { status: 200, headers: { server: nginx } }   # then the response phase
//!     expect_response:
//!       status: 200
//!       absent_headers: [server]
//!   - name: counts requests in the key-value store
//!     kv: { hits: "41" }              # state before the case
//!     expect_kv: { hits: "42", gone: ~ }
//!   - name: reads the body and what an earlier filter found
//!     request:
//!       method: POST
//!       body: '{"order": 7}'          # the request body, as the filter reads it
//!       context: { auth.subject: alice }   # entries an earlier filter set
//!     expect:
//!       body: '{"order": 7, "by": "alice"}'   # continue: the body sent upstream
//!       context: { order.id: "7", auth.scratch: ~ }
//!     expect_metrics:                 # after both phases; histograms by _count and _sum
//!       orders_total{kind="new"}: 1
//!       order_bytes_count: 1
//!   - name: refuses a bad regex
//!     config: { path: { regex: { pattern: "(", replacement: "" } } }
//!     expect_init_error: invalid regex  # a part of the message
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;

use bytes::Bytes;
use gateway_config::{FailurePolicy, FilterDefinition};
use gateway_filter::metrics::{MetricRegistry, SeriesValue};
use gateway_filter::{
    FilterEngine, FilterPool, FilterReply, HeldBody, LoadedFilter, Phases, RequestHead,
    ResponseHead,
};
use gateway_kv::{KvBackend, KvStores, Limits, MemoryStore};
use gateway_rules::context::Context;

use crate::error::{Error, Result};

/// The cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows; printed with its result.
    pub name: String,
    /// The filter's configuration, as a route's `config` would give it.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// The request the request phase sees.
    #[serde(default)]
    pub request: CaseRequest,
    /// What the request phase should do.
    #[serde(default)]
    pub expect: Option<Expectation>,
    /// The upstream's response the response phase sees (default: 200, no headers). Ignored if
    /// the request phase answered: the response phase then sees that answer.
    #[serde(default)]
    pub response: Option<CaseResponse>,
    /// What the response phase should do; the response phase runs only if this is given.
    #[serde(default)]
    pub expect_response: Option<Expectation>,
    /// The config must be refused, with a message containing this text.
    #[serde(default)]
    pub expect_init_error: Option<String>,
    /// Key-value entries the filter finds in its store before the case runs.
    #[serde(default)]
    pub kv: BTreeMap<String, String>,
    /// Key-value entries after the case ran: a text value, or `~` for absent.
    #[serde(default)]
    pub expect_kv: BTreeMap<String, Option<String>>,
    /// Metric series after the case ran, as Prometheus names them: `name` or
    /// `name{label="value"}` for a counter, `name_count` and `name_sum` for a histogram.
    #[serde(default)]
    pub expect_metrics: BTreeMap<String, f64>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// One header value or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Values {
    One(String),
    Many(Vec<String>),
}

impl Values {
    fn list(&self) -> Vec<String> {
        match self {
            Values::One(value) => vec![value.clone()],
            Values::Many(values) => values.clone(),
        }
    }
}

/// A request in a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    #[serde(default = "default_method")]
    pub method: String,
    /// Path with optional `?query`, already normalised as the gateway would.
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Values>,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// Parameters as captured by a route's path pattern.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// The request body (default: none), read by a filter that declared a limit for it.
    #[serde(default)]
    pub body: Option<String>,
    /// Context entries set by filters earlier in the chain.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
}

impl Default for CaseRequest {
    fn default() -> Self {
        CaseRequest {
            method: default_method(),
            path: default_path(),
            headers: BTreeMap::new(),
            authority: None,
            client_ip: None,
            params: BTreeMap::new(),
            body: None,
            context: BTreeMap::new(),
        }
    }
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

/// An upstream response in a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseResponse {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, Values>,
    /// The upstream's body (default: none).
    #[serde(default)]
    pub body: Option<String>,
}

fn default_status() -> u16 {
    200
}

/// What a phase should do. Unset fields are not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// `continue` (default) or `respond`.
    #[serde(default)]
    pub action: ExpectedAction,
    /// Request phase, continue: the path sent upstream.
    #[serde(default)]
    pub path: Option<String>,
    /// Request phase, continue: the query sent upstream (`~` for none).
    #[serde(default, deserialize_with = "present")]
    pub query: Option<Option<String>>,
    /// The status: of the answer (respond) or of the response (response phase).
    #[serde(default)]
    pub status: Option<u16>,
    /// Headers that must be present with exactly these values: on the request (request
    /// phase, continue), the answer (respond) or the response (response phase).
    #[serde(default)]
    pub headers: BTreeMap<String, Values>,
    /// Headers that must be absent, in the same place.
    #[serde(default)]
    pub absent_headers: Vec<String>,
    /// The body, exactly: of the answer (respond), of the request sent upstream (request
    /// phase, continue) or of the response (response phase).
    #[serde(default)]
    pub body: Option<String>,
    /// Text that body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// Context entries after the phase: a value, or `~` for absent.
    #[serde(default)]
    pub context: BTreeMap<String, Option<String>>,
}

/// Distinguishes `query: ~` (must be absent) from no `query` key (not checked).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedAction {
    #[default]
    Continue,
    Respond,
}

/// The outcome of a whole file.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// The readable transcript.
    pub text: String,
}

/// Loads the component once and runs every case against fresh instances of it.
pub fn run(component: &Path, cases_file: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(cases_file).map_err(|source| gateway_config::Error::Read {
            path: cases_file.to_owned(),
            source,
        })?;
    let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
    let file: CaseFile = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        gateway_config::Error::Invalid {
            path: cases_file.to_owned(),
            problems: vec![format!("{}: {}", error.path(), error.inner())],
        }
    })?;
    let engine = FilterEngine::new(KvStores::memory(Limits::default()), None)?;
    let name = component.file_stem().map_or_else(
        || "filter".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    let filter =
        Arc::new(engine.load(&name, component, &FilterDefinition::with_module(component))?);

    let mut report = Report::default();
    let _ = writeln!(
        report.text,
        "{}: {} cases",
        component.display(),
        file.cases.len()
    );
    // Calls into filters are async (a filter on Redis would wait); every case here is on the
    // memory store, run on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    for case in &file.cases {
        let mismatches = runtime.block_on(run_case(&filter, case));
        if mismatches.is_empty() {
            report.passed += 1;
            let _ = writeln!(report.text, "  ok    {}", case.name);
        } else {
            report.failed += 1;
            let _ = writeln!(report.text, "  FAIL  {}", case.name);
            for mismatch in mismatches {
                let _ = writeln!(
                    report.text,
                    "        {}",
                    mismatch.replace('\n', "\n        ")
                );
            }
        }
    }
    let _ = writeln!(
        report.text,
        "{} passed, {} failed",
        report.passed, report.failed
    );
    Ok(report)
}

/// Runs one case; the list of mismatches is empty when it passes.
async fn run_case(filter: &LoadedFilter, case: &Case) -> Vec<String> {
    let mut mismatches = Vec::new();
    // Every case starts from its own store, holding only what the case preloads.
    let kv = Arc::new(MemoryStore::new(Limits::default()));
    let metrics = Arc::new(MetricRegistry::default());
    for (key, value) in &case.kv {
        if let Err(error) = kv.set(&filter.name, key, value.as_bytes().to_vec(), None) {
            return vec![format!("kv {key}: {error}")];
        }
    }
    let filter = Arc::new(filter.with_state(KvBackend::Memory(kv.clone()), metrics.clone()));
    let pool = match FilterPool::new(
        filter.clone(),
        &case.name,
        &case.config,
        FailurePolicy::Closed,
        None,
    )
    .await
    {
        Ok(pool) => pool,
        Err(error) => {
            let message = error.to_string();
            match &case.expect_init_error {
                Some(expected) if message.contains(expected.as_str()) => {}
                Some(expected) => mismatches.push(format!(
                    "init error: expected a message containing {expected:?}, got {message:?}"
                )),
                None => mismatches.push(format!("init failed: {message}")),
            }
            return mismatches;
        }
    };
    if let Some(expected) = &case.expect_init_error {
        mismatches.push(format!(
            "init: expected an error containing {expected:?}, but the config was accepted"
        ));
        return mismatches;
    }

    let mut head = match request_head(&case.request) {
        Ok(head) => head,
        Err(problem) => return vec![format!("request: {problem}")],
    };
    let answer = if pool.phases().contains(Phases::REQUEST) {
        match pool.on_request(&mut head).await {
            Ok(answer) => answer,
            Err(failure) => return vec![format!("request phase failed: {failure}")],
        }
    } else {
        None
    };
    if let Some(expect) = &case.expect {
        check_request_phase(expect, &head, answer.as_ref(), &mut mismatches);
        check_context("request phase", expect, &head, &mut mismatches);
    }

    if let Some(expect) = &case.expect_response {
        let mut response = match (&answer, &case.response) {
            (Some(reply), _) => ResponseHead {
                status: reply.status,
                headers: reply.headers.clone(),
                body: HeldBody::Complete(reply.body.clone()),
            },
            (None, Some(response)) => match response_head(response) {
                Ok(head) => head,
                Err(problem) => return vec![format!("response: {problem}")],
            },
            (None, None) => ResponseHead {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: HeldBody::Complete(Bytes::new()),
            },
        };
        let replaced = if pool.phases().contains(Phases::RESPONSE) {
            match pool.on_response(&mut head, &mut response).await {
                Ok(replaced) => replaced,
                Err(failure) => return vec![format!("response phase failed: {failure}")],
            }
        } else {
            None
        };
        check_context("response phase", expect, &head, &mut mismatches);
        check_response_phase(expect, response, replaced, &mut mismatches);
    }
    for (series, expected) in &case.expect_metrics {
        match metric_value(&metrics, &filter.name, series) {
            Ok(actual) if actual == *expected => {}
            Ok(actual) => mismatches.push(format!(
                "metric {series}: expected {expected}, got {actual}"
            )),
            Err(problem) => mismatches.push(format!("metric {series}: {problem}")),
        }
    }
    for (key, expected) in &case.expect_kv {
        let actual = kv
            .get(&filter.name, key)
            .ok()
            .flatten()
            .map(|value| String::from_utf8_lossy(&value).into_owned());
        if actual != *expected {
            mismatches.push(format!("kv {key}: expected {expected:?}, got {actual:?}"));
        }
    }
    mismatches
}

fn headers_from(values: &BTreeMap<String, Values>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in values {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        for value in value.list() {
            let value =
                HeaderValue::from_str(&value).map_err(|_| format!("bad value for `{name}`"))?;
            headers.append(name.clone(), value);
        }
    }
    Ok(headers)
}

fn request_head(request: &CaseRequest) -> Result<RequestHead, String> {
    let (path, query) = match request.path.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (request.path.clone(), None),
    };
    let mut headers = headers_from(&request.headers)?;
    headers
        .entry(gateway_wire::fields::REQUEST_ID)
        .or_insert(HeaderValue::from_static("plugin-test"));
    let mut context = Context::default();
    for (key, value) in &request.context {
        context
            .set(key, value)
            .map_err(|error| format!("context: {error}"))?;
    }
    Ok(RequestHead {
        method: Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("`{}` is not a method", request.method))?,
        path,
        query,
        headers,
        authority: request.authority.clone(),
        client_ip: request.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        params: request
            .params
            .iter()
            .map(|(name, value)| (Arc::from(name.as_str()), value.clone()))
            .collect(),
        context,
        // As the gateway hands it over: read whole, empty when the request has none.
        body: HeldBody::Complete(Bytes::from(request.body.clone().unwrap_or_default())),
    })
}

fn response_head(response: &CaseResponse) -> Result<ResponseHead, String> {
    Ok(ResponseHead {
        status: StatusCode::from_u16(response.status)
            .map_err(|_| format!("{} is not a status", response.status))?,
        headers: headers_from(&response.headers)?,
        body: HeldBody::Complete(Bytes::from(response.body.clone().unwrap_or_default())),
    })
}

fn check_context(
    place: &str,
    expect: &Expectation,
    head: &RequestHead,
    mismatches: &mut Vec<String>,
) {
    for (key, expected) in &expect.context {
        let actual = head.context.get(key);
        if actual != expected.as_deref() {
            mismatches.push(format!(
                "{place}: context {key}: expected {expected:?}, got {actual:?}"
            ));
        }
    }
}

/// The value of a series named the way Prometheus names it.
fn metric_value(metrics: &MetricRegistry, filter: &str, series: &str) -> Result<f64, String> {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (
            name,
            rest.strip_suffix('}')
                .ok_or("labels must end with `}`")?
                .split(',')
                .filter(|pair| !pair.trim().is_empty())
                .map(|pair| {
                    let (label, value) =
                        pair.split_once('=').ok_or("labels are label=\"value\"")?;
                    Ok((label.trim(), value.trim().trim_matches('"')))
                })
                .collect::<Result<Vec<_>, &str>>()?,
        ),
        None => (series, Vec::new()),
    };
    let (metric, part) = if let Some(base) = name.strip_suffix("_count") {
        (base, Some(false))
    } else if let Some(base) = name.strip_suffix("_sum") {
        (base, Some(true))
    } else {
        (name, None)
    };
    let families = metrics.export();
    let family = families
        .iter()
        .find(|family| &*family.filter == filter && family.name == metric)
        .or_else(|| {
            families
                .iter()
                .find(|family| &*family.filter == filter && family.name == name)
        })
        .ok_or("the filter declared no such metric")?;
    let value = family
        .value(&labels)
        .cloned()
        .ok_or("no series with those labels")?;
    match (value, part) {
        (SeriesValue::Counter(total), _) => Ok(total),
        (SeriesValue::Histogram { count, .. }, Some(false)) => Ok(count as f64),
        (SeriesValue::Histogram { sum, .. }, Some(true)) => Ok(sum),
        (SeriesValue::Histogram { .. }, None) => {
            Err("a histogram is read as name_count or name_sum".to_owned())
        }
    }
}

fn values_of(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

fn check_headers(
    place: &str,
    expect: &Expectation,
    headers: &HeaderMap,
    mismatches: &mut Vec<String>,
) {
    for (name, expected) in &expect.headers {
        let expected = expected.list();
        let actual = values_of(headers, name);
        if actual != expected {
            let actual = if actual.is_empty() {
                "(absent)".to_owned()
            } else {
                format!("{actual:?}")
            };
            mismatches.push(format!(
                "{place} header {name}: expected {expected:?}, got {actual}"
            ));
        }
    }
    for name in &expect.absent_headers {
        let actual = values_of(headers, name);
        if !actual.is_empty() {
            mismatches.push(format!(
                "{place} header {name}: expected absent, got {actual:?}"
            ));
        }
    }
}

fn check_reply(expect: &Expectation, reply: &FilterReply, mismatches: &mut Vec<String>) {
    if let Some(status) = expect.status
        && reply.status.as_u16() != status
    {
        mismatches.push(format!(
            "status: expected {status}, got {}",
            reply.status.as_u16()
        ));
    }
    check_headers("reply", expect, &reply.headers, mismatches);
    check_body(expect, &reply.body, mismatches);
}

fn check_body(expect: &Expectation, body: &[u8], mismatches: &mut Vec<String>) {
    let body = String::from_utf8_lossy(body);
    if let Some(expected) = &expect.body
        && body != *expected
    {
        mismatches.push(format!("body: expected {expected:?}, got {body:?}"));
    }
    if let Some(part) = &expect.body_contains
        && !body.contains(part.as_str())
    {
        mismatches.push(format!(
            "body: expected it to contain {part:?}, got {body:?}"
        ));
    }
}

fn check_request_phase(
    expect: &Expectation,
    head: &RequestHead,
    answer: Option<&FilterReply>,
    mismatches: &mut Vec<String>,
) {
    match (expect.action, answer) {
        (ExpectedAction::Continue, Some(reply)) => mismatches.push(format!(
            "action: expected continue, got respond with status {}",
            reply.status.as_u16()
        )),
        (ExpectedAction::Respond, None) => {
            mismatches.push("action: expected respond, got continue".to_owned())
        }
        (ExpectedAction::Respond, Some(reply)) => check_reply(expect, reply, mismatches),
        (ExpectedAction::Continue, None) => {
            if let Some(path) = &expect.path
                && head.path != *path
            {
                mismatches.push(format!("path: expected {path:?}, got {:?}", head.path));
            }
            if let Some(query) = &expect.query
                && head.query != *query
            {
                mismatches.push(format!("query: expected {query:?}, got {:?}", head.query));
            }
            check_headers("request", expect, &head.headers, mismatches);
            let body = match &head.body {
                HeldBody::Complete(bytes) => bytes.clone(),
                HeldBody::Streaming | HeldBody::TooLarge => Bytes::new(),
            };
            check_body(expect, &body, mismatches);
        }
    }
}

fn check_response_phase(
    expect: &Expectation,
    response: ResponseHead,
    replacement: Option<FilterReply>,
    mismatches: &mut Vec<String>,
) {
    match (expect.action, &replacement) {
        (ExpectedAction::Continue, Some(_)) => {
            mismatches.push("response action: expected continue, got respond".to_owned())
        }
        (ExpectedAction::Respond, None) => {
            mismatches.push("response action: expected respond, got continue".to_owned())
        }
        _ => {}
    }
    let outcome = replacement.unwrap_or_else(|| FilterReply {
        status: response.status,
        headers: response.headers,
        body: match response.body {
            HeldBody::Complete(bytes) => bytes,
            HeldBody::Streaming | HeldBody::TooLarge => Bytes::new(),
        },
    });
    check_reply(expect, &outcome, mismatches);
}
