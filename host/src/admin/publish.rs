//! `POST /admin/publish`: a service publishes `{"topic": "...", "data": <any JSON>}` to the
//! WebSocket hub. With `websocket.hub.redis` it goes through Redis, so that every gateway's
//! subscribers get it; the answer says where it went.

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderValue;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use gateway_proxy::ResponseBody;
use gateway_server::ws::hub::{self, Published};

use super::json;
use super::refused;

/// The largest message accepted: a hub message is a notification, not a payload store.
const MAX_BODY: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    topic: String,
    data: serde_json::Value,
}

pub(crate) async fn publish(
    body: Incoming,
    request_id: &HeaderValue,
) -> http::Response<ResponseBody> {
    let bad = |message: &str| refused(StatusCode::BAD_REQUEST, "BAD_PUBLISH", message, request_id);
    let bytes: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return bad("the body is unreadable or over 1 MiB"),
    };
    let request: PublishRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => return bad(&format!("the body is not {{\"topic\", \"data\"}}: {error}")),
    };
    match hub::publish(&request.topic, &request.data).await {
        Ok(Published::Local { subscribers }) => json(
            StatusCode::OK,
            &serde_json::json!({ "topic": request.topic, "subscribers": subscribers }),
        ),
        Ok(Published::Redis { gateways }) => json(
            StatusCode::OK,
            &serde_json::json!({ "topic": request.topic, "gateways": gateways }),
        ),
        Err(error) => {
            tracing::warn!(%error, topic = %request.topic, "a hub message could not be published");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                "the hub's Redis server is unavailable",
                request_id,
            )
        }
    }
}
