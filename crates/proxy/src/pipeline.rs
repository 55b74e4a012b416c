//! The request pipeline: edge checks, path normalisation, routing, the filter chain's request
//! phase, the upstream call, the response phase, and one access-log line (handed to
//! `gateway-access-log`'s per-worker buffer, never written here).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use gateway_filter::{FilterChain, FilterReply, HeldBody, RequestHead, ResponseHead, Step, Trace};
use gateway_routing::Route;
use gateway_upstream::{Instance, Outgoing, Service, Upgrade};
use gateway_wire::fields::REQUEST_ID;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::{BodyExt, Either};

use crate::body::{BodyLimits, BodyReadTimeout, Prefixed, RequestBody, ResponseBody, full};
use crate::spans::{self, RequestSpans};
use crate::state::{RouteEntry, ServingState, Target};
use crate::trace::TraceContext;
use crate::{Error, Result, headers, hygiene};
use gateway_access_log::Line;
use gateway_metrics::RouteMetrics;
use gateway_routing::normalize;

/// What the pipeline knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The peer address.
    pub client: SocketAddr,
}

/// What the access log says about one request, borrowed from the serving state: nothing is
/// formatted unless the line is written.
#[derive(Default)]
struct Outcome<'g> {
    route: Option<&'g str>,
    /// The route's counters, once routed.
    metrics: Option<&'g RouteMetrics>,
    upstream: Option<&'g Instance>,
    error: Option<Error>,
    trace: Option<TraceContext>,
    /// Each filter call and the upstream try, when the request is traced or exported.
    steps: Option<Vec<Step>>,
    /// The route's `debug_trace` applies: the answer carries the steps.
    debug_traced: bool,
    /// Whether the access log line carries them too.
    debug_trace_logged: bool,
    /// The trace is sampled and an exporter is installed.
    exported: bool,
    /// The normalised path, for the exported span.
    path: Option<String>,
}

/// The header a traced request's answer carries its trace of decisions in.
pub const DEBUG_TRACE: header::HeaderName = header::HeaderName::from_static("x-gateway-trace");

/// The steps as one header value: `name;phase=...;decision="...";dur=<ms>`, comma-separated,
/// in the order they ran (as `Server-Timing` writes its metrics).
fn render(steps: &[Step]) -> HeaderValue {
    let mut text = String::new();
    for (index, step) in steps.iter().enumerate() {
        if index > 0 {
            text.push_str(", ");
        }
        let millis = step.micros as f64 / 1000.0;
        text.push_str(&format!(
            "{};phase={};decision=\"{}\";dur={millis:.3}",
            step.name, step.phase, step.decision
        ));
    }
    // Names and decisions are made of visible ASCII: the value is always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unrenderable"))
}

