//! The WebSocket benchmark's two ends, for `bench/ws`:
//!
//! - `ws_bench echo ADDRESS`: a WebSocket echo server (the upstream every target proxies to);
//! - `ws_bench load URL CONNECTIONS SECONDS`: `CONNECTIONS` sockets, each sending a 32-byte text
//!   message and waiting for its echo, over and over for `SECONDS`; prints one JSON line with
//!   messages per second (echoes received) and the round trip's p50 and p99 in microseconds.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const MESSAGE: &str = "0123456789abcdef0123456789abcdef";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.get(1).map(String::as_str) {
        Some("echo") if args.len() == 3 => runtime.block_on(echo(&args[2])),
        Some("load") if args.len() == 5 => {
            let connections: usize = args[3].parse()?;
            let seconds: u64 = args[4].parse()?;
            runtime.block_on(load(&args[2], connections, Duration::from_secs(seconds)))
        }
        _ => Err("usage: ws_bench echo ADDRESS | ws_bench load URL CONNECTIONS SECONDS".into()),
    }
}

async fn echo(address: &str) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = socket.next().await {
                if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

async fn load(
    url: &str,
    connections: usize,
    length: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        sockets.push(socket);
    }
    let deadline = Instant::now() + length;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                let mut round_trips = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    if socket.send(Message::text(MESSAGE)).await.is_err() {
                        break;
                    }
                    match socket.next().await {
                        Some(Ok(message)) if message.is_text() => {
                            round_trips.push(sent.elapsed().as_micros() as u64);
                        }
                        _ => break,
                    }
                }
                let _ = socket.close(None).await;
                round_trips
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await?);
    }
    all.sort_unstable();
    let percentile = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        r#"{{"messages_per_second":{:.0},"p50_us":{},"p99_us":{},"messages":{}}}"#,
        all.len() as f64 / length.as_secs_f64(),
        percentile(0.50),
        percentile(0.99),
        all.len()
    );
    Ok(())
}
