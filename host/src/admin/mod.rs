//! The admin API, on its own listener (loopback by default). With a token configured
//! (`admin.token_env` or `admin.token_file`, required off loopback), every endpoint but
//! `/health` and the dashboard's page wants `Authorization: Bearer <token>`.
//! - `GET /admin/status`: version, uptime, generation, listeners, and how many routes,
//!   services and filters serve (see [`status`]); `GET /api/v1/gateway/status` is the same for
//!   the seeds' clients;
//! - `GET /admin/routes` and `GET /admin/filters`: each route with its filters, and each filter
//!   component with its hash, the routes running it and their pools;
//! - `GET /admin/reload`: the reload status (generation, counters, last attempt and last
//!   failure with their reasons, the latest attempts, the filters serving and their content
//!   hashes);
//! - `POST /admin/reload`: reload now; answers with the attempt, 200 if applied, 422 if rejected;
//! - `GET /admin/filter-metrics`: every metric the filters declared, each series with its labels
//!   and value (a counter's total; a histogram's cumulative buckets, count and sum);
//! - `GET /admin/kv`: the key-value stores behind the filters' `kv` capability: which one is
//!   the default, and for each its state (a Redis `connected` or `down`, since when), its
//!   operations, errors, timeouts and latency;
//! - `GET /admin/services` (and the seeds' `GET /api/v1/gateway/services`): each upstream
//!   service's balancer and, for each instance, where it came from, its health (active
//!   checks), whether it is ejected and how often it was, its breaker's state and how often it
//!   opened, its requests in flight and its latency estimate;
//! - `GET`, `POST` and `DELETE` on `/admin/services/{name}/instances`, and the seeds'
//!   `POST /api/v1/gateway/services`: instances registered at run time (see [`services`]);
//! - `POST /admin/cache/purge`: removes cache entries by URL, prefix or zone (see [`purge`]);
//! - `GET /metrics`: every metric in the Prometheus text format (see [`crate::metrics`]);
//! - `GET /admin/stats`, and the seeds' `GET /api/v1/gateway/stats`: totals of requests, rate
//!   limits, breakers and cache (see [`stats`]);
//! - `POST /admin/publish`: publishes `{"topic", "data"}` to the WebSocket hub (see [`publish`]);
//! - `GET /admin/websocket`: open sockets, messages and bytes each way, closes by code, and
//!   the hub's topics with their subscriber counts;
//! - `GET /admin/ui`: the dashboard, a page that shows the above live (see [`ui`]);
//! - `GET /health`: liveness.

mod publish;
mod purge;
mod services;
mod stats;
mod status;
mod token;
mod ui;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use gateway_config::{AdminToken, KvBackendKind};
use gateway_filter::metrics::{MetricRegistry, SeriesValue};
use gateway_kv::KvStores;
use gateway_proxy::{Error, ResponseBody, error_response, full, request_id};
use gateway_rules::metrics::MetricKind;
use gateway_wire::fields::REQUEST_ID;

use crate::reload::{Reloader, Trigger};