/// Serves one client request. Never fails: every error becomes the documented JSON answer.
pub async fn serve<B>(
    state: &ServingState,
    peer: &Peer,
    request: Request<B>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let client = peer.client;
    let request_id = headers::request_id(request.headers());
    let method = request.method().clone();
    let version = request.version();
    let access_log = gateway_access_log::enabled();
    let metrics = gateway_metrics::enabled();
    let exporter = spans::sink();
    // Only the access log, the metrics and exported spans need the time taken: no clock read
    // without them.
    let started = (access_log || metrics || exporter.is_some()).then(Instant::now);
    // Logged as received: the normalised form may not exist if the path is refused.
    let target = access_log
        .then(|| request.uri().path_and_query().map(ToString::to_string))
        .flatten();
    // Reference counts on the parsed head, not copies.
    let header = |name| {
        access_log
            .then(|| request.headers().get(name).cloned())
            .flatten()
    };
    let (referer, user_agent) = (header(header::REFERER), header(header::USER_AGENT));
    let mut outcome = Outcome::default();

    // The edge checks come before `/health` too: a request with ambiguous framing must never
    // be answered on a connection that is then kept, whatever it asks for.
    let checked = hygiene::check_request(&request, &state.size_limits);
    let answer = match checked {
        Err(violation) => Err(Error::Edge(violation)),
        Ok(()) if request.uri().path() == "/health" => Ok(health()),
        Ok(()) => forward(state, client, request, &request_id, &mut outcome).await,
    };
    let mut response = answer.unwrap_or_else(|error| {
        let response = error_response(&error, &request_id, version);
        outcome.error = Some(error);
        response
    });
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    let debug_trace = outcome
        .steps
        .as_deref()
        .filter(|_| outcome.debug_traced)
        .map(render);
    if let Some(trace) = &debug_trace {
        response.headers_mut().insert(DEBUG_TRACE, trace.clone());
    }

    if metrics {
        outcome.metrics.unwrap_or(&*state.unrouted).record(
            &method,
            response.status().as_u16(),
            started,
        );
    }
    if access_log {
        let trace = outcome.trace.as_ref();
        gateway_access_log::write(&Line {
            time: SystemTime::now(),
            request_id: request_id.to_str().unwrap_or("-"),
            client: client.ip(),
            method: Some(method.as_str()),
            target: target.as_deref(),
            version,
            status: response.status().as_u16(),
            bytes: response.body().size_hint().exact(),
            duration_us: started.map_or(0, |started| {
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
            }),
            route: outcome.route,
            upstream: outcome.upstream.map(|instance| instance.label.as_str()),
            error: outcome
                .error
                .as_ref()
                .map(|error| error as &dyn std::fmt::Display),
            referer: referer.as_ref().map(HeaderValue::as_bytes),
            user_agent: user_agent.as_ref().map(HeaderValue::as_bytes),
            trace_id: trace.map(TraceContext::trace_id),
            span_id: trace.map(TraceContext::span_id),
            debug_trace: debug_trace
                .as_ref()
                .filter(|_| outcome.debug_trace_logged)
                .map(HeaderValue::as_bytes),
        });
    }
    if let (Some(exporter), true, Some(trace), Some(started)) =
        (exporter, outcome.exported, outcome.trace.as_ref(), started)
    {
        // The wall-clock start is read back from the monotonic one, for sampled requests only.
        let duration = started.elapsed();
        exporter.finish(RequestSpans {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_id: trace.parent_id,
            request_id: request_id.to_str().unwrap_or("-").to_owned(),
            method,
            path: outcome.path.take(),
            route: outcome.route.map(str::to_owned),
            status: response.status().as_u16(),
            error: outcome.error.as_ref().map(|error| error.to_client().code),
            upstream: outcome.upstream.map(|instance| instance.label.clone()),
            start: SystemTime::now() - duration,
            started,
            duration,
            steps: outcome.steps.take().unwrap_or_default(),
        });
    }
    response
}

