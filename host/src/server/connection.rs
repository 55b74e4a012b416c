//! One client connection's life, from accept to close.
//!
//! An HTTP/1 keep-alive connection spends most of its life waiting for the client's next
//! request, and for as long as hyper serves a connection it holds an 8 KB read buffer, an 8 KB
//! write buffer and its dispatch state. So an HTTP/1 connection alternates between two lives:
//! - **served**: hyper reads requests and writes responses, as long as they keep coming;
//! - **parked**: once it has been quiet for [`PARK_AFTER`], with no request half-read and no
//!   response unwritten, hyper is shown an end of stream that only it sees, drops its state and
//!   hands the socket back. The connection then waits as a bare socket until the client's next
//!   bytes arrive, when a fresh hyper connection picks up where the last one stopped, or until
//!   `idle_timeout` passes, when it is closed.
//!
//! A busy connection is never parked: the check costs a clock read per response. HTTP/2
//! connections stay with hyper for their whole life, since their streams interleave; one that
//! has had no stream for `idle_timeout` is closed (hyper has no such timeout of its own).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::Connection;
use super::framing::FramingSniffer;
use crate::config::EdgeLimits;
use crate::gateway::LiveGateway;
use crate::proxy::{self, body::ResponseBody};

/// How long an HTTP/1 connection waits for its next request inside hyper before it is parked.
/// Long enough that a connection in use is not parked between two requests, short enough that
/// idle ones give their buffers back soon.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The HTTP/2 connection preface starts with this method. A connection whose first bytes could
/// be it goes to hyper's own protocol detection, which also serves an HTTP/1 request that
/// happens to use such a method; it is just never parked.
const HTTP2_PREFACE_METHOD: &[u8] = b"PRI";

/// Serves one accepted connection until the client closes it, a limit closes it, or `shutdown`
/// turns true (after which in-flight requests finish and idle connections close).
pub(super) async fn serve(
    live: Arc<LiveGateway>,
    stream: TcpStream,
    client: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let accepted = Instant::now();
    let mut limits = live.current().limits.clone();
    let (sniffer, framing) = FramingSniffer::new(stream, super::framing_scan_limit(&limits));
    let exchange = Arc::new(Exchange::default());
    let peer = Connection { client, framing };
    let service = {
        let live = live.clone();
        let exchange = exchange.clone();
        service_fn(move |request: Request<Incoming>| {
            let gateway = live.current();
            let peer = peer.clone();
            let in_exchange = InExchange::begin(exchange.clone());
            async move {
                let response = proxy::serve(&gateway, &peer, request).await;
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, in_exchange }))
            }
        })
    };
    let mut io = ClientIo::new(sniffer, exchange.clone());

    // A head must be complete within `header_read_timeout` of its start: the accept for the
    // first request, the first byte for a later one (which may come `idle_timeout` after the
    // last answer).
    let mut first = [0; HTTP2_PREFACE_METHOD.len()];
    let Some(read) = io
        .peek_next(&mut first, limits.header_read_timeout, &mut shutdown)
        .await
    else {
        return;
    };
    if HTTP2_PREFACE_METHOD.starts_with(&first[..read]) {
        let mut connection = Box::pin(
            auto_builder(&limits, head_time_left(&limits, accepted))
                .serve_connection(TokioIo::new(io), service)
                .into_owned(),
        );
        // hyper has no idle timeout for HTTP/2: close the connection when no stream has run for
        // `idle_timeout`.
        let stop = async {
            tokio::select! {
                () = shutting_down(&mut shutdown) => {}
                () = exchange.quiet_for(limits.idle_timeout) => {}
            }
        };
        if let Err(error) = run_until(connection.as_mut(), stop).await {
            tracing::debug!(%client, %error, "connection ended with an error");
        }
        return;
    }

    let mut head_started = accepted;
    loop {
        io.park_after = Some(park_after(&limits));
        let mut connection = Box::pin(
            http1_builder(&limits, head_time_left(&limits, head_started))
                .serve_connection(TokioIo::new(io), service.clone()),
        );
        if let Err(error) = run_until(connection.as_mut(), shutting_down(&mut shutdown)).await {
            tracing::debug!(%client, %error, "connection ended with an error");
            return;
        }
        // Everything hyper had goes here, its read buffer included: only the socket is kept.
        let http1::Parts {
            io: parked,
            read_buf,
            ..
        } = Pin::into_inner(connection).into_parts();
        io = parked.into_inner();
        if !io.parked || *shutdown.borrow() {
            return;
        }
        io.unpark(&read_buf);
        drop(read_buf);
        if io.replay.is_empty()
            && io
                .peek_next(&mut [0], limits.idle_timeout, &mut shutdown)
                .await
                .is_none()
        {
            return;
        }
        head_started = Instant::now();
        // The next round, like each request, follows the state current when it starts.
        limits = live.current().limits.clone();
    }
}

