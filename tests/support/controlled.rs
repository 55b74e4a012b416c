//! An upstream whose behaviour a test changes while it runs: how long it waits before it
//! answers, the status it answers with, and whether it is up at all. For the balancing,
//! health and breaker tests, which need an instance made slow, failing or dead mid-test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The path the gateway's active health checks are configured to ask; counted apart.
pub const HEALTH_PATH: &str = "/health";

/// What the upstream does, changed by the test as it runs.
struct Behaviour {
    delay_ms: AtomicU64,
    status: AtomicU16,
    requests: AtomicUsize,
    health_checks: AtomicUsize,
    connections: AtomicUsize,
    in_flight: AtomicUsize,
}

/// A running upstream that names itself in an `x-upstream` header and its body. It reads the
/// whole request body before it answers, and answers health checks like any request.
pub struct ControlledUpstream {
    pub address: SocketAddr,
    name: String,
    behaviour: Arc<Behaviour>,
    server: Option<JoinHandle<()>>,
}

impl Drop for ControlledUpstream {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl ControlledUpstream {
    /// Starts one on an ephemeral loopback port, answering 200 at once.
    pub async fn start(name: &str) -> ControlledUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let behaviour = Arc::new(Behaviour {
            delay_ms: AtomicU64::new(0),
            status: AtomicU16::new(200),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        });
        let mut upstream = ControlledUpstream {
            address: listener.local_addr().expect("address"),
            name: name.to_owned(),
            behaviour,
            server: None,
        };
        upstream.serve(listener);
        upstream
    }

    fn serve(&mut self, listener: TcpListener) {
        let behaviour = self.behaviour.clone();
        let name: Arc<str> = Arc::from(self.name.as_str());
        self.server = Some(tokio::spawn(async move {
            // Dropped with this task: stopping the server resets every connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                behaviour.connections.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.clone();
                let name = name.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let behaviour = behaviour.clone();
                        let name = name.clone();
                        async move {
                            let counter = if request.uri().path() == HEALTH_PATH {
                                &behaviour.health_checks
                            } else {
                                &behaviour.requests
                            };
                            counter.fetch_add(1, Ordering::SeqCst);
                            behaviour.in_flight.fetch_add(1, Ordering::SeqCst);
                            let body = request.into_body().collect().await;
                            let delay = behaviour.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            behaviour.in_flight.fetch_sub(1, Ordering::SeqCst);
                            if body.is_err() {
                                return Err("the request body broke off");
                            }
                            let status = behaviour.status.load(Ordering::SeqCst);
                            let mut response =
                                Response::new(Full::new(Bytes::from(name.to_string())));
                            *response.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                            if let Ok(value) = name.parse() {
                                response.headers_mut().insert("x-upstream", value);
                            }
                            Ok(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap the finished ones so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    /// The base URL to put in a service's `instances`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every later answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every later answer has this status.
    pub fn set_status(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::SeqCst);
    }

    /// Requests whose head arrived, health checks aside.
    pub fn requests(&self) -> usize {
        self.behaviour.requests.load(Ordering::SeqCst)
    }

    /// Health checks (`GET /health`) whose head arrived.
    pub fn health_checks(&self) -> usize {
        self.behaviour.health_checks.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.behaviour.connections.load(Ordering::SeqCst)
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.behaviour.in_flight.load(Ordering::SeqCst)
    }

    /// Stops listening and resets every connection: the instance is dead.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.address)
            .await
            .expect("rebind the same port");
        self.serve(listener);
    }
}

/// Polls `condition` every 20 ms until it holds or `within` passes; says whether it held.
pub async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