/// The answer to a request whose head could not be read, so that it never reached [`serve`]:
/// the JSON error, with a request id of its own, and a log line.
pub fn refuse_unreadable(client: SocketAddr, error: Error) -> Response<ResponseBody> {
    let request_id = headers::request_id(&http::HeaderMap::new());
    let mut response = error_response(&error, &request_id, Version::HTTP_11);
    gateway_access_log::write(&Line {
        time: SystemTime::now(),
        request_id: request_id.to_str().unwrap_or("-"),
        client: client.ip(),
        method: None,
        target: None,
        version: Version::HTTP_11,
        status: response.status().as_u16(),
        bytes: response.body().size_hint().exact(),
        duration_us: 0,
        route: None,
        upstream: None,
        error: Some(&error),
        referer: None,
        user_agent: None,
        trace_id: None,
        span_id: None,
        debug_trace: None,
    });
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

fn health() -> Response<ResponseBody> {
    let mut response = Response::new(full(r#"{"status":"ok"}"#));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn forward<'g, B>(
    state: &'g ServingState,
    client: SocketAddr,
    request: Request<B>,
    request_id: &HeaderValue,
    outcome: &mut Outcome<'g>,
) -> Result<Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = normalize::normalize_path(request.uri().path())
        .map_err(Error::BadPath)?
        .into_owned();
    let authority = hygiene::host_of(&request).map(str::to_owned);
    let matched = state
        .router
        .route(request.method(), authority.as_deref(), &path)
        .ok_or(Error::NoRoute)?;
    let route = matched.route;
    outcome.route = Some(&route.name);
    outcome.metrics = Some(&*route.value.metrics);
    if !route.value.allow_dot_segment_params && normalize::has_dot_segment_params(&path) {
        return Err(Error::BadPath(normalize::PathError::DotSegmentParams));
    }

    let traced = route
        .value
        .debug_trace
        .as_ref()
        .filter(|trace| trace.applies(client.ip(), request.headers()));
    outcome.debug_traced = traced.is_some();
    outcome.debug_trace_logged = traced.is_some_and(|trace| trace.access_log);

    let (parts, body) = request.into_parts();
    let mut head = RequestHead {
        method: parts.method,
        query: parts.uri.query().map(str::to_owned),
        path,
        headers: parts.headers,
        authority,
        client_ip: client.ip(),
        params: matched.params,
        context: Default::default(),
        body: HeldBody::Streaming,
    };
    let original_host = head.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
    });
    headers::strip_hop_by_hop(&mut head.headers);
    headers::set_forwarded(&mut head.headers, head.client_ip, original_host.as_ref());
    head.headers.insert(REQUEST_ID, request_id.clone());
    if state.propagate_traces {
        let sample_ratio = state.sample_ratio.filter(|_| spans::sink().is_some());
        let trace = TraceContext::continue_or_start(&mut head.headers, request_id, sample_ratio);
        outcome.exported = sample_ratio.is_some() && trace.sampled();
        outcome.trace = Some(trace);
    }
    if outcome.exported {
        outcome.path = Some(head.path.clone());
    }
    let mut steps = (outcome.debug_traced || outcome.exported).then(Vec::new);

    let mut body = Prefixed::new(RequestBody::new(
        body,
        BodyLimits {
            pause: state.limits.body_read_timeout,
            min_rate: state.limits.body_min_rate.0,
        },
    ));
    let chain = &route.value.chain;
    let (ran, decided) = request_phase(chain, &mut head, &mut body, steps.as_mut()).await;
    let answer = match decided {
        Ok(Some(reply)) => Ok(reply_response(reply)),
        Err(error) => Err(error),
        Ok(None) => {
            if let HeldBody::Complete(bytes) = &head.body {
                body.replace(bytes.clone());
            }
            let started = steps.is_some().then(Instant::now);
            let answered = call_upstream(state, route, &mut head, &parts.uri, body, outcome).await;
            if let (Some(steps), Some(started)) = (steps.as_mut(), started) {
                steps.push(upstream_step(&answered, outcome.upstream, started));
            }
            answered
        }
    };
    let response = match answer {
        Ok(response) => response,
        // Filters that already ran still see the gateway's own error answer.
        Err(error) if ran > 0 => {
            let response = error_response(&error, request_id, parts.version);
            outcome.error = Some(error);
            response
        }
        Err(error) => {
            outcome.steps = steps;
            return Err(error);
        }
    };
    let response = respond_through_chain(
        chain,
        ran,
        &mut head,
        response,
        request_id,
        parts.version,
        steps.as_mut(),
    )
    .await;
    outcome.steps = steps;
    response
}

/// The upstream try as a step of the trace: the instance's status, or why there was none.
fn upstream_step(
    answered: &Result<Response<ResponseBody>>,
    instance: Option<&Instance>,
    started: Instant,
) -> Step {
    let decision = match (answered, instance) {
        (Ok(response), Some(instance)) => {
            format!("{} from {}", response.status().as_u16(), instance.label)
        }
        (Ok(response), None) => response.status().as_u16().to_string(),
        (Err(error), _) => format!("failed {}", error.to_client().code),
    };
    Step {
        name: "upstream".to_owned(),
        phase: "request",
        decision,
        started,
        micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    }
}

/// Runs the chain's request phase, reading the request body first for the filters that asked
/// for it: just before the first of them, so the filters in front can answer without waiting
/// for the body. Returns how many filters took part and what they decided.
async fn request_phase<B>(
    chain: &FilterChain,
    head: &mut RequestHead,
    body: &mut Prefixed<RequestBody<B>>,
    mut trace: Trace<'_>,
) -> (usize, Result<Option<FilterReply>>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let all = chain.filters.len();
    let Some((first, limit)) = chain.request_body_need() else {
        let phase = chain.on_request(head, 0..all, trace).await;
        return (phase.ran, phase.outcome.map_err(Error::Filter));
    };
    let before = chain.on_request(head, 0..first, trace.as_deref_mut()).await;
    if !matches!(before.outcome, Ok(None)) {
        return (before.ran, before.outcome.map_err(Error::Filter));
    }
    head.body = match body.read_whole(limit as usize).await {
        Ok(Some(bytes)) => HeldBody::Complete(bytes),
        Ok(None) => HeldBody::TooLarge,
        Err(error) if error.is::<BodyReadTimeout>() => return (first, Err(Error::BodyTimeout)),
        Err(_) => return (first, Err(Error::BadBody)),
    };
    let after = chain.on_request(head, first..all, trace).await;
    (after.ran, after.outcome.map_err(Error::Filter))
}

