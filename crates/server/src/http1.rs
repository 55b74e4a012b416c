//! HTTP/1.1 connections from clients, served by the gateway's own loop over
//! [`gateway_wire::client`].
//!
//! hyper's server cost more user CPU per request than everything else on the no-filter path:
//! its dispatch state machine, five allocations, and a second scan of every head to find the
//! framing ambiguities its parse hides. Here a connection reads into one buffer, parses the
//! head where it landed, runs the request pipeline in the same task, and writes the response
//! head with the body that is ready (most bodies are) in one write.
//!
//! Why the gateway serves HTTP/1.1 itself: `docs/decisions/0001-own-http1-server-loop.md`.
//!
//! A WebSocket upgrade leaves the loop for good once its head is read: `ws` takes the
//! connection through the handshakes and relays it until it closes.
//!
//! A connection alternates between two lives:
//! - **busy**: requests are read, served and answered in turn (pipelined ones too). A request
//!   head must be complete within `header_read_timeout` of its first byte (of the accept, for
//!   the first request). A body that did not arrive with its head is read by this task while
//!   the pipeline runs and handed over one piece at a time, so the client is read only as fast
//!   as the upstream takes it;
//! - **parked**: once quiet for [`PARK_AFTER`] with nothing buffered, the buffers and the state
//!   of the busy life (the request pipeline's future among it) are dropped, and the socket
//!   waits on its own for the client's next bytes, for up to `idle_timeout`.
//!
//! The connection closes after an answer when the client or the answer asks for it, when the
//! request's framing cannot be trusted or its body was left unread, and once the gateway is
//! shutting down: a request in flight is answered first, a parked connection closes at once. A
//! client that closes its connection while its request is served cancels the request, upstream
//! exchange and all, as hyper's server did.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};

use gateway_config::EdgeLimits;
use gateway_proxy::{LiveState, Peer, ResponseBody, ServingState, Violation};
use gateway_wire::client::{
    ConnectionHeader, HeadError, HeadLimits, IncomingHead, OutgoingResponse, ResponseFraming,
    encode_response_head, parse_request_head, says_close,
};
use gateway_wire::{self as wire, BodyDecoder, Decoded, make_room};

use crate::body::ClientBody;

/// How long a connection waits for its next request before it is parked. Long enough that a
/// connection in use is not parked between two requests, short enough that idle ones give
/// their memory back soon.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// Room made in the read buffer for a read; for a long body it doubles up to the maximum.
pub(crate) const READ_CHUNK: usize = 8 * 1024;
const MAX_READ_CHUNK: usize = 256 * 1024;

/// Body bytes up to this size are copied beside the head, so that both go in one write.
const INLINE_BODY: usize = 16 * 1024;

/// After answering a connection it closes, the gateway reads (and drops) what the client still
/// sends, for up to this long and this much: closing a socket with unread bytes makes the
/// kernel send a reset, which can destroy the answer before the client has read it.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Serves one HTTP/1 connection, whose first bytes have arrived in `first`, until it closes.
pub(crate) async fn serve<S>(
    live: Arc<LiveState>,
    stream: S,
    first: BytesMut,
    client: SocketAddr,
    accepted: Instant,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = ClientConnection::new(stream, first);
    let mut first_head_started = Some(accepted);
    loop {
        let busy = Box::pin(connection.serve_until_quiet(
            &live,
            client,
            first_head_started.take(),
            &mut shutdown,
        ));
        let Some(quiet_since) = busy.await else {
            return;
        };
        let idle_timeout = live.current().limits.idle_timeout;
        if !connection
            .wait_parked(quiet_since + idle_timeout, &mut shutdown)
            .await
        {
            return;
        }
    }
}

/// One client connection and the memory it reads and writes through.
struct ClientConnection<S> {
    stream: S,
    read_buffer: BytesMut,
    write_buffer: Vec<u8>,
    /// Wakes the connection at its next deadline while it waits for a head. Re-armed only when
    /// it fires or a nearer deadline comes up, so a busy connection costs no timer per request.
    watchdog: Option<Pin<Box<Sleep>>>,
    /// How long one write may wait for the client to take bytes (`send_timeout`).
    send_timeout: Duration,
}

