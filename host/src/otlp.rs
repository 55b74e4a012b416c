//! Exporting the spans of sampled requests to an OpenTelemetry collector over OTLP/HTTP
//! (`tracing.otlp`).
//!
//! The request path hands each finished, sampled request to a bounded queue ([`Queue`], the
//! proxy's `SpanSink`) and goes on: it never waits for the collector. A task on the control
//! plane's runtime takes them in batches (at most [`BATCH`] requests, or what arrived within
//! [`FLUSH`]), makes the spans (the request as a server span, each filter call as an internal
//! child, the upstream try as a client child) and sends them with `opentelemetry-otlp`'s
//! exporter. A full queue drops the request from export, and a failed export drops its batch:
//! both are counted, and logged at most once a minute, so a collector that is down or slow
//! costs the gateway neither memory nor requests.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use tokio::sync::mpsc;

use gateway_config::Otlp;
use gateway_proxy::spans::{RequestSpans, SpanSink};

/// Most requests in one export.
const BATCH: usize = 512;
/// Longest a finished request waits for its batch.
const FLUSH: Duration = Duration::from_millis(500);
/// Least time between two warnings about dropped spans.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why spans cannot be exported.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
pub struct Error {
    endpoint: String,
    reason: String,
}

/// The request path's side: a bounded queue to the export task.
struct Queue {
    sender: mpsc::Sender<RequestSpans>,
    dropped: Arc<Dropped>,
}

/// Requests not exported, and when that was last said.
struct Dropped {
    queue_full: AtomicU64,
    failed: AtomicU64,
    warned: Mutex<Option<Instant>>,
}

impl Dropped {
    /// Warns with the counts, at most once a minute.
    fn warn(&self, reason: &str) {
        let mut warned = self
            .warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *warned = Some(Instant::now());
        tracing::warn!(
            queue_full = self.queue_full.load(Ordering::Relaxed),
            export_failed = self.failed.load(Ordering::Relaxed),
            reason,
            "spans are being dropped (counts since start; said at most once a minute)"
        );
    }
}

impl SpanSink for Queue {
    fn finish(&self, spans: RequestSpans) {
        if self.sender.try_send(spans).is_err() {
            self.dropped.queue_full.fetch_add(1, Ordering::Relaxed);
            self.dropped.warn("the export queue is full");
        }
    }
}

/// Starts the export task on the calling runtime and installs its queue as the proxy's sink.
pub fn start(otlp: &Otlp) -> Result<(), Error> {
    let error = |reason: String| Error {
        endpoint: otlp.endpoint.clone(),
        reason,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&otlp.endpoint)
        .with_timeout(otlp.timeout)
        .build()
        .map_err(|build| error(build.to_string()))?;
    exporter.set_resource(
        &Resource::builder()
            .with_service_name(otlp.service_name.clone())
            .build(),
    );
    let (sender, receiver) = mpsc::channel(otlp.max_queued);
    let dropped = Arc::new(Dropped {
        queue_full: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        warned: Mutex::new(None),
    });
    let queue = Queue {
        sender,
        dropped: dropped.clone(),
    };
    if !gateway_proxy::spans::install(Box::new(queue)) {
        return Err(error("an exporter is installed already".to_owned()));
    }
    tokio::spawn(export(exporter, receiver, dropped));
    tracing::info!(
        endpoint = otlp.endpoint,
        sample_ratio = otlp.sample_ratio,
        "exporting spans over OTLP"
    );
    Ok(())
}

async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut receiver: mpsc::Receiver<RequestSpans>,
    dropped: Arc<Dropped>,
) {
    let scope = InstrumentationScope::builder("wasm-gateway")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut requests = Vec::with_capacity(BATCH);
    let mut failing = false;
    loop {
        requests.clear();
        if receiver.recv_many(&mut requests, BATCH).await == 0 {
            return;
        }
        // Gather what else arrives soon, so that a trickle goes out in few exports.
        let deadline = tokio::time::Instant::now() + FLUSH;
        while requests.len() < BATCH {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(request)) => requests.push(request),
                Ok(None) | Err(_) => break,
            }
        }
        let batch: Vec<SpanData> = requests
            .drain(..)
            .flat_map(|request| spans(request, &scope))
            .collect();
        match exporter.export(batch).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the OTLP collector takes spans again");
            }
            Ok(()) => {}
            Err(error) => {
                dropped.failed.fetch_add(1, Ordering::Relaxed);
                failing = true;
                dropped.warn(&format!("an export failed: {error}"));
            }
        }
    }
}

/// The request's span and its children.
fn spans(request: RequestSpans, scope: &InstrumentationScope) -> Vec<SpanData> {
    let trace_id = TraceId::from_hex(ascii(&request.trace_id)).unwrap_or(TraceId::INVALID);
    let span_id = SpanId::from_hex(ascii(&request.span_id)).unwrap_or(SpanId::INVALID);
    let parent = request
        .parent_id
        .and_then(|parent| SpanId::from_hex(ascii(&parent)).ok());
    let context = |span_id| {
        SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    let at = |instant: Instant| request.start + instant.saturating_duration_since(request.started);
    let mut attributes = vec![
        KeyValue::new("http.request.method", request.method.as_str().to_owned()),
        KeyValue::new("http.response.status_code", i64::from(request.status)),
        KeyValue::new("gateway.request_id", request.request_id.clone()),
    ];
    if let Some(route) = &request.route {
        attributes.push(KeyValue::new("gateway.route", route.clone()));
    }
    if let Some(path) = &request.path {
        attributes.push(KeyValue::new("url.path", path.clone()));
    }
    if let Some(upstream) = &request.upstream {
        attributes.push(KeyValue::new("gateway.upstream", upstream.clone()));
    }
    let status = match request.error {
        Some(code) if request.status >= 500 => Status::error(code),
        _ if request.status >= 500 => Status::error(format!("status {}", request.status)),
        _ => Status::Unset,
    };
    let name = match &request.route {
        Some(route) => format!("{} {route}", request.method),
        None => request.method.to_string(),
    };
    let mut spans = Vec::with_capacity(1 + request.steps.len());
    spans.push(SpanData {
        span_context: context(span_id),
        parent_span_id: parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: parent.is_some(),
        span_kind: SpanKind::Server,
        name: Cow::Owned(name),
        start_time: request.start,
        end_time: request.start + request.duration,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    });
    for step in &request.steps {
        let upstream = step.name == "upstream";
        let failed = step.decision.starts_with("refused")
            || step.decision.starts_with("skipped")
            || step.decision.starts_with("failed");
        let start = at(step.started);
        spans.push(SpanData {
            span_context: context(SpanId::from_bytes(fastrand::u64(1..).to_be_bytes())),
            parent_span_id: span_id,
            parent_span_is_remote: false,
            span_kind: if upstream {
                SpanKind::Client
            } else {
                SpanKind::Internal
            },
            name: Cow::Owned(if upstream {
                "upstream".to_owned()
            } else {
                format!("filter {} {}", step.name, step.phase)
            }),
            start_time: start,
            end_time: start + Duration::from_micros(step.micros),
            attributes: vec![
                KeyValue::new("gateway.phase", step.phase),
                KeyValue::new("gateway.decision", step.decision.clone()),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if failed {
                Status::error(step.decision.clone())
            } else {
                Status::Unset
            },
            instrumentation_scope: scope.clone(),
        });
    }
    spans
}

fn ascii(hex: &[u8]) -> &str {
    std::str::from_utf8(hex).unwrap_or("0")
}
