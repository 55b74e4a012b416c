//! What a filter declared at `init` that it reads, and the inputs built from it for each call.
//!
//! A crossing into the host costs about as much as a third of a call into the filter, so a
//! filter that names what it reads gets it with the call: the fields and headers it declared,
//! copied once, and nothing else.

use std::sync::Arc;

use gateway_rules::context::{self, Context};
use gateway_rules::edit;
use gateway_rules::metrics::{self, Label, MetricSpec};
use http::HeaderMap;
use http::header::HeaderName;

use crate::bindings::{
    self, Body, MetricKind, Phases, Registration, RequestFields, RequestInput, ResponseInput,
};
use crate::heads::{HeldBody, RequestHead, ResponseHead};
use crate::metrics::{Family, MetricRegistry};

/// A filter's registration, checked and ready for every call.
pub(crate) struct Declared {
    pub(crate) phases: Phases,
    fields: RequestFields,
    request_headers: Vec<HeaderName>,
    response_headers: Vec<HeaderName>,
    context_keys: Vec<String>,
    pub(crate) request_body: Option<u32>,
    pub(crate) response_body: Option<u32>,
    pub(crate) metric_specs: Vec<MetricSpec>,
    pub(crate) metrics: Vec<Arc<Family>>,
}

fn header_names(names: Vec<String>) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|name| edit::header_name(name).map_err(|error| error.to_string()))
        .collect()
}

fn spec(metric: bindings::exports::gateway::filter::handler::Metric) -> MetricSpec {
    MetricSpec {
        name: metric.name,
        help: metric.help,
        kind: match metric.kind {
            MetricKind::Counter => metrics::MetricKind::Counter,
            MetricKind::Histogram(bounds) => metrics::MetricKind::Histogram(bounds),
        },
        labels: metric
            .labels
            .into_iter()
            .map(|label| Label {
                name: label.name,
                values: label.values,
            })
            .collect(),
    }
}

impl Declared {
    /// Checks a registration: header names and context keys that could never match, or metrics
    /// out of bounds, reject the filter's configuration at `init`.
    pub(crate) fn new(
        registration: Registration,
        filter: &Arc<str>,
        registry: &MetricRegistry,
    ) -> Result<Declared, String> {
        for key in &registration.context_keys {
            context::key(key).map_err(|error| error.to_string())?;
        }
        let metric_specs: Vec<MetricSpec> = registration.metrics.into_iter().map(spec).collect();
        metrics::check(&metric_specs).map_err(|error| error.to_string())?;
        Ok(Declared {
            phases: registration.phases,
            fields: registration.request_fields,
            request_headers: header_names(registration.request_headers)?,
            response_headers: header_names(registration.response_headers)?,
            context_keys: registration.context_keys,
            request_body: registration.request_body,
            response_body: registration.response_body,
            metrics: registry.register(filter, metric_specs.clone()),
            metric_specs,
        })
    }

    /// What the request phase is handed: the declared fields, headers and context entries, and
    /// the body if the filter asked for it.
    pub(crate) fn request_input(&self, head: &RequestHead) -> RequestInput {
        let field = |flag: RequestFields, read: &dyn Fn() -> Option<String>| {
            if self.fields.contains(flag) {
                read()
            } else {
                None
            }
        };
        RequestInput {
            method: field(RequestFields::METHOD, &|| Some(head.method.as_str().to_owned())),
            path: field(RequestFields::PATH, &|| Some(head.path.clone())),
            query: field(RequestFields::QUERY, &|| head.query.clone()),
            authority: field(RequestFields::AUTHORITY, &|| head.authority.clone()),
            client_ip: field(RequestFields::CLIENT_IP, &|| {
                Some(gateway_wire::fields::ip_string(head.client_ip))
            }),
            headers: declared_headers(&self.request_headers, &head.headers),
            context: self.context(&head.context),
            body: self.request_body.map(|limit| body(&head.body, limit)),
        }
    }

    /// What the response phase is handed.
    pub(crate) fn response_input(
        &self,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> ResponseInput {
        ResponseInput {
            status: response.status.as_u16(),
            headers: declared_headers(&self.response_headers, &response.headers),
            context: self.context(&request.context),
            body: self.response_body.map(|limit| body(&response.body, limit)),
        }
    }

    fn context(&self, entries: &Context) -> Vec<(String, String)> {
        if entries.is_empty() {
            return Vec::new();
        }
        self.context_keys
            .iter()
            .filter_map(|key| Some((key.clone(), entries.get(key)?.to_owned())))
            .collect()
    }
}

/// Whether a filter with this limit was handed the body whole, and so may replace it.
pub(crate) fn held_whole(body: &HeldBody, limit: Option<u32>) -> bool {
    match (body, limit) {
        (HeldBody::Complete(bytes), Some(limit)) => bytes.len() <= limit as usize,
        _ => false,
    }
}

fn body(held: &HeldBody, limit: u32) -> Body {
    match held {
        HeldBody::Complete(bytes) if bytes.len() <= limit as usize => Body::Complete(bytes.to_vec()),
        // A body nobody read (outside the proxy, which reads for every filter that asks) is as
        // unavailable to the filter as one too large to read.
        HeldBody::Complete(_) | HeldBody::TooLarge | HeldBody::Streaming => Body::TooLarge,
    }
}

fn declared_headers(names: &[HeaderName], headers: &HeaderMap) -> Vec<(String, String)> {
    let mut declared = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            if let Some(text) = bindings::value_text(value) {
                declared.push((name.as_str().to_owned(), text.to_owned()));
            }
        }
    }
    declared
}