/// What the connection waits for while it reads a head.
#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// The next request has not started: park at the first instant, close at the second.
    Idle { park_at: Instant, close_at: Instant },
    /// A head has started and must be complete by then.
    Head { until: Instant },
}

impl Waiting {
    fn due(self) -> Instant {
        match self {
            Waiting::Idle { park_at, close_at } => park_at.min(close_at),
            Waiting::Head { until } => until,
        }
    }
}

/// How waiting for the next head ended.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, moved once: boxing the head would cost an allocation per request"
)]
enum Next {
    Head(IncomingHead),
    Unreadable(Violation),
    /// Quiet long enough to park, since the instant given.
    Quiet(Instant),
    /// The client left, a timeout passed, or the gateway is shutting down.
    Closed,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientConnection<S> {
    fn new(stream: S, read_buffer: BytesMut) -> ClientConnection<S> {
        ClientConnection {
            stream,
            read_buffer,
            write_buffer: Vec::new(),
            watchdog: None,
            send_timeout: EdgeLimits::default().send_timeout,
        }
    }

    /// Serves requests until the connection has been quiet for [`PARK_AFTER`], returning when
    /// it went quiet, or `None` once it is closed.
    async fn serve_until_quiet(
        &mut self,
        live: &LiveState,
        client: SocketAddr,
        mut head_started: Option<Instant>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Instant> {
        let peer = Peer { client };
        let mut limits = live.current().limits.clone();
        loop {
            self.send_timeout = limits.send_timeout;
            let head = match self.next_head(&limits, head_started.take(), shutdown).await {
                Next::Head(head) => head,
                Next::Quiet(since) => {
                    self.park();
                    return Some(since);
                }
                Next::Closed => return None,
                Next::Unreadable(violation) => {
                    tracing::debug!(%client, %violation, "unreadable request head");
                    let response = gateway_proxy::refuse_unreadable(
                        client,
                        gateway_proxy::Error::Edge(violation),
                    );
                    if self
                        .write_response(response, &Method::GET, Version::HTTP_11, false)
                        .await
                        .is_ok()
                    {
                        self.linger_close().await;
                    }
                    return None;
                }
            };
            // Each request follows the state current when its head has arrived.
            let gateway = live.current();
            if crate::ws::is_upgrade(&head.parts) {
                self.serve_websocket(gateway, &peer, head, shutdown).await;
                return None;
            }
            let method = head.parts.method.clone();
            let version = head.parts.version;
            let Some((response, body_read)) = self.run_pipeline(&gateway, &peer, head).await else {
                tracing::debug!(%client, "the client closed the connection before the answer");
                return None;
            };
            let keep = body_read
                && !says_close(response.headers())
                && !*shutdown.borrow()
                && method != Method::CONNECT;
            match self.write_response(response, &method, version, keep).await {
                Ok(true) => {}
                Ok(false) => {
                    self.linger_close().await;
                    return None;
                }
                Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                    tracing::info!(%client, %error, "the response could not be written");
                    return None;
                }
                Err(error) => {
                    tracing::debug!(%client, %error, "the response could not be written");
                    return None;
                }
            }
            // A long body may have grown the buffer: a connection keeps only a small one.
            if self.read_buffer.is_empty() && self.read_buffer.capacity() > 4 * READ_CHUNK {
                self.read_buffer = BytesMut::with_capacity(READ_CHUNK);
            }
            limits = gateway.limits.clone();
        }
    }

    /// Serves a WebSocket upgrade: refused with an answer and closed, or relayed until the
    /// socket ends. The connection never serves HTTP again either way. The serving state is
    /// let go once the socket is accepted, so that a socket open for hours does not keep the
    /// state of an old configuration alive.
    async fn serve_websocket(
        &mut self,
        gateway: Arc<ServingState>,
        peer: &Peer,
        head: IncomingHead,
        shutdown: &mut watch::Receiver<bool>,
    ) {
        let accepted = crate::ws::accept(&gateway, peer, head.parts).await;
        drop(gateway);
        match accepted {
            Err(response) => {
                if self
                    .write_response(response, &Method::GET, Version::HTTP_11, false)
                    .await
                    .is_ok()
                {
                    self.linger_close().await;
                }
            }
            Ok(accepted) => {
                if sent_within(self.send_timeout, self.stream.write_all(&accepted.head))
                    .await
                    .is_err()
                {
                    return;
                }
                // The HTTP buffers are given back: an idle socket keeps only the relay's.
                let tail = std::mem::take(&mut self.read_buffer).to_vec();
                self.write_buffer = Vec::new();
                accepted.run(&mut self.stream, tail, shutdown).await;
            }
        }
    }

    /// Runs the request pipeline on `head`, reading the body from the connection meanwhile if
    /// it did not arrive whole. Returns the response, and whether the request is read to its
    /// end, so that the connection knows where the next one starts; `None` if the client left
    /// before the answer.
    async fn run_pipeline(
        &mut self,
        gateway: &ServingState,
        peer: &Peer,
        head: IncomingHead,
    ) -> Option<(Response<ResponseBody>, bool)> {
        let IncomingHead {
            parts,
            body: framing,
            keep_alive,
            expects_continue,
        } = head;
        let (body, pump, mut read_to_end) = match framing {
            None => (ClientBody::Whole(None), None, false),
            Some(framing) => {
                let mut decoder = BodyDecoder::new(framing);
                match decoder.take_whole(&mut self.read_buffer) {
                    Some(whole) => (ClientBody::whole(whole), None, true),
                    None => {
                        let (body, pump) = streaming_body(decoder, expects_continue);
                        (ClientBody::Http1(body), Some(pump), false)
                    }
                }
            }
        };
        let max_buffered = crate::read_buffer_cap(&gateway.limits);
        let serving = gateway_proxy::serve(gateway, peer, Request::from_parts(parts, body));
        tokio::pin!(serving);
        if let Some(pump) = pump {
            let reading = pump.run(&mut self.stream, &mut self.read_buffer);
            tokio::select! {
                biased;
                // Answered before the body was read to its end: where the next request starts
                // is unknown.
                response = &mut serving => return Some((response, false)),
                read = reading => read_to_end = read == BodyRead::Complete,
            }
        }
        // The request is read; the connection is watched while its answer is prepared, so that
        // a client that leaves cancels the request and its upstream exchange instead of holding
        // them until an answer nobody reads. What a client pipelines meanwhile is kept, up to
        // the size of a head; the buffer is not grown for it while the request's head, which
        // shares it, is alive, since that would mean a new allocation.
        loop {
            let room = self.read_buffer.len() < max_buffered
                && self.read_buffer.capacity() > self.read_buffer.len();
            tokio::select! {
                biased;
                response = &mut serving => return Some((response, keep_alive && read_to_end)),
                read = self.stream.read_buf(&mut self.read_buffer), if room => {
                    if matches!(read, Ok(0) | Err(_)) {
                        return None;
                    }
                }
            }
        }
    }

    /// Reads until a request head is complete, or the connection goes quiet or closes.
    /// `accepted` is when the connection was accepted, for its first head.
    async fn next_head(
        &mut self,
        limits: &EdgeLimits,
        accepted: Option<Instant>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Next {
        let head_limits = HeadLimits {
            max_head_bytes: crate::read_buffer_cap(limits),
            max_header_lines: limits.max_headers * 2,
        };
        let quiet_since = Instant::now();
        let mut head_started =
            accepted.or_else(|| (!self.read_buffer.is_empty()).then_some(quiet_since));
        loop {
            if !self.read_buffer.is_empty() {
                match parse_request_head(&mut self.read_buffer, head_limits) {
                    Ok(Some(head)) => return Next::Head(head),
                    Ok(None) => {}
                    Err(error) => return Next::Unreadable(violation_of(error)),
                }
            }
            let waiting = match head_started {
                Some(started) => Waiting::Head {
                    until: started + limits.header_read_timeout,
                },
                None if *shutdown.borrow() => return Next::Closed,
                None => Waiting::Idle {
                    park_at: quiet_since + PARK_AFTER.min(limits.idle_timeout),
                    close_at: quiet_since + limits.idle_timeout,
                },
            };
            make_room(&mut self.read_buffer, READ_CHUNK);
            let due = waiting.due();
            let watchdog = arm(&mut self.watchdog, due);
            tokio::select! {
                biased;
                read = self.stream.read_buf(&mut self.read_buffer) => match read {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {
                        head_started.get_or_insert_with(Instant::now);
                        continue;
                    }
                },
                () = watchdog => {}
            }
            let now = Instant::now();
            match waiting {
                Waiting::Head { until } if now >= until => {
                    tracing::debug!("request head not complete within header_read_timeout");
                    return Next::Closed;
                }
                Waiting::Idle { close_at, .. } if now >= close_at => return Next::Closed,
                Waiting::Idle { park_at, .. } if now >= park_at => {
                    return Next::Quiet(quiet_since);
                }
                // The watchdog was armed for an earlier deadline: it is re-armed at the loop's top.
                _ => {}
            }
        }
    }

    /// Gives back the memory an idle connection does not need.
    fn park(&mut self) {
        tracing::trace!("connection parked");
        self.read_buffer = BytesMut::new();
        self.write_buffer = Vec::new();
        self.watchdog = None;
    }

    /// Waits as a bare socket for the client's next bytes: true once they arrive, false if
    /// `close_at` passes, the client leaves, or the gateway shuts down first.
    async fn wait_parked(
        &mut self,
        close_at: Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if *shutdown.borrow() {
            return false;
        }
        // Without a buffer, the wait reads the first byte on its own: the buffer is made only
        // once there is something to put in it.
        let mut first = [0; 1];
        tokio::select! {
            read = self.stream.read(&mut first) => {
                let arrived = matches!(read, Ok(1));
                if arrived {
                    self.read_buffer.reserve(READ_CHUNK);
                    self.read_buffer.extend_from_slice(&first);
                }
                arrived
            }
            () = tokio::time::sleep_until(close_at) => false,
            _ = shutdown.changed() => false,
        }
    }

    /// Writes `response` for a `method` request from an HTTP `version` client. `keep` says
    /// whether the connection may carry another request; returns whether it still may once the
    /// response is written (not when its end is the connection's).
    async fn write_response(
        &mut self,
        response: Response<ResponseBody>,
        method: &Method,
        version: Version,
        keep: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        let framing =
            ResponseFraming::for_response(method, parts.status, version, &body.size_hint());
        let keep = keep && framing != ResponseFraming::UntilClose;
        let connection = match (keep, version) {
            (false, _) => ConnectionHeader::Close,
            (true, Version::HTTP_10) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::None,
        };
        with_date(|date| {
            encode_response_head(
                &mut self.write_buffer,
                OutgoingResponse {
                    status: parts.status,
                    headers: &parts.headers,
                    framing,
                    connection,
                    date,
                },
            );
        });
        if framing == ResponseFraming::NoBody {
            sent_within(self.send_timeout, self.stream.write_all(&self.write_buffer)).await?;
            return Ok(keep);
        }
        let chunked = framing == ResponseFraming::Chunked;
        let mut sent: u64 = 0;
        loop {
            // What the body has ready goes out with what is already buffered; the buffer is
            // written before waiting for more.
            let frame = match poll_once(&mut body).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush_write_buffer().await?;
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    // Trailers, which HTTP/1 clients rarely read, and empty frames.
                    _ => continue,
                },
                Some(Err(error)) => {
                    // The head is gone, so the client can only be told by a short response;
                    // the log says why (an instance that stalled or broke off, mostly).
                    tracing::warn!(%error, "the response body failed; the response ends short");
                    return Err(io::Error::other(format!(
                        "the response body failed: {error}"
                    )));
                }
            };
            sent += data.len() as u64;
            if let ResponseFraming::Length(length) = framing
                && sent > length
            {
                return Err(io::Error::other(
                    "the response body is longer than its length",
                ));
            }
            self.write_body_piece(data, chunked).await?;
        }
        if let ResponseFraming::Length(length) = framing
            && sent != length
        {
            return Err(io::Error::other(
                "the response body is shorter than its length",
            ));
        }
        if chunked {
            self.write_buffer.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush_write_buffer().await?;
        // A long body may have grown the buffer: a connection keeps only a small one.
        if self.write_buffer.capacity() > INLINE_BODY * 2 {
            self.write_buffer = Vec::new();
        }
        Ok(keep)
    }

    /// Adds one piece of a body to what is buffered, framed; a large piece is written at once
    /// with the buffer in one vectored write, rather than copied.
    async fn write_body_piece(&mut self, data: Bytes, chunked: bool) -> io::Result<()> {
        if chunked {
            let size_line = wire::chunk_size_line(data.len());
            self.write_buffer.extend_from_slice(size_line.as_ref());
        }
        if data.len() <= INLINE_BODY {
            self.write_buffer.extend_from_slice(&data);
            if chunked {
                self.write_buffer.extend_from_slice(b"\r\n");
            }
            if self.write_buffer.len() >= INLINE_BODY {
                self.flush_write_buffer().await?;
            }
            return Ok(());
        }
        let end: &[u8] = if chunked { b"\r\n" } else { b"" };
        let mut pieces = Buf::chain(Buf::chain(&self.write_buffer[..], data), end);
        sent_within(self.send_timeout, self.stream.write_all_buf(&mut pieces)).await?;
        self.write_buffer.clear();
        Ok(())
    }

    async fn flush_write_buffer(&mut self) -> io::Result<()> {
        if !self.write_buffer.is_empty() {
            sent_within(self.send_timeout, self.stream.write_all(&self.write_buffer)).await?;
            self.write_buffer.clear();
        }
        Ok(())
    }

    /// Ends the connection after its last answer: the client sees the end of the stream, and
    /// what it still sends is read and dropped for a while (see [`LINGER`]).
    async fn linger_close(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut drained = 0;
            while drained < LINGER_BYTES {
                self.read_buffer.clear();
                make_room(&mut self.read_buffer, READ_CHUNK);
                match self.stream.read_buf(&mut self.read_buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => drained += read,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Runs one write, failing it if the client takes no bytes for `timeout`: a client that stops
/// reading would otherwise hold its response, and the upstream connection behind it, for ever.
async fn sent_within(
    timeout: Duration,
    write: impl Future<Output = io::Result<()>>,
) -> io::Result<()> {
    // Most writes finish at once: only one that waits pays for reading the clock and a timer.
    let mut write = std::pin::pin!(write);
    if let Poll::Ready(written) =
        std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await
    {
        return written;
    }
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took no bytes for {timeout:?} (send_timeout)"),
            ))
        })
}

/// Arms `watchdog` for `due` unless it is already set to fire no later (and has not fired),
/// and returns it to wait on.
fn arm(watchdog: &mut Option<Pin<Box<Sleep>>>, due: Instant) -> Pin<&mut Sleep> {
    let sleep = watchdog.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
    if sleep.deadline() > due || sleep.is_elapsed() {
        sleep.as_mut().reset(due);
    }
    sleep.as_mut()
}

fn violation_of(error: HeadError) -> Violation {
    match error {
        HeadError::Malformed(reason) => Violation::Malformed(reason),
        HeadError::TooManyLines => Violation::HeadersTooMany,
        HeadError::TooLarge => Violation::HeadersTooLarge,
        HeadError::TargetTooLong => Violation::UriTooLong,
    }
}

/// Polls `body` for its next frame once, without waiting.
async fn poll_once(
    body: &mut ResponseBody,
) -> Poll<Option<Result<Frame<Bytes>, <ResponseBody as Body>::Error>>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
}

