//! Request and response handles, the bodies they may hold, and the reply a filter answers with.
//!
//! A read takes what the filter declared in [`Reads`] from the call's input, and asks the
//! gateway for anything else, one crossing per read: reading one header costs one header, not
//! the whole list. An edit is checked here, with the gateway's rules (`gateway_rules`), so a
//! refusal comes back where the filter made it; it then joins the list of edits the call hands
//! back, which the gateway applies once the call returns. Until then every read replays this
//! call's edits over what it read, so a filter reads back what it wrote. Both handles edit
//! headers through one trait, [`Headers`], so a filter writes a header edit once for requests
//! and responses.

use std::cell::RefCell;

use gateway_rules::context;
use gateway_rules::edit::{self, EditError};

use crate::backend::{RequestRef, ResponseRef};
use crate::wit::exports::gateway::filter::handler::RequestFields;
use crate::{Error, Reads};
use gateway_rules::changes::{Change, Writer};
use gateway_rules::input::{InputBody, RequestInput};

mod sealed {
    /// Keeps [`super::Headers`] to the SDK's handles, so a method can join it without breaking
    /// filters.
    pub trait Sealed {}
}

/// The headers of a request or a response, read and edited the same way on both.
///
/// Names are case-insensitive, and the names the gateway hands back are lower-case. A read sees
/// the edits made earlier in the same call, whether the header was declared in [`Reads`] or is
/// asked for. Take `&mut impl Headers` to write an edit once for both phases:
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

/// A message body, for a filter that declared it reads it ([`Reads::request_body`],
/// [`Reads::response_body`]).
///
/// ```
/// use gateway_sdk::Body;
///
/// let small = Body::Complete(b"{\"ok\":true}".to_vec());
/// assert_eq!(small.bytes(), Some(&b"{\"ok\":true}"[..]));
/// assert!(Body::TooLarge.is_too_large());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The whole body, no longer than the filter's limit; empty if the message has none.
    Complete(Vec<u8>),
    /// Announced or found longer than the filter's limit, so not buffered: it streams on
    /// untouched unless the filter answers (with a 413, say), and it cannot be replaced.
    TooLarge,
}

impl Body {
    /// The bytes, if the body was handed over whole.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let is_json_object = request
    ///     .body()
    ///     .is_some_and(|body| body.bytes().is_some_and(|bytes| bytes.starts_with(b"{")));
    /// # }
    /// ```
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Body::Complete(bytes) => Some(bytes),
            Body::TooLarge => None,
        }
    }

    /// Whether the body was longer than the filter's limit.
    ///
    /// ```
    /// use gateway_sdk::{Action, Reply};
    ///
    /// # fn demo(request: &gateway_sdk::Request) -> Action {
    /// if request.body().is_some_and(|body| body.is_too_large()) {
    ///     return Action::Respond(Reply::error(413, "TOO_LARGE", "the body is too large", request));
    /// }
    /// Action::Continue
    /// # }
    /// ```
    pub fn is_too_large(&self) -> bool {
        matches!(self, Body::TooLarge)
    }
}

impl From<InputBody> for Body {
    fn from(body: InputBody) -> Self {
        match body {
            InputBody::Complete(bytes) => Body::Complete(bytes),
            InputBody::TooLarge => Body::TooLarge,
        }
    }
}

/// The phase a call runs: what the request handle may still change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

/// Every value of `name` among headers handed over with the call.
fn given_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
        .collect()
}

/// The values of `name` once this call's header edits are applied to what `read` returns.
/// `read` runs only if an edit does not hide its answer: after a set or a remove the values
/// before it no longer matter, so a filter that reads back a header it set crosses nowhere.
fn replay_values(edits: &Writer, name: &str, read: impl FnOnce() -> Vec<String>) -> Vec<String> {
    let resets = |change: &Change<'_>| {
        matches!(change, Change::SetHeader(key, _) | Change::RemoveHeader(key)
            if key.eq_ignore_ascii_case(name))
    };
    let mut values = if edits.iter().any(|change| resets(&change)) {
        Vec::new()
    } else {
        read()
    };
    for change in edits.iter() {
        match change {
            Change::SetHeader(key, value) if key.eq_ignore_ascii_case(name) => {
                values.clear();
                values.push(value.to_owned());
            }
            Change::AppendHeader(key, value) if key.eq_ignore_ascii_case(name) => {
                values.push(value.to_owned());
            }
            Change::RemoveHeader(key) if key.eq_ignore_ascii_case(name) => values.clear(),
            _ => {}
        }
    }
    values
}

