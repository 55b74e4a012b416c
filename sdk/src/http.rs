//! Request and response handles, and the reply a filter answers with.
//!
//! The handles are thin: every method asks the gateway for exactly what it needs, so reading one
//! header costs one header, not the whole list. Both handles edit headers through one trait,
//! [`Headers`], so a filter writes a header edit once for requests and responses.

use std::fmt;

use crate::backend::{RequestRef, ResponseRef};

/// Something the gateway refused (an edit, a key-value write), with its reason.
///
/// ```
/// use gateway_sdk::Headers;
///
/// # fn demo(request: &mut gateway_sdk::Request) {
/// if let Err(error) = request.set_header("bad header", "x") {
///     gateway_sdk::log::warn(&format!("cannot set header: {error}"));
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: String) -> Self {
        Error { message }
    }

    /// The gateway's reason for refusing.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) {
    /// let reason = request.set_path("no-slash").unwrap_err().message().to_owned();
    /// # }
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

fn refused(result: Result<(), String>) -> Result<(), Error> {
    result.map_err(Error::new)
}

mod sealed {
    /// Keeps [`super::Headers`] to the SDK's handles, so a method can join it without breaking
    /// filters.
    pub trait Sealed {}
}

/// The headers of a request or a response, read and edited the same way on both.
///
/// Names are case-insensitive, and the names the gateway hands back are lower-case. Take
/// `&mut impl Headers` to write an edit once for both phases:
///
/// ```
/// use gateway_sdk::{Error, Headers};
///
/// /// Hides what the inside says about itself, on the way up and on the way back.
/// fn scrub(headers: &mut impl Headers) -> Result<(), Error> {
///     headers.remove_header("x-internal-trace");
///     headers.set_header("x-served-by", "gateway")
/// }
/// ```
///
/// [`Request`] and [`Response`] implement it; no other type can.
pub trait Headers: sealed::Sealed {
    /// The first value of a header.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let agent = request.header("User-Agent").unwrap_or_default();
    /// # }
    /// ```
    fn header(&self, name: &str) -> Option<String>;

    /// Every value of a header, in order.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(response: &gateway_sdk::Response) {
    /// let cookies = response.header_values("set-cookie");
    /// # }
    /// ```
    fn header_values(&self, name: &str) -> Vec<String>;

    /// The distinct header names present, lower-case.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let custom = request.header_names().into_iter().filter(|n| n.starts_with("x-")).count();
    /// # }
    /// ```
    fn header_names(&self) -> Vec<String>;

    /// Replaces every value of a header with this one. Refused if the name is not a token, if
    /// the value holds a control character other than tab, or, on the request, in the response
    /// phase.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(request: &mut gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
    /// request.set_header("x-tenant", "acme")?;
    /// # Ok(())
    /// # }
    /// ```
    fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error>;

    /// Adds a value to a header, keeping the existing ones. Refused as
    /// [`set_header`](Headers::set_header) is.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(response: &mut gateway_sdk::Response) -> Result<(), gateway_sdk::Error> {
    /// response.append_header("vary", "accept-encoding")?;
    /// # Ok(())
    /// # }
    /// ```
    fn append_header(&mut self, name: &str, value: &str) -> Result<(), Error>;

    /// Removes every value of a header. On the request in the response phase, nothing happens:
    /// the request has gone upstream.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(request: &mut gateway_sdk::Request) {
    /// request.remove_header("cookie");
    /// # }
    /// ```
    fn remove_header(&mut self, name: &str);

    /// The `Content-Type`, without parameters and lower-case: `application/json` for
    /// `Application/JSON; charset=utf-8`.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let is_json = request.content_type().as_deref() == Some("application/json");
    /// # }
    /// ```
    fn content_type(&self) -> Option<String> {
        let content_type = self.header("content-type")?;
        let media = content_type.split(';').next()?.trim();
        (!media.is_empty()).then(|| media.to_ascii_lowercase())
    }

    /// The `Content-Length`, if present and a number.
    ///
    /// ```
    /// use gateway_sdk::Headers;
    ///
    /// # fn demo(response: &gateway_sdk::Response) {
    /// let empty = response.content_length() == Some(0);
    /// # }
    /// ```
    fn content_length(&self) -> Option<u64> {
        self.header("content-length")?.trim().parse().ok()
    }
}