/// Sends the request to an instance of the route's service and returns its response head and
/// streaming body.
async fn call_upstream<'g, B>(
    state: &'g ServingState,
    route: &'g Route<RouteEntry>,
    head: &mut RequestHead,
    client_uri: &Uri,
    body: Prefixed<RequestBody<B>>,
    outcome: &mut Outcome<'g>,
) -> Result<Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service: &'g Service = match &route.value.target {
        Target::Service(service) => service,
        Target::ServiceFromParam(param) => {
            let name = head.param(param).unwrap_or_default();
            state
                .services
                .get(name)
                .ok_or_else(|| Error::UnknownService(name.chars().take(64).collect()))?
        }
        Target::None => return Err(Error::NoService(route.name.clone())),
    };
    let target = upstream_target(client_uri, head);
    let outgoing = Outgoing {
        method: &head.method,
        target: &target,
        headers: &head.headers,
        client_ip: head.client_ip,
        path: &head.path,
    };
    let forwarded = service.forward(outgoing, body).await?;
    outcome.upstream = Some(forwarded.instance);
    let response = forwarded.response;
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        Either::Left(Prefixed::new(body)),
    ))
}

/// The request target the upstream gets, in origin form: the connection is to the instance
/// already. That is the client's own when its path needed no normalising and no filter changed
/// the path or the query, the common case, which costs no allocation.
fn upstream_target<'u>(client_uri: &'u Uri, head: &RequestHead) -> Cow<'u, str> {
    let unchanged = client_uri.path() == head.path && client_uri.query() == head.query.as_deref();
    if unchanged {
        return Cow::Borrowed(
            client_uri
                .path_and_query()
                .map_or("/", |target| target.as_str()),
        );
    }
    let mut target =
        String::with_capacity(head.path.len() + 1 + head.query.as_ref().map_or(0, String::len));
    target.push_str(&head.path);
    if let Some(query) = &head.query {
        target.push('?');
        target.push_str(query);
    }
    Cow::Owned(target)
}

/// Runs the response phase of the filters that took part, reading the response body first if
/// one of them asked for it, then assembles what the client gets.
async fn respond_through_chain(
    chain: &FilterChain,
    ran: usize,
    request: &mut RequestHead,
    response: Response<ResponseBody>,
    request_id: &HeaderValue,
    version: Version,
    trace: Trace<'_>,
) -> Result<Response<ResponseBody>> {
    if ran == 0 {
        return Ok(response);
    }
    let (mut parts, mut body) = response.into_parts();
    let mut head = ResponseHead {
        status: parts.status,
        headers: std::mem::take(&mut parts.headers),
        body: HeldBody::Streaming,
    };
    if let Some(limit) = chain.response_body_need(ran) {
        let read = read_response_body(body, limit as usize).await;
        match read {
            Ok((rest, held)) => {
                body = rest;
                head.body = held;
            }
            Err(error) => {
                tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), %error, "the upstream's body failed while read for the filters");
                return Ok(error_response(&error, request_id, version));
            }
        }
    }
    match chain.on_response(ran, request, &mut head, trace).await {
        Ok(replaced) => {
            parts.status = head.status;
            parts.headers = head.headers;
            let body = match (replaced, head.body) {
                (Some(bytes), _) => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    full(bytes)
                }
                (None, HeldBody::Complete(bytes)) => full(bytes),
                (None, HeldBody::Streaming | HeldBody::TooLarge) => body,
            };
            Ok(Response::from_parts(parts, body))
        }
        Err(error) => {
            tracing::debug!(request_id = request_id.to_str().unwrap_or("-"), %error, "response phase refused the response");
            Ok(error_response(&Error::Filter(error), request_id, version))
        }
    }
}

