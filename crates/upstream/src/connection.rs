//! HTTP/1.1 connections to one instance, kept alive between requests and driven by the task of
//! the request that holds them.
//!
//! A client that spawns a task per connection (hyper-util's) hands every request to that task
//! through a channel and every response back through another: several task wake-ups per request
//! on the hot path. hyper's bare client connection avoids the task but keeps the channels, its
//! dispatch state and a body channel per response. Here the request's task writes the request
//! head straight from one reused buffer and reads the response head where it lands (see
//! [`gateway_wire::upstream`]); a body that arrived with its head (most do) is handed over whole and
//! the connection goes back at once; a longer one is read by the response body as the client
//! takes it, and the connection goes back once it has been read to its end.
//!
//! A connection runs over any [`Transport`]: TCP for now, and TLS or an in-process stream (the
//! tests here use `tokio::io::duplex`) the same way. Why the gateway has its own client at all:
//! `docs/decisions/0002-own-upstream-client.md`.
//!
//! Idle connections are kept per thread: only the thread that opened one picks it up again. Its
//! socket is registered with that thread's runtime, so on any other every readiness event would
//! cross threads, and it would fail outright once the opening thread's runtime shut down.
//! Nothing waits on an idle connection: one the instance closed is noticed, and dropped, when it
//! is next checked out or when its thread next sweeps its idle lists, whichever comes first.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use gateway_config::InstanceUrl;
use gateway_wire::upstream::{self, OutgoingHead, RequestFraming, ResponseHead};
use gateway_wire::{self as wire, BodyDecoder, Decoded, Malformed, make_room};

use crate::limit::InFlight;
use crate::{Error, ErrorKind, Result};

/// A request body as the pool sends it: any body, whatever its error type.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection may sit idle before it is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per instance and thread; more are closed as their responses end.
const MAX_IDLE: usize = 1024;

/// The thread a connection's socket is registered with, and so the only one that may use it:
/// each serving thread runs its own runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ThreadKey(u64);

impl ThreadKey {
    fn current() -> ThreadKey {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static KEY: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        ThreadKey(KEY.with(|key| *key))
    }
}

/// Room made in a connection's read buffer before a read: to begin with, for heads and small
/// bodies, and at most, for a long body whose reads keep filling what room there is.
const READ_CHUNK: usize = 8 * 1024;
const MAX_READ_CHUNK: usize = 256 * 1024;

/// The byte stream a connection to an instance runs over: TCP, and whatever else implements it
/// (TLS, or an in-process stream in tests).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The reading half of [`Transport::split`].
    type Reader<'a>: AsyncRead + Unpin + Send;
    /// The writing half of [`Transport::split`].
    type Writer<'a>: AsyncWrite + Unpin + Send;

    /// Opens a stream to `host:port`.
    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<Self>> + Send;

    /// Borrows the two directions at once: a request body is sent while the answer is read.
    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);
}

impl Transport for TcpStream {
    type Reader<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Writer<'a> = tokio::net::tcp::WriteHalf<'a>;

    async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
        let stream = TcpStream::connect((host, port)).await?;
        // Requests and responses are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        TcpStream::split(self)
    }
}

/// One open connection, with what has been read from it and not yet consumed. It is always
/// boxed: it travels inside response bodies, which hyper moves as it serves them, and a pointer
/// keeps them small.
struct Connection<S> {
    stream: S,
    read_buffer: BytesMut,
    /// The request head being written: kept, so a request costs no allocation for it.
    write_buffer: Vec<u8>,
    /// Room made for the next body read: doubled each time a read fills it, so a long body
    /// moves in large reads (and large writes to the client) rather than 8 KiB ones.
    read_chunk: usize,
    idle_since: Instant,
    opened_on: ThreadKey,
    /// It has carried a request before: one that fails before any answer may only have been
    /// closed by the instance just as it was picked.
    reused: bool,
}

impl<S: Transport> Connection<S> {
    fn new(stream: S) -> Connection<S> {
        Connection {
            stream,
            read_buffer: BytesMut::with_capacity(READ_CHUNK),
            write_buffer: Vec::new(),
            read_chunk: READ_CHUNK,
            idle_since: Instant::now(),
            opened_on: ThreadKey::current(),
            reused: false,
        }
    }

