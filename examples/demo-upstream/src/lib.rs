//! Demo upstream services: real HTTP/1.1 servers that report what they received.
//!
//! The README walk-through runs them with the `demo-upstream` binary; the end-to-end tests start
//! them on ephemeral loopback ports. By path:
//! - anything else: `200` with a JSON echo of the request as received (method, target,
//!   headers, body length and checksum, and the body itself if it is short UTF-8 text);
//! - `/slow?ms=N`: the echo, after N milliseconds;
//! - `/stream?bytes=N`: N bytes of a known pattern, streamed in 64 KiB pieces;
//! - `/status?code=N`: an empty answer with that status;
//! - `/hop`: the echo, with hop-by-hop headers the gateway must not pass on.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The byte at `index` of the pattern `/stream` sends and the checksum expects.
pub fn pattern_byte(index: usize) -> u8 {
    (index % 251) as u8
}

/// A simple order-sensitive checksum, to prove a body arrived intact.
pub fn checksum(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |sum, &b| {
        sum.wrapping_mul(1_099_511_628_211)
            .wrapping_add(u64::from(b))
    })
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub address: SocketAddr,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts an upstream on an ephemeral loopback port that names itself `name` in every echo.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind an ephemeral loopback port")
    }

    /// Starts an upstream on `address`.
    pub async fn start_on(name: &str, address: SocketAddr) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        // The name is echoed in a header, so it must be a valid header value.
        http::HeaderValue::from_str(name).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{name}` cannot be sent in a header"),
            )
        })?;
        let name: Arc<str> = Arc::from(name);
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        handle(name.clone(), request)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Upstream {
            address,
            requests,
            connections,
            task,
        })
    }

    /// The base URL to put in a service's `instances`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many requests reached this upstream.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// How many connections this upstream accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A loopback address nothing listens on: connections to it are refused.
pub async fn refusing_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("bound address")
}

fn query_number(request: &Request<Incoming>, key: &str) -> u64 {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(name: Arc<str>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    match request.uri().path() {
        "/stream" => {
            let total = query_number(&request, "bytes") as usize;
            let chunks = (0..total).step_by(64 * 1024).map(move |start| {
                let end = (start + 64 * 1024).min(total);
                let chunk: Vec<u8> = (start..end).map(pattern_byte).collect();
                Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
            });
            Ok(Response::new(BoxBody::new(IterBody(chunks))))
        }
        "/status" => {
            let code = u16::try_from(query_number(&request, "code")).unwrap_or(500);
            let mut response = Response::new(empty());
            *response.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(response)
        }
        path => {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_millis(query_number(&request, "ms"))).await;
            }
            let hop = path == "/hop";
            let echo = echo(&name, request).await;
            let mut response =
                Response::new(BoxBody::new(Full::new(Bytes::from(echo.to_string()))));
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            if let Ok(value) = name.parse() {
                headers.insert("x-upstream", value);
            }
            if hop {
                headers.insert("connection", http::HeaderValue::from_static("x-hop-secret"));
                headers.insert("x-hop-secret", http::HeaderValue::from_static("1"));
                headers.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
            }
            Ok(response)
        }
    }
}

fn empty() -> Body {
    BoxBody::new(Full::new(Bytes::new()))
}

/// A body whose frames come from an iterator, ready at once.
struct IterBody<I>(I);

impl<I: Iterator + Unpin> hyper::body::Body for IterBody<I>
where
    I::Item: Into<Result<Frame<Bytes>, Infallible>>,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.next().map(Into::into))
    }
}

async fn echo(name: &str, request: Request<Incoming>) -> serde_json::Value {
    let (parts, body) = request.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in &parts.headers {
        headers
            .entry(key.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let mut length = 0usize;
    let mut sum = 0u64;
    let mut text = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            length += data.len();
            sum = checksum(data, sum);
            if length <= ECHOED_BODY {
                text.extend_from_slice(data);
            }
        }
    }
    let text = (length <= ECHOED_BODY)
        .then(|| String::from_utf8(text).ok())
        .flatten();
    serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "target": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": length,
        "body_checksum": sum,
        "body": text,
    })
}

/// The longest body the echo repeats back.
const ECHOED_BODY: usize = 4096;
