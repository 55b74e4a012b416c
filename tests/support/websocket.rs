//! A real WebSocket upstream for the relay tests, and a client helper: `tokio-tungstenite` on
//! both ends, on ephemeral loopback ports.
//!
//! The upstream echoes text and binary messages, and obeys a few text commands:
//! - `close:<code>`: closes with that code;
//! - `die`: drops its socket without a close frame, as a crashed instance would;
//! - `flood`: sends 64 KiB binary messages for as long as its socket takes them;
//! - `path`: answers with the request target its handshake came with.
//!
//! Of the subprotocols a client offers, it chooses the first.
//!
//! It records the close codes it received, so that tests see what reached it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{ClientRequestBuilder, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket, as the tests hold one.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running WebSocket echo upstream; stops when dropped.
pub struct WsUpstream {
    pub address: SocketAddr,
    /// Close codes received from the gateway, in order; `None` for a close frame without one.
    pub closes: Arc<Mutex<Vec<Option<u16>>>>,
    task: JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    /// Starts the echo upstream on an ephemeral loopback port.
    pub async fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("bound address");
        let closes = Arc::new(Mutex::new(Vec::new()));
        let recorded = closes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(echo(stream, recorded.clone()));
            }
        });
        WsUpstream {
            address,
            closes,
            task,
        }
    }

    /// `http://address`, as a service's instance.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The close codes received so far.
    pub fn closes(&self) -> Vec<Option<u16>> {
        self.closes.lock().expect("close log").clone()
    }
}

async fn echo(stream: TcpStream, closes: Arc<Mutex<Vec<Option<u16>>>>) {
    let mut target = String::new();
    #[expect(
        clippy::result_large_err,
        reason = "the error type is tungstenite's, for a refusal this callback never makes"
    )]
    let callback = |request: &Request, mut response: Response| {
        target = request.uri().to_string();
        // The first subprotocol offered is chosen, as a server with one protocol would.
        let first = request
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|offered| offered.to_str().ok())
            .and_then(|offered| offered.split(',').next())
            .and_then(|first| http::HeaderValue::from_str(first.trim()).ok());
        if let Some(first) = first {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", first);
        }
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Text(text) if text.as_str() == "die" => return,
            Message::Text(text) if text.as_str() == "flood" => {
                let chunk = vec![0u8; 64 * 1024];
                while socket.send(Message::binary(chunk.clone())).await.is_ok() {}
                return;
            }
            Message::Text(text) if text.as_str() == "path" => {
                let _ = socket.send(Message::text(target.clone())).await;
            }
            Message::Text(text) if text.as_str().starts_with("close:") => {
                let code: u16 = text.as_str()["close:".len()..].parse().unwrap_or(1000);
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: "asked to".into(),
                };
                let _ = socket.close(Some(frame)).await;
            }
            Message::Text(_) | Message::Binary(_) => {
                if socket.send(message).await.is_err() {
                    return;
                }
            }
            Message::Close(frame) => {
                closes
                    .lock()
                    .expect("close log")
                    .push(frame.map(|frame| u16::from(frame.code)));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// An upstream that answers every request, upgrade or not, with `200 OK` and body `no`.
pub async fn refusing_upstream() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buffer = vec![0; 8192];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-from: instance\r\n\r\nno",
                    )
                    .await;
            });
        }
    });
    (address, task)
}

/// Opens a WebSocket to `ws://address/path` with extra request headers.
pub async fn connect(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    connect_with_answer(address, path, headers)
        .await
        .map(|(socket, _)| socket)
}

/// [`connect`], with the `101` the client got.
pub async fn connect_with_answer(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    let uri = format!("ws://{address}{path}")
        .parse()
        .expect("a valid WebSocket URI");
    let mut request = ClientRequestBuilder::new(uri);
    for (name, value) in headers {
        request = request.with_header(*name, *value);
    }
    tokio_tungstenite::connect_async(request).await
}

/// The next message that is not a ping or pong, within `within`; `None` if the socket ended.
pub async fn next_message(socket: &mut Client, within: Duration) -> Option<Message> {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("a message in time")
}

/// The close code the socket was closed with, waiting up to `within`.
pub async fn close_code(socket: &mut Client, within: Duration) -> Option<u16> {
    loop {
        match next_message(socket, within).await {
            Some(Message::Close(frame)) => return frame.map(|frame| u16::from(frame.code)),
            Some(_) => continue,
            None => return None,
        }
    }
}