/// The header names once this call's header edits are applied to `names`.
fn replay_names(edits: &Writer, mut names: Vec<String>) -> Vec<String> {
    for change in edits.iter() {
        match change {
            Change::SetHeader(key, _) | Change::AppendHeader(key, _)
                if !names.iter().any(|name| name.eq_ignore_ascii_case(key)) =>
            {
                names.push(key.to_ascii_lowercase());
            }
            Change::RemoveHeader(key) => names.retain(|name| !name.eq_ignore_ascii_case(key)),
            _ => {}
        }
    }
    names
}

/// Checks a header edit as the gateway will: a token and a value it accepts. Checked without
/// building the `http` crate's types, whose parser would weigh on every filter. The name goes
/// as written; the gateway compares names without case.
fn check_header(name: &str, value: &str) -> Result<(), Error> {
    edit::check_header_name(name).map_err(Error::refused)?;
    edit::check_header_value(value).map_err(Error::refused)
}

/// Room for a request phase's edits before the buffer grows: a few headers and a path. Growing
/// from nothing costs the guest an allocation per doubling.
const EDITS_CAPACITY: usize = 128;

/// Whether this call's edits change a header, so its value is no longer the host's.
fn touches(edits: &Writer, name: &str) -> bool {
    edits.iter().any(|change| match change {
        Change::SetHeader(edited, _)
        | Change::AppendHeader(edited, _)
        | Change::RemoveHeader(edited) => edited.eq_ignore_ascii_case(name),
        _ => false,
    })
}

/// Whether a body may be replaced with one of `len` bytes: only one handed over whole, within
/// the declared limit.
fn check_body(body: Option<&Body>, limit: Option<u32>, len: usize) -> Result<(), Error> {
    let held = matches!(body, Some(Body::Complete(_)));
    edit::body(len, held, limit.unwrap_or(0)).map_err(Error::refused)
}

/// What the request phase was handed besides the body. Empty in the response phase, where the
/// request is read as it was sent upstream.
#[derive(Default)]
struct Given {
    method: Option<String>,
    path: Option<String>,
    query: Option<String>,
    authority: Option<String>,
    client_ip: Option<String>,
    headers: Vec<(String, String)>,
    context: Vec<(String, String)>,
}

/// The request being proxied, as the gateway normalised it. Its headers are read and edited
/// through [`Headers`].
///
/// In the request phase the filter gets `&mut Request` and may edit it. In the response phase it
/// gets `&Request`, the request as it was sent upstream: it can still be read, and its context
/// entries set for the filters whose response phase comes later.
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
    reads: &'a Reads,
    phase: Phase,
    given: Given,
    body: Option<Body>,
    body_replaced: bool,
    /// In a cell because context entries are set through `&Request` in the response phase.
    edits: RefCell<Writer>,
}

impl<'a> Request<'a> {
    /// The request of a request phase, with what the call was handed.
    pub(crate) fn in_request_phase(
        handle: RequestRef<'a>,
        reads: &'a Reads,
        input: RequestInput,
    ) -> Self {
        Request {
            handle,
            reads,
            phase: Phase::Request,
            given: Given {
                method: input.method,
                path: input.path,
                query: input.query,
                authority: input.authority,
                client_ip: input.client_ip,
                headers: input.headers,
                context: input.context,
            },
            body: input.body.map(Body::from),
            body_replaced: false,
            edits: RefCell::new(Writer::with_capacity(EDITS_CAPACITY)),
        }
    }

    /// The request of a response phase: sent, so read from the handle, but for the context
    /// entries the call was handed.
    pub(crate) fn in_response_phase(
        handle: RequestRef<'a>,
        reads: &'a Reads,
        context: Vec<(String, String)>,
    ) -> Self {
        Request {
            handle,
            reads,
            phase: Phase::Response,
            given: Given {
                context,
                ..Given::default()
            },
            body: None,
            body_replaced: false,
            edits: RefCell::default(),
        }
    }

