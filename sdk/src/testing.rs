//! Unit-test a filter natively with `cargo test`: no Wasm, no gateway.
//!
//! In native builds every host call of the SDK goes to an in-process test host instead of the
//! gateway. A [`TestHost`] creates the filter from a configuration, runs its phases on a
//! [`TestRequest`] and a [`TestResponse`], records what the filter logged and counted, and
//! keeps its key-value state; the test sets the clock and may preload state. The test also
//! plays the parts that can fail in production: it can make the store fail
//! ([`TestHost::kv_fails`]), and it grants the filter services and answers for them
//! ([`TestHost::grant_service`]), keeping what the filter sent ([`TestHost::outbound_requests`]).
//!
//! The test host plays the gateway's part exactly, with the gateway's rules (`gateway_rules`):
//!
//! - it hands each call what the filter declared in [`Filter::reads`]: the fields, headers and
//!   context entries, and the body if the filter set a limit
//!   ([`Body::TooLarge`](crate::Body::TooLarge) if the test message's body is longer);
//! - the filter's code is the code that runs in the gateway: edits are checked where they are
//!   made, reads see the call's own edits, and the request is read-only in the response phase;
//! - when the call returns it applies the edits, context entries and metric updates all
//!   together, as the gateway does, re-framing a message whose body was replaced
//!   (`content-length` set, `transfer-encoding` dropped); context entries set in the request
//!   phase are there in the response phase;
//! - what the gateway would refuse after the call (a 33rd context entry, a reply it cannot
//!   send) fails the filter there; here it panics, naming the refusal;
//! - key-value operations meet the gateway's limits, and outbound calls its grants and its check
//!   of what can be sent, before the store or a service is asked.
//!
//! ```
//! use gateway_sdk::testing::{TestHost, TestRequest};
//! use gateway_sdk::{Action, Filter, Headers, Request};
//! use gateway_sdk::serde_json::json;
//!
//! struct Tag {
//!     value: String,
//! }
//!
//! impl Filter for Tag {
//!     type Config = String;
//!     fn new(value: String) -> Result<Self, String> {
//!         Ok(Tag { value })
//!     }
//!     fn on_request(&self, request: &mut Request) -> Action {
//!         let _ = request.set_header("x-tag", &self.value);
//!         Action::Continue
//!     }
//! }
//!
//! let mut host = TestHost::<Tag>::new(json!("blue")).expect("config accepted");
//! let mut request = TestRequest::get("/items?page=2");
//! assert!(host.on_request(&mut request).is_continue());
//! assert_eq!(request.header("x-tag").as_deref(), Some("blue"));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use gateway_rules::context::Context;
use gateway_rules::edit::{self, EditError};
use gateway_rules::kv::{KvMap, Limits};
use gateway_rules::metrics::{self, MetricKind, MetricSpec};

use crate::backend::{RequestRef, ResponseRef};
use crate::instance::{Instance, Outcome};
use crate::lock::Outcome as LockOutcome;
use crate::log::Level;
use crate::metrics::Registry;
use crate::wit::exports::gateway::filter::handler::RequestFields;
use crate::{Action, Filter, Phases, Reads, kv, outbound};
use gateway_rules::changes::Change;
use gateway_rules::input::{InputBody, RequestInput, ResponseInput};

/// Every value of a header in storage shared by requests and responses: lower-case names, in
/// arrival order.
pub(crate) fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
        .collect()
}

/// The distinct names, in the order they first appear.
pub(crate) fn header_names(headers: &[(String, String)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (name, _) in headers {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// What a request holds in a test.
#[derive(Debug, Clone)]
pub(crate) struct RequestState {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authority: Option<String>,
    pub client_ip: String,
    pub params: Vec<(String, String)>,
    /// Lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub context: Context,
}

/// What a response holds in a test.
#[derive(Debug, Clone)]
pub(crate) struct ResponseState {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A request to run a filter's phases on, and to inspect afterwards.
///
/// ```
/// use gateway_sdk::testing::TestRequest;
///
/// let request = TestRequest::post("/orders?dry_run=1")
///     .with_header("content-type", "application/json")
///     .with_authority("shop.example.com")
///     .with_client_ip("203.0.113.7")
///     .with_route_param("service", "orders")
///     .with_body(r#"{"item":7}"#)
///     .with_context("auth.subject", "alice");
/// assert_eq!(request.path(), "/orders");
/// assert_eq!(request.query().as_deref(), Some("dry_run=1"));
/// ```
#[derive(Debug)]
pub struct TestRequest {
    pub(crate) state: RefCell<RequestState>,
}

impl TestRequest {
    /// A request with this method and target (`/path` or `/path?query`), from 127.0.0.1, with
    /// an `x-request-id` header as the gateway always sets one, no body and no context.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::new("DELETE", "/items/7");
    /// assert_eq!(request.method(), "DELETE");
    /// ```
    pub fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (target, None),
        };
        TestRequest {
            state: RefCell::new(RequestState {
                method: method.to_owned(),
                path: path.to_owned(),
                query,
                authority: None,
                client_ip: "127.0.0.1".to_owned(),
                params: Vec::new(),
                headers: vec![("x-request-id".to_owned(), "test-request".to_owned())],
                body: None,
                context: Context::default(),
            }),
        }
    }

    /// A `GET` request.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/");
    /// ```
    pub fn get(target: &str) -> Self {
        TestRequest::new("GET", target)
    }

    /// A `POST` request.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::post("/orders");
    /// ```
    pub fn post(target: &str) -> Self {
        TestRequest::new("POST", target)
    }

    /// Adds a header (the name is stored lower-case, as the gateway presents it).
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/").with_header("Accept", "text/html");
    /// assert_eq!(request.header("accept").as_deref(), Some("text/html"));
    /// ```
    pub fn with_header(self, name: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the host the client asked for.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/").with_authority("api.example.com");
    /// ```
    pub fn with_authority(self, host: &str) -> Self {
        self.state.borrow_mut().authority = Some(host.to_owned());
        self
    }

    /// Sets the client's IP address (default `127.0.0.1`).
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/").with_client_ip("::1");
    /// ```
    pub fn with_client_ip(self, ip: &str) -> Self {
        self.state.borrow_mut().client_ip = ip.to_owned();
        self
    }

    /// Adds a parameter as if captured by the route's path pattern.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/api/v1/users/1")
    ///     .with_route_param("service", "users");
    /// ```
    pub fn with_route_param(self, name: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .params
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body the client sent. A filter sees it only if it declared a request body
    /// limit, and as [`Body::TooLarge`](crate::Body::TooLarge) if it is longer.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::post("/orders").with_body("{}");
    /// assert_eq!(request.body().as_deref(), Some(&b"{}"[..]));
    /// ```
    pub fn with_body(self, body: impl Into<Vec<u8>>) -> Self {
        self.state.borrow_mut().body = Some(body.into());
        self
    }

    /// Adds a context entry, as if set by an earlier filter.
    ///
    /// # Panics
    ///
    /// If the gateway would refuse the entry (a bad key, a value over 4096 bytes, a 33rd entry):
    /// no earlier filter could have set it.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/").with_context("auth.subject", "alice");
    /// assert_eq!(request.context("auth.subject").as_deref(), Some("alice"));
    /// ```
    pub fn with_context(self, key: &str, value: &str) -> Self {
        if let Err(error) = self.state.borrow_mut().context.set(key, value) {
            panic!("with_context({key:?}) refused: {error}");
        }
        self
    }

    /// The method.
    ///
    /// ```
    /// assert_eq!(gateway_sdk::testing::TestRequest::get("/").method(), "GET");
    /// ```
    pub fn method(&self) -> String {
        self.state.borrow().method.clone()
    }

    /// The path, as the filter left it.
    ///
    /// ```
    /// assert_eq!(gateway_sdk::testing::TestRequest::get("/a?b").path(), "/a");
    /// ```
    pub fn path(&self) -> String {
        self.state.borrow().path.clone()
    }

    /// The query, as the filter left it.
    ///
    /// ```
    /// assert_eq!(gateway_sdk::testing::TestRequest::get("/a").query(), None);
    /// ```
    pub fn query(&self) -> Option<String> {
        self.state.borrow().query.clone()
    }

    /// The first value of a header, as the filter left it.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/");
    /// assert_eq!(request.header("x-request-id").as_deref(), Some("test-request"));
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.state.borrow().headers, name)
            .into_iter()
            .next()
    }

    /// Every value of a header, in order.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/").with_header("via", "a").with_header("via", "b");
    /// assert_eq!(request.header_values("via"), ["a", "b"]);
    /// ```
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.state.borrow().headers, name)
    }

    /// Every header as `(lower-case name, value)`, in order.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/");
    /// assert_eq!(request.headers().len(), 1);
    /// ```
    pub fn headers(&self) -> Vec<(String, String)> {
        self.state.borrow().headers.clone()
    }

    /// The body, as the filter left it: the test's, or the one the filter set.
    ///
    /// ```
    /// assert_eq!(gateway_sdk::testing::TestRequest::get("/").body(), None);
    /// ```
    pub fn body(&self) -> Option<Vec<u8>> {
        self.state.borrow().body.clone()
    }

    /// The value of a context entry, as the filters left it.
    ///
    /// ```
    /// assert_eq!(gateway_sdk::testing::TestRequest::get("/").context("auth.subject"), None);
    /// ```
    pub fn context(&self, key: &str) -> Option<String> {
        self.state.borrow().context.get(key).map(str::to_owned)
    }

    /// Every context entry, in the order they were first set.
    ///
    /// ```
    /// let request = gateway_sdk::testing::TestRequest::get("/").with_context("a", "1");
    /// assert_eq!(request.context_entries(), [("a".to_owned(), "1".to_owned())]);
    /// ```
    pub fn context_entries(&self) -> Vec<(String, String)> {
        self.state.borrow().context.entries().to_vec()
    }
}

