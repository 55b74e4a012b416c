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

use gateway_rules::input::Writer;

use crate::bindings::{self, MetricKind, Phases, Registration, RequestFields};
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

    /// What the request phase is handed, encoded (`gateway_rules::input`): the declared
    /// fields, headers and context entries, and the body if the filter asked for it. `None` when
    /// the filter declared nothing, which spares the call an allocation in the guest.
    pub(crate) fn request_input(&self, head: &RequestHead) -> Option<Vec<u8>> {
        let mut input = Writer::default();
        let fields = self.fields;
        if fields.contains(RequestFields::METHOD) {
            input.method(head.method.as_str());
        }
        if fields.contains(RequestFields::PATH) {
            input.path(&head.path);
        }
        if fields.contains(RequestFields::QUERY)
            && let Some(query) = &head.query
        {
            input.query(query);
        }
        if fields.contains(RequestFields::AUTHORITY)
            && let Some(authority) = &head.authority
        {
            input.authority(authority);
        }
        if fields.contains(RequestFields::CLIENT_IP) {
            input.client_ip(&gateway_wire::fields::ip_string(head.client_ip));
        }
        self.write_shared(
            &mut input,
            &self.request_headers,
            &head.headers,
            &head.context,
            self.request_body.map(|limit| body(&head.body, limit)),
        );
        (!input.is_empty()).then(|| input.finish())
    }

    /// What the response phase is handed besides the status, encoded the same way.
    pub(crate) fn response_input(
        &self,
        request: &RequestHead,
        response: &ResponseHead,
    ) -> Option<Vec<u8>> {
        let mut input = Writer::default();
        self.write_shared(
            &mut input,
            &self.response_headers,
            &response.headers,
            &request.context,
            self.response_body.map(|limit| body(&response.body, limit)),
        );
        (!input.is_empty()).then(|| input.finish())
    }

    fn write_shared(
        &self,
        input: &mut Writer,
        names: &[HeaderName],
        headers: &HeaderMap,
        context: &Context,
        body: Option<Option<&[u8]>>,
    ) {
        for name in names {
            for value in headers.get_all(name) {
                if bindings::value_text(value).is_some() {
                    input.header(name.as_str(), value.as_bytes());
                }
            }
        }
        if !context.is_empty() {
            for key in &self.context_keys {
                if let Some(value) = context.get(key) {
                    input.context(key, value);
                }
            }
        }
        if let Some(body) = body {
            input.body(body);
        }
    }
}

/// Whether a filter with this limit was handed the body whole, and so may replace it.
pub(crate) fn held_whole(body: &HeldBody, limit: Option<u32>) -> bool {
    match (body, limit) {
        (HeldBody::Complete(bytes), Some(limit)) => bytes.len() <= limit as usize,
        _ => false,
    }
}

/// The body a filter with this limit is handed: `Some` whole, `None` too large.
fn body(held: &HeldBody, limit: u32) -> Option<&[u8]> {
    match held {
        HeldBody::Complete(bytes) if bytes.len() <= limit as usize => Some(bytes),
        // A body nobody read (outside the proxy, which reads for every filter that asks) is as
        // unavailable to the filter as one too large to read.
        HeldBody::Complete(_) | HeldBody::TooLarge | HeldBody::Streaming => None,
    }
}