    /// This call's edits, for the gateway to apply.
    pub(crate) fn into_edits(self) -> Writer {
        let mut edits = self.edits.into_inner();
        if self.body_replaced
            && let Some(Body::Complete(body)) = &self.body
        {
            edits.push(&Change::SetBody(body));
        }
        edits
    }

    /// Whether the call was handed this field: declared, and in the request phase.
    fn given(&self, field: RequestFields) -> bool {
        self.phase == Phase::Request && self.reads.has(field)
    }

    /// The last edit `pick` recognises, as it reports it.
    fn last_edit<T>(&self, pick: impl Fn(Change<'_>) -> Option<T>) -> Option<T> {
        self.edits.borrow().iter().filter_map(pick).last()
    }

    /// Queues an edit of the request itself, which only the request phase may make.
    fn edit(
        &mut self,
        change: Change<'_>,
        check: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        if self.phase == Phase::Response {
            return Err(Error::refused(EditError::WrongPhase(edit::REQUEST_SENT)));
        }
        check()?;
        self.edits.get_mut().push(&change);
        Ok(())
    }

    /// The method, e.g. `"GET"`.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let read_only = matches!(request.method().as_str(), "GET" | "HEAD");
    /// # }
    /// ```
    pub fn method(&self) -> String {
        // A declared field always comes with the call; one that did not is read lazily.
        match &self.given.method {
            Some(method) => method.clone(),
            None => self.handle.method(),
        }
    }

    /// The normalised path, starting with `/`, without the query; after
    /// [`set_path`](Request::set_path), the path set.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let is_api = request.path().starts_with("/api/");
    /// # }
    /// ```
    pub fn path(&self) -> String {
        let edited = self.last_edit(|change| match change {
            Change::SetPath(path) => Some(path.to_owned()),
            _ => None,
        });
        if let Some(path) = edited {
            return path;
        }
        match &self.given.path {
            Some(path) => path.clone(),
            None => self.handle.path(),
        }
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
        self.edit(Change::SetPath(path), || {
            edit::path(path).map_err(Error::refused)
        })
    }

    /// The raw query string without the `?`, if there is one.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let debug = request.query().is_some_and(|q| q.split('&').any(|pair| pair == "debug=1"));
    /// # }
    /// ```
    pub fn query(&self) -> Option<String> {
        let edited = self.last_edit(|change| match change {
            Change::SetQuery(query) => Some(query.map(str::to_owned)),
            _ => None,
        });
        if let Some(query) = edited {
            return query;
        }
        // An absent query is `None` in the input too: only the declaration tells them apart.
        if self.given(RequestFields::QUERY) {
            self.given.query.clone()
        } else {
            self.handle.query()
        }
    }

    /// Replaces the query string; `None` removes it. Refused if it is not a valid URI query, or
    /// during the response phase.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
    /// request.set_query(Some("page=1"))?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), Error> {
        self.edit(Change::SetQuery(query), || match query {
            Some(query) => edit::query(query).map_err(Error::refused),
            None => Ok(()),
        })
    }

    /// The host the client asked for, without the port.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let internal = request.authority().is_some_and(|host| host.ends_with(".internal"));
    /// # }
    /// ```
    pub fn authority(&self) -> Option<String> {
        if self.given(RequestFields::AUTHORITY) {
            self.given.authority.clone()
        } else {
            self.handle.authority()
        }
    }