/// A response to run a filter's response phase on, and to inspect afterwards.
///
/// ```
/// use gateway_sdk::testing::TestResponse;
///
/// let response = TestResponse::new(200)
///     .with_header("content-type", "text/plain")
///     .with_body("hello");
/// assert_eq!(response.status(), 200);
/// ```
#[derive(Debug)]
pub struct TestResponse {
    pub(crate) state: RefCell<ResponseState>,
}

impl TestResponse {
    /// A response with this status, no headers and no body.
    ///
    /// ```
    /// let not_found = gateway_sdk::testing::TestResponse::new(404);
    /// ```
    pub fn new(status: u16) -> Self {
        TestResponse {
            state: RefCell::new(ResponseState {
                status,
                headers: Vec::new(),
                body: None,
            }),
        }
    }

    /// Adds a header.
    ///
    /// ```
    /// let response = gateway_sdk::testing::TestResponse::new(200).with_header("server", "upstream");
    /// ```
    pub fn with_header(self, name: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body the upstream sent, seen by a filter as
    /// [`TestRequest::with_body`]'s is.
    ///
    /// ```
    /// let response = gateway_sdk::testing::TestResponse::new(200).with_body(b"[1,2]".to_vec());
    /// ```
    pub fn with_body(self, body: impl Into<Vec<u8>>) -> Self {
        self.state.borrow_mut().body = Some(body.into());
        self
    }

    /// The status, as the filter left it.
    ///
    /// ```
    /// assert_eq!(gateway_sdk::testing::TestResponse::new(201).status(), 201);
    /// ```
    pub fn status(&self) -> u16 {
        self.state.borrow().status
    }

    /// The first value of a header, as the filter left it.
    ///
    /// ```
    /// let response = gateway_sdk::testing::TestResponse::new(200).with_header("etag", "\"v1\"");
    /// assert_eq!(response.header("ETag").as_deref(), Some("\"v1\""));
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.state.borrow().headers, name)
            .into_iter()
            .next()
    }

    /// Every value of a header, in order.
    ///
    /// ```
    /// let response = gateway_sdk::testing::TestResponse::new(200);
    /// assert!(response.header_values("set-cookie").is_empty());
    /// ```
    pub fn header_values(&self, name: &str) -> Vec<String> {
        header_values(&self.state.borrow().headers, name)
    }

    /// Every header as `(lower-case name, value)`, in order.
    ///
    /// ```
    /// assert!(gateway_sdk::testing::TestResponse::new(204).headers().is_empty());
    /// ```
    pub fn headers(&self) -> Vec<(String, String)> {
        self.state.borrow().headers.clone()
    }

    /// The body, as the filter left it.
    ///
    /// ```
    /// let response = gateway_sdk::testing::TestResponse::new(200).with_body("ok");
    /// assert_eq!(response.body().as_deref(), Some(&b"ok"[..]));
    /// ```
    pub fn body(&self) -> Option<Vec<u8>> {
        self.state.borrow().body.clone()
    }
}

/// A line a filter logged.
///
/// ```
/// use gateway_sdk::log::Level;
/// use gateway_sdk::testing::LogLine;
///
/// let line = LogLine { level: Level::Warn, message: "slow".into() };
/// assert_eq!(line.level, Level::Warn);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The level it was logged at.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// How the test host's key-value store fails, from [`TestHost::kv_fails`] until
/// [`TestHost::kv_recovers`]: what a filter meets when the gateway's Redis is away.
///
/// ```
/// use gateway_sdk::testing::KvFailure;
///
/// let down = KvFailure::Unavailable;
/// assert_ne!(down, KvFailure::Timeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFailure {
    /// The store cannot be reached: operations fail with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) and do not happen.
    Unavailable,
    /// The store does not answer in time: operations fail with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). In the gateway such an operation may
    /// or may not have happened; here it never has.
    Timeout,
}

/// A request the filter sent with [`outbound::Request::send`], as the test host received it.
///
/// ```
/// use gateway_sdk::testing::TestOutboundRequest;
///
/// # fn demo(sent: &TestOutboundRequest) {
/// assert_eq!(sent.service, "idp");
/// assert_eq!(sent.header("accept"), Some("application/json"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutboundRequest {
    /// The service it was sent to.
    pub service: String,
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path and query.
    pub path_and_query: String,
    /// Lower-case names, in the order the filter added them.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The timeout the filter asked for, in whole milliseconds as it reaches the gateway.
    pub timeout: Option<Duration>,
}

impl TestOutboundRequest {
    fn sent(request: outbound::Request) -> Self {
        TestOutboundRequest {
            service: request.service,
            method: request.method,
            path_and_query: request.path_and_query,
            headers: request
                .headers
                .into_iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value))
                .collect(),
            body: request.body,
            timeout: request
                .timeout_ms
                .map(|millis| Duration::from_millis(millis.into())),
        }
    }

    /// The first value of a header (names compared case-insensitively).
    ///
    /// ```
    /// # fn demo(sent: &gateway_sdk::testing::TestOutboundRequest) {
    /// let authorized = sent.header("Authorization").is_some();
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A service's answer in a test, as a handler given to [`TestHost::grant_service`] makes it.
///
/// ```
/// use gateway_sdk::testing::TestOutboundResponse;
///
/// let keys = TestOutboundResponse::new(200)
///     .with_header("content-type", "application/json")
///     .with_body(r#"{"keys":[]}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutboundResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl TestOutboundResponse {
    /// An answer with this status, no headers and no body.
    ///
    /// ```
    /// let not_found = gateway_sdk::testing::TestOutboundResponse::new(404);
    /// ```
    pub fn new(status: u16) -> Self {
        TestOutboundResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (the name is stored lower-case, as the gateway hands it to the filter).
    ///
    /// ```
    /// let answer = gateway_sdk::testing::TestOutboundResponse::new(200).with_header("X-Served", "a");
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let answer = gateway_sdk::testing::TestOutboundResponse::new(200).with_body("ok");
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// How a call to a granted service fails in a test, as a handler given to
/// [`TestHost::grant_service`] says. A service the test did not grant fails with
/// [`ErrorKind::NotAllowed`](crate::ErrorKind::NotAllowed), and a request the gateway cannot
/// send with [`ErrorKind::Refused`](crate::ErrorKind::Refused), without asking the handler.
///
/// ```
/// use gateway_sdk::testing::OutboundFailure;
///
/// let down = OutboundFailure::Failed("connection refused".into());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundFailure {
    /// No answer in time: [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    Timeout,
    /// The answer is larger than the gateway lets the filter receive:
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge). The test host applies no size limit
    /// of its own; answer this to test that path.
    TooLarge,
    /// The service could not be reached or broke off, for this reason:
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).
    Failed(String),
}

/// What answers for a granted service.
type Service = Rc<dyn Fn(&TestOutboundRequest) -> Result<TestOutboundResponse, OutboundFailure>>;

/// The capabilities the test host answers with: the log, the clock, key-value state (and
/// whether it is failing), the services granted and what was sent to them, and the metrics the
/// filter declared and has not yet handed over.
pub(crate) struct HostState {
    logs: Vec<LogLine>,
    pub now_ms: u64,
    pub monotonic_ns: u64,
    pub kv_limits: Limits,
    kv: KvMap,
    kv_failure: Option<KvFailure>,
    /// Locks the test's requests hold: until when, on the monotonic clock in milliseconds.
    locks: HashMap<String, u64>,
    /// Locks another request holds, and whether it lets go while a request waits.
    held_elsewhere: HashMap<String, bool>,
    services: HashMap<String, Service>,
    sent: Vec<TestOutboundRequest>,
    pub metrics: Registry,
}

impl Default for HostState {
    fn default() -> Self {
        let kv_limits = Limits::default();
        HostState {
            logs: Vec::new(),
            now_ms: 0,
            monotonic_ns: 0,
            kv_limits,
            kv: KvMap::new(kv_limits),
            kv_failure: None,
            locks: HashMap::new(),
            held_elsewhere: HashMap::new(),
            services: HashMap::new(),
            sent: Vec::new(),
            metrics: Registry::default(),
        }
    }
}

impl HostState {
    /// Expiry runs on the monotonic clock, as in the gateway.
    fn kv_now(&self) -> u64 {
        self.monotonic_ns / 1_000_000
    }

    /// The map and the time for an operation the limits accepted, unless the store is failing.
    pub fn kv_store(&mut self) -> Result<(&mut KvMap, u64), kv::Failure> {
        match self.kv_failure {
            None => {
                let now = self.kv_now();
                Ok((&mut self.kv, now))
            }
            Some(KvFailure::Unavailable) => Err(kv::Failure::Unavailable(
                "the test host's store is failing (`TestHost::kv_fails`)".to_owned(),
            )),
            Some(KvFailure::Timeout) => Err(kv::Failure::Timeout),
        }
    }

