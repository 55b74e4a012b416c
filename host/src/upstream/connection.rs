//! HTTP/1.1 connections to one instance, kept alive between requests and driven by the task of
//! the request that holds them.
//!
//! A client that spawns a task per connection (hyper-util's) hands every request to that task
//! through a channel and every response back through another: several task wake-ups per request
//! on the hot path. Here a connection has no task of its own. The request's task polls it while
//! it waits for the response head, and the response body polls it while the client is sent the
//! body; once the body has been read to its end, the connection goes back to the idle list of
//! the thread that opened it. Only that thread picks it up again: its socket is registered with
//! that thread's runtime, so on any other every readiness event would cross threads, and it
//! would fail outright once the opening thread's runtime shut down. Nothing waits on an idle
//! connection: one the instance closed is noticed, and dropped, when it is next checked out or
//! when its thread next sweeps its idle lists, whichever comes first.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::InstanceUrl;
use crate::proxy::body::{BodyReadTimeout, RequestBody};
use crate::{Error, Result};

type Sender = http1::SendRequest<RequestBody>;
type Driver = http1::Connection<TokioIo<TcpStream>, RequestBody>;

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

/// One open connection: the handle requests are sent through, and the state machine that has to
/// be polled for anything to move on the socket. It is always boxed: hyper's state for a
/// connection is several hundred bytes, and it travels inside every response body.
struct Connection {
    sender: Sender,
    driver: Driver,
    idle_since: Instant,
    opened_on: ThreadKey,
}

impl Connection {
    /// Polls the connection once and says whether it can take a request: the instance may have
    /// closed it, or it may not have finished the previous exchange.
    fn poll_usable(&mut self, cx: &mut Context<'_>) -> bool {
        if self.idle_since.elapsed() > IDLE_TIMEOUT {
            return false;
        }
        match Pin::new(&mut self.driver).poll(cx) {
            Poll::Ready(_) => false,
            Poll::Pending => self.sender.is_ready(),
        }
    }
}

/// The idle connections to one instance, and how new ones are opened.
pub(super) struct ConnectionPool {
    /// One list per thread that has opened connections: a handful, so a short scan finds one.
    idle: Mutex<Vec<IdleList>>,
    connect_timeout: Duration,
}

/// The idle connections one thread opened, most recently used last.
struct IdleList {
    thread: ThreadKey,
    #[expect(
        clippy::vec_box,
        reason = "connections leave the list, boxed, inside response bodies"
    )]
    connections: Vec<Box<Connection>>,
}