/// The request being proxied, as the gateway normalised it. Its headers are read and edited
/// through [`Headers`].
///
/// ```
/// # fn demo(request: &mut gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
/// if request.path().starts_with("/old/") {
///     let new_path = request.path().replacen("/old/", "/new/", 1);
///     request.set_path(&new_path)?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Request<'a> {
    handle: RequestRef<'a>,
}

impl<'a> Request<'a> {
    #[cfg(target_family = "wasm")]
    pub(crate) fn from_handle(handle: &'a crate::wit::gateway::filter::http::Request) -> Self {
        Request {
            handle: RequestRef::new(handle),
        }
    }

    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn from_test(
        state: &'a std::cell::RefCell<crate::testing::RequestState>,
        sent: bool,
    ) -> Self {
        Request {
            handle: RequestRef::new(state, sent),
        }
    }

    /// The method, e.g. `"GET"`.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let read_only = matches!(request.method().as_str(), "GET" | "HEAD");
    /// # }
    /// ```
    pub fn method(&self) -> String {
        self.handle.method()
    }

    /// The normalised path, starting with `/`, without the query.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let is_api = request.path().starts_with("/api/");
    /// # }
    /// ```
    pub fn path(&self) -> String {
        self.handle.path()
    }

    /// Replaces the path sent upstream. Refused unless it starts with `/` and is a valid URI
    /// path, or during the response phase.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
    /// request.set_path("/v2/users")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_path(&mut self, path: &str) -> Result<(), Error> {
        refused(self.handle.set_path(path))
    }

    /// The raw query string without the `?`, if there is one.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let debug = request.query().is_some_and(|q| q.split('&').any(|pair| pair == "debug=1"));
    /// # }
    /// ```
    pub fn query(&self) -> Option<String> {
        self.handle.query()
    }

    /// Replaces the query string; `None` removes it. Refused if it is not a valid URI query.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
    /// request.set_query(Some("page=1"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), Error> {
        refused(self.handle.set_query(query))
    }

    /// The host the client asked for, without the port.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let internal = request.authority().is_some_and(|host| host.ends_with(".internal"));
    /// # }
    /// ```
    pub fn authority(&self) -> Option<String> {
        self.handle.authority()
    }

    /// The client's IP address as seen on the connection.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let local = request.client_ip() == "127.0.0.1";
    /// # }
    /// ```
    pub fn client_ip(&self) -> String {
        self.handle.client_ip()
    }

    /// A parameter captured by the route's path pattern, e.g. `service` in
    /// `/api/v1/{service}/{*rest}`.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let service = request.route_param("service");
    /// # }
    /// ```
    pub fn route_param(&self, name: &str) -> Option<String> {
        self.handle.route_param(name)
    }

    /// The request id the gateway assigned (or kept from the client), for logs and replies.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let id = request.request_id().unwrap_or_default();
    /// # }
    /// ```
    pub fn request_id(&self) -> Option<String> {
        self.header("x-request-id")
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let token = request.bearer_token();
    /// # }
    /// ```
    pub fn bearer_token(&self) -> Option<String> {
        let authorization = self.header("authorization")?;
        let (scheme, token) = authorization.trim().split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
    }

    /// The value of a cookie, from any `Cookie` header.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let session = request.cookie("session");
    /// # }
    /// ```
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.header_values("cookie").iter().find_map(|header| {
            header.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then(|| value.trim_matches('"').to_owned())
            })
        })
    }

    /// The first value of a query parameter, as sent (not percent-decoded).
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let page = request.query_param("page").and_then(|p| p.parse::<u32>().ok()).unwrap_or(1);
    /// # }
    /// ```
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_owned())
        })
    }
}

impl sealed::Sealed for Request<'_> {}

impl Headers for Request<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.handle.header(name)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.handle.header_values(name)
    }

    fn header_names(&self) -> Vec<String> {
        self.handle.header_names()
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        refused(self.handle.set_header(name, value))
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        refused(self.handle.append_header(name, value))
    }

    fn remove_header(&mut self, name: &str) {
        self.handle.remove_header(name)
    }
}

