//! One client connection's life, from accept to close.
//!
//! The first bytes decide who serves it. HTTP/1 connections, nearly all of them, are served by
//! the gateway's own loop ([`http1`](crate::http1)). A connection whose first bytes could be
//! the HTTP/2 preface goes to hyper, which reads the preface and serves HTTP/2 (or, for an
//! HTTP/1 request that happens to use such a method, HTTP/1) for the connection's whole life.
//! hyper has no idle timeout for HTTP/2, so one that has had no stream for `idle_timeout` is
//! closed here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use gateway_config::EdgeLimits;
use gateway_proxy::{LiveState, Peer, ResponseBody};

use crate::body::ClientBody;
use crate::counted::Counted;
use crate::http1;
use crate::rewind::Rewind;

/// The HTTP/2 connection preface starts with this method.
const HTTP2_PREFACE_METHOD: &[u8] = b"PRI";

/// Serves one accepted connection until the client closes it, a limit closes it, or `shutdown`
/// turns true (after which in-flight requests finish and idle connections close).
pub(crate) async fn serve<S>(
    live: Arc<LiveState>,
    stream: S,
    client: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = Counted::new(stream);
    let accepted = Instant::now();
    let limits = live.current().limits.clone();
    // The first head, like every head, must be complete within `header_read_timeout`. What is
    // read here is read for whichever protocol the bytes turn out to be.
    let mut first = BytesMut::with_capacity(http1::READ_CHUNK);
    let read = tokio::select! {
        read = tokio::time::timeout(limits.header_read_timeout, stream.read_buf(&mut first)) => {
            read.ok().and_then(Result::ok).filter(|&read| read > 0)
        }
        _ = shutdown.wait_for(|stop| *stop) => None,
    };
    if read.is_none() {
        return;
    }
    let sniffed = &first[..first.len().min(HTTP2_PREFACE_METHOD.len())];
    if !HTTP2_PREFACE_METHOD.starts_with(sniffed) {
        http1::serve(live, stream, first, client, accepted, shutdown).await;
        return;
    }
    let stream = Rewind::new(first.freeze(), stream);

    let streams = Arc::new(StreamCounts::default());
    let peer = Peer { client };
    let service = {
        let streams = streams.clone();
        service_fn(move |request: Request<Incoming>| {
            let gateway = live.current();
            let peer = peer.clone();
            let in_flight_stream = StreamInFlight::begin(streams.clone());
            async move {
                let request = request.map(ClientBody::Http2);
                let response = gateway_proxy::serve(&gateway, &peer, request).await;
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    body,
                    in_flight_stream,
                }))
            }
        })
    };
    let head_timeout = limits
        .header_read_timeout
        .saturating_sub(accepted.elapsed())
        .max(Duration::from_millis(1));
    let mut connection = Box::pin(
        auto_builder(&limits, head_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .into_owned(),
    );
    let stop = async {
        tokio::select! {
            () = shutting_down(&mut shutdown) => {}
            () = streams.quiet_for(limits.idle_timeout) => {}
        }
    };
    if let Err(error) = run_until(connection.as_mut(), stop).await {
        tracing::debug!(%client, %error, "connection ended with an error");
    }
}

/// For a connection that may speak HTTP/2: hyper reads the preface and picks the protocol.
fn auto_builder(limits: &EdgeLimits, head_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_bytes = limits.max_header_bytes.as_usize();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(crate::read_buffer_cap(limits))
        .max_headers(limits.max_headers * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// Runs `connection` to its end; if `stop` resolves first, asks it to finish what is in flight
/// and stop.
async fn run_until<C: GracefulConnection>(
    mut connection: Pin<&mut C>,
    stop: impl Future<Output = ()>,
) -> Result<(), C::Error> {
    tokio::select! {
        result = connection.as_mut() => return result,
        () = stop => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Resolves once the gateway is shutting down (or the signal's sender is gone).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The streams of an HTTP/2 connection, counted: how it is known to be idle.
#[derive(Debug, Default)]
struct StreamCounts {
    /// Requests begun so far, and those whose response hyper still holds.
    begun: AtomicU64,
    in_flight: AtomicU64,
}

impl StreamCounts {
    /// Resolves once the connection has had no request in flight, and begun none, for at least
    /// `timeout` (and at most a quarter more): checked a few times per timeout rather than
    /// timed per request.
    async fn quiet_for(&self, timeout: Duration) {
        const CHECKS: u32 = 4;
        let mut ticks = tokio::time::interval(timeout / CHECKS);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_checks = 0;
        let mut begun = self.begun.load(Ordering::Relaxed);
        loop {
            ticks.tick().await;
            let now_begun = self.begun.load(Ordering::Relaxed);
            if now_begun == begun && self.in_flight.load(Ordering::Relaxed) == 0 {
                quiet_checks += 1;
            } else {
                quiet_checks = 0;
            }
            begun = now_begun;
            // The first tick is immediate, so CHECKS + 1 quiet ones span a whole timeout.
            if quiet_checks > CHECKS {
                return;
            }
        }
    }
}

/// Counts a request in flight from the moment hyper hands it over until it lets go of the
/// response body, which it does once the body's last byte is written (or the stream is reset).
struct StreamInFlight(Arc<StreamCounts>);

impl StreamInFlight {
    fn begin(streams: Arc<StreamCounts>) -> StreamInFlight {
        streams.begun.fetch_add(1, Ordering::Relaxed);
        streams.in_flight.fetch_add(1, Ordering::Relaxed);
        StreamInFlight(streams)
    }
}

impl Drop for StreamInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted while hyper holds it.
    pub struct TrackedBody {
        #[pin]
        body: ResponseBody,
        in_flight_stream: StreamInFlight,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
