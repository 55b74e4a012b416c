//! Unit-test a filter natively with `cargo test`: no Wasm, no gateway.
//!
//! In native builds every host call of the SDK goes to an in-process test host instead of the
//! gateway. A [`TestHost`] creates the filter from a configuration, runs its phases on a
//! [`TestRequest`] and a [`TestResponse`], records what the filter logged, and keeps its
//! key-value state; the test sets the clock and may preload state. The test host checks edits
//! with the gateway's own rules (`gateway_rules::edit`: header names and values, paths, queries,
//! statuses) and keeps the request read-only in the response phase, so a filter meets the same
//! refusals in its tests as in production.
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
use std::rc::Rc;
use std::time::Duration;

use crate::log::Level;
use crate::{Action, Filter, Phases, Request, Response};

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
}

/// What a response holds in a test.
#[derive(Debug, Clone)]
pub(crate) struct ResponseState {
    pub status: u16,
    pub headers: Vec<(String, String)>,
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
///     .with_route_param("service", "orders");
/// assert_eq!(request.path(), "/orders");
/// assert_eq!(request.query().as_deref(), Some("dry_run=1"));
/// ```
#[derive(Debug)]
pub struct TestRequest {
    pub(crate) state: RefCell<RequestState>,
}

impl TestRequest {
    /// A request with this method and target (`/path` or `/path?query`), from 127.0.0.1, with
    /// an `x-request-id` header as the gateway always sets one.
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
        crate::backend::header_values(&self.state.borrow().headers, name)
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
        crate::backend::header_values(&self.state.borrow().headers, name)
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
}

/// A response to run a filter's response phase on, and to inspect afterwards.
///
/// ```
/// use gateway_sdk::testing::TestResponse;
///
/// let response = TestResponse::new(200).with_header("content-type", "text/plain");
/// assert_eq!(response.status(), 200);
/// ```
#[derive(Debug)]
pub struct TestResponse {
    pub(crate) state: RefCell<ResponseState>,
}

impl TestResponse {
    /// A response with this status and no headers.
    ///
    /// ```
    /// let not_found = gateway_sdk::testing::TestResponse::new(404);
    /// ```
    pub fn new(status: u16) -> Self {
        TestResponse {
            state: RefCell::new(ResponseState {
                status,
                headers: Vec::new(),
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
        crate::backend::header_values(&self.state.borrow().headers, name)
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
        crate::backend::header_values(&self.state.borrow().headers, name)
    }

    /// Every header as `(lower-case name, value)`, in order.
    ///
    /// ```
    /// assert!(gateway_sdk::testing::TestResponse::new(204).headers().is_empty());
    /// ```
    pub fn headers(&self) -> Vec<(String, String)> {
        self.state.borrow().headers.clone()
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

/// The capabilities the test host answers with: the log, the clock, key-value state.
#[derive(Debug)]
pub(crate) struct HostState {
    logs: Vec<LogLine>,
    pub now_ms: u64,
    pub monotonic_ns: u64,
    pub kv: gateway_rules::kv::KvMap,
}

impl Default for HostState {
    fn default() -> Self {
        HostState {
            logs: Vec::new(),
            now_ms: 0,
            monotonic_ns: 0,
            kv: gateway_rules::kv::KvMap::new(gateway_rules::kv::Limits::default()),
        }
    }
}

impl HostState {
    /// Expiry runs on the monotonic clock, as in the gateway.
    pub fn kv_now(&self) -> u64 {
        self.monotonic_ns / 1_000_000
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
    filter: F,
    phases: Phases,
    host: Rc<RefCell<HostState>>,
}

impl<F: Filter> TestHost<F> {
    /// Creates the filter from a configuration, as the gateway does with a route's `config`.
    /// `Err` carries the message the gateway would print: a field path for a configuration that
    /// does not deserialize, or the filter's own reason.
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
        let config = crate::config::parse::<F::Config>(config)?;
        let filter = F::new(config)?;
        let phases = filter.phases();
        Ok(TestHost {
            filter,
            phases,
            host,
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
        &self.filter
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
        self.phases
    }

    /// Runs the request phase, as the gateway would: if the filter did not register for it,
    /// the request passes on untouched and the filter is not called.
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
        if !self.phases.contains(Phases::REQUEST) {
            return Action::Continue;
        }
        let _entered = Entered::new(&self.host);
        let mut handle = Request::from_test(&request.state, false);
        self.filter.on_request(&mut handle)
    }

    /// Runs the response phase, as the gateway would: `request` is read-only, and if the filter
    /// did not register for the phase the response passes on untouched.
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
        if !self.phases.contains(Phases::RESPONSE) {
            return Action::Continue;
        }
        let _entered = Entered::new(&self.host);
        let handle = Request::from_test(&request.state, true);
        let mut response_handle = Response::from_test(&response.state);
        self.filter.on_response(&handle, &mut response_handle)
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
        host.kv.get(key, host.kv_now())
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
    use crate::Headers;

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
}
