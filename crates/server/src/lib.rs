//! The listener side: accepting connections, speaking HTTP/1.1 and HTTP/2 (prior knowledge or
//! after the preface), and the limits a slow or hostile client meets before any routing.
//!
//! Traffic is served the way nginx serves it: a fixed number of worker threads, each with its
//! own single-threaded runtime accepting from every listener, and a connection stays on the
//! worker that accepted it. A request then never crosses threads: its task, the upstream
//! connection it drives and the timers it sets all live on one thread, with no work-stealing
//! scheduler in between. The control plane (reloads, the admin API, signals) runs elsewhere.
//!
//! - `connection`: one connection's life, from the first bytes that say its protocol;
//! - `counted`: the stream, counted for the metrics (connections open, bytes each way);
//! - `http1`: HTTP/1.1 served by the gateway's own loop, parked without buffers when idle;
//! - `body`: a client's request body as its connection delivers it;
//! - `rewind`: the first bytes, read to learn the protocol, handed back to hyper;
//! - `ws`: WebSocket upgrades, relayed to an instance frame by frame; its counters are public
//!   ([`ws::status`]) for the admin API and metrics.
//!
//! The loops are generic over the stream (`AsyncRead + AsyncWrite`): TCP today, TLS and
//! in-process streams (the tests' `tokio::io::duplex`) plug in the same way.
//!
//! Each request is handed to the pipeline of `gateway-proxy`, which does everything else.

mod body;
mod connection;
mod counted;
mod http1;
mod rewind;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use gateway_config::EdgeLimits;
use gateway_proxy::LiveState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },

    /// A worker thread could not be started.
    #[error("cannot start the workers: {reason}")]
    Worker { reason: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a worker closes the idle upstream connections their instance has closed.
const UPSTREAM_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

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

/// The longest request head read before it is refused: room for the configured header block
/// twice over (the limit counts `name: value` pairs, not the bytes on the wire) and the target.
fn read_buffer_cap(limits: &EdgeLimits) -> usize {
    (limits.max_header_bytes.as_usize() * 2).max(8192) + limits.max_uri_bytes.as_usize()
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
        live: Arc<LiveState>,
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
/// waits (up to a bound) for in-flight requests. Each request is served by the state current
/// when it arrives.
async fn serve(
    live: Arc<LiveState>,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    // Every connection holds a receiver; the sender learns that all are gone when they close.
    let (stop_connections, connections_stopping) = watch::channel(false);
    let mut accept_loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let live = live.clone();
        let stopping = connections_stopping.clone();
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
                tokio::spawn(connection::serve(
                    live.clone(),
                    stream,
                    client,
                    stopping.clone(),
                ));
            }
        });
    }
    drop(connections_stopping);
    let sweeper = tokio::spawn(sweep_idle_upstream_connections(live));

    shutdown.await;
    sweeper.abort();
    accept_loops.shutdown().await;
    let _ = stop_connections.send(true);
    match tokio::time::timeout(DRAIN_TIMEOUT, stop_connections.closed()).await {
        Ok(()) => tracing::debug!("this worker's connections are closed"),
        Err(_) => tracing::warn!("gave up waiting for connections after {DRAIN_TIMEOUT:?}"),
    }
}

/// Every [`UPSTREAM_SWEEP_INTERVAL`], closes this worker's idle upstream connections that their
/// instance closed (or that went stale), so they do not hold sockets until they are next picked.
async fn sweep_idle_upstream_connections(live: Arc<LiveState>) {
    let mut ticks = tokio::time::interval(UPSTREAM_SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        live.current().sweep_idle_upstream_connections();
    }
}