/// Calls `write` with the `Date` header's value for now, formatted once a second per thread.
fn with_date<R>(write: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(formatted_at, date)| {
        if *formatted_at != second {
            *formatted_at = second;
            *date = httpdate::fmt_http_date(now).into_bytes();
        }
        write(date)
    })
}

/// How reading a streamed request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyRead {
    Complete,
    /// The pipeline stopped taking it, or the client failed to send it.
    Unfinished,
}

/// A request body that did not arrive with its head, and the pump that reads it for it.
fn streaming_body(decoder: BodyDecoder, expects_continue: bool) -> (StreamingBody, BodyPump) {
    // One piece in flight: the client is read no faster than the upstream takes its body.
    let (pieces_tx, pieces) = mpsc::channel(1);
    let (wanted, want) = oneshot::channel();
    let body = StreamingBody {
        pieces,
        wanted: Some(wanted),
        remaining: decoder.size_hint().exact(),
    };
    let pump = BodyPump {
        pieces: pieces_tx,
        want,
        decoder,
        expects_continue,
    };
    (body, pump)
}

/// An HTTP/1 request body still arriving: the connection's task reads it off the socket and
/// hands it over one piece at a time.
#[derive(Debug)]
pub(crate) struct StreamingBody {
    pieces: mpsc::Receiver<io::Result<Bytes>>,
    /// Told when the body is first asked for: only then does the client get `100 Continue`.
    wanted: Option<oneshot::Sender<()>>,
    /// Bytes still to come, when the client gave a length.
    remaining: Option<u64>,
}

