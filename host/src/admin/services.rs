//! The services and their instances: `GET /admin/services` (and the seeds'
//! `GET /api/v1/gateway/services`), and registering instances at run time:
//!
//! - `GET /admin/services/{name}/instances`: the service's instances with their source
//!   (`config`, `admin` or `registry`), metadata and state;
//! - `POST /admin/services/{name}/instances` with a registration
//!   (`{"url", "weight", "health_path", "version", "zone", "meta"}`, only `url` required):
//!   201 when the address is new, 200 when it replaces the admin registration there;
//! - `DELETE /admin/services/{name}/instances` with `{"url"}`: removes an admin registration;
//! - `POST /api/v1/gateway/services` with the seeds' body
//!   (`{"service_name", "host", "port", "health_endpoint"}`), registered the same way.
//!
//! A bad body gets 400 `INVALID_REGISTRATION` with the `field` at fault. With `registry.redis`
//! the registration is shared through Redis (the answer's `shared`), so every gateway serves
//! it while this one renews it.

use std::collections::BTreeMap;

use http::header::HeaderValue;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use gateway_proxy::{ResponseBody, ServingState};
use gateway_registry::Registration;
use gateway_upstream::{InstanceStatus, Source};
use gateway_wire::fields::REQUEST_ID;

use super::{json, refused};
use crate::reload::Reloader;

/// The largest registration read.
const MAX_BODY: usize = 16 * 1024;

/// Every service, with its balancer and instances.
pub(crate) fn all(state: &ServingState) -> Value {
    let services: serde_json::Map<String, Value> = state
        .services()
        .map(|(name, service)| {
            let status = service.status();
            let value = json!({
                "balancer": status.balancer,
                "instances": status.instances.iter().map(instance).collect::<Vec<_>>(),
            });
            (name.to_owned(), value)
        })
        .collect();
    json!({ "services": services })
}

fn instance(instance: &InstanceStatus) -> Value {
    json!({
        "url": instance.url,
        "weight": instance.weight,
        "source": instance.source.as_str(),
        "health_path": instance.health_path,
        "meta": instance.meta,
        "healthy": instance.healthy,
        "ejected": instance.ejected,
        "ejections": instance.ejections,
        "breaker": instance.breaker.map(|state| state.as_str()),
        "breaker_opened": instance.breaker_opened,
        "in_flight": instance.in_flight,
        "ewma_ms": instance.ewma_ms,
    })
}

/// `GET /admin/services/{name}/instances`.
pub(crate) fn instances(
    reloader: &Reloader,
    name: &str,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let state = reloader.live().current();
    match state.services().find(|(service, _)| *service == name) {
        Some((_, service)) => {
            let status = service.status();
            json(
                StatusCode::OK,
                &json!({
                    "service": name,
                    "balancer": status.balancer,
                    "instances": status.instances.iter().map(instance).collect::<Vec<_>>(),
                }),
            )
        }
        None => unknown(name, request_id),
    }
}

fn unknown(name: &str, request_id: &HeaderValue) -> Response<ResponseBody> {
    let name: String = name.chars().take(64).collect();
    refused(
        StatusCode::NOT_FOUND,
        "UNKNOWN_SERVICE",
        &format!("no service named `{name}` has instances"),
        request_id,
    )
}

/// A refused registration, naming the field at fault.
fn invalid(field: &str, message: &str, request_id: &HeaderValue) -> Response<ResponseBody> {
    let mut response = json(
        StatusCode::BAD_REQUEST,
        &json!({
            "code": "INVALID_REGISTRATION",
            "error": format!("{field}: {message}"),
            "field": field,
            "request_id": request_id.to_str().unwrap_or("-"),
            "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }),
    );
    response
        .headers_mut()
        .insert(REQUEST_ID, request_id.clone());
    response
}

/// Reads a JSON body; a problem comes with the field path it is at (`.` for the whole body).
async fn read<T: DeserializeOwned>(body: Incoming) -> Result<T, (String, String)> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|_| {
            (
                ".".to_owned(),
                format!("the body is unreadable or over {MAX_BODY} bytes"),
            )
        })?
        .to_bytes();
    let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        // serde names a missing or unknown field in its message, at the path of the object
        // around it: the field is the useful path.
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|start| message.strip_prefix(start)?.split('`').next());
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), path) if !path.ends_with(name) => format!("{path}.{name}"),
            _ => path,
        };
        (field, message)
    })
}