    /// Says whether an idle connection can take a request: readable while idle means closed by
    /// the instance, reset, or sending what nobody asked for. A read that would wait costs no
    /// system call while the stream has not been woken since its last read.
    fn poll_usable(&mut self, cx: &mut Context<'_>) -> bool {
        if self.idle_since.elapsed() > IDLE_TIMEOUT || !self.read_buffer.is_empty() {
            return false;
        }
        let mut probe = [0; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.stream)
            .poll_read(cx, &mut probe)
            .is_pending()
    }

    /// Reads what the instance sent next into the read buffer; 0 when it closed the connection.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        make_room(&mut self.read_buffer, self.read_chunk);
        let room = self.read_buffer.capacity() - self.read_buffer.len();
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.read_buffer
        ))?;
        if read == room {
            self.read_chunk = (self.read_chunk * 2).min(MAX_READ_CHUNK);
        }
        Poll::Ready(Ok(read))
    }
}

/// The idle connections to one instance, and how new ones are opened.
pub(super) struct ConnectionPool<S = TcpStream> {
    /// One list per thread that has opened connections: a handful, so a short scan finds one.
    idle: Mutex<Vec<IdleList<S>>>,
    connect_timeout: Duration,
    /// Longest wait between two reads of a response body.
    read_timeout: Duration,
}

/// The idle connections one thread opened, most recently used last.
struct IdleList<S> {
    thread: ThreadKey,
    /// Boxed: connections leave the list inside response bodies.
    connections: Vec<Box<Connection<S>>>,
}

impl<S: Transport> ConnectionPool<S> {
    pub(crate) fn new(connect_timeout: Duration, read_timeout: Duration) -> Arc<ConnectionPool<S>> {
        Arc::new(ConnectionPool {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            read_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleList<S>>> {
        // The lists stay consistent whatever a panicking holder was doing: push and pop only.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection this thread opened that is still usable, if any;
    /// the ones found closed or stale on the way are dropped.
    async fn reuse(&self) -> Option<Box<Connection<S>>> {
        let thread = ThreadKey::current();
        loop {
            let mut connection = self
                .lock()
                .iter_mut()
                .find(|list| list.thread == thread)?
                .connections
                .pop()?;
            if poll_fn(|cx| Poll::Ready(connection.poll_usable(cx))).await {
                return Some(connection);
            }
        }
    }

    /// Closes this thread's idle connections that the instance has closed or that have been
    /// unused past [`IDLE_TIMEOUT`]. Nothing else reads an idle connection, so without this
    /// one the instance closed would hold a socket (in `CLOSE_WAIT`) until it was next picked.
    pub(crate) fn sweep(&self) {
        let thread = ThreadKey::current();
        // Polled only to learn their state: a wake-up is of no use to anyone here.
        let mut cx = Context::from_waker(Waker::noop());
        if let Some(list) = self.lock().iter_mut().find(|list| list.thread == thread) {
            list.connections
                .retain_mut(|connection| connection.poll_usable(&mut cx));
        }
    }

    fn release(&self, mut connection: Box<Connection<S>>) {
        connection.idle_since = Instant::now();
        // A long body grew the buffer; an idle connection keeps only the usual room.
        if connection.read_buffer.capacity() > 2 * READ_CHUNK {
            connection.read_buffer = BytesMut::with_capacity(READ_CHUNK);
        }
        connection.read_chunk = READ_CHUNK;
        let thread = connection.opened_on;
        let mut idle = self.lock();
        let index = match idle.iter().position(|list| list.thread == thread) {
            Some(index) => index,
            None => {
                idle.push(IdleList {
                    thread,
                    connections: Vec::new(),
                });
                idle.len() - 1
            }
        };
        let connections = &mut idle[index].connections;
        if connections.len() < MAX_IDLE {
            connections.push(connection);
        }
    }

    async fn open(&self, instance: &InstanceUrl, label: &str) -> Result<Box<Connection<S>>> {
        let host = instance.authority.host();
        // An IPv6 literal keeps its brackets in the authority; the resolver wants it bare.
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        let port = instance.authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(self.connect_timeout, S::connect(host, port))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::ConnectTimeout,
                    label,
                    format!("connect timed out after {:?}", self.connect_timeout),
                )
            })?
            .map_err(|error| Error::new(ErrorKind::ConnectRefused, label, error.to_string()))?;
        Ok(Box::new(Connection::new(stream)))
    }

    /// Sends `request` (in origin form, with a Host header) on an idle connection, or on a new
    /// one, and returns the response once its head has arrived. A request without a body that
    /// met a reused connection just closed by the instance (it failed before any answer came) is
    /// sent again on a new one, if its method is idempotent: the instance cannot have acted on
    /// it, or may act twice without harm.
    pub(crate) async fn send<B>(
        self: &Arc<Self>,
        instance: &InstanceUrl,
        label: &str,
        head: OutgoingHead<'_>,
        mut body: B,
    ) -> Result<Response<UpstreamBody<S>>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let framing = RequestFraming::for_body(
            head.method,
            head.headers,
            body.is_end_stream(),
            &body.size_hint(),
        );
        if let Some(connection) = self.reuse().await {
            match self.exchange(connection, head, body, framing, label).await {
                Sent::Done(result) => return result,
                Sent::Retry(unsent) => body = unsent,
            }
        }
        let connection = self.open(instance, label).await?;
        match self.exchange(connection, head, body, framing, label).await {
            Sent::Done(result) => result,
            // Only a reused connection asks for a retry; on a new one it is a failure.
            Sent::Retry(_) => Err(Error::new(
                ErrorKind::ResetAfterSent,
                label,
                "the instance closed a new connection without an answer",
            )),
        }
    }