    /// The client's IP address as seen on the connection.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let local = request.client_ip() == "127.0.0.1";
    /// # }
    /// ```
    pub fn client_ip(&self) -> String {
        match &self.given.client_ip {
            Some(ip) => ip.clone(),
            None => self.handle.client_ip(),
        }
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

    /// The request body, in the request phase of a filter that declared
    /// [`Reads::request_body`]; `None` otherwise. After [`set_body`](Request::set_body), the
    /// body set.
    ///
    /// A copy, so the request stays free to edit while the filter looks at it: read it once
    /// per call.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let length = request.body().and_then(|body| body.bytes().map(<[u8]>::len));
    /// # }
    /// ```
    pub fn body(&self) -> Option<Body> {
        self.body.clone()
    }

    /// Replaces the request body sent upstream; the gateway frames the request by the new
    /// length. Refused unless the filter was handed the body whole ([`Body::Complete`]), if the
    /// new one is longer than the declared limit, or during the response phase.
    ///
    /// ```
    /// # fn demo(request: &mut gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
    /// request.set_body(b"{\"redacted\":true}".to_vec())?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) -> Result<(), Error> {
        if self.phase == Phase::Response {
            return Err(Error::refused(EditError::WrongPhase(edit::REQUEST_SENT)));
        }
        let body = body.into();
        check_body(self.body.as_ref(), self.reads.request_body, body.len())?;
        self.body = Some(Body::Complete(body));
        self.body_replaced = true;
        Ok(())
    }

    /// A request context entry, set by this filter or an earlier one: read from the call if
    /// declared with [`Reads::context`], else asked for. After
    /// [`set_context`](Request::set_context) or [`remove_context`](Request::remove_context),
    /// what this filter left.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// let subject = request.context("auth.subject").unwrap_or_else(|| "anonymous".to_owned());
    /// # }
    /// ```
    pub fn context(&self, key: &str) -> Option<String> {
        let edited = self.last_edit(|change| match change {
            Change::SetContext(name, value) if name == key => Some(Some(value.to_owned())),
            Change::RemoveContext(name) if name == key => Some(None),
            _ => None,
        });
        if let Some(value) = edited {
            return value;
        }
        if self.reads.has_context(key) {
            self.given
                .context
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone())
        } else {
            self.handle.context(key)
        }
    }

    /// Sets a request context entry for later filters and for response phases, in either phase.
    /// Nothing in the context reaches the upstream unless a filter writes it into a header.
    /// Refused if the key is not 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`, or the
    /// value is over 4096 bytes. A request holds at most 32 entries; the gateway counts them
    /// when the call returns and fails a filter that sets more.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) -> Result<(), gateway_sdk::Error> {
    /// request.set_context("auth.subject", "alice")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_context(&self, key: &str, value: &str) -> Result<(), Error> {
        context::key(key).map_err(Error::refused)?;
        context::value(key, value).map_err(Error::refused)?;
        self.edits
            .borrow_mut()
            .push(&Change::SetContext(key, value));
        Ok(())
    }

    /// Removes a request context entry, in either phase. A key no entry can have is ignored.
    ///
    /// ```
    /// # fn demo(request: &gateway_sdk::Request) {
    /// request.remove_context("auth.token");
    /// # }
    /// ```
    pub fn remove_context(&self, key: &str) {
        if context::key(key).is_ok() {
            self.edits.borrow_mut().push(&Change::RemoveContext(key));
        }
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
        let declared = self.phase == Phase::Request && self.reads.has_request_header(name);
        if declared || touches(&self.edits.borrow(), name) {
            return self.header_values(name).into_iter().next();
        }
        // One value, or none, crosses cheaper than a list.
        self.handle.header(name)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        replay_values(&self.edits.borrow(), name, || {
            if self.phase == Phase::Request && self.reads.has_request_header(name) {
                given_values(&self.given.headers, name)
            } else {
                self.handle.header_values(name)
            }
        })
    }

    fn header_names(&self) -> Vec<String> {
        replay_names(&self.edits.borrow(), self.handle.header_names())
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        self.edit(Change::SetHeader(name, value), || check_header(name, value))
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        self.edit(Change::AppendHeader(name, value), || {
            check_header(name, value)
        })
    }

    fn remove_header(&mut self, name: &str) {
        // In the response phase the request has gone: nothing to remove, and nothing to say.
        if self.phase == Phase::Request && edit::check_header_name(name).is_ok() {
            self.edits.get_mut().push(&Change::RemoveHeader(name));
        }
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
    reads: &'a Reads,
    status: u16,
    status_edited: bool,
    /// The declared headers the call was handed.
    headers: Vec<(String, String)>,
    body: Option<Body>,
    body_replaced: bool,
    edits: Writer,
}