/// `POST /admin/services/{name}/instances`.
pub(crate) async fn register(
    reloader: &Reloader,
    name: &str,
    body: Incoming,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    match read::<Registration>(body).await {
        Ok(registration) => add(reloader, name, registration, request_id).await,
        Err((field, message)) => invalid(&field, &message, request_id),
    }
}

async fn add(
    reloader: &Reloader,
    name: &str,
    registration: Registration,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let registered = match registration.check(name, Source::Admin) {
        Ok(registered) => registered,
        Err((field, message)) => return invalid(&field, &message, request_id),
    };
    let url = format!("http://{}", registered.member.url.authority);
    let directory = reloader.directory();
    let new = directory.register(registered);
    let shared = directory.share_registration(name, &registration).await;
    tracing::info!(
        service = name,
        url,
        shared,
        "instance registered through the admin API"
    );
    json(
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &json!({
            "service": name,
            "url": url,
            "source": "admin",
            "shared": shared,
        }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deregistration {
    url: String,
}

/// `DELETE /admin/services/{name}/instances`.
pub(crate) async fn deregister(
    reloader: &Reloader,
    name: &str,
    body: Incoming,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let url = match read::<Deregistration>(body).await {
        Ok(deregistration) => deregistration.url,
        Err((field, message)) => return invalid(&field, &message, request_id),
    };
    let authority = match Registration::of_url(&url).check(name, Source::Admin) {
        Ok(registered) => registered.member.url.authority.to_string(),
        Err((field, message)) => return invalid(&field, &message, request_id),
    };
    let directory = reloader.directory();
    if !directory.deregister(name, &authority) {
        return refused(
            StatusCode::NOT_FOUND,
            "UNKNOWN_INSTANCE",
            &format!("`{name}` has no admin registration at {authority}"),
            request_id,
        );
    }
    directory.unshare_registration(name, &url).await;
    tracing::info!(
        service = name,
        url,
        "instance deregistered through the admin API"
    );
    json(
        StatusCode::OK,
        &json!({ "service": name, "url": format!("http://{authority}"), "removed": true }),
    )
}

/// The seeds' registration body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRegistration {
    service_name: String,
    host: String,
    port: u16,
    #[serde(default)]
    health_endpoint: Option<String>,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// `POST /api/v1/gateway/services`.
pub(crate) async fn register_seed(
    reloader: &Reloader,
    body: Incoming,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let seed = match read::<SeedRegistration>(body).await {
        Ok(seed) => seed,
        Err((field, message)) => return invalid(&field, &message, request_id),
    };
    // An IPv6 address goes in brackets in a URL.
    let host = if seed.host.contains(':') && !seed.host.starts_with('[') {
        format!("[{}]", seed.host)
    } else {
        seed.host.clone()
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return invalid("host", "must be a host name or an IP address", request_id);
    }
    let registration = Registration {
        url: format!("http://{host}:{}", seed.port),
        weight: seed.weight,
        health_path: seed.health_endpoint,
        version: seed.version,
        zone: seed.zone,
        meta: seed.metadata,
    };
    let name = seed.service_name;
    let field_of = |field: String| match field.as_str() {
        "service" => "service_name".to_owned(),
        "url" => "host".to_owned(),
        "health_path" => "health_endpoint".to_owned(),
        other => other.replace("meta.", "metadata."),
    };
    if let Err((field, message)) = registration.check(&name, Source::Admin) {
        return invalid(&field_of(field), &message, request_id);
    }
    add(reloader, &name, registration, request_id).await
}