/// What is left of `header_read_timeout` for a head that started at `started`; never zero,
/// which hyper would take as no time at all to parse what already arrived.
fn head_time_left(limits: &EdgeLimits, started: Instant) -> Duration {
    limits
        .header_read_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1))
}

/// hyper's settings for an HTTP/1 connection, whose next head has `head_timeout` to arrive.
fn http1_builder(limits: &EdgeLimits, head_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // hyper's own caps sit above the configured ones so that the configured ones answer with
    // the gateway's JSON errors; hyper's only stop what is far past them.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(super::read_buffer_cap(limits))
        .max_headers(limits.max_headers * 2);
    builder
}

/// For a connection that may speak HTTP/2: hyper reads the preface and picks the protocol.
fn auto_builder(limits: &EdgeLimits, head_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_bytes = limits.max_header_bytes.as_usize();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(super::read_buffer_cap(limits))
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

/// Where the connection's requests stand, as the request pipeline and the socket see them.
#[derive(Debug, Default)]
struct Exchange {
    /// For HTTP/1, which serves one request at a time: [`Self::IDLE`], [`Self::SERVING`] or
    /// [`Self::FLUSHING`].
    state: AtomicU8,
    /// Requests begun so far, and those whose response hyper still holds: how an HTTP/2
    /// connection, whose streams interleave, is known to be idle.
    begun: AtomicU64,
    in_flight: AtomicU64,
}

impl Exchange {
    /// No request in progress and every byte of the last response handed to the socket.
    const IDLE: u8 = 0;
    /// A request is being served or its response written.
    const SERVING: u8 = 1;
    /// hyper has the whole response, but may still hold some of it unwritten.
    const FLUSHING: u8 = 2;

    fn is_idle(&self) -> bool {
        self.state.load(Ordering::Relaxed) == Self::IDLE
    }

    /// After the socket reported a completed flush: true if that finished a response.
    fn flushed(&self) -> bool {
        self.state
            .compare_exchange(
                Self::FLUSHING,
                Self::IDLE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

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

/// Marks the connection busy from the moment hyper hands over a request until it lets go of
/// the response body, which it does once the body's last byte is in its write buffer (or the
/// request is abandoned).
struct InExchange(Arc<Exchange>);

impl InExchange {
    fn begin(exchange: Arc<Exchange>) -> InExchange {
        exchange.state.store(Exchange::SERVING, Ordering::Relaxed);
        exchange.begun.fetch_add(1, Ordering::Relaxed);
        exchange.in_flight.fetch_add(1, Ordering::Relaxed);
        InExchange(exchange)
    }
}

impl Drop for InExchange {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.state.store(Exchange::FLUSHING, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps the connection marked busy while hyper holds it.
    pub struct TrackedBody {
        #[pin]
        body: ResponseBody,
        in_exchange: InExchange,
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

/// The client socket as hyper sees it: framing scanned, and an end of stream shown to hyper
/// when the connection has been quiet long enough to park.
struct ClientIo {
    sniffer: FramingSniffer<TcpStream>,
    exchange: Arc<Exchange>,
    /// How long a quiet connection stays with hyper; `None` for one that may be HTTP/2.
    park_after: Option<Duration>,
    /// When the last response was fully written.
    quiet_since: Instant,
    /// Wakes hyper once the connection may have been quiet for [`PARK_AFTER`]; made on the
    /// first response, dropped on parking.
    quiet_timer: Option<Pin<Box<Sleep>>>,
    /// hyper was shown the end of stream and is done with the connection.
    parked: bool,
    /// Bytes hyper had read but not parsed when it was parked; served before the socket's.
    replay: Bytes,
}

impl ClientIo {
    fn new(sniffer: FramingSniffer<TcpStream>, exchange: Arc<Exchange>) -> ClientIo {
        ClientIo {
            sniffer,
            exchange,
            park_after: None,
            quiet_since: Instant::now(),
            quiet_timer: None,
            parked: false,
            replay: Bytes::new(),
        }
    }

    /// Waits until the client sends something and copies its first bytes into `first`
    /// without taking them off the stream; `None` if the client closed the connection, or
    /// `timeout` passed or the gateway began shutting down first.
    async fn peek_next(
        &self,
        first: &mut [u8],
        timeout: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<usize> {
        if *shutdown.borrow() {
            return None;
        }
        tokio::select! {
            peeked = tokio::time::timeout(timeout, self.sniffer.get_ref().peek(first)) => {
                peeked.ok()?.ok().filter(|&read| read > 0)
            }
            _ = shutdown.wait_for(|stop| *stop) => None,
        }
    }

    /// Takes the connection back from hyper, with the bytes it had read but not parsed
    /// (copied: hyper's buffer is what parking gives back).
    fn unpark(&mut self, unparsed: &[u8]) {
        self.parked = false;
        self.replay = Bytes::copy_from_slice(unparsed);
    }

    /// Nothing half-read, nothing unwritten, and quiet for [`PARK_AFTER`]. When quiet but not
    /// yet for long enough, re-arms the timer for the rest.
    fn ready_to_park(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(park_after) = self.park_after else {
            return false;
        };
        if !self.exchange.is_idle() || !self.sniffer.between_messages() {
            return false;
        }
        let Some(timer) = &mut self.quiet_timer else {
            return false;
        };
        // Not polled while pending: it was polled, with this task's waker, when it was armed.
        if !timer.is_elapsed() {
            return false;
        }
        let due = self.quiet_since + park_after;
        if Instant::now() >= due {
            return true;
        }
        timer.as_mut().reset(due);
        let _ = timer.as_mut().poll(cx);
        false
    }

    /// A response was fully written: the quiet time starts. The timer is only re-armed once it
    /// has fired, and then checks how long the connection has really been quiet, so a busy
    /// connection costs a clock read per response, not a timer.
    fn response_written(&mut self, cx: &mut Context<'_>) {
        let Some(park_after) = self.park_after else {
            return;
        };
        self.quiet_since = Instant::now();
        let due = self.quiet_since + park_after;
        match &mut self.quiet_timer {
            Some(timer) if !timer.is_elapsed() => return,
            Some(timer) => timer.as_mut().reset(due),
            None => self.quiet_timer = Some(Box::pin(tokio::time::sleep_until(due))),
        }
        if let Some(timer) = &mut self.quiet_timer {
            let _ = timer.as_mut().poll(cx);
        }
    }
}

/// hyper's header read timeout may also run while it waits for the next request: park well
/// before it could close a quiet connection.
fn park_after(limits: &EdgeLimits) -> Duration {
    PARK_AFTER.min(limits.header_read_timeout / 2)
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.replay.is_empty() {
            let take = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..take]);
            this.replay.advance(take);
            return Poll::Ready(Ok(()));
        }
        if this.ready_to_park(cx) {
            // Read only what is already there: if the client's next request has arrived, serve
            // it; if not, hyper sees the end of the stream and lets go of the connection.
            let mut without_waiting = Context::from_waker(Waker::noop());
            let sniffer = Pin::new(&mut this.sniffer);
            return match sniffer.poll_read(&mut without_waiting, buf) {
                Poll::Pending => {
                    tracing::trace!("connection parked");
                    this.parked = true;
                    this.quiet_timer = None;
                    Poll::Ready(Ok(()))
                }
                ready => ready,
            };
        }
        Pin::new(&mut this.sniffer).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().sniffer).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().sniffer).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.sniffer.is_write_vectored()
    }

    /// hyper flushes the socket only once its own write buffer is empty, so a flush after the
    /// response body was let go means the whole response has been written.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.sniffer).poll_flush(cx))?;
        if this.exchange.flushed() {
            this.response_written(cx);
        }
        Poll::Ready(Ok(()))
    }

    /// A parked connection is not shut down: the client is still there.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.sniffer).poll_shutdown(cx)
    }
}
