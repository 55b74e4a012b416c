//! The listener side: accepting connections, speaking HTTP/1.1 and HTTP/2 (prior knowledge or
//! after the preface), and the limits a slow or hostile client meets before any routing.
//!
//! Traffic is served the way nginx serves it: a fixed number of worker threads, each with its
//! own single-threaded runtime accepting from every listener, and a connection stays on the
//! worker that accepted it. A request then never crosses threads: its task, the upstream
//! connection it drives and the timers it sets all live on one thread, with no work-stealing
//! scheduler in between. The control plane (reloads, the admin API, signals) runs elsewhere.
//!
//! - [`framing`]: watches the bytes hyper reads for framing ambiguities its parse hides;
//! - [`hygiene`]: request framing, host and size checks that hyper leaves to the embedder;
//! - [`normalize`]: the one path normalisation every later step sees.

pub mod framing;
pub mod hygiene;
pub mod normalize;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::EdgeLimits;
use crate::gateway::LiveGateway;
use crate::proxy;
use crate::{Error, Result};

use self::framing::{FramingSniffer, FramingVerdicts};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the request pipeline knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The peer address.
    pub client: SocketAddr,
    /// The framing verdict of each HTTP/1 request on the connection, taken one per request.
    pub framing: FramingVerdicts,
}

/// Binds every configured listener; fails on the first address that cannot be bound.
pub async fn bind(addresses: &[SocketAddr]) -> Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for &address in addresses {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// The cap on hyper's HTTP/1 read buffer, and so on the longest request head it will parse.
fn read_buffer_cap(limits: &EdgeLimits) -> usize {
    (limits.max_header_bytes.as_usize() * 2).max(8192) + limits.max_uri_bytes.as_usize()
}

/// The longest head the framing scanner follows. It must not give up on a head hyper could
/// still parse: hyper refuses a head once its buffer holds [`read_buffer_cap`] bytes, but a read
/// fills whatever spare capacity the buffer has, and growing the buffer can leave about the cap
/// again spare, so a parse can see up to about twice the cap. Past this bound hyper has refused
/// the head, whatever the configuration.
fn framing_scan_limit(limits: &EdgeLimits) -> usize {
    (read_buffer_cap(limits) * 4).max(1 << 20)
}

fn connection_builder(limits: &EdgeLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own caps sit above the configured ones so that the configured ones answer with
    // the gateway's JSON errors; hyper's only stop what is far past them.
    let header_bytes = limits.max_header_bytes.as_usize();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(read_buffer_cap(limits))
        .max_headers(limits.max_headers * 2);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_bytes * 2).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// The worker threads serving traffic, and the signal that stops them.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `count` worker threads, each accepting from all of `listeners` (which must be
    /// non-blocking, as tokio leaves them).
    pub fn start(
        live: Arc<LiveGateway>,
        listeners: &[std::net::TcpListener],
        count: usize,
    ) -> Result<Workers> {
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let own_listeners = listeners
                .iter()
                .map(|listener| {
                    let address = listener.local_addr().ok();
                    listener.try_clone().map_err(|source| Error::Worker {
                        reason: format!("cannot share the listener {address:?}: {source}"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let live = live.clone();
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gateway-worker-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(%error, worker = index, "cannot start a worker's runtime");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let listeners = match own_listeners
                            .into_iter()
                            .map(TcpListener::from_std)
                            .collect::<std::io::Result<Vec<_>>>()
                        {
                            Ok(listeners) => listeners,
                            Err(error) => {
                                tracing::error!(%error, worker = index, "cannot register the listeners");
                                return;
                            }
                        };
                        let shutdown = async move {
                            // An error means the sender is gone: stop as well.
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        serve(live, listeners, shutdown).await;
                    });
                })
                .map_err(|source| Error::Worker {
                    reason: format!("cannot start worker thread {index}: {source}"),
                })?;
            threads.push(thread);
        }
        Ok(Workers { threads, stop })
    }

    /// Tells every worker to stop accepting and drain, and waits until they have.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// One worker: serves connections on every listener until `shutdown` resolves, then stops accepting and
/// waits (up to a bound) for in-flight requests. Each connection is set up with the limits of
/// the state current when it is accepted, and each request is served by the state current when
/// it arrives.
async fn serve(
    live: Arc<LiveGateway>,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accept_loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let live = live.clone();
        let graceful = graceful.clone();
        accept_loops.spawn(async move {
            loop {
                let (stream, client) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let limits = live.current().limits.clone();
                let (stream, framing) = FramingSniffer::new(stream, framing_scan_limit(&limits));
                let peer = Connection { client, framing };
                let live = live.clone();
                let service = service_fn(move |request| {
                    let gateway = live.current();
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(proxy::serve(&gateway, &peer, request).await) }
                });
                let connection = connection_builder(&limits)
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%client, error = %error, "connection ended with an error");
                    }
                });
            }
        });
    }

    shutdown.await;
    accept_loops.shutdown().await;
    // The accept loops held the only other references, and they are gone now.
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::warn!("cannot drain connections: the shutdown signal is still shared");
        return;
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await {
        Ok(()) => tracing::debug!("this worker's connections are closed"),
        Err(_) => tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}"),
    }
}
