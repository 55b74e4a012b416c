//! The relay: messages both ways between the client's socket and the instance's, until one
//! side closes, a limit is hit, or the gateway shuts down.
//!
//! Who is told what when it ends:
//! - a close frame from either side goes on to the other with its code;
//! - a message or frame over `max_message_size` / `max_frame_size`: 1009 to the side that sent
//!   it, 1001 to the other;
//! - the instance gone without a close frame: 1011 to the client;
//! - the client gone, or taking nothing for `limits.send_timeout`: 1001 to the instance (and
//!   the same for an instance that stops taking messages: 1011 to the client);
//! - no message either way for `idle_timeout`: 1000 to both;
//! - keepalive pings unanswered for `ping_timeout`: 1011 to the client, 1001 to the instance;
//! - gateway shutdown: 1001 to both, within the drain's grace period.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::handshake::Relay;
use super::stats::OpenSocket;

/// How long a closing side gets to answer the close frame before its socket is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why the relay stopped, and what each side is sent.
struct Ending {
    to_client: Option<CloseFrame>,
    to_upstream: Option<CloseFrame>,
    /// The close code counted for this socket.
    code: u16,
}

fn close(code: CloseCode, reason: &'static str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

impl Relay {
    /// Relays until the socket ends; `tail` as [`super::handshake::Accepted::run`] takes it.
    pub(crate) async fn relay<S>(
        self,
        client: S,
        tail: Vec<u8>,
        shutdown: &mut watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Relay {
            mut upstream,
            config,
            limits,
            send_timeout,
            instance,
            ..
        } = self;
        let mut client =
            WebSocketStream::from_partially_read(client, tail, Role::Server, Some(config)).await;
        let mut socket = OpenSocket::new();
        let mut last_message = Instant::now();
        // When a keepalive ping went out with no frame from the client since.
        let mut ping_sent: Option<Instant> = None;
        let mut next_ping = limits.ping_interval.map(|every| Instant::now() + every);
        let timer = tokio::time::sleep(limits.idle_timeout);
        tokio::pin!(timer);

        let ending = loop {
            let idle_at = last_message + limits.idle_timeout;
            let pong_due = ping_sent.map(|sent| sent + limits.ping_timeout);
            let due = [Some(idle_at), pong_due, next_ping]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(idle_at);
            // Re-armed only when it has fired or a nearer deadline comes up, as the HTTP/1.1
            // loop's watchdog: a message moves the idle deadline later, which costs no timer
            // operation; a timer that fires early finds nothing due and is armed again.
            if due < timer.deadline() || timer.is_elapsed() {
                timer.as_mut().reset(due);
            }
            tokio::select! {
                biased;
                // The guard `wait_for` returns is not `Send`: it is dropped inside.
                () = async { drop(shutdown.wait_for(|stop| *stop).await) } => break Ending {
                    to_client: close(CloseCode::Away, "the gateway is shutting down"),
                    to_upstream: close(CloseCode::Away, "the gateway is shutting down"),
                    code: 1001,
                },
                read = client.next() => {
                    ping_sent = None;
                    match read {
                        Some(Ok(message)) => match message {
                            Message::Text(_) | Message::Binary(_) => {
                                last_message = Instant::now();
                                socket.message_from_client(message.len());
                                if !sent_within(send_timeout, upstream.send(message)).await {
                                    break Ending {
                                        to_client: close(CloseCode::Error, "the upstream service failed"),
                                        to_upstream: None,
                                        code: 1011,
                                    };
                                }
                            }
                            // tungstenite has queued the pong; it goes out with the flush.
                            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                                let _ = client.flush().await;
                            }
                            Message::Close(frame) => {
                                // tungstenite answers the client's close itself.
                                let _ = client.flush().await;
                                break Ending {
                                    code: frame.as_ref().map_or(1005, |frame| u16::from(frame.code)),
                                    to_upstream: frame,
                                    to_client: None,
                                };
                            }
                        },
                        Some(Err(WsError::Capacity(error))) => {
                            tracing::info!(%instance, %error, "a client's WebSocket message is too large");
                            break Ending {
                                to_client: close(CloseCode::Size, "message too large"),
                                to_upstream: close(CloseCode::Away, "the client went away"),
                                code: 1009,
                            };
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%instance, %error, "a client's WebSocket failed");
                            break Ending {
                                to_client: close(CloseCode::Protocol, "protocol error"),
                                to_upstream: close(CloseCode::Away, "the client went away"),
                                code: 1002,
                            };
                        }
                        None => break Ending {
                            to_client: None,
                            to_upstream: close(CloseCode::Away, "the client went away"),
                            code: 1006,
                        },
                    }
                }
                read = upstream.next() => match read {
                    Some(Ok(message)) => match message {
                        Message::Text(_) | Message::Binary(_) => {
                            last_message = Instant::now();
                            socket.message_to_client(message.len());
                            if !sent_within(send_timeout, client.send(message)).await {
                                break Ending {
                                    to_client: None,
                                    to_upstream: close(CloseCode::Away, "the client went away"),
                                    code: 1006,
                                };
                            }
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                            let _ = upstream.flush().await;
                        }
                        Message::Close(frame) => {
                            let _ = upstream.flush().await;
                            break Ending {
                                code: frame.as_ref().map_or(1005, |frame| u16::from(frame.code)),
                                to_client: frame,
                                to_upstream: None,
                            };
                        }
                    },
                    Some(Err(WsError::Capacity(error))) => {
                        tracing::warn!(%instance, %error, "an instance's WebSocket message is too large");
                        break Ending {
                            to_client: close(CloseCode::Size, "message too large"),
                            to_upstream: close(CloseCode::Size, "message too large"),
                            code: 1009,
                        };
                    }
                    other => {
                        if let Some(Err(error)) = other {
                            tracing::info!(%instance, %error, "an instance's WebSocket failed");
                        }
                        break Ending {
                            to_client: close(CloseCode::Error, "the upstream service failed"),
                            to_upstream: None,
                            code: 1011,
                        };
                    }
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= idle_at {
                        break Ending {
                            to_client: close(CloseCode::Normal, "idle timeout"),
                            to_upstream: close(CloseCode::Normal, "idle timeout"),
                            code: 1000,
                        };
                    }
                    if pong_due.is_some_and(|due| now >= due) {
                        break Ending {
                            to_client: close(CloseCode::Error, "keepalive ping unanswered"),
                            to_upstream: close(CloseCode::Away, "the client went away"),
                            code: 1011,
                        };
                    }
                    if let (Some(at), Some(every)) = (next_ping, limits.ping_interval)
                        && now >= at
                    {
                        next_ping = Some(now + every);
                        ping_sent.get_or_insert(now);
                        let _ = client.send(Message::Ping(Default::default())).await;
                    }
                }
            }
        };
        socket.closed_with(ending.code);
        // Both sides are closed together, each given a moment to answer its close frame.
        let closing_client = finish(&mut client, ending.to_client);
        let closing_upstream = finish(&mut upstream, ending.to_upstream);
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            tokio::join!(closing_client, closing_upstream)
        })
        .await;
    }
}

/// Whether a message went out within `timeout`: a side that takes nothing for that long (as
/// nginx's `send_timeout`) is given up on instead of holding the socket open.
pub(crate) async fn sent_within<E>(
    timeout: Duration,
    sending: impl std::future::Future<Output = Result<(), E>>,
) -> bool {
    matches!(tokio::time::timeout(timeout, sending).await, Ok(Ok(())))
}

/// Sends `frame` as the close (or, with none, completes a close the peer began), then reads
/// until the peer has answered and closed.
async fn finish<S>(socket: &mut WebSocketStream<S>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(frame) = frame {
        if socket.close(Some(frame)).await.is_err() {
            return;
        }
    } else {
        let _ = socket.flush().await;
    }
    while let Some(Ok(_)) = socket.next().await {}
}