    /// A lock for the test's requests: taken, unless another request holds it (then it waits
    /// no time: it lets go at once or not at all, as the test said). The store failing fails
    /// it, as in the gateway, where locks live in the filter's store.
    pub fn lock_acquire(&mut self, key: &str, lease_ms: u32) -> Result<LockOutcome, kv::Failure> {
        self.kv_store()?;
        let now = self.kv_now();
        if let Some(lets_go) = self.held_elsewhere.get(key).copied() {
            if !lets_go {
                return Ok(LockOutcome::TimedOut);
            }
            self.held_elsewhere.remove(key);
            return Ok(LockOutcome::Released);
        }
        self.locks
            .insert(key.to_owned(), now.saturating_add(u64::from(lease_ms)));
        Ok(LockOutcome::Acquired)
    }

    pub fn lock_release(&mut self, key: &str) -> Result<bool, kv::Failure> {
        self.kv_store()?;
        let now = self.kv_now();
        Ok(self.locks.remove(key).is_some_and(|until| until > now))
    }

    pub fn log(&mut self, level: Level, message: &str) {
        self.logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    }
}

thread_local! {
    // Host calls made outside a `TestHost` (a helper tested on its own) land in a per-thread
    // default host, so they work rather than abort; a `TestHost` swaps itself in for each call.
    static CURRENT: RefCell<Rc<RefCell<HostState>>> = RefCell::new(Rc::default());
}

pub(crate) fn with_host<R>(use_host: impl FnOnce(&mut HostState) -> R) -> R {
    CURRENT.with(|current| use_host(&mut current.borrow().borrow_mut()))
}

/// An outbound call, answered as the gateway answers it: refused unless granted, then refused
/// if it cannot be sent (the gateway's check, `gateway_rules::outbound`), then the handler's.
pub(crate) fn send_outbound(
    request: outbound::Request,
) -> Result<outbound::Response, outbound::Failure> {
    let sent = TestOutboundRequest::sent(request);
    let service = with_host(|host| {
        host.sent.push(sent.clone());
        host.services.get(&sent.service).cloned()
    });
    let Some(service) = service else {
        return Err(outbound::Failure::NotAllowed(format!(
            "this route does not grant the filter the service `{}` (in a test: \
             `TestHost::grant_service`)",
            sent.service
        )));
    };
    gateway_rules::outbound::request(
        &sent.method,
        sent.path_and_query.clone(),
        sent.headers.clone(),
    )
    .map_err(|refused| outbound::Failure::BadRequest(refused.to_string()))?;
    // Called with the host released: the handler may use the SDK itself (a kv read, a log line).
    let answer = service(&sent).map_err(|failure| match failure {
        OutboundFailure::Timeout => outbound::Failure::Timeout,
        OutboundFailure::TooLarge => outbound::Failure::TooLarge,
        OutboundFailure::Failed(reason) => outbound::Failure::Failed(reason),
    })?;
    Ok(outbound::Response {
        status: answer.status,
        headers: answer.headers,
        body: answer.body,
    })
}

/// Makes `host` the one host calls go to until the guard drops.
struct Entered {
    previous: Rc<RefCell<HostState>>,
}

impl Entered {
    fn new(host: &Rc<RefCell<HostState>>) -> Self {
        let previous = CURRENT.with(|current| current.replace(host.clone()));
        Entered { previous }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.replace(self.previous.clone()));
    }
}

/// A body as the gateway hands it to a filter with this limit.
fn handed_body(body: Option<&[u8]>, limit: u32) -> InputBody {
    let body = body.unwrap_or_default();
    if body.len() <= limit as usize {
        InputBody::Complete(body.to_vec())
    } else {
        InputBody::TooLarge
    }
}

/// Whether a filter with this limit was handed the body whole, and so may replace it.
fn held_whole(body: Option<&[u8]>, limit: Option<u32>) -> bool {
    limit.is_some_and(|limit| body.unwrap_or_default().len() <= limit as usize)
}

/// Every value of each declared header present, name by name.
fn declared_headers(names: &[String], headers: &[(String, String)]) -> Vec<(String, String)> {
    names
        .iter()
        .flat_map(|name| {
            header_values(headers, name)
                .into_iter()
                .map(move |value| (name.clone(), value))
        })
        .collect()
}

/// The declared context entries present.
fn declared_context(keys: &[String], context: &Context) -> Vec<(String, String)> {
    keys.iter()
        .filter_map(|key| Some((key.clone(), context.get(key)?.to_owned())))
        .collect()
}

/// Applies a header edit as the gateway checks it; hands any other edit back.
fn apply_header<'a>(
    headers: &mut Vec<(String, String)>,
    change: Change<'a>,
) -> Result<Option<Change<'a>>, String> {
    let checked = |name: &str, value: &str| -> Result<(String, String), String> {
        let name = edit::header_name(name).map_err(|error| error.to_string())?;
        edit::header_value(value.to_owned()).map_err(|error| error.to_string())?;
        Ok((name.as_str().to_owned(), value.to_owned()))
    };
    match change {
        Change::SetHeader(name, value) => {
            let (name, value) = checked(name, value)?;
            headers.retain(|(key, _)| *key != name);
            headers.push((name, value));
        }
        Change::AppendHeader(name, value) => headers.push(checked(name, value)?),
        Change::RemoveHeader(name) => headers.retain(|(key, _)| !key.eq_ignore_ascii_case(name)),
        other => return Ok(Some(other)),
    }
    Ok(None)
}

/// Applies a context edit within the bounds; hands any other edit back.
fn apply_context<'a>(
    context: &mut Context,
    change: Change<'a>,
) -> Result<Option<Change<'a>>, String> {
    match change {
        Change::SetContext(key, value) => {
            context.set(key, value).map_err(|error| error.to_string())?
        }
        Change::RemoveContext(key) => {
            context.remove(key);
        }
        other => return Ok(Some(other)),
    }
    Ok(None)
}

/// The metric updates among a call's changes, checked as the gateway checks them; any other
/// change is handed back.
fn take_metric<'a>(
    specs: &[MetricSpec],
    updates: &mut Vec<(u32, u32, f64)>,
    change: Change<'a>,
) -> Result<Option<Change<'a>>, String> {
    match change {
        Change::Metric {
            metric,
            series,
            value,
        } => {
            metrics::update(specs, metric, series, value).map_err(|error| error.to_string())?;
            updates.push((metric, series, value));
            Ok(None)
        }
        other => Ok(Some(other)),
    }
}

/// Applies what both phases may change (metric updates, header edits of the phase's message,
/// context entries); hands back any other change.
fn apply_shared<'a>(
    specs: &[MetricSpec],
    metrics: &mut Vec<(u32, u32, f64)>,
    headers: &mut Vec<(String, String)>,
    context: &mut Context,
    change: Change<'a>,
) -> Result<Option<Change<'a>>, String> {
    let Some(change) = take_metric(specs, metrics, change)? else {
        return Ok(None);
    };
    let Some(change) = apply_header(headers, change)? else {
        return Ok(None);
    };
    apply_context(context, change)
}

/// Replaces a body checked against what the filter was handed, and frames the message by it.
fn replace_body(
    headers: &mut Vec<(String, String)>,
    body: &mut Option<Vec<u8>>,
    new: Vec<u8>,
    limit: Option<u32>,
    held: bool,
) -> Result<(), String> {
    edit::body(new.len(), held, limit.unwrap_or(0)).map_err(|error| error.to_string())?;
    headers.retain(|(key, _)| key != "transfer-encoding" && key != "content-length");
    headers.push(("content-length".to_owned(), new.len().to_string()));
    *body = Some(new);
    Ok(())
}