    /// Writes the request on `connection` and reads the response head. A body is sent while the
    /// response is awaited: an instance may answer (413, say) before it has read all of it.
    async fn exchange<B>(
        self: &Arc<Self>,
        mut connection: Box<Connection<S>>,
        request: OutgoingHead<'_>,
        mut body: B,
        framing: RequestFraming,
        label: &str,
    ) -> Sent<S, B>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let failed = |kind, reason: String| Sent::Done(Err(Error::new(kind, label, reason)));
        let Connection {
            stream,
            read_buffer,
            write_buffer,
            reused,
            ..
        } = &mut *connection;
        upstream::encode_request_head(write_buffer, request, framing);
        // The halves borrow the stream: they are gone before the connection is handed on.
        let (answer, body_sent) = {
            let (mut reader, mut writer) = Transport::split(stream);
            let mut body_sent = true;
            let answer = if framing == RequestFraming::Empty {
                match writer.write_all(write_buffer).await {
                    Ok(()) => read_head(&mut reader, read_buffer, request.method).await,
                    Err(error) => Err(ReadError::Unsent(error)),
                }
            } else {
                let send = async {
                    writer
                        .write_all(write_buffer)
                        .await
                        .map_err(SendError::Io)?;
                    send_body(&mut writer, &mut body, framing).await
                };
                let receive = read_head(&mut reader, read_buffer, request.method);
                tokio::pin!(send, receive);
                tokio::select! {
                    biased;
                    head = &mut receive => {
                        body_sent = false;
                        head
                    }
                    sent = &mut send => match sent {
                        Ok(()) => receive.await,
                        Err(SendError::Body(error)) => {
                            let reason = error_chain(&*error);
                            return Sent::Done(Err(Error {
                                source: Some(error),
                                ..Error::new(ErrorKind::ClientBody, label, reason)
                            }));
                        }
                        // The instance may have answered and stopped reading: its answer is what
                        // the client should see.
                        Err(SendError::Io(error)) => match receive.await {
                            Ok(head) => {
                                body_sent = false;
                                Ok(head)
                            }
                            Err(_) => {
                                return failed(
                                    ErrorKind::ResetBeforeSent,
                                    format!("cannot send the request body: {error}"),
                                );
                            }
                        },
                    }
                }
            };
            (answer, body_sent)
        };
        let head = match answer {
            Ok(head) => head,
            Err(error) => {
                let retry = *reused
                    && error.nothing_received()
                    && framing == RequestFraming::Empty
                    && request.method.is_idempotent();
                if retry {
                    return Sent::Retry(body);
                }
                return failed(error.kind(), error.to_string());
            }
        };
        connection.reused = true;
        let reusable = head.reusable && body_sent;
        let mut decoder = BodyDecoder::new(head.body);
        let body = match decoder.take_whole(&mut connection.read_buffer) {
            // Read whole with its head: the connection's part is over before the client's
            // begins.
            Some(whole) => {
                if reusable && connection.read_buffer.is_empty() {
                    self.release(connection);
                }
                UpstreamBody::Whole(Some(whole))
            }
            None => UpstreamBody::Streaming(Streaming {
                pool: self.clone(),
                connection,
                decoder,
                reusable,
                stall: None,
                in_flight: InFlight::default(),
            }),
        };
        Sent::Done(Ok(Response::from_parts(head.parts, body)))
    }
}