impl ConnectionPool {
    pub fn new(connect_timeout: Duration) -> Arc<ConnectionPool> {
        Arc::new(ConnectionPool {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleList>> {
        // The lists stay consistent whatever a panicking holder was doing: push and pop only.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection this thread opened that is still usable, if any;
    /// the ones found closed or stale on the way are dropped.
    async fn reuse(&self) -> Option<Box<Connection>> {
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
    pub fn sweep(&self) {
        let thread = ThreadKey::current();
        // Polled only to learn their state: a wake-up is of no use to anyone here.
        let mut cx = Context::from_waker(Waker::noop());
        if let Some(list) = self.lock().iter_mut().find(|list| list.thread == thread) {
            list.connections
                .retain_mut(|connection| connection.poll_usable(&mut cx));
        }
    }

    fn release(&self, mut connection: Box<Connection>) {
        connection.idle_since = Instant::now();
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

    async fn open(&self, instance: &InstanceUrl, label: &str) -> Result<Box<Connection>> {
        let host = instance.authority.host();
        // An IPv6 literal keeps its brackets in the authority; the resolver wants it bare.
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(host);
        let port = instance.authority.port_u16().unwrap_or(80);
        let unreachable = |reason: String| Error::UpstreamUnreachable {
            instance: label.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                unreachable(format!(
                    "connect timed out after {:?}",
                    self.connect_timeout
                ))
            })?
            .map_err(|error| unreachable(error.to_string()))?;
        // Requests and responses are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let (sender, driver) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| unreachable(error.to_string()))?;
        Ok(Box::new(Connection {
            sender,
            driver,
            idle_since: Instant::now(),
            opened_on: ThreadKey::current(),
        }))
    }

    /// Sends `request` (in origin form, with a Host header) on an idle connection, or on a new
    /// one, and returns the response once its head has arrived. A request an idle connection
    /// turned out unable to take (closed as it was picked) is sent again on a new connection:
    /// it never left the gateway.
    pub async fn send(
        self: &Arc<Self>,
        instance: &InstanceUrl,
        label: &str,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>> {
        let mut request = request;
        if let Some(connection) = self.reuse().await {
            match self.exchange(connection, request, label).await {
                Exchange::Done(result) => return result,
                Exchange::NotSent(unsent) => request = unsent,
            }
        }
        let connection = self.open(instance, label).await?;
        match self.exchange(connection, request, label).await {
            Exchange::Done(result) => result,
            Exchange::NotSent(_) => Err(Error::UpstreamFailed {
                instance: label.to_owned(),
                reason: "a new connection closed before the request could be sent".to_owned(),
            }),
        }
    }

    /// Drives `connection` until the response head arrives.
    async fn exchange(
        self: &Arc<Self>,
        mut connection: Box<Connection>,
        request: Request<RequestBody>,
        label: &str,
    ) -> Exchange {
        let mut response = std::pin::pin!(connection.sender.try_send_request(request));
        let mut driver_done = false;
        let outcome = poll_fn(|cx| {
            // The driver writes the request and reads the response; it must be polled first so
            // that the response future sees what it read. It finishes only when the connection
            // does, which leaves the response future to report why.
            if !driver_done && Pin::new(&mut connection.driver).poll(cx).is_ready() {
                driver_done = true;
            }
            response.as_mut().poll(cx)
        })
        .await;
        match outcome {
            Ok(response) => {
                let lease = (!driver_done).then(|| Lease {
                    pool: self.clone(),
                    connection,
                });
                Exchange::Done(Ok(response.map(|body| UpstreamBody { body, lease })))
            }
            Err(mut error) => match error.take_message() {
                Some(request) => Exchange::NotSent(request),
                None => Exchange::Done(Err(classify(error.into_error(), label))),
            },
        }
    }
}

enum Exchange {
    Done(Result<Response<UpstreamBody>>),
    /// The connection could not take the request; here it is, unsent.
    NotSent(Request<RequestBody>),
}

/// What a failed exchange means for the client: a body that stalled is the client's fault.
fn classify(error: hyper::Error, label: &str) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.downcast_ref::<BodyReadTimeout>().is_some() {
            return Error::BodyTimeout;
        }
        source = cause.source();
    }
    Error::UpstreamFailed {
        instance: label.to_owned(),
        reason: error_chain(&error),
    }
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

/// A connection on loan to one response body; back to its pool once the body has been read.
struct Lease {
    pool: Arc<ConnectionPool>,
    connection: Box<Connection>,
}

/// An upstream response body on its way to the client. Polling it also drives the connection
/// it arrives on; the connection is reused only if the body was read to its end.
pub struct UpstreamBody {
    body: Incoming,
    lease: Option<Lease>,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(lease) = &mut this.lease
            && Pin::new(&mut lease.connection.driver).poll(cx).is_ready()
        {
            // Closed: what it read is already in the body; nothing more will come.
            this.lease = None;
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if frame.is_none() {
            this.release();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(Lease { pool, connection }) = self.lease.take() {
            pool.release(connection);
        }
    }
}

impl Drop for UpstreamBody {
    /// hyper stops polling a body that says it has ended (a known length, all read, or none at
    /// all), so a complete body is often dropped rather than polled to `None`. An incomplete one
    /// takes its connection with it: what is left of the body would be read as the next response.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