/// A reply as the gateway sends it: a valid status and headers it can carry.
fn check_reply(action: &Action) -> Result<(), String> {
    let Some(reply) = action.reply() else {
        return Ok(());
    };
    edit::status(reply.status).map_err(|error| format!("reply status {error}"))?;
    for (name, value) in &reply.headers {
        edit::header_name(name).map_err(|error| error.to_string())?;
        edit::header_value(value.clone()).map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// What the gateway keeps of one series.
#[derive(Debug, Clone, Copy, Default)]
struct Series {
    /// Observations (a histogram) or updates (a counter).
    count: u64,
    /// The total (a counter) or the sum of observations (a histogram).
    sum: f64,
}

/// A filter running in the in-process test host.
///
/// ```
/// use gateway_sdk::testing::{TestHost, TestRequest, TestResponse};
/// use gateway_sdk::{Action, Filter, Headers, Phases, Request, Response};
/// use gateway_sdk::serde_json::json;
///
/// struct NoServer;
///
/// impl Filter for NoServer {
///     type Config = gateway_sdk::serde_json::Value;
///     fn new(_: Self::Config) -> Result<Self, String> {
///         Ok(NoServer)
///     }
///     fn phases(&self) -> Phases {
///         Phases::RESPONSE
///     }
///     fn on_response(&self, _: &Request, response: &mut Response) -> Action {
///         response.remove_header("server");
///         Action::Continue
///     }
/// }
///
/// let mut host = TestHost::<NoServer>::new(json!({})).expect("config accepted");
/// let request = TestRequest::get("/");
/// let mut response = TestResponse::new(200).with_header("server", "nginx");
/// assert!(host.on_response(&request, &mut response).is_continue());
/// assert_eq!(response.header("server"), None);
/// ```
pub struct TestHost<F: Filter> {
    instance: Instance<F>,
    host: Rc<RefCell<HostState>>,
    /// Per declared metric, per series.
    series: Vec<Vec<Series>>,
}

impl<F: Filter> TestHost<F> {
    /// Creates the filter from a configuration, as the gateway does with a route's `config`.
    /// `Err` carries the message the gateway would print: a field path for a configuration that
    /// does not deserialize, the filter's own reason, or why its metric declarations or
    /// declared reads are refused.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Limit;
    /// # impl Filter for Limit {
    /// #     type Config = u32;
    /// #     fn new(_: u32) -> Result<Self, String> { Ok(Limit) }
    /// # }
    /// let refused = TestHost::<Limit>::new(json!("ten")).err().expect("refused");
    /// assert!(refused.starts_with("invalid config"));
    /// ```
    pub fn new(config: serde_json::Value) -> Result<Self, String> {
        TestHost::from_json(&config.to_string())
    }

    /// Like [`TestHost::new`], from JSON text.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost};
    /// # struct Limit;
    /// # impl Filter for Limit {
    /// #     type Config = u32;
    /// #     fn new(_: u32) -> Result<Self, String> { Ok(Limit) }
    /// # }
    /// let host = TestHost::<Limit>::from_json("10").expect("accepted");
    /// ```
    pub fn from_json(config: &str) -> Result<Self, String> {
        let host = Rc::new(RefCell::new(HostState::default()));
        let _entered = Entered::new(&host);
        let instance = Instance::<F>::new(config)?;
        let series = instance
            .metrics
            .iter()
            .map(|spec| vec![Series::default(); spec.series()])
            .collect();
        Ok(TestHost {
            instance,
            host: host.clone(),
            series,
        })
    }

    /// The filter itself, to inspect its state.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Limit(u32);
    /// # impl Filter for Limit {
    /// #     type Config = u32;
    /// #     fn new(n: u32) -> Result<Self, String> { Ok(Limit(n)) }
    /// # }
    /// let host = TestHost::<Limit>::new(json!(10)).expect("accepted");
    /// assert_eq!(host.filter().0, 10);
    /// ```
    pub fn filter(&self) -> &F {
        &self.instance.filter
    }

    /// The phases the filter registered for with this configuration.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, Phases, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// assert_eq!(host.phases(), Phases::REQUEST | Phases::RESPONSE);
    /// ```
    pub fn phases(&self) -> Phases {
        self.instance.phases
    }

    /// What the filter declared it reads with this configuration.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, Reads, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// assert_eq!(host.reads(), &Reads::default());
    /// ```
    pub fn reads(&self) -> &Reads {
        &self.instance.reads
    }

    /// What the gateway hands the request phase: what was declared, as the request is now.
    fn request_input(&self, state: &RequestState) -> RequestInput {
        let reads = &self.instance.reads;
        let field = |flag: RequestFields, read: &dyn Fn() -> Option<String>| {
            if reads.has(flag) { read() } else { None }
        };
        RequestInput {
            method: field(RequestFields::METHOD, &|| Some(state.method.clone())),
            path: field(RequestFields::PATH, &|| Some(state.path.clone())),
            query: field(RequestFields::QUERY, &|| state.query.clone()),
            authority: field(RequestFields::AUTHORITY, &|| state.authority.clone()),
            client_ip: field(RequestFields::CLIENT_IP, &|| Some(state.client_ip.clone())),
            headers: declared_headers(&reads.request_headers, &state.headers),
            context: declared_context(&reads.context_keys, &state.context),
            body: reads
                .request_body
                .map(|limit| handed_body(state.body.as_deref(), limit)),
        }
    }

    /// What the gateway hands the response phase.
    fn response_input(&self, request: &RequestState, response: &ResponseState) -> ResponseInput {
        let reads = &self.instance.reads;
        ResponseInput {
            headers: declared_headers(&reads.response_headers, &response.headers),
            context: declared_context(&reads.context_keys, &request.context),
            body: reads
                .response_body
                .map(|limit| handed_body(response.body.as_deref(), limit)),
        }
    }

    fn record_metrics(&mut self, updates: Vec<(u32, u32, f64)>) {
        for (metric, series, value) in updates {
            let series = &mut self.series[metric as usize][series as usize];
            series.count += 1;
            series.sum += value;
        }
    }

    /// The gateway fails a filter whose outcome it refuses; in a test that is a failed test.
    fn refused(phase: &str, reason: &str) -> ! {
        panic!(
            "the gateway refuses the outcome of the {phase} phase and fails the filter: {reason}"
        )
    }

    /// Runs the request phase, as the gateway would: if the filter did not register for it,
    /// the request passes on untouched and the filter is not called. The filter's edits are
    /// applied to `request` once it returns, whatever it returns.
    ///
    /// # Panics
    ///
    /// If the gateway would refuse the outcome and fail the filter: a context entry beyond the
    /// 32 a request holds, or a reply it cannot send (a status outside `100..=999`, a bad
    /// header). Nothing of a refused outcome is applied, as in the gateway.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::{TestHost, TestRequest}, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// let mut request = TestRequest::get("/");
    /// assert!(host.on_request(&mut request).is_continue());
    /// ```
    pub fn on_request(&mut self, request: &mut TestRequest) -> Action {
        if !self.instance.phases.contains(Phases::REQUEST) {
            return Action::Continue;
        }
        let Outcome { action, changes } = {
            let _entered = Entered::new(&self.host);
            let state = request.state.borrow();
            let input = self.request_input(&state);
            self.instance.on_request(RequestRef::new(&state), input)
        };
        let state = request.state.get_mut();
        let limit = self.instance.reads.request_body;
        let held = held_whole(state.body.as_deref(), limit);
        let mut next = state.clone();
        let mut metrics = Vec::new();
        let specs = &self.instance.metrics;
        let applied = changes.iter().try_for_each(|change| {
            let shared = apply_shared(
                specs,
                &mut metrics,
                &mut next.headers,
                &mut next.context,
                change,
            );
            let Some(change) = shared? else {
                return Ok(());
            };
            match change {
                Change::SetPath(path) => {
                    edit::path(path).map_err(|error| error.to_string())?;
                    next.path = path.to_owned();
                }
                Change::SetQuery(query) => {
                    if let Some(query) = query {
                        edit::query(query).map_err(|error| error.to_string())?;
                    }
                    next.query = query.map(str::to_owned);
                }
                Change::SetBody(body) => {
                    replace_body(
                        &mut next.headers,
                        &mut next.body,
                        body.to_vec(),
                        limit,
                        held,
                    )?;
                }
                _ => return Err(EditError::WrongPhase(edit::NO_RESPONSE_YET).to_string()),
            }
            Ok(())
        });
        let checked = applied.and_then(|()| check_reply(&action));
        if let Err(reason) = checked {
            Self::refused("request", &reason);
        }
        *state = next;
        self.record_metrics(metrics);
        action
    }

    /// Runs the response phase, as the gateway would: `request` is read-only but for its
    /// context, and if the filter did not register for the phase the response passes on
    /// untouched. The filter's edits are applied to `response` (and its context entries to
    /// `request`) once it returns, whatever it returns.
    ///
    /// # Panics
    ///
    /// As [`TestHost::on_request`] does.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::{TestHost, TestRequest, TestResponse}, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// let mut response = TestResponse::new(200);
    /// assert!(host.on_response(&TestRequest::get("/"), &mut response).is_continue());
    /// ```
    pub fn on_response(&mut self, request: &TestRequest, response: &mut TestResponse) -> Action {
        if !self.instance.phases.contains(Phases::RESPONSE) {
            return Action::Continue;
        }
        let Outcome { action, changes } = {
            let _entered = Entered::new(&self.host);
            let request = request.state.borrow();
            let response = response.state.borrow();
            let input = self.response_input(&request, &response);
            self.instance.on_response(
                RequestRef::new(&request),
                ResponseRef::new(&response),
                response.status,
                input,
            )
        };
        let mut request = request.state.borrow_mut();
        let state = response.state.get_mut();
        let limit = self.instance.reads.response_body;
        let held = held_whole(state.body.as_deref(), limit);
        let mut next = state.clone();
        let mut context = request.context.clone();
        let mut metrics = Vec::new();
        let specs = &self.instance.metrics;
        let applied = changes.iter().try_for_each(|change| {
            let shared = apply_shared(specs, &mut metrics, &mut next.headers, &mut context, change);
            let Some(change) = shared? else {
                return Ok(());
            };
            match change {
                Change::SetStatus(status) => {
                    edit::status(status).map_err(|error| error.to_string())?;
                    next.status = status;
                }
                Change::SetBody(body) => {
                    replace_body(
                        &mut next.headers,
                        &mut next.body,
                        body.to_vec(),
                        limit,
                        held,
                    )?;
                }
                _ => return Err(EditError::WrongPhase(edit::REQUEST_SENT).to_string()),
            }
            Ok(())
        });
        let checked = applied.and_then(|()| check_reply(&action));
        if let Err(reason) = checked {
            Self::refused("response", &reason);
        }
        *state = next;
        request.context = context;
        drop(request);
        self.record_metrics(metrics);
        action
    }

    /// The declared series of a metric, or a panic that says what the test got wrong.
    fn series(&self, name: &str, label_values: &[&str], histogram: bool) -> Series {
        let Some(index) = self
            .instance
            .metrics
            .iter()
            .position(|spec| spec.name == name)
        else {
            let declared: Vec<&str> = self
                .instance
                .metrics
                .iter()
                .map(|spec| spec.name.as_str())
                .collect();
            panic!("the filter declared no metric `{name}`; it declared {declared:?}");
        };
        let spec: &MetricSpec = &self.instance.metrics[index];
        let kind = |spec: &MetricSpec| match spec.kind {
            MetricKind::Counter => "counter",
            MetricKind::Histogram(_) => "histogram",
        };
        if histogram != matches!(spec.kind, MetricKind::Histogram(_)) {
            panic!("metric `{name}` is a {}", kind(spec));
        }
        let Some(series) = spec.series_index(label_values) else {
            let labels: Vec<(&str, &[String])> = spec
                .labels
                .iter()
                .map(|label| (label.name.as_str(), label.values.as_slice()))
                .collect();
            panic!(
                "metric `{name}` has no series {label_values:?}: its labels and their values are \
                 {labels:?}"
            );
        };
        self.series[index][series as usize]
    }

    /// A counter's total for these label values (in declaration order; `&[]` without labels):
    /// what the gateway would export, 0 for a series never counted. Updates reach the gateway
    /// with the outcome of a phase, so one made in `Filter::new` shows after the first phase.
    ///
    /// # Panics
    ///
    /// If the filter declared no such counter, or no such label values.
    ///
    /// ```
    /// use gateway_sdk::metrics::Counter;
    /// use gateway_sdk::testing::{TestHost, TestRequest};
    /// use gateway_sdk::{Action, Filter, Request};
    ///
    /// struct Seen(Counter);
    ///
    /// impl Filter for Seen {
    ///     type Config = gateway_sdk::serde_json::Value;
    ///     fn new(_: Self::Config) -> Result<Self, String> {
    ///         Ok(Seen(Counter::new("seen_total", "Requests seen")))
    ///     }
    ///     fn on_request(&self, _: &mut Request) -> Action {
    ///         self.0.inc();
    ///         Action::Continue
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Seen>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
    /// assert_eq!(host.counter("seen_total", &[]), 0.0);
    /// host.on_request(&mut TestRequest::get("/"));
    /// assert_eq!(host.counter("seen_total", &[]), 1.0);
    /// ```
    pub fn counter(&self, name: &str, label_values: &[&str]) -> f64 {
        self.series(name, label_values, false).sum
    }

    /// How many observations a histogram's series holds, as [`TestHost::counter`] reads a
    /// counter.
    ///
    /// # Panics
    ///
    /// If the filter declared no such histogram, or no such label values.
    ///
    /// ```
    /// use gateway_sdk::metrics::Histogram;
    /// use gateway_sdk::testing::{TestHost, TestRequest};
    /// use gateway_sdk::{Action, Filter, Request};
    ///
    /// struct Sizes(Histogram);
    ///
    /// impl Filter for Sizes {
    ///     type Config = gateway_sdk::serde_json::Value;
    ///     fn new(_: Self::Config) -> Result<Self, String> {
    ///         Ok(Sizes(Histogram::new("path_bytes", "Path lengths", &[8.0, 64.0])))
    ///     }
    ///     fn on_request(&self, request: &mut Request) -> Action {
    ///         self.0.observe(request.path().len() as f64);
    ///         Action::Continue
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Sizes>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
    /// host.on_request(&mut TestRequest::get("/a"));
    /// host.on_request(&mut TestRequest::get("/abcd"));
    /// assert_eq!(host.histogram_count("path_bytes", &[]), 2);
    /// assert_eq!(host.histogram_sum("path_bytes", &[]), 7.0);
    /// ```
    pub fn histogram_count(&self, name: &str, label_values: &[&str]) -> u64 {
        self.series(name, label_values, true).count
    }

    /// The sum of a histogram series' observations, as [`TestHost::histogram_count`] counts
    /// them.
    ///
    /// # Panics
    ///
    /// If the filter declared no such histogram, or no such label values.
    ///
    /// ```
    /// # use gateway_sdk::metrics::Histogram;
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Sizes(Histogram);
    /// # impl Filter for Sizes {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> {
    /// #         Ok(Sizes(Histogram::new("path_bytes", "Path lengths", &[8.0])))
    /// #     }
    /// # }
    /// let host = TestHost::<Sizes>::new(json!({})).expect("accepted");
    /// assert_eq!(host.histogram_sum("path_bytes", &[]), 0.0);
    /// ```
    pub fn histogram_sum(&self, name: &str, label_values: &[&str]) -> f64 {
        self.series(name, label_values, true).sum
    }

    /// Everything the filter logged so far, in order.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Chatty;
    /// # impl Filter for Chatty {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> {
    /// #         gateway_sdk::log::info("ready");
    /// #         Ok(Chatty)
    /// #     }
    /// # }
    /// let host = TestHost::<Chatty>::new(json!({})).expect("accepted");
    /// assert_eq!(host.logs()[0].message, "ready");
    /// ```
    pub fn logs(&self) -> Vec<LogLine> {
        self.host.borrow().logs.clone()
    }

    /// Sets the wall clock the filter sees, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// host.set_now_ms(1_700_000_000_000);
    /// ```
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.host.borrow_mut().now_ms = now_ms;
    }

    /// Stores a key-value entry the filter will see, e.g. state left by earlier requests.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// host.kv_set("hits:203.0.113.7", "99", Some(std::time::Duration::from_secs(60)));
    /// assert_eq!(host.kv_get("hits:203.0.113.7").as_deref(), Some(&b"99"[..]));
    /// ```
    pub fn kv_set(&mut self, key: &str, value: impl AsRef<[u8]>, ttl: Option<Duration>) {
        let mut host = self.host.borrow_mut();
        let now = host.kv_now();
        let ttl_ms = ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        if let Err(error) = host.kv.set(key, value.as_ref().to_vec(), ttl_ms, now) {
            panic!("kv_set({key:?}) refused: {error}");
        }
    }

    /// The value the filter left at `key`, if present and not expired.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// assert_eq!(host.kv_get("never-set"), None);
    /// ```
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        let host = self.host.borrow();
        host.kv.peek(key, host.kv_now())
    }

    /// Every live key-value entry, sorted by key.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// assert!(host.kv_entries().is_empty());
    /// ```
    pub fn kv_entries(&self) -> Vec<(String, Vec<u8>)> {
        let host = self.host.borrow();
        host.kv.entries(host.kv_now())
    }

    /// Makes every key-value operation of the filter fail with `failure` until
    /// [`TestHost::kv_recovers`], as when the gateway's Redis is away, to test what the filter
    /// does then. What the limits refuse is still refused first, as in the gateway. The test's
    /// own [`kv_set`](TestHost::kv_set) and [`kv_get`](TestHost::kv_get) still reach the state,
    /// which the failure leaves as it was.
    ///
    /// ```
    /// use gateway_sdk::testing::{KvFailure, TestHost, TestRequest};
    /// use gateway_sdk::{Action, Filter, Headers, Reply, Request, kv};
    ///
    /// /// Counts requests in `x-hits`; lets them through uncounted when it cannot count.
    /// struct Count;
    ///
    /// impl Filter for Count {
    ///     type Config = gateway_sdk::serde_json::Value;
    ///     fn new(_: Self::Config) -> Result<Self, String> {
    ///         Ok(Count)
    ///     }
    ///     fn on_request(&self, request: &mut Request) -> Action {
    ///         match kv::increment("hits", 1, None) {
    ///             Ok(hits) => {
    ///                 let _ = request.set_header("x-hits", &hits.to_string());
    ///             }
    ///             Err(error) if error.is_unavailable() => {}
    ///             Err(error) => return Action::Respond(Reply::text(500, error.to_string())),
    ///         }
    ///         Action::Continue
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Count>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
    /// host.kv_fails(KvFailure::Timeout);
    /// let mut request = TestRequest::get("/");
    /// assert!(host.on_request(&mut request).is_continue(), "fails open");
    /// assert_eq!(request.header("x-hits"), None);
    ///
    /// host.kv_recovers();
    /// let mut request = TestRequest::get("/");
    /// host.on_request(&mut request);
    /// assert_eq!(request.header("x-hits").as_deref(), Some("1"));
    /// ```
    pub fn kv_fails(&mut self, failure: KvFailure) {
        self.host.borrow_mut().kv_failure = Some(failure);
    }

    /// Ends [`TestHost::kv_fails`]: the store answers again, with the state it held.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::{KvFailure, TestHost}, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// host.kv_fails(KvFailure::Unavailable);
    /// host.kv_recovers();
    /// ```
    pub fn kv_recovers(&mut self) {
        self.host.borrow_mut().kv_failure = None;
    }

    /// Plays another request holding the lock on `key`: the filter's `acquire` then gives
    /// [`Outcome::Released`](crate::lock::Outcome::Released) if `lets_go` (once; the lock is
    /// free after it), or [`Outcome::TimedOut`](crate::lock::Outcome::TimedOut).
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// host.lock_held_elsewhere("refresh", false);
    /// ```
    pub fn lock_held_elsewhere(&mut self, key: &str, lets_go: bool) {
        self.host
            .borrow_mut()
            .held_elsewhere
            .insert(key.to_owned(), lets_go);
    }

    /// Whether one of the test's requests holds the lock on `key` (taken, not released, its
    /// lease not over).
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// assert!(!host.lock_held("refresh"));
    /// ```
    pub fn lock_held(&self, key: &str) -> bool {
        let host = self.host.borrow();
        let now = host.kv_now();
        host.locks.get(key).is_some_and(|until| *until > now)
    }

    /// Grants the filter the service `name`, answered by `handler`, as a route's
    /// `allow_services` grants it in the gateway. A call to a service not granted fails with
    /// [`ErrorKind::NotAllowed`](crate::ErrorKind::NotAllowed), as in the gateway, and one the
    /// gateway cannot send (a bad method, path or header) with
    /// [`ErrorKind::Refused`](crate::ErrorKind::Refused); neither reaches a handler. Granting a
    /// name again replaces its handler.
    ///
    /// The handler gets the request as sent and returns the answer, or how the call fails.
    ///
    /// ```
    /// use gateway_sdk::testing::{OutboundFailure, TestHost, TestOutboundResponse, TestRequest};
    /// use gateway_sdk::{Action, Filter, Headers, Request, outbound};
    ///
    /// /// Stamps the identity provider's status, or why there is none, in `x-idp`.
    /// struct Probe;
    ///
    /// impl Filter for Probe {
    ///     type Config = gateway_sdk::serde_json::Value;
    ///     fn new(_: Self::Config) -> Result<Self, String> {
    ///         Ok(Probe)
    ///     }
    ///     fn on_request(&self, request: &mut Request) -> Action {
    ///         let stamp = match outbound::Request::get("idp", "/health").send() {
    ///             Ok(response) => response.status().to_string(),
    ///             Err(error) => format!("{:?}", error.kind()),
    ///         };
    ///         let _ = request.set_header("x-idp", &stamp);
    ///         Action::Continue
    ///     }
    /// }
    ///
    /// let stamp = |host: &mut TestHost<Probe>| {
    ///     let mut request = TestRequest::get("/");
    ///     host.on_request(&mut request);
    ///     request.header("x-idp").unwrap_or_default()
    /// };
    /// let mut host = TestHost::<Probe>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
    /// assert_eq!(stamp(&mut host), "NotAllowed");
    /// host.grant_service("idp", |sent| {
    ///     assert_eq!(sent.path_and_query, "/health");
    ///     Ok(TestOutboundResponse::new(204))
    /// });
    /// assert_eq!(stamp(&mut host), "204");
    /// host.grant_service("idp", |_| Err(OutboundFailure::Timeout));
    /// assert_eq!(stamp(&mut host), "Timeout");
    /// ```
    pub fn grant_service(
        &mut self,
        name: &str,
        handler: impl Fn(&TestOutboundRequest) -> Result<TestOutboundResponse, OutboundFailure>
        + 'static,
    ) {
        self.host
            .borrow_mut()
            .services
            .insert(name.to_owned(), Rc::new(handler));
    }

    /// Every call the filter made with [`outbound::Request::send`], in order, granted or not:
    /// to assert on what it sent, or on how often it called.
    ///
    /// ```
    /// use gateway_sdk::testing::{TestHost, TestOutboundResponse, TestRequest};
    /// use gateway_sdk::{Action, Filter, Request, outbound};
    ///
    /// struct Audit;
    ///
    /// impl Filter for Audit {
    ///     type Config = gateway_sdk::serde_json::Value;
    ///     fn new(_: Self::Config) -> Result<Self, String> {
    ///         Ok(Audit)
    ///     }
    ///     fn on_request(&self, request: &mut Request) -> Action {
    ///         let event = format!(r#"{{"path":"{}"}}"#, request.path());
    ///         let _ = outbound::Request::post("audit", "/events")
    ///             .header("content-type", "application/json")
    ///             .body(event)
    ///             .send();
    ///         Action::Continue
    ///     }
    /// }
    ///
    /// let mut host = TestHost::<Audit>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
    /// host.grant_service("audit", |_| Ok(TestOutboundResponse::new(202)));
    /// host.on_request(&mut TestRequest::get("/orders"));
    /// let sent = host.outbound_requests();
    /// assert_eq!(sent.len(), 1);
    /// assert_eq!(sent[0].header("Content-Type"), Some("application/json"));
    /// assert_eq!(sent[0].body, br#"{"path":"/orders"}"#);
    /// ```
    pub fn outbound_requests(&self) -> Vec<TestOutboundRequest> {
        self.host.borrow().sent.clone()
    }

    /// Moves both clocks forward.
    ///
    /// ```
    /// # use gateway_sdk::{Filter, testing::TestHost, serde_json::json};
    /// # struct Noop;
    /// # impl Filter for Noop {
    /// #     type Config = gateway_sdk::serde_json::Value;
    /// #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Noop) }
    /// # }
    /// let mut host = TestHost::<Noop>::new(json!({})).expect("accepted");
    /// host.advance(std::time::Duration::from_secs(61));
    /// ```
    pub fn advance(&mut self, by: Duration) {
        let mut host = self.host.borrow_mut();
        host.now_ms = host
            .now_ms
            .saturating_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX));
        host.monotonic_ns = host
            .monotonic_ns
            .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Headers, Request, Response};

    /// Sets the configured header on the request and appends it to the response, answering
    /// with the test host's refusal if there is one.
    struct SetHeader {
        name: String,
        value: String,
    }

    impl Filter for SetHeader {
        type Config = (String, String);

        fn new((name, value): (String, String)) -> Result<Self, String> {
            Ok(SetHeader { name, value })
        }

        fn on_request(&self, request: &mut Request) -> Action {
            match request.set_header(&self.name, &self.value) {
                Ok(()) => Action::Continue,
                Err(error) => Action::Respond(crate::Reply::text(500, error.to_string())),
            }
        }

        fn on_response(&self, _: &Request, response: &mut Response) -> Action {
            match response.append_header(&self.name, &self.value) {
                Ok(()) => Action::Continue,
                Err(error) => Action::Respond(crate::Reply::text(500, error.to_string())),
            }
        }
    }

    /// What the test host answers when the filter sets `name: value` in each phase: `None` if
    /// both edits were accepted, else the refusals.
    fn refusals(name: &str, value: &str) -> Option<(String, String)> {
        let mut host = TestHost::<SetHeader>::new(json!([name, value])).expect("config accepted");
        let mut request = TestRequest::get("/");
        let mut response = TestResponse::new(200);
        let on_request = host.on_request(&mut request);
        let on_response = host.on_response(&request, &mut response);
        if on_request.is_continue() && on_response.is_continue() {
            assert_eq!(request.header(name).as_deref(), Some(value));
            assert_eq!(response.header(name).as_deref(), Some(value));
            return None;
        }
        let reason = |action: &Action| action.reply().map(crate::Reply::body_text);
        Some((
            reason(&on_request).unwrap_or_default(),
            reason(&on_response).unwrap_or_default(),
        ))
    }

    #[test]
    fn header_edits_meet_the_gateways_rules() {
        // obs-text (bytes 0x80-0xFF, so UTF-8) and tabs pass, as the gateway passes them.
        for value in ["café", "a\tb", "plain"] {
            assert_eq!(refusals("x-note", value), None, "{value:?}");
        }
        for value in ["\x01", "\x7f", "a\r\nx-evil: 1"] {
            let refused = "header value contains a forbidden character".to_owned();
            assert_eq!(
                refusals("x-note", value),
                Some((refused.clone(), refused)),
                "{value:?}"
            );
        }
        let refused = "`bad name` is not a valid header name".to_owned();
        assert_eq!(refusals("bad name", "x"), Some((refused.clone(), refused)));
    }

    #[test]
    fn names_are_stored_lower_case() {
        let mut host = TestHost::<SetHeader>::new(json!(["X-Note", "x"])).expect("config accepted");
        let mut request = TestRequest::get("/");
        assert!(host.on_request(&mut request).is_continue());
        assert!(
            request
                .headers()
                .contains(&("x-note".to_owned(), "x".to_owned()))
        );
    }

    /// Reads and, if configured, replaces the body of both messages, reporting in the request
    /// header `x-body` and the response header `x-body` what it saw and whether the replacement
    /// was accepted.
    struct Bodies {
        limit: Option<u32>,
        replace: Option<String>,
    }

    impl Filter for Bodies {
        type Config = (Option<u32>, Option<String>);

        fn new((limit, replace): Self::Config) -> Result<Self, String> {
            Ok(Bodies { limit, replace })
        }

        fn reads(&self) -> Reads {
            match self.limit {
                Some(limit) => Reads::default().request_body(limit).response_body(limit),
                None => Reads::default(),
            }
        }

        fn on_request(&self, request: &mut Request) -> Action {
            let report = self.edit_body(request.body(), |body| request.set_body(body));
            let _ = request.set_header("x-body", &report);
            Action::Continue
        }

        fn on_response(&self, _: &Request, response: &mut Response) -> Action {
            let report = self.edit_body(response.body(), |body| response.set_body(body));
            let _ = response.set_header("x-body", &report);
            Action::Continue
        }
    }

    impl Bodies {
        fn edit_body(
            &self,
            seen: Option<crate::Body>,
            set: impl FnOnce(String) -> Result<(), crate::Error>,
        ) -> String {
            let seen = match seen {
                None => "none".to_owned(),
                Some(crate::Body::TooLarge) => "too large".to_owned(),
                Some(crate::Body::Complete(bytes)) => format!("{} bytes", bytes.len()),
            };
            match self.replace.clone().map(set) {
                None => seen,
                Some(Ok(())) => format!("{seen}, replaced"),
                Some(Err(error)) => format!("{seen}, refused: {error}"),
            }
        }
    }

    #[test]
    fn bodies_are_handed_over_only_when_declared_and_within_the_limit() {
        // (limit, replacement, body the client sent, report, body sent upstream)
        type Case = (
            Option<u32>,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            Option<&'static str>,
        );
        let cases: [Case; 6] = [
            (None, None, Some("hello"), "none", Some("hello")),
            (Some(5), None, Some("hello"), "5 bytes", Some("hello")),
            (Some(5), None, None, "0 bytes", None),
            (Some(4), None, Some("hello"), "too large", Some("hello")),
            (
                Some(8),
                Some("bye"),
                Some("hello"),
                "5 bytes, replaced",
                Some("bye"),
            ),
            (
                Some(4),
                Some("bye"),
                Some("hello"),
                "too large, refused: the body can only be replaced when the filter was handed it whole",
                Some("hello"),
            ),
        ];
        for (limit, replace, body, report, upstream) in cases {
            let mut host = TestHost::<Bodies>::new(json!([limit, replace])).expect("accepted");
            let mut request = TestRequest::post("/");
            if let Some(body) = body {
                request = request.with_body(body);
            }
            assert!(host.on_request(&mut request).is_continue());
            let case = format!("{limit:?} {replace:?} {body:?}");
            assert_eq!(request.header("x-body").as_deref(), Some(report), "{case}");
            assert_eq!(
                request.body().as_deref(),
                upstream.map(str::as_bytes),
                "{case}"
            );
        }
    }

    #[test]
    fn a_replaced_body_frames_the_message_and_stays_within_the_limit() {
        let mut host = TestHost::<Bodies>::new(json!([16, "{}"])).expect("accepted");
        let request = TestRequest::get("/");
        let mut response = TestResponse::new(200)
            .with_header("transfer-encoding", "chunked")
            .with_body("[1,2,3]");
        assert!(host.on_response(&request, &mut response).is_continue());
        assert_eq!(response.body().as_deref(), Some(&b"{}"[..]));
        assert_eq!(response.header("content-length").as_deref(), Some("2"));
        assert_eq!(response.header("transfer-encoding"), None);

        let long = "x".repeat(17);
        let mut host = TestHost::<Bodies>::new(json!([16, long])).expect("accepted");
        let mut response = TestResponse::new(200).with_body("[]");
        host.on_response(&request, &mut response);
        assert_eq!(
            response.header("x-body").as_deref(),
            Some(
                "2 bytes, refused: a body of 17 bytes is longer than the filter's limit of 16 bytes"
            )
        );
    }

    /// Sets `count` context entries in the request phase and reports, in the response phase,
    /// the first and last as it reads them (declared: the first).
    struct Entries {
        count: usize,
    }

    impl Filter for Entries {
        type Config = usize;

        fn new(count: usize) -> Result<Self, String> {
            Ok(Entries { count })
        }

        fn reads(&self) -> Reads {
            Reads::default().context("k0")
        }

        fn on_request(&self, request: &mut Request) -> Action {
            for index in 0..self.count {
                if let Err(error) = request.set_context(&format!("k{index}"), "v") {
                    return Action::Respond(crate::Reply::text(500, error.to_string()));
                }
            }
            Action::Continue
        }

        fn on_response(&self, request: &Request, response: &mut Response) -> Action {
            let last = format!("k{}", self.count.saturating_sub(1));
            let seen = format!("{:?} {:?}", request.context("k0"), request.context(&last));
            let _ = response.set_header("x-seen", &seen);
            request.remove_context("k0");
            let _ = request.set_context("phase", "response");
            Action::Continue
        }
    }

    #[test]
    fn context_entries_reach_the_response_phase() {
        let mut host = TestHost::<Entries>::new(json!(3)).expect("accepted");
        let mut request = TestRequest::get("/").with_context("earlier", "filter");
        let mut response = TestResponse::new(200);
        assert!(host.on_request(&mut request).is_continue());
        assert!(host.on_response(&request, &mut response).is_continue());
        assert_eq!(
            response.header("x-seen").as_deref(),
            Some(r#"Some("v") Some("v")"#)
        );
        let keys: Vec<String> = request
            .context_entries()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["earlier", "k1", "k2", "phase"]);
    }

    #[test]
    fn a_request_holds_32_context_entries() {
        let mut host = TestHost::<Entries>::new(json!(32)).expect("accepted");
        let mut request = TestRequest::get("/");
        assert!(host.on_request(&mut request).is_continue());
        assert_eq!(request.context_entries().len(), 32);
    }

    #[test]
    #[should_panic(
        expected = "the gateway refuses the outcome of the request phase and fails the filter: \
                    a request holds at most 32 context entries"
    )]
    fn a_33rd_context_entry_fails_the_filter() {
        let mut host = TestHost::<Entries>::new(json!(1)).expect("accepted");
        let mut request = (0..32).fold(TestRequest::get("/"), |request, index| {
            request.with_context(&format!("earlier{index}"), "v")
        });
        host.on_request(&mut request);
    }

    /// Counts decisions by outcome and observes path lengths; `bad` declares a label value the
    /// rules refuse, `late` creates a metric in the request phase.
    struct Counted {
        decisions: crate::metrics::Counter,
        lengths: crate::metrics::Histogram,
        late: bool,
    }

    impl Filter for Counted {
        type Config = (bool, bool);

        fn new((bad, late): (bool, bool)) -> Result<Self, String> {
            let outcome: &[&str] = if bad {
                &["allow", ""]
            } else {
                &["allow", "deny"]
            };
            Ok(Counted {
                decisions: crate::metrics::Counter::with_labels(
                    "decisions_total",
                    "Decisions, by outcome",
                    &[("outcome", outcome)],
                ),
                lengths: crate::metrics::Histogram::new("path_bytes", "Path lengths", &[4.0]),
                late,
            })
        }

        fn on_request(&self, request: &mut Request) -> Action {
            let outcome = request.query().unwrap_or_default();
            self.decisions.inc_with(&[&outcome]);
            self.lengths.observe(request.path().len() as f64);
            if self.late {
                crate::metrics::Counter::new("late_total", "Too late").inc();
            }
            Action::Continue
        }
    }

    #[test]
    fn metrics_count_declared_series_and_drop_the_rest_with_one_warning() {
        let mut host = TestHost::<Counted>::new(json!([false, false])).expect("accepted");
        for target in ["/a?allow", "/abc?allow", "/?deny", "/?maybe", "/?maybe"] {
            host.on_request(&mut TestRequest::get(target));
        }
        assert_eq!(host.counter("decisions_total", &["allow"]), 2.0);
        assert_eq!(host.counter("decisions_total", &["deny"]), 1.0);
        assert_eq!(host.histogram_count("path_bytes", &[]), 5);
        assert_eq!(host.histogram_sum("path_bytes", &[]), 9.0);
        let warnings: Vec<String> = host
            .logs()
            .into_iter()
            .filter(|line| line.level == Level::Warn)
            .map(|line| line.message)
            .collect();
        assert_eq!(
            warnings,
            [
                "metric `decisions_total`: the label values [\"maybe\"] were not declared for \
                 it, so the update is dropped (later bad updates of it are dropped silently)"
            ]
        );
    }

    #[test]
    fn bad_metric_declarations_refuse_the_configuration() {
        let refused = TestHost::<Counted>::new(json!([true, false]))
            .err()
            .expect("refused");
        assert_eq!(
            refused,
            "metric `decisions_total`: label `outcome` value `` must be 1 to 64 printable bytes"
        );
    }

    #[test]
    fn a_metric_created_after_new_is_not_exported() {
        let mut host = TestHost::<Counted>::new(json!([false, true])).expect("accepted");
        host.on_request(&mut TestRequest::get("/?allow"));
        assert!(
            host.logs()[0]
                .message
                .starts_with("metric `late_total` was created after")
        );
        let unknown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.counter("late_total", &[])
        }));
        assert!(unknown.is_err(), "never declared, so never exported");
    }

    #[test]
    #[should_panic(expected = "metric `decisions_total` has no series [\"maybe\"]")]
    fn reading_a_series_never_declared_is_a_mistake_in_the_test() {
        let host = TestHost::<Counted>::new(json!([false, false])).expect("accepted");
        host.counter("decisions_total", &["maybe"]);
    }

    /// Runs each kv operation named in the request's query (`get`, `set`, `delete`,
    /// `increment`, `cas`, `long-set`, `long-get`) and reports each result in `x-kv`.
    struct KvOps;

    impl Filter for KvOps {
        type Config = serde_json::Value;

        fn new(_: Self::Config) -> Result<Self, String> {
            Ok(KvOps)
        }

        fn on_request(&self, request: &mut Request) -> Action {
            let long = "k".repeat(2000);
            let report = |result: Result<String, crate::Error>| match result {
                Ok(value) => value,
                Err(error) => format!("{:?}", error.kind()),
            };
            let results: Vec<String> = request
                .query()
                .unwrap_or_default()
                .split(',')
                .map(|operation| {
                    report(match operation {
                        "get" => kv::get_string("k").map(|value| format!("{value:?}")),
                        "set" => kv::set("k", "v", None).map(|()| "set".to_owned()),
                        "delete" => kv::delete("k").map(|was| was.to_string()),
                        "increment" => kv::increment("n", 1, None).map(|n| n.to_string()),
                        "cas" => kv::compare_and_swap("k", None, "w", None).map(|w| w.to_string()),
                        "long-set" => kv::set(&long, "v", None).map(|()| "set".to_owned()),
                        "long-get" => kv::get(&long).map(|value| format!("{value:?}")),
                        other => panic!("no operation {other}"),
                    })
                })
                .collect();
            let _ = request.set_header("x-kv", &results.join(","));
            Action::Continue
        }
    }

    fn kv_ops(host: &mut TestHost<KvOps>, operations: &str) -> String {
        let mut request = TestRequest::get(&format!("/?{operations}"));
        host.on_request(&mut request);
        request.header("x-kv").unwrap_or_default()
    }

    #[test]
    fn a_failing_store_fails_every_operation_until_it_recovers() {
        let all = "get,set,delete,increment,cas";
        let mut host = TestHost::<KvOps>::new(json!({})).expect("accepted");
        host.kv_set("k", "before", None);
        host.kv_fails(KvFailure::Unavailable);
        assert_eq!(
            kv_ops(&mut host, all),
            "Unavailable,Unavailable,Unavailable,Unavailable,Unavailable"
        );
        host.kv_fails(KvFailure::Timeout);
        assert_eq!(
            kv_ops(&mut host, all),
            "Timeout,Timeout,Timeout,Timeout,Timeout"
        );
        assert_eq!(host.kv_entries(), [("k".to_owned(), b"before".to_vec())]);
        host.kv_recovers();
        assert_eq!(kv_ops(&mut host, all), r#"Some("before"),set,true,1,true"#);
    }

    #[test]
    fn the_limits_come_before_the_store_as_in_the_gateway() {
        let mut host = TestHost::<KvOps>::new(json!({})).expect("accepted");
        host.kv_fails(KvFailure::Unavailable);
        assert_eq!(kv_ops(&mut host, "long-set,long-get"), "Refused,None");
    }

    #[test]
    fn text_that_is_not_utf8_reads_as_absent() {
        let mut host = TestHost::<KvOps>::new(json!({})).expect("accepted");
        host.kv_set("k", [0xff, 0xfe], None);
        assert_eq!(kv_ops(&mut host, "get"), "None");
    }

    #[test]
    fn store_errors_say_what_failed() {
        let _entered = Entered::new(&Rc::default());
        with_host(|host| host.kv_failure = Some(KvFailure::Unavailable));
        let error = kv::get("k").expect_err("failing");
        assert!(error.is_unavailable());
        assert_eq!(
            error.message(),
            "the key-value store is unavailable: the test host's store is failing \
             (`TestHost::kv_fails`)"
        );
        with_host(|host| host.kv_failure = Some(KvFailure::Timeout));
        let error = kv::increment("n", 1, None).expect_err("failing");
        assert_eq!(error.kind(), crate::ErrorKind::Timeout);
        assert!(error.is_unavailable());
        with_host(|host| host.kv_failure = None);
        kv::set("n", "x", None).expect("stored");
        let error = kv::increment("n", 1, None).expect_err("not an integer");
        assert_eq!(error.kind(), crate::ErrorKind::Refused);
        assert!(!error.is_unavailable());
        assert_eq!(error.message(), "the value is not an integer");
    }

    /// Sends what the request says (`x-method`, `x-service`, the path and query, `x-send-header`
    /// as `name: value`) and reports the answer or the error in the response header `x-answer`.
    struct Caller;

    impl Filter for Caller {
        type Config = serde_json::Value;

        fn new(_: Self::Config) -> Result<Self, String> {
            Ok(Caller)
        }

        fn on_request(&self, request: &mut Request) -> Action {
            let target = match request.query() {
                Some(query) => format!("{}?{query}", request.path()),
                None => request.path(),
            };
            let method = request
                .header("x-method")
                .unwrap_or_else(|| "GET".to_owned());
            let service = request.header("x-service").unwrap_or_default();
            let mut call = outbound::Request::new(&method, &service, &target)
                .body("ping")
                .timeout(Duration::from_micros(1500));
            if let Some((name, value)) = request
                .header("x-send-header")
                .as_deref()
                .and_then(|header| header.split_once(": "))
            {
                call = call.header(name, value);
            }
            let answer = match call.send() {
                Ok(response) => format!(
                    "{} {:?} {}",
                    response.status(),
                    response.header("X-Served"),
                    response.text()
                ),
                Err(error) => format!("{:?}: {}", error.kind(), error.message()),
            };
            Action::Respond(crate::Reply::new(200).with_header("x-answer", &answer))
        }
    }

    fn call(host: &mut TestHost<Caller>, service: &str, target: &str) -> String {
        let mut request = TestRequest::get(target).with_header("x-service", service);
        let action = host.on_request(&mut request);
        let reply = action.reply().expect("answers");
        reply.header("x-answer").unwrap_or_default().to_owned()
    }

    #[test]
    fn only_granted_services_are_called() {
        let mut host = TestHost::<Caller>::new(json!({})).expect("accepted");
        assert_eq!(
            call(&mut host, "idp", "/keys"),
            "NotAllowed: this route does not grant the filter the service `idp` (in a test: \
             `TestHost::grant_service`)"
        );
        host.grant_service("idp", |sent| {
            Ok(TestOutboundResponse::new(200)
                .with_header("X-Served", "idp-1")
                .with_body(format!("{} {}", sent.method, sent.path_and_query)))
        });
        assert_eq!(
            call(&mut host, "idp", "/keys?v=2"),
            r#"200 Some("idp-1") GET /keys?v=2"#
        );
        assert!(call(&mut host, "other", "/").starts_with("NotAllowed: "));

        let sent = host.outbound_requests();
        assert_eq!(sent.len(), 3, "every call, granted or not");
        assert_eq!(
            sent[1],
            TestOutboundRequest {
                service: "idp".to_owned(),
                method: "GET".to_owned(),
                path_and_query: "/keys?v=2".to_owned(),
                headers: vec![],
                body: b"ping".to_vec(),
                timeout: Some(Duration::from_millis(2)),
            },
            "the timeout as it crosses: whole milliseconds, rounded up"
        );
    }

    #[test]
    fn a_granted_service_fails_as_its_handler_says() {
        let mut host = TestHost::<Caller>::new(json!({})).expect("accepted");
        let cases = [
            (
                OutboundFailure::Timeout,
                "Timeout: the service `idp` did not answer in time",
            ),
            (
                OutboundFailure::TooLarge,
                "TooLarge: the answer of the service `idp` is larger than the gateway lets the \
                 filter receive",
            ),
            (
                OutboundFailure::Failed("connection refused".to_owned()),
                "Unavailable: the call to the service `idp` failed: connection refused",
            ),
        ];
        for (failure, expected) in cases {
            host.grant_service("idp", move |_| Err(failure.clone()));
            assert_eq!(call(&mut host, "idp", "/"), expected);
        }
    }

    #[test]
    fn a_request_the_gateway_cannot_send_is_refused_before_the_service() {
        let mut host = TestHost::<Caller>::new(json!({})).expect("accepted");
        host.grant_service("idp", |_| panic!("never asked"));
        let mut bad_method = TestRequest::get("/")
            .with_header("x-service", "idp")
            .with_header("x-method", "G T");
        let action = host.on_request(&mut bad_method);
        assert_eq!(
            action.reply().and_then(|reply| reply.header("x-answer")),
            Some("Refused: `G T` is not a method")
        );
        let mut bad_header = TestRequest::get("/")
            .with_header("x-service", "idp")
            .with_header("x-send-header", "bad name: x");
        let action = host.on_request(&mut bad_header);
        assert_eq!(
            action.reply().and_then(|reply| reply.header("x-answer")),
            Some("Refused: `bad name` is not a header name")
        );
    }

    #[test]
    fn a_handler_may_use_the_sdk_itself() {
        let mut host = TestHost::<Caller>::new(json!({})).expect("accepted");
        host.grant_service("idp", |sent| {
            let calls = kv::increment("calls", 1, None).expect("counted");
            crate::log::info("answered");
            Ok(TestOutboundResponse::new(200)
                .with_body(format!("{calls} {:?}", sent.header("accept"))))
        });
        let mut request = TestRequest::get("/")
            .with_header("x-service", "idp")
            .with_header("x-send-header", "Accept: text/plain");
        let action = host.on_request(&mut request);
        assert_eq!(
            action.reply().and_then(|reply| reply.header("x-answer")),
            Some(r#"200 None 1 Some("text/plain")"#)
        );
        assert_eq!(host.kv_get("calls").as_deref(), Some(&b"1"[..]));
        assert_eq!(host.logs()[0].message, "answered");
    }
}