/// How sending a request on one connection went.
enum Sent<S, B> {
    Done(Result<Response<UpstreamBody<S>>>),
    /// A reused connection failed before any answer; here is the body, untouched.
    Retry(B),
}

/// Why no response head was read.
enum ReadError {
    /// With the count of bytes received before it.
    Io(io::Error, usize),
    Closed(usize),
    Malformed(Malformed),
    /// Writing the request head failed.
    Unsent(io::Error),
}

impl ReadError {
    fn kind(&self) -> ErrorKind {
        match self {
            ReadError::Io(..) | ReadError::Closed(_) => ErrorKind::ResetAfterSent,
            ReadError::Malformed(_) => ErrorKind::Protocol,
            ReadError::Unsent(_) => ErrorKind::ResetBeforeSent,
        }
    }

    /// The instance sent nothing at all: it closed or reset the connection as it was picked.
    fn nothing_received(&self) -> bool {
        match self {
            ReadError::Io(error, received) => {
                *received == 0
                    && matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionReset
                            | io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionAborted
                    )
            }
            ReadError::Closed(received) => *received == 0,
            ReadError::Unsent(error) => matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            ReadError::Malformed(_) => false,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(error, _) | ReadError::Unsent(error) => write!(f, "{error}"),
            ReadError::Closed(_) => {
                f.write_str("the instance closed the connection without a response")
            }
            ReadError::Malformed(reason) => write!(f, "unreadable response: {reason}"),
        }
    }
}

/// Reads until the final response's head is complete.
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    method: &Method,
) -> std::result::Result<ResponseHead, ReadError> {
    let mut received = 0;
    loop {
        if !buffer.is_empty()
            && let Some(head) =
                upstream::parse_response_head(buffer, method).map_err(ReadError::Malformed)?
        {
            return Ok(head);
        }
        make_room(buffer, READ_CHUNK);
        match reader.read_buf(buffer).await {
            Ok(0) => return Err(ReadError::Closed(received)),
            Ok(read) => received += read,
            Err(error) => return Err(ReadError::Io(error, received)),
        }
    }
}

enum SendError {
    /// Reading the client's body failed, or timed out.
    Body(BoxError),
    Io(io::Error),
}

/// Sends the client's body as it arrives, framed for this connection. Trailers are dropped:
/// few upstreams read them, and an HTTP/1 request can only carry them when chunked.
async fn send_body<B>(
    writer: &mut (impl AsyncWrite + Unpin),
    body: &mut B,
    framing: RequestFraming,
) -> std::result::Result<(), SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame
            .map_err(|error| SendError::Body(error.into()))?
            .into_data()
        else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if framing == RequestFraming::Chunked {
            let size_line = wire::chunk_size_line(data.len());
            let mut chunk = Buf::chain(Buf::chain(size_line.as_ref(), data), &b"\r\n"[..]);
            writer
                .write_all_buf(&mut chunk)
                .await
                .map_err(SendError::Io)?;
        } else {
            writer
                .write_all_buf(&mut data)
                .await
                .map_err(SendError::Io)?;
        }
    }
    if framing == RequestFraming::Chunked {
        writer
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(SendError::Io)?;
    }
    Ok(())
}

/// The error and its causes on one line, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An upstream response body on its way to the client.
pub enum UpstreamBody<S = TcpStream> {
    /// Read whole with the head; the connection has already gone back to its pool.
    Whole(Option<Bytes>),
    /// Still arriving: reading it drives the connection, which goes back to its pool once the
    /// body has been read to its end, and is closed if the body is dropped before.
    Streaming(Streaming<S>),
    Done,
}