/// The response on its way back to the client. Its headers are read and edited through
/// [`Headers`].
///
/// ```
/// use gateway_sdk::Headers;
///
/// # fn demo(response: &mut gateway_sdk::Response) -> Result<(), gateway_sdk::Error> {
/// if response.status() >= 500 {
///     response.set_header("cache-control", "no-store")?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct Response<'a> {
    handle: ResponseRef<'a>,
}

impl<'a> Response<'a> {
    #[cfg(target_family = "wasm")]
    pub(crate) fn from_handle(handle: &'a crate::wit::gateway::filter::http::Response) -> Self {
        Response {
            handle: ResponseRef::new(handle),
        }
    }

    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn from_test(state: &'a std::cell::RefCell<crate::testing::ResponseState>) -> Self {
        Response {
            handle: ResponseRef::new(state),
        }
    }

    /// The status code.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::Response) {
    /// let failed = response.status() >= 500;
    /// # }
    /// ```
    pub fn status(&self) -> u16 {
        self.handle.status()
    }

    /// Replaces the status code. Refused outside `100..=999`.
    ///
    /// ```
    /// # fn demo(response: &mut gateway_sdk::Response) -> Result<(), gateway_sdk::Error> {
    /// response.set_status(200)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_status(&mut self, status: u16) -> Result<(), Error> {
        refused(self.handle.set_status(status))
    }
}

impl sealed::Sealed for Response<'_> {}

impl Headers for Response<'_> {
    fn header(&self, name: &str) -> Option<String> {
        self.handle.header(name)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.handle.header_values(name)
    }

    fn header_names(&self) -> Vec<String> {
        self.handle.header_names()
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        refused(self.handle.set_header(name, value))
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        refused(self.handle.append_header(name, value))
    }

    fn remove_header(&mut self, name: &str) {
        self.handle.remove_header(name)
    }
}

/// A complete answer from a filter.
///
/// ```
/// use gateway_sdk::Reply;
///
/// let reply = Reply::text(503, "maintenance").with_header("retry-after", "120");
/// assert_eq!(reply.status, 503);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Headers, in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with a status and no headers or body.
    ///
    /// ```
    /// let no_content = gateway_sdk::Reply::new(204);
    /// ```
    pub fn new(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A plain-text reply.
    ///
    /// ```
    /// let teapot = gateway_sdk::Reply::text(418, "short and stout");
    /// assert_eq!(teapot.body, b"short and stout");
    /// ```
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Reply::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// An error in the gateway's own JSON shape, so clients see one kind of error whoever made
    /// it: `{"error": message, "code": code, "request_id": ..., "timestamp": ...}`.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) -> gateway_sdk::Action {
    /// use gateway_sdk::{Action, Reply};
    ///
    /// if request.bearer_token().is_none() {
    ///     return Action::Respond(Reply::error(401, "UNAUTHORIZED", "a bearer token is required", request));
    /// }
    /// Action::Continue
    /// # }
    /// ```
    pub fn error(status: u16, code: &str, message: &str, request: &Request) -> Self {
        let body = serde_json::json!({
            "error": message,
            "code": code,
            "request_id": request.request_id().unwrap_or_else(|| "-".to_owned()),
            "timestamp": crate::clock::rfc3339(crate::clock::now_ms()),
        });
        Reply::new(status)
            .with_header("content-type", "application/json")
            .with_body(body.to_string())
    }

    /// The first value of a header of this reply (names compared case-insensitively).
    ///
    /// ```
    /// let reply = gateway_sdk::Reply::new(302).with_header("Location", "/login");
    /// assert_eq!(reply.header("location"), Some("/login"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body as text (lossy for invalid UTF-8).
    ///
    /// ```
    /// assert_eq!(gateway_sdk::Reply::text(200, "hi").body_text(), "hi");
    /// ```
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Adds a header.
    ///
    /// ```
    /// let moved = gateway_sdk::Reply::new(301).with_header("location", "/new");
    /// ```
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let reply = gateway_sdk::Reply::new(200).with_body(b"ok".to_vec());
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    #[cfg(target_family = "wasm")]
    pub(crate) fn into_wit(self) -> crate::wit::gateway::filter::http::Reply {
        crate::wit::gateway::filter::http::Reply {
            status: self.status,
            headers: self.headers,
            body: self.body,
        }
    }
}