impl<'a> Response<'a> {
    /// The response of a response phase, with what the call was handed.
    pub(crate) fn new(
        handle: ResponseRef<'a>,
        reads: &'a Reads,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<InputBody>,
    ) -> Self {
        Response {
            handle,
            reads,
            status,
            status_edited: false,
            headers,
            body: body.map(Body::from),
            body_replaced: false,
            edits: Writer::default(),
        }
    }

    /// This call's edits, for the gateway to apply.
    pub(crate) fn into_edits(self) -> Writer {
        let mut edits = self.edits;
        if self.status_edited {
            edits.push(&Change::SetStatus(self.status));
        }
        if self.body_replaced
            && let Some(Body::Complete(body)) = &self.body
        {
            edits.push(&Change::SetBody(body));
        }
        edits
    }

    /// The status code; after [`set_status`](Response::set_status), the status set.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::Response) {
    /// let failed = response.status() >= 500;
    /// # }
    /// ```
    pub fn status(&self) -> u16 {
        self.status
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
        edit::status(status).map_err(Error::refused)?;
        self.status = status;
        self.status_edited = true;
        Ok(())
    }

    /// The response body, for a filter that declared [`Reads::response_body`]; `None`
    /// otherwise. After [`set_body`](Response::set_body), the body set. A copy, as
    /// [`Request::body`] is.
    ///
    /// ```
    /// # fn demo(response: &gateway_sdk::Response) {
    /// let cacheable = response.body().is_some_and(|body| !body.is_too_large());
    /// # }
    /// ```
    pub fn body(&self) -> Option<Body> {
        self.body.clone()
    }

    /// Replaces the response body; the gateway frames the response by the new length. Refused
    /// unless the filter was handed the body whole ([`Body::Complete`]), or if the new one is
    /// longer than the declared limit.
    ///
    /// ```
    /// # fn demo(response: &mut gateway_sdk::Response) -> Result<(), gateway_sdk::Error> {
    /// response.set_body("[]")?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_body(&mut self, body: impl Into<Vec<u8>>) -> Result<(), Error> {
        let body = body.into();
        check_body(self.body.as_ref(), self.reads.response_body, body.len())?;
        self.body = Some(Body::Complete(body));
        self.body_replaced = true;
        Ok(())
    }
}

impl sealed::Sealed for Response<'_> {}

