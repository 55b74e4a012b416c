//! Filters' outbound calls to the configured services: the `Services` the filter runtime's
//! `outbound` capability goes through, on the same instances, connections and timeouts as
//! proxied traffic.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http_body_util::{BodyExt, Full, Limited};

use gateway_filter::outbound::{
    OutboundCall, OutboundError, OutboundRequest, OutboundResponse, Services,
};
use gateway_upstream::{Outgoing, Service};

use crate::headers;

/// The services of one serving state, as filters' outbound calls reach them.
pub(crate) struct ConfiguredServices {
    /// Swapped when instances registered at run time change the services.
    pub(crate) services: Arc<arc_swap::ArcSwap<HashMap<String, Arc<Service>>>>,
}

impl Services for ConfiguredServices {
    fn send(
        &self,
        service: &str,
        request: OutboundRequest,
        max_body: usize,
        timeout: Duration,
    ) -> OutboundCall {
        let found = self.services.load().get(service).cloned();
        let name = service.to_owned();
        Box::pin(async move {
            let Some(service) = found else {
                return Err(OutboundError::Failed(format!("no service named `{name}`")));
            };
            tokio::time::timeout(timeout, call(&service, request, max_body))
                .await
                .unwrap_or(Err(OutboundError::Timeout(timeout)))
        })
    }
}

/// One call: an instance picked as for proxied traffic, the answer read whole up to `max_body`.
async fn call(
    service: &Service,
    mut request: OutboundRequest,
    max_body: usize,
) -> Result<OutboundResponse, OutboundError> {
    // The gateway frames the message itself and keeps the connection to itself.
    headers::strip_hop_by_hop(&mut request.headers);
    request.headers.remove(header::CONTENT_LENGTH);
    request.headers.remove(header::TRANSFER_ENCODING);
    let path = request
        .path_and_query
        .split_once('?')
        .map_or(request.path_and_query.as_str(), |(path, _)| path);
    let outgoing = Outgoing {
        method: &request.method,
        target: &request.path_and_query,
        headers: &request.headers,
        client_ip: IpAddr::from([127, 0, 0, 1]),
        path,
    };
    let response = service
        .forward(outgoing, Full::new(request.body))
        .await
        .map_err(|error| OutboundError::Failed(error.to_string()))?
        .response;
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                OutboundError::TooLarge(max_body)
            } else {
                OutboundError::Failed(format!("the answer broke off: {error}"))
            }
        })?
        .to_bytes();
    Ok(OutboundResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
