//! HTTP requests to the services of the gateway's configuration, for what a filter must ask
//! another service: a JWKS, a token introspection endpoint, a policy decision.
//!
//! A filter may call only the services its route entry grants it (`allow_services` in the
//! gateway's configuration); there is no other network access, and a call to any other service
//! fails with [`ErrorKind::NotAllowed`]. A call goes through the same connections and
//! balancing as proxied traffic. It waits without holding a gateway thread, but the phase waits
//! with it: the call counts against the phase's deadline (the filter's `timeout` in the
//! gateway's configuration). A call still waiting at the deadline stops the phase, which fails
//! the filter under its failure policy, so give each call a [timeout](Request::timeout) well
//! inside the deadline: that one comes back as [`ErrorKind::Timeout`], for the filter to
//! handle. So outbound calls suit what is rare, not one call per request: fetch a JWKS once,
//! keep it in [`kv`] with a TTL, and read it from there.
//!
//! In unit tests the test host answers for the services a test grants: see
//! [`crate::testing::TestHost::grant_service`].
//!
//! ```
//! use std::time::Duration;
//!
//! use gateway_sdk::{Error, kv, outbound};
//!
//! /// The identity provider's keys: from the store while they are fresh, else fetched and kept
//! /// for five minutes. `None` if the provider did not give them.
//! fn jwks() -> Result<Option<Vec<u8>>, Error> {
//!     if let Some(keys) = kv::get("jwks")? {
//!         return Ok(Some(keys));
//!     }
//!     let response = outbound::Request::get("idp", "/.well-known/jwks.json")
//!         .header("accept", "application/json")
//!         .timeout(Duration::from_millis(500))
//!         .send()?;
//!     if response.status() != 200 {
//!         return Ok(None);
//!     }
//!     kv::set("jwks", response.body(), Some(Duration::from_secs(300)))?;
//!     Ok(Some(response.into_body()))
//! }
//! # use gateway_sdk::testing::{TestHost, TestOutboundResponse, TestRequest};
//! # use gateway_sdk::{Action, Filter, Request};
//! # struct Keys;
//! # impl Filter for Keys {
//! #     type Config = gateway_sdk::serde_json::Value;
//! #     fn new(_: Self::Config) -> Result<Self, String> { Ok(Keys) }
//! #     fn on_request(&self, _: &mut Request) -> Action {
//! #         assert_eq!(jwks(), Ok(Some(b"{}".to_vec())));
//! #         Action::Continue
//! #     }
//! # }
//! # let mut host = TestHost::<Keys>::new(gateway_sdk::serde_json::json!({})).expect("accepted");
//! # host.grant_service("idp", |_| Ok(TestOutboundResponse::new(200).with_body("{}")));
//! # host.on_request(&mut TestRequest::get("/"));
//! # host.on_request(&mut TestRequest::get("/"));
//! # assert_eq!(host.outbound_requests().len(), 1, "the second read the store");
//! ```
//!
//! [`kv`]: crate::kv

use std::borrow::Cow;
use std::time::Duration;

use crate::backend;
use crate::{Error, ErrorKind};

/// A request to a service, built and then [sent](Request::send).
///
/// ```
/// use std::time::Duration;
///
/// let request = gateway_sdk::outbound::Request::new("POST", "introspect", "/oauth2/introspect")
///     .header("content-type", "application/x-www-form-urlencoded")
///     .body("token=abc")
///     .timeout(Duration::from_millis(300));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) path_and_query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) timeout_ms: Option<u32>,
}

impl Request {
    /// A request with this method to `service` (a service name of the gateway's
    /// configuration), for `path_and_query` (starting with `/`), with no headers, no body and
    /// no timeout of its own: the service's timeouts and the phase's deadline bound it.
    ///
    /// ```
    /// let purge = gateway_sdk::outbound::Request::new("DELETE", "cache", "/entries/7");
    /// ```
    pub fn new(method: &str, service: &str, path_and_query: &str) -> Self {
        Request {
            service: service.to_owned(),
            method: method.to_owned(),
            path_and_query: path_and_query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
        }
    }

    /// A `GET` request.
    ///
    /// ```
    /// let request = gateway_sdk::outbound::Request::get("idp", "/.well-known/jwks.json");
    /// ```
    pub fn get(service: &str, path_and_query: &str) -> Self {
        Request::new("GET", service, path_and_query)
    }

    /// A `POST` request; give it a [body](Request::body).
    ///
    /// ```
    /// let request = gateway_sdk::outbound::Request::post("audit", "/events").body("{}");
    /// ```
    pub fn post(service: &str, path_and_query: &str) -> Self {
        Request::new("POST", service, path_and_query)
    }