/// Reads a response body for the filters, up to `limit`: the body to send on, and what the
/// filters get.
async fn read_response_body(body: ResponseBody, limit: usize) -> Result<(ResponseBody, HeldBody)> {
    match body {
        Either::Left(mut upstream) => match upstream.read_whole(limit).await {
            Ok(Some(bytes)) => Ok((full(bytes.clone()), HeldBody::Complete(bytes))),
            Ok(None) => Ok((Either::Left(upstream), HeldBody::TooLarge)),
            Err(error) => Err(Error::UpstreamBody(error)),
        },
        // The gateway's own answers (an error, a filter's reply) are in memory already.
        Either::Right(made)
            if made
                .size_hint()
                .exact()
                .is_some_and(|len| len > limit as u64) =>
        {
            Ok((Either::Right(made), HeldBody::TooLarge))
        }
        Either::Right(made) => {
            let bytes = match made.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            Ok((full(bytes.clone()), HeldBody::Complete(bytes)))
        }
    }
}

/// A WebSocket handshake the route's filters let through, with the instance picked for it.
pub struct Handshake<'g> {
    /// The instance, counted in flight until the socket closes.
    pub upgrade: Upgrade<'g>,
    /// The request target the instance gets, in origin form.
    pub target: String,
    /// The request's headers as the filters left them, hop-by-hop ones removed and the
    /// forwarding ones set: the upgrade headers are the relay's to write.
    pub headers: http::HeaderMap,
    pub request_id: HeaderValue,
    /// The route that took the handshake.
    pub route: &'g str,
}

/// A WebSocket handshake the route's filters let through, before any instance is picked: the
/// hub takes its sockets from here, the relay goes on to [`Approved::pick`].
pub struct Approved<'g> {
    route: &'g Route<RouteEntry>,
    head: RequestHead,
    uri: Uri,
    request_id: HeaderValue,
    version: Version,
}

impl<'g> Approved<'g> {
    /// A value the route's filters wrote into the request context (`auth.roles`, say).
    pub fn context(&self, key: &str) -> Option<&str> {
        self.head.context.get(key)
    }

    /// The request id every answer to this handshake carries.
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// The route that took the handshake.
    pub fn route(&self) -> &'g str {
        &self.route.name
    }

    /// Picks the instance of the route's service the socket is relayed to.
    #[expect(
        clippy::result_large_err,
        reason = "once per handshake, and the refusal is written out at once: boxing it costs an allocation for nothing"
    )]
    pub fn pick(
        self,
        state: &'g ServingState,
    ) -> std::result::Result<Handshake<'g>, Response<ResponseBody>> {
        let Approved {
            route,
            head,
            uri,
            request_id,
            version,
        } = self;
        let refused = |error: Error| refusal(error, &request_id, version);
        let service: &'g Service = match &route.value.target {
            Target::Service(service) => service,
            Target::ServiceFromParam(param) => {
                let name = head.param(param).unwrap_or_default();
                state.services.get(name).ok_or_else(|| {
                    refused(Error::UnknownService(name.chars().take(64).collect()))
                })?
            }
            Target::None => return Err(refused(Error::NoService(route.name.clone()))),
        };
        let target = upstream_target(&uri, &head).into_owned();
        let upgrade = service
            .pick_for_upgrade(Outgoing {
                method: &head.method,
                target: &target,
                headers: &head.headers,
                client_ip: head.client_ip,
                path: &head.path,
            })
            .map_err(|error| refused(Error::from(error)))?;
        Ok(Handshake {
            upgrade,
            target,
            headers: head.headers,
            request_id,
            route: &route.name,
        })
    }
}

fn refusal(error: Error, request_id: &HeaderValue, version: Version) -> Response<ResponseBody> {
    tracing::debug!(request_id = request_id.to_str().unwrap_or("-"), %error, "WebSocket handshake refused");
    let mut response = error_response(&error, request_id, version);
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    response
}