/// What the admin API serves from: the reloader and what the gateway was started with.
pub struct Admin {
    pub reloader: Arc<Reloader>,
    /// Required of every request but the public ones, when set.
    pub token: Option<AdminToken>,
    /// The traffic listeners' bound addresses.
    pub listeners: Vec<SocketAddr>,
    /// This listener's bound address.
    pub address: SocketAddr,
    pub workers: usize,
    pub started: Instant,
    pub started_at: SystemTime,
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<ResponseBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|error| {
        format!(r#"{{"error":"cannot encode the answer: {error}"}}"#).into_bytes()
    });
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error in the gateway's JSON shape, for refusals only the admin API makes.
pub(crate) fn refused(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let mut response = json(
        status,
        &serde_json::json!({
            "error": message,
            "code": code,
            "request_id": request_id.to_str().unwrap_or("-"),
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }),
    );
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    response
}

/// Paths anyone may read, for they hold no data: liveness, for probes; and the dashboard's
/// page, which a browser's navigation could not fetch with a bearer token (its script sends
/// the token to the data endpoints, which stay guarded; see [`ui`]).
fn is_public(method: &Method, path: &str) -> bool {
    method == Method::GET && matches!(path, "/health" | "/admin/ui")
}

async fn handle(admin: Arc<Admin>, request: Request<Incoming>) -> Response<ResponseBody> {
    if let Some(token) = &admin.token
        && !is_public(request.method(), request.uri().path())
        && let Err(refusal) = token::check(token, request.headers())
    {
        return refusal;
    }
    let reloader = &admin.reloader;
    let (parts, body) = request.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/admin/status") => json(StatusCode::OK, &status::status(&admin)),
        (&Method::GET, "/api/v1/gateway/status") => {
            json(StatusCode::OK, &status::gateway_status(&admin))
        }
        (&Method::GET, "/admin/routes") => {
            json(StatusCode::OK, &status::routes(&reloader.live().current()))
        }
        (&Method::GET, "/admin/filters") => json(StatusCode::OK, &status::filters(reloader)),
        (&Method::GET, "/admin/reload") => json(StatusCode::OK, &reloader.status()),
        (&Method::POST, "/admin/reload") => {
            let attempt = reloader.reload(Trigger::Admin).await;
            let status = if attempt.applied {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            json(status, &attempt)
        }
        (&Method::GET, "/admin/filter-metrics") => {
            json(StatusCode::OK, &filter_metrics(reloader.filter_metrics()))
        }
        (&Method::GET, "/admin/kv") => json(StatusCode::OK, &kv_status(reloader.kv())),
        (&Method::GET, "/admin/services" | "/api/v1/gateway/services") => {
            json(StatusCode::OK, &services::all(&reloader.live().current()))
        }
        (&Method::POST, "/api/v1/gateway/services") => {
            let request_id = request_id(&parts.headers);
            services::register_seed(reloader, body, &request_id).await
        }
        (method, path) if let Some(name) = instances_of(path) => {
            let request_id = request_id(&parts.headers);
            match *method {
                Method::GET => services::instances(reloader, name, &request_id),
                Method::POST => services::register(reloader, name, body, &request_id).await,
                Method::DELETE => services::deregister(reloader, name, body, &request_id).await,
                _ => refused(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "GET, POST or DELETE",
                    &request_id,
                ),
            }
        }
        (&Method::POST, "/admin/cache/purge") => {
            let request_id = request_id(&parts.headers);
            purge::purge(reloader, body, &request_id).await
        }
        (&Method::GET, "/metrics") => metrics(reloader),
        (&Method::GET, "/admin/stats" | "/api/v1/gateway/stats") => {
            json(StatusCode::OK, &stats::stats(reloader))
        }
        (&Method::POST, "/admin/publish") => {
            let request_id = request_id(&parts.headers);
            publish::publish(body, &request_id).await
        }
        (&Method::GET, "/admin/websocket") => json(StatusCode::OK, &websocket_status()),
        (&Method::GET, "/admin/ui") => ui::page(),
        (&Method::GET, "/health") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        _ => {
            let request_id = request_id(&parts.headers);
            let mut response = error_response(&Error::NoRoute, &request_id, Version::HTTP_11);
            // As on the traffic listener: the id the error names is one the client was given.
            response.headers_mut().insert(REQUEST_ID, request_id);
            response
        }
    }
}

fn metrics(reloader: &Reloader) -> Response<ResponseBody> {
    match crate::metrics::render(reloader) {
        Ok(text) => {
            let mut response = Response::new(full(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            response
        }
        Err(error) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({ "error": format!("cannot encode the metrics: {error}") }),
        ),
    }
}

/// The service `{name}` in `/admin/services/{name}/instances`.
fn instances_of(path: &str) -> Option<&str> {
    path.strip_prefix("/admin/services/")?
        .strip_suffix("/instances")
        .filter(|name| !name.contains('/'))
}

fn websocket_status() -> serde_json::Value {
    let sockets = gateway_server::ws::status();
    let hub = gateway_server::ws::hub::hub_status();
    serde_json::json!({
        "open": sockets.open,
        "messages_from_clients": sockets.messages_from_clients,
        "bytes_from_clients": sockets.bytes_from_clients,
        "messages_to_clients": sockets.messages_to_clients,
        "bytes_to_clients": sockets.bytes_to_clients,
        "closes": sockets.closes,
        "hub": {
            "topics": hub.topics,
            "published": hub.published,
            "delivered": hub.delivered,
            "dropped_messages": hub.dropped_messages,
            "dropped_subscribers": hub.dropped_subscribers,
        },
    })
}

fn kv_status(stores: &KvStores) -> serde_json::Value {
    serde_json::json!({
        "default": match stores.default {
            KvBackendKind::Memory => "memory",
            KvBackendKind::Redis => "redis",
        },
        "memory": stores.memory.status(),
        "redis": stores.redis.as_ref().map(|redis| redis.status()),
    })
}

fn filter_metrics(registry: &MetricRegistry) -> serde_json::Value {
    let families: Vec<serde_json::Value> = registry
        .export()
        .into_iter()
        .map(|family| {
            let series: Vec<serde_json::Value> = family
                .series
                .into_iter()
                .map(|series| {
                    let labels: serde_json::Map<String, serde_json::Value> = series
                        .labels
                        .into_iter()
                        .map(|(name, value)| (name, value.into()))
                        .collect();
                    match series.value {
                        SeriesValue::Counter(total) => {
                            serde_json::json!({ "labels": labels, "value": total })
                        }
                        SeriesValue::Histogram {
                            buckets,
                            count,
                            sum,
                        } => {
                            let buckets: Vec<serde_json::Value> = buckets
                                .into_iter()
                                .map(|(bound, count)| {
                                    let bound = if bound.is_finite() {
                                        bound.to_string()
                                    } else {
                                        "+Inf".to_owned()
                                    };
                                    serde_json::json!({ "le": bound, "count": count })
                                })
                                .collect();
                            serde_json::json!({
                                "labels": labels, "buckets": buckets, "count": count, "sum": sum,
                            })
                        }
                    }
                })
                .collect();
            let kind = match family.kind {
                MetricKind::Counter => "counter",
                MetricKind::Histogram(_) => "histogram",
            };
            serde_json::json!({
                "name": format!("filter_{}_{}", family.filter.replace('-', "_"), family.name),
                "filter": &*family.filter,
                "help": family.help,
                "kind": kind,
                "series": series,
            })
        })
        .collect();
    serde_json::json!({ "metrics": families })
}

/// Serves the admin API on `listener` until the process ends.
pub fn spawn(admin: Admin, listener: TcpListener) {
    let admin = Arc::new(admin);
    tokio::spawn(async move {
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(handle(admin, request).await) }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%client, %error, "admin connection ended with an error");
                }
            });
        }
    });
}
