//! `POST /admin/cache/purge`: removes the cache filter's entries by exact URL, by URL prefix,
//! or a whole zone (the name a route's cache entries are kept under), on whichever store the
//! filter uses, and answers with how many keys were removed.
//!
//! ```json
//! {"url": "https://shop.example/api/items?page=2", "zone": "products"}
//! {"prefix": "https://shop.example/api/"}
//! {"zone": "products"}
//! ```
//!
//! `filter` names the filter definition (default `cache`), `zone` the zone (default `default`,
//! as in the filter's config). The key layout is `gateway_rules::cache`, the one the filter
//! writes. A count includes every key of a URL: its variants, and the markers that lead to
//! them.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use gateway_rules::cache::Purge;

use gateway_proxy::ResponseBody;

use crate::admin::{json, refused};
use crate::reload::Reloader;

/// The largest purge request read.
const MAX_BODY: usize = 16 * 1024;

/// How long a purge may take before it is answered as failed; a Redis purge makes one
/// round trip per thousand keys scanned.
const DEADLINE: Duration = Duration::from_secs(30);

/// A purge request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    /// The cache filter's definition name.
    #[serde(default = "default_filter")]
    filter: String,
    /// The zone of the entries.
    #[serde(default = "default_zone")]
    zone: String,
    /// One absolute URL.
    url: Option<String>,
    /// An absolute URL prefix.
    prefix: Option<String>,
}

fn default_filter() -> String {
    "cache".to_owned()
}

fn default_zone() -> String {
    "default".to_owned()
}

pub(crate) async fn purge(
    reloader: &Reloader,
    body: Incoming,
    request_id: &HeaderValue,
) -> http::Response<ResponseBody> {
    let bad = |message: &str| refused(StatusCode::BAD_REQUEST, "BAD_PURGE", message, request_id);
    let bytes: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return bad("the body is unreadable or over 16 KiB"),
    };
    let request: PurgeRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => return bad(&format!("the body is not a purge request: {error}")),
    };
    let purge = match (&request.url, &request.prefix) {
        (Some(url), None) => Purge::url(&request.zone, url),
        (None, Some(prefix)) => Purge::prefix(&request.zone, prefix),
        (None, None) => Purge::zone(&request.zone),
        (Some(_), Some(_)) => return bad("give `url` or `prefix`, not both"),
    };
    let purge = match purge {
        Ok(purge) => purge,
        Err(error) => return bad(&error.to_string()),
    };
    let state = reloader.live().current();
    let Some(filter) = state
        .filters
        .iter()
        .find(|filter| *filter.name == *request.filter)
    else {
        return refused(
            StatusCode::NOT_FOUND,
            "NO_SUCH_FILTER",
            &format!("no filter named `{}` is loaded", request.filter),
            request_id,
        );
    };
    let backend = match reloader.kv().backend(filter.settings.kv) {
        Ok(backend) => backend,
        Err(reason) => {
            return refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "STORE_UNAVAILABLE",
                &reason,
                request_id,
            );
        }
    };
    let removed = backend.delete_matching(&request.filter, purge.prefix_of_keys(), |key| {
        purge.matches(key)
    });
    match tokio::time::timeout(DEADLINE, removed).await {
        Ok(Ok(removed)) => {
            tracing::info!(filter = %request.filter, zone = %request.zone, ?purge, removed, "cache purged");
            json(StatusCode::OK, &serde_json::json!({ "removed": removed }))
        }
        Ok(Err(error)) => refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORE_UNAVAILABLE",
            &format!("the purge did not finish: {error}"),
            request_id,
        ),
        Err(_) => refused(
            StatusCode::GATEWAY_TIMEOUT,
            "PURGE_TIMEOUT",
            "the purge did not finish in 30 s; entries removed so far stay removed",
            request_id,
        ),
    }
}