/// Runs a WebSocket handshake through the same steps as a request up to the upstream call:
/// edge checks, routing and the route's filters' request phase; [`Approved::pick`] then picks
/// the instance. A filter that answers refuses the upgrade with its answer; every other
/// refusal is the gateway's JSON error. The response phase does not run: the instance's `101`
/// is the relay's to check, and what follows is not HTTP.
pub async fn approve_handshake<'g>(
    state: &'g ServingState,
    peer: &Peer,
    request: Request<()>,
) -> std::result::Result<Approved<'g>, Response<ResponseBody>> {
    let request_id = headers::request_id(request.headers());
    let version = request.version();
    let refused = |error: Error| refusal(error, &request_id, version);
    if let Err(violation) = hygiene::check_request(&request, &state.size_limits) {
        return Err(refused(Error::Edge(violation)));
    }
    let path = normalize::normalize_path(request.uri().path())
        .map_err(|error| refused(Error::BadPath(error)))?
        .into_owned();
    let authority = hygiene::host_of(&request).map(str::to_owned);
    let matched = state
        .router
        .route(request.method(), authority.as_deref(), &path)
        .ok_or_else(|| refused(Error::NoRoute))?;
    let route = matched.route;
    if !route.value.allow_dot_segment_params && normalize::has_dot_segment_params(&path) {
        return Err(refused(Error::BadPath(
            normalize::PathError::DotSegmentParams,
        )));
    }
    let (parts, ()) = request.into_parts();
    let mut head = RequestHead {
        method: parts.method,
        query: parts.uri.query().map(str::to_owned),
        path,
        headers: parts.headers,
        authority,
        client_ip: peer.client.ip(),
        params: matched.params,
        context: Default::default(),
        body: HeldBody::Streaming,
    };
    let original_host = head.headers.get(header::HOST).cloned();
    headers::strip_hop_by_hop(&mut head.headers);
    headers::set_forwarded(&mut head.headers, head.client_ip, original_host.as_ref());
    head.headers.insert(REQUEST_ID, request_id.clone());
    if state.propagate_traces {
        TraceContext::continue_or_start(&mut head.headers, &request_id, None);
    }
    // A handshake has no body: the filters that ask for one get it empty.
    let mut body = Prefixed::new(RequestBody::new(
        http_body_util::Empty::<Bytes>::new(),
        BodyLimits {
            pause: state.limits.body_read_timeout,
            min_rate: state.limits.body_min_rate.0,
        },
    ));
    match request_phase(&route.value.chain, &mut head, &mut body, None).await {
        (_, Ok(None)) => {}
        (_, Ok(Some(reply))) => {
            let mut response = reply_response(reply);
            response
                .headers_mut()
                .insert(REQUEST_ID, request_id.clone());
            return Err(response);
        }
        (_, Err(error)) => return Err(refused(error)),
    }
    Ok(Approved {
        route,
        head,
        uri: parts.uri,
        request_id,
        version,
    })
}

fn reply_response(reply: FilterReply) -> Response<ResponseBody> {
    let mut response = Response::new(full(reply.body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    response
}

/// The JSON answer for an error, in the one shape every gateway error has.
pub fn error_response(
    error: &Error,
    request_id: &HeaderValue,
    version: Version,
) -> Response<ResponseBody> {
    let client = error.to_client();
    let body = serde_json::json!({
        "error": client.message,
        "code": client.code,
        "request_id": request_id.to_str().unwrap_or("-"),
        "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    });
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = client.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // HTTP/2 has no connection header; its streams do not share framing state anyway.
    if client.close && version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(seconds) = client.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    } else if client.status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(path: &str, query: Option<&str>) -> RequestHead {
        RequestHead {
            path: path.to_owned(),
            query: query.map(str::to_owned),
            ..RequestHead::default()
        }
    }

    #[test]
    fn the_upstream_gets_the_path_and_query_as_normalised_and_filtered_in_origin_form() {
        let cases = [
            ("/a/b?x=1", head("/a/b", Some("x=1")), "/a/b?x=1"),
            ("/a/b?", head("/a/b", Some("")), "/a/b?"),
            ("/a/./b", head("/a/b", None), "/a/b"),
            (
                "/api/users?id=7",
                head("/users", Some("id=7")),
                "/users?id=7",
            ),
            ("/a?x=1", head("/a", None), "/a"),
            ("/a", head("/a", Some("y=2")), "/a?y=2"),
            (
                "http://example.com/a?x=1",
                head("/a", Some("x=1")),
                "/a?x=1",
            ),
        ];
        for (client, head, expected) in cases {
            let client: Uri = client.parse().expect("a valid URI");
            let sent = upstream_target(&client, &head);
            assert_eq!(sent, expected, "from {client}");
            let unchanged = client.path() == head.path && client.query() == head.query.as_deref();
            assert_eq!(
                matches!(sent, Cow::Borrowed(_)),
                unchanged,
                "borrowed exactly when nothing changed, from {client}"
            );
        }
    }
}