impl Body for StreamingBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(wanted) = this.wanted.take() {
            let _ = wanted.send(());
        }
        let piece = ready!(this.pieces.poll_recv(cx));
        Poll::Ready(piece.map(|piece| {
            piece.map(|data| {
                if let Some(remaining) = &mut this.remaining {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                Frame::data(data)
            })
        }))
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Reads a streamed request body off the connection for its [`StreamingBody`].
struct BodyPump {
    pieces: mpsc::Sender<io::Result<Bytes>>,
    want: oneshot::Receiver<()>,
    decoder: BodyDecoder,
    expects_continue: bool,
}

impl BodyPump {
    async fn run<S>(mut self, stream: &mut S, buffer: &mut BytesMut) -> BodyRead
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.want.await.is_err() {
            return BodyRead::Unfinished;
        }
        if self.expects_continue
            && buffer.is_empty()
            && stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return BodyRead::Unfinished;
        }
        let mut room = READ_CHUNK;
        loop {
            let failure = match self.decoder.decode(buffer) {
                Ok(Decoded::Data(data)) => {
                    if self.pieces.send(Ok(data)).await.is_err() {
                        return BodyRead::Unfinished;
                    }
                    continue;
                }
                Ok(Decoded::End) => return BodyRead::Complete,
                Ok(Decoded::NeedMore) => {
                    make_room(buffer, room);
                    let spare = buffer.capacity() - buffer.len();
                    match stream.read_buf(buffer).await {
                        Ok(0) => io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed the connection before the end of its body",
                        ),
                        Ok(read) => {
                            if read == spare {
                                room = (room * 2).min(MAX_READ_CHUNK);
                            }
                            continue;
                        }
                        Err(error) => error,
                    }
                }
                Err(reason) => io::Error::new(io::ErrorKind::InvalidData, reason),
            };
            let _ = self.pieces.send(Err(failure)).await;
            return BodyRead::Unfinished;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use gateway_config::Config;
    use gateway_filter::FilterEngine;
    use gateway_kv::{KvStores, Limits};
    use gateway_proxy::ServingState;
    use tokio::io::DuplexStream;

    use super::*;

    const CLIENT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    /// A serving state forwarding everything to `upstream`, with no filters.
    async fn live(upstream: &str) -> Arc<LiveState> {
        let yaml = format!(
            "listeners: [{{ address: 127.0.0.1:0 }}]\n\
             cache_dir: ~\n\
             services: {{ echo: {{ instances: [\"{upstream}\"] }} }}\n\
             routes: [{{ match: {{ path_prefix: / }}, service: echo }}]\n"
        );
        let config = Config::from_yaml(&yaml, Path::new(".")).expect("a valid configuration");
        let engine = FilterEngine::new(KvStores::memory(Limits::default()), None)
            .expect("the filter engine starts");
        let state = ServingState::build(&config, &engine)
            .await
            .unwrap_or_else(|problems| panic!("cannot build the state: {problems:?}"));
        Arc::new(LiveState::new(state))
    }

    /// Reads one whole response with a `Content-Length` off `far`.
    async fn response(far: &mut DuplexStream) -> String {
        let mut received = Vec::new();
        loop {
            let mut piece = [0; 4096];
            let read = far.read(&mut piece).await.expect("readable");
            assert!(
                read > 0,
                "closed after {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&piece[..read]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|length| length.parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return text;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_parks_without_its_buffers_and_serves_its_next_request() {
        let live = live("http://127.0.0.1:9").await;
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (_stop, mut shutdown) = watch::channel(false);
        let mut connection = ClientConnection::new(near, BytesMut::new());

        far.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("written");
        let started = Instant::now();
        let quiet = connection
            .serve_until_quiet(&live, CLIENT, Some(started), &mut shutdown)
            .await
            .expect("parked, not closed");
        assert!(response(&mut far).await.contains(r#"{"status":"ok"}"#));
        assert!(
            Instant::now() >= quiet + PARK_AFTER,
            "parked before it was quiet long enough"
        );
        assert_eq!(
            connection.read_buffer.capacity(),
            0,
            "the read buffer is given back"
        );
        assert_eq!(
            connection.write_buffer.capacity(),
            0,
            "the write buffer is given back"
        );

        // The next request wakes it, a second after it parked.
        tokio::time::sleep(Duration::from_secs(1)).await;
        far.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("written");
        assert!(
            connection
                .wait_parked(quiet + Duration::from_secs(60), &mut shutdown)
                .await
        );
        connection
            .serve_until_quiet(&live, CLIENT, None, &mut shutdown)
            .await
            .expect("parked again");
        assert!(response(&mut far).await.starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_closes_at_its_idle_timeout_or_at_shutdown() {
        let (near, _far) = tokio::io::duplex(1024);
        let (stop, mut shutdown) = watch::channel(false);
        let mut connection = ClientConnection::new(near, BytesMut::new());
        connection.park();
        let parked = Instant::now();
        assert!(
            !connection
                .wait_parked(parked + Duration::from_secs(30), &mut shutdown)
                .await
        );
        assert_eq!(Instant::now(), parked + Duration::from_secs(30));

        let waiting =
            connection.wait_parked(Instant::now() + Duration::from_secs(30), &mut shutdown);
        let stopping = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.send_replace(true);
        };
        let (woken, ()) = tokio::join!(waiting, stopping);
        assert!(!woken, "a shutdown closes a parked connection");
        assert_eq!(Instant::now(), parked + Duration::from_secs(31), "at once");
    }

    /// A slow answer is no quiet spell: the connection parks only once it has answered.
    #[tokio::test]
    async fn a_connection_is_never_parked_while_its_request_is_served() {
        let upstream = gateway_demo_upstream::Upstream::start("echo").await;
        let live = live(&upstream.url()).await;
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let (_stop, mut shutdown) = watch::channel(false);
        let mut connection = ClientConnection::new(near, BytesMut::new());

        far.write_all(b"GET /slow?ms=400 HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("written");
        let started = Instant::now();
        let (quiet, answer) = tokio::join!(
            connection.serve_until_quiet(&live, CLIENT, Some(started), &mut shutdown),
            response(&mut far)
        );
        let quiet = quiet.expect("parked, not closed");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(
            quiet >= started + Duration::from_millis(400),
            "quiet from {:?} after the request, before its answer",
            quiet - started
        );
    }
}