    /// Adds a header; a name may repeat. The gateway frames the request itself, so
    /// `content-length`, `transfer-encoding` and hop-by-hop headers are not sent.
    ///
    /// ```
    /// let request = gateway_sdk::outbound::Request::get("idp", "/userinfo")
    ///     .header("authorization", "Bearer abc");
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let request = gateway_sdk::outbound::Request::post("audit", "/events").body(b"{}".to_vec());
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The longest wait for the whole answer, in whole milliseconds (rounded up); past it,
    /// [`send`](Request::send) fails with [`ErrorKind::Timeout`]. The service's own timeouts
    /// bound the call too, and so does the phase's deadline, which stops the phase instead:
    /// keep this well inside the filter's `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let request = gateway_sdk::outbound::Request::get("idp", "/jwks").timeout(Duration::from_millis(250));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        // Rounded up so that a short wait is never sent as none at all.
        let millis = timeout.as_nanos().div_ceil(1_000_000);
        self.timeout_ms = Some(u32::try_from(millis).unwrap_or(u32::MAX));
        self
    }

    /// Sends the request and waits for the whole answer. Any status is an answer: check
    /// [`Response::status`].
    ///
    /// Fails with [`ErrorKind::NotAllowed`] for a service the route does not grant,
    /// [`ErrorKind::Refused`] for a request that cannot be sent (a bad method, path or header),
    /// [`ErrorKind::Timeout`] with no answer in time, [`ErrorKind::TooLarge`] for an answer
    /// larger than the gateway lets the filter receive, and [`ErrorKind::Unavailable`] when the
    /// service cannot be reached or breaks off its answer.
    ///
    /// ```
    /// use gateway_sdk::{ErrorKind, outbound};
    ///
    /// match outbound::Request::get("idp", "/health").send() {
    ///     Ok(response) => gateway_sdk::log::info(&format!("idp: {}", response.status())),
    ///     Err(error) if error.kind() == ErrorKind::NotAllowed => {
    ///         gateway_sdk::log::error(&format!("misconfigured: {error}"))
    ///     }
    ///     Err(error) => gateway_sdk::log::warn(&format!("idp down: {error}")),
    /// }
    /// ```
    pub fn send(self) -> Result<Response, Error> {
        let service = self.service.clone();
        backend::outbound_send(self).map_err(|failure| failure.into_error(&service))
    }
}

/// Why a call brought no answer, as the gateway reports it.
#[derive(Debug)]
pub(crate) enum Failure {
    NotAllowed(String),
    BadRequest(String),
    Timeout,
    TooLarge,
    Failed(String),
}

impl Failure {
    fn into_error(self, service: &str) -> Error {
        match self {
            Failure::NotAllowed(reason) => Error::new(ErrorKind::NotAllowed, reason),
            Failure::BadRequest(reason) => Error::new(ErrorKind::Refused, reason),
            Failure::Timeout => Error::new(
                ErrorKind::Timeout,
                format!("the service `{service}` did not answer in time"),
            ),
            Failure::TooLarge => Error::new(
                ErrorKind::TooLarge,
                format!(
                    "the answer of the service `{service}` is larger than the gateway lets the \
                     filter receive"
                ),
            ),
            Failure::Failed(reason) => Error::new(
                ErrorKind::Unavailable,
                format!("the call to the service `{service}` failed: {reason}"),
            ),
        }
    }
}

/// A service's whole answer.
///
/// ```
/// # fn demo() -> Result<(), gateway_sdk::Error> {
/// let response = gateway_sdk::outbound::Request::get("idp", "/.well-known/jwks.json").send()?;
/// if response.status() == 200 && response.header("content-type") == Some("application/json") {
///     let keys: gateway_sdk::serde_json::Value =
///         gateway_sdk::serde_json::from_slice(response.body()).unwrap_or_default();
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(crate) status: u16,
    /// Lower-case names, in order; values that are not UTF-8 are left out.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// The status code.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::outbound::Response) {
    /// let found = response.status() == 200;
    /// # }
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a header (names compared case-insensitively), if present and valid
    /// UTF-8.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::outbound::Response) {
    /// let max_age = response.header("cache-control");
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Every header as `(lower-case name, value)`, in order; values that are not UTF-8 are
    /// left out.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::outbound::Response) {
    /// let cookies = response.headers().iter().filter(|(name, _)| name == "set-cookie").count();
    /// # }
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::outbound::Response) {
    /// let empty = response.body().is_empty();
    /// # }
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (lossy for invalid UTF-8, as [`Reply::body_text`](crate::Reply::body_text)).
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::outbound::Response) {
    /// gateway_sdk::log::debug(&format!("idp said: {}", response.text()));
    /// # }
    /// ```
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body, without copying it.
    ///
    /// ```
    /// # fn demo(response: gateway_sdk::outbound::Response) {
    /// let keys: Vec<u8> = response.into_body();
    /// # }
    /// ```
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }
}
