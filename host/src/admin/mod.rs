//! The admin API, on its own listener (loopback by default):
//! - `GET /admin/reload`: the reload status (generation, counters, last attempt and last
//!   failure with their reasons, the filters serving and their content hashes);
//! - `POST /admin/reload`: reload now; answers with the attempt, 200 if applied, 422 if rejected;
//! - `GET /health`: liveness.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use gateway_proxy::{Error, ResponseBody, error_response, full, request_id};
use gateway_wire::fields::REQUEST_ID;

use crate::reload::{Reloader, Trigger};

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

async fn handle(reloader: Arc<Reloader>, request: Request<Incoming>) -> Response<ResponseBody> {
    match (request.method(), request.uri().path()) {
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
        (&Method::GET, "/health") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        _ => {
            let request_id = request_id(request.headers());
            let mut response = error_response(&Error::NoRoute, &request_id, Version::HTTP_11);
            // As on the traffic listener: the id the error names is one the client was given.
            response.headers_mut().insert(REQUEST_ID, request_id);
            response
        }
    }
}

/// Serves the admin API on `listener` until the process ends.
pub fn spawn(reloader: Arc<Reloader>, listener: TcpListener) {
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
            let reloader = reloader.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let reloader = reloader.clone();
                    async move { Ok::<_, Infallible>(handle(reloader, request).await) }
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
