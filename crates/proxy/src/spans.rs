//! The spans of sampled requests, handed to whoever exports them: the host installs an
//! OTLP exporter as the [`SpanSink`] when `tracing.otlp` is set. Without one, no request is
//! sampled and nothing here costs anything.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use gateway_filter::Step;
use http::Method;

/// A finished, sampled request: its span, and one child per filter call and upstream try.
pub struct RequestSpans {
    /// 32 lower-case hex digits.
    pub trace_id: [u8; 32],
    /// The gateway's span, the one the upstream was told is its parent: 16 hex digits.
    pub span_id: [u8; 16],
    /// The caller's span, when it sent a `traceparent`.
    pub parent_id: Option<[u8; 16]>,
    pub request_id: String,
    pub method: Method,
    /// The normalised path, when the request got that far.
    pub path: Option<String>,
    pub route: Option<String>,
    pub status: u16,
    /// The gateway's error code, when it answered with one.
    pub error: Option<&'static str>,
    /// The upstream instance that answered, as `service@host:port`.
    pub upstream: Option<String>,
    pub start: SystemTime,
    /// The same moment on the monotonic clock the steps' starts are read from.
    pub started: Instant,
    pub duration: Duration,
    /// In the order they ran.
    pub steps: Vec<Step>,
}

/// Takes finished requests for export; called on the request's worker, so it must not wait.
pub trait SpanSink: Send + Sync {
    fn finish(&self, spans: RequestSpans);
}

static SINK: OnceLock<Box<dyn SpanSink>> = OnceLock::new();

/// Makes `sink` the exporter of every sampled request from now on, for the life of the
/// process; false if one was installed already.
pub fn install(sink: Box<dyn SpanSink>) -> bool {
    SINK.set(sink).is_ok()
}

#[inline]
pub(crate) fn sink() -> Option<&'static dyn SpanSink> {
    SINK.get().map(|sink| &**sink)
}