impl Headers for Response<'_> {
    fn header(&self, name: &str) -> Option<String> {
        if self.reads.has_response_header(name) || touches(&self.edits, name) {
            return self.header_values(name).into_iter().next();
        }
        self.handle.header(name)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        replay_values(&self.edits, name, || {
            if self.reads.has_response_header(name) {
                given_values(&self.headers, name)
            } else {
                self.handle.header_values(name)
            }
        })
    }

    fn header_names(&self) -> Vec<String> {
        replay_names(&self.edits, self.handle.header_names())
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        check_header(name, value)?;
        self.edits.push(&Change::SetHeader(name, value));
        Ok(())
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        check_header(name, value)?;
        self.edits.push(&Change::AppendHeader(name, value));
        Ok(())
    }

    fn remove_header(&mut self, name: &str) {
        if edit::check_header_name(name).is_ok() {
            self.edits.push(&Change::RemoveHeader(name));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestRequest;

    /// A request phase handed `input`, over a request whose lazy reads give other answers, so
    /// a test can tell which source a read used.
    fn with_request<R>(
        reads: &Reads,
        input: RequestInput,
        test: impl FnOnce(&mut Request) -> R,
    ) -> R {
        let state = TestRequest::get("/lazy?lazy=1")
            .with_header("x-seen", "lazy")
            .with_context("seen", "lazy")
            .state
            .into_inner();
        let mut request = Request::in_request_phase(RequestRef::new(&state), reads, input);
        test(&mut request)
    }

    fn input() -> RequestInput {
        RequestInput {
            method: None,
            path: Some("/given".to_owned()),
            query: None,
            authority: None,
            client_ip: None,
            headers: vec![("x-seen".to_owned(), "given".to_owned())],
            context: vec![("seen".to_owned(), "given".to_owned())],
            body: None,
        }
    }

    #[test]
    fn declared_reads_come_from_the_input_and_the_rest_from_the_handle() {
        let declared = Reads::default()
            .path()
            .query()
            .request_header("X-Seen")
            .context("seen");
        with_request(&declared, input(), |request| {
            assert_eq!(request.path(), "/given");
            // Declared and absent from the input: absent, not asked for.
            assert_eq!(request.query(), None);
            assert_eq!(request.header("x-seen").as_deref(), Some("given"));
            assert_eq!(request.context("seen").as_deref(), Some("given"));
            assert_eq!(request.method(), "GET");
        });
        with_request(&Reads::default(), input(), |request| {
            assert_eq!(request.query().as_deref(), Some("lazy=1"));
            assert_eq!(request.header("x-seen").as_deref(), Some("lazy"));
            assert_eq!(request.context("seen").as_deref(), Some("lazy"));
        });
    }

    #[test]
    fn reads_replay_the_calls_own_edits() -> Result<(), Error> {
        let declared = Reads::default().path().request_header("x-seen");
        with_request(&declared, input(), |request| {
            request.append_header("X-Seen", "appended")?;
            assert_eq!(request.header_values("x-seen"), ["given", "appended"]);
            request.set_header("x-seen", "set")?;
            request.append_header("x-seen", "again")?;
            assert_eq!(request.header_values("x-seen"), ["set", "again"]);
            request.remove_header("x-seen");
            assert_eq!(request.header("x-seen"), None);
            request.set_header("x-new", "1")?;
            assert_eq!(request.header_names(), ["x-request-id", "x-new"]);

            request.set_path("/edited")?;
            assert_eq!(request.path(), "/edited");
            request.set_query(None)?;
            assert_eq!(request.query(), None);
            request.set_context("seen", "edited")?;
            assert_eq!(request.context("seen").as_deref(), Some("edited"));
            request.remove_context("seen");
            assert_eq!(request.context("seen"), None);
            Ok(())
        })
    }

    #[test]
    fn refused_edits_say_why_at_once_and_are_not_queued() {
        with_request(&Reads::default(), input(), |request| {
            let refused = request.set_path("no-slash").expect_err("refused");
            assert_eq!(refused.message(), EditError::Path.to_string());
            assert_eq!(refused.kind(), crate::ErrorKind::Refused);
            assert!(!refused.is_unavailable());
            assert!(request.set_header("bad name", "x").is_err());
            assert!(request.set_context("no spaces", "x").is_err());
            assert!(request.set_context("k", &"x".repeat(5000)).is_err());
            let refused = request.set_body("x").expect_err("no body declared");
            assert_eq!(refused.message(), EditError::BodyNotHeld.to_string());
            request.remove_header("bad name");
            assert!(request.edits.borrow().is_empty());
        });
    }

    #[test]
    fn the_request_is_read_as_sent_in_the_response_phase() {
        let state = TestRequest::get("/sent")
            .with_header("x-seen", "sent")
            .state
            .into_inner();
        let declared = Reads::default().path().request_header("x-seen");
        let mut request = Request::in_response_phase(RequestRef::new(&state), &declared, vec![]);
        assert_eq!(request.path(), "/sent");
        assert_eq!(request.header("x-seen").as_deref(), Some("sent"));
        let refused = request.set_header("x-late", "1").expect_err("sent already");
        assert_eq!(refused.message(), edit::REQUEST_SENT);
        assert!(request.set_path("/late").is_err());
        request.remove_header("x-seen");
        assert!(request.set_context("phase", "response").is_ok());
        let edits = request.into_edits();
        let changes: Vec<Change> = edits.iter().collect();
        assert!(
            matches!(
                changes.as_slice(),
                [Change::SetContext("phase", "response")]
            ),
            "{changes:?}"
        );
    }

    #[test]
    fn a_header_set_or_removed_is_read_back_without_asking() {
        let mut edits = Writer::default();
        edits.push(&Change::SetHeader("x-a", "1"));
        let values = replay_values(&edits, "X-A", || panic!("read although the edit hides it"));
        assert_eq!(values, ["1"]);
        let mut edits = Writer::default();
        edits.push(&Change::AppendHeader("x-a", "2"));
        assert_eq!(
            replay_values(&edits, "x-a", || vec!["1".to_owned()]),
            ["1", "2"]
        );
    }
}