pub struct Streaming<S> {
    pool: Arc<ConnectionPool<S>>,
    connection: Box<Connection<S>>,
    decoder: BodyDecoder,
    /// Whether the connection may carry another request after this body.
    reusable: bool,
    /// When the instance, silent since the last read, has taken too long. Made on the first
    /// wait only: most bodies arrive without one.
    stall: Option<Pin<Box<Sleep>>>,
    /// The request counts as in flight to its instance until its body has been read.
    in_flight: InFlight,
}

impl<S: Transport> Body for UpstreamBody<S> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let streaming = match this {
            UpstreamBody::Whole(whole) => {
                let whole = whole.take().filter(|bytes| !bytes.is_empty());
                *this = UpstreamBody::Done;
                return Poll::Ready(whole.map(|bytes| Ok(Frame::data(bytes))));
            }
            UpstreamBody::Done => return Poll::Ready(None),
            UpstreamBody::Streaming(streaming) => streaming,
        };
        loop {
            let connection = &mut streaming.connection;
            let decoded = streaming.decoder.decode(&mut connection.read_buffer);
            match decoded {
                Ok(Decoded::Data(bytes)) => {
                    if streaming.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(reason) => {
                    *this = UpstreamBody::Done;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        reason,
                    ))));
                }
            }
            let read = match connection.poll_read_more(cx) {
                Poll::Ready(Ok(read)) => read,
                Poll::Ready(Err(error)) => {
                    *this = UpstreamBody::Done;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Pending => {
                    let timeout = streaming.pool.read_timeout;
                    let stall = streaming
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if stall.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = UpstreamBody::Done;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the instance sent nothing for {timeout:?} in the middle of the body"
                        ),
                    ))));
                }
            };
            // Whatever it read, the instance is not silent: the wait starts again.
            if let Some(stall) = &mut streaming.stall {
                stall
                    .as_mut()
                    .reset(Instant::now() + streaming.pool.read_timeout);
            }
            if read == 0 {
                // Whatever happens next, the connection is spent.
                streaming.reusable = false;
                if let Err(reason) = streaming.decoder.closed() {
                    *this = UpstreamBody::Done;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        reason,
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Whole(whole) => whole.as_ref().is_none_or(Bytes::is_empty),
            UpstreamBody::Streaming(streaming) => streaming.decoder.is_done(),
            UpstreamBody::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Whole(whole) => {
                SizeHint::with_exact(whole.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            UpstreamBody::Streaming(streaming) => streaming.decoder.size_hint(),
            UpstreamBody::Done => SizeHint::with_exact(0),
        }
    }
}

impl<S> UpstreamBody<S> {
    /// Whether the body is still arriving from the instance.
    pub(crate) fn is_streaming(&self) -> bool {
        matches!(self, UpstreamBody::Streaming(_))
    }

    /// Keeps the request counted as in flight while the body is still arriving; a body read
    /// whole with its head frees the count at once.
    pub(crate) fn hold(&mut self, in_flight: InFlight) {
        if let UpstreamBody::Streaming(streaming) = self {
            streaming.in_flight.join(in_flight);
        }
    }
}

impl<S: Transport> UpstreamBody<S> {
    /// The body has been read to its end: the connection goes back to its pool if it can carry
    /// another request and nothing past this response arrived on it.
    fn finish(&mut self) {
        if let UpstreamBody::Streaming(Streaming {
            pool,
            connection,
            reusable: true,
            ..
        }) = std::mem::replace(self, UpstreamBody::Done)
            && connection.read_buffer.is_empty()
        {
            pool.release(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, StatusCode};
    use http_body_util::{BodyExt, Empty};
    use tokio::io::DuplexStream;

    use super::*;

    /// An in-process instance: the test holds the other end of each connection.
    impl Transport for DuplexStream {
        type Reader<'a> = tokio::io::ReadHalf<&'a mut DuplexStream>;
        type Writer<'a> = tokio::io::WriteHalf<&'a mut DuplexStream>;

        async fn connect(_host: &str, _port: u16) -> io::Result<DuplexStream> {
            Err(io::ErrorKind::ConnectionRefused.into())
        }

        fn split(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
            tokio::io::split(self)
        }
    }

    fn idle_count(pool: &ConnectionPool<DuplexStream>) -> usize {
        pool.lock().iter().map(|list| list.connections.len()).sum()
    }

    /// Reads one request head off `far` and answers it with `answer`.
    async fn answer(far: &mut DuplexStream, answer: &[u8]) -> String {
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            far.read_exact(&mut byte).await.expect("a request");
            request.push(byte[0]);
        }
        far.write_all(answer).await.expect("answered");
        String::from_utf8_lossy(&request).into_owned()
    }

    async fn get(
        pool: &Arc<ConnectionPool<DuplexStream>>,
    ) -> Result<Response<UpstreamBody<DuplexStream>>> {
        let url: InstanceUrl = "http://svc.test:8080".parse().expect("a valid URL");
        let head = OutgoingHead {
            method: &Method::GET,
            target: "/items/7",
            headers: &HeaderMap::new(),
            host: &url.host_header,
        };
        pool.send(&url, "svc@svc.test:8080", head, Empty::<Bytes>::new())
            .await
    }

    /// A pool whose one in-process connection carried a GET that the instance answered with
    /// `reply`, a head and part of a body: the pool, the body, and the instance's end.
    async fn streaming(
        reply: &[u8],
    ) -> (
        Arc<ConnectionPool<DuplexStream>>,
        UpstreamBody<DuplexStream>,
        DuplexStream,
    ) {
        let pool =
            ConnectionPool::<DuplexStream>::new(Duration::from_secs(1), Duration::from_secs(60));
        let (near, mut far) = tokio::io::duplex(4096);
        pool.release(Box::new(Connection::new(near)));
        let (response, _) = tokio::join!(get(&pool), answer(&mut far, reply));
        (pool, response.expect("an answer").into_body(), far)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_goes_back_to_its_pool_after_its_answer_and_leaves_it_when_stale_or_closed()
     {
        let pool =
            ConnectionPool::<DuplexStream>::new(Duration::from_secs(1), Duration::from_secs(60));
        let (near, mut far) = tokio::io::duplex(4096);
        pool.release(Box::new(Connection::new(near)));

        let (response, request) = tokio::join!(
            get(&pool),
            answer(&mut far, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        );
        assert!(
            request.starts_with("GET /items/7 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("host: svc.test:8080\r\n"), "{request}");
        let response = response.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            idle_count(&pool),
            1,
            "a body read with its head frees the connection at once"
        );
        let body = response.into_body().collect().await.expect("the body");
        assert_eq!(body.to_bytes(), "ok");

        // Idle past its timeout: swept.
        tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        pool.sweep();
        assert_eq!(idle_count(&pool), 0);

        // Closed by the instance while idle: swept too.
        let (near, far) = tokio::io::duplex(4096);
        pool.release(Box::new(Connection::new(near)));
        pool.sweep();
        assert_eq!(idle_count(&pool), 1, "open and quiet: kept");
        drop(far);
        pool.sweep();
        assert_eq!(idle_count(&pool), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_silent_mid_body_past_read_timeout_ends_the_body_with_an_error() {
        let (pool, mut body, mut far) =
            streaming(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        let _ = body.frame().await;
        // Quiet for 30 s, a byte, then quiet for good: the wait starts again at the byte.
        let started = Instant::now();
        let instance = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            far.write_all(b"d").await.expect("written");
            far
        };
        let (frame, _far) = tokio::join!(body.frame(), instance);
        assert_eq!(
            frame
                .expect("a frame")
                .expect("data")
                .into_data()
                .expect("data"),
            "d"
        );
        let stalled = body.frame().await.expect("an end").expect_err("stalled");
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        assert_eq!(Instant::now() - started, Duration::from_secs(90));
        assert_eq!(idle_count(&pool), 0, "a stalled connection is not kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_streamed_body_frees_its_connection_at_its_end_and_an_instance_that_breaks_off_ends_it_with_an_error()
     {
        let (pool, mut body, mut far) =
            streaming(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n").await;
        assert_eq!(idle_count(&pool), 0, "in use while its body streams");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "abc");
        far.write_all(b"0\r\n\r\n").await.expect("written");
        assert!(body.frame().await.is_none());
        assert_eq!(idle_count(&pool), 1, "back once the body ended");

        let (response, _) = tokio::join!(
            get(&pool),
            answer(
                &mut far,
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
            )
        );
        let mut body = response.expect("an answer").into_body();
        let _ = body.frame().await;
        drop(far);
        let cut = body.frame().await.expect("an end").expect_err("cut short");
        assert_eq!(cut.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(idle_count(&pool), 0, "a broken connection is not kept");
    }
}
