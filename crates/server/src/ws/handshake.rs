//! Both handshakes of a relayed WebSocket: the client's, checked here and by the route's
//! filters, and the gateway's own with the instance, whose answer is checked before the client
//! is told `101`. A socket on the hub's path stops after the filters: the hub serves it.
//!
//! The two handshakes have their own keys: the instance proves it read the gateway's key, and
//! the gateway answers the client's. The client's subprotocols are offered as they came and
//! the one the instance chose is passed back; extensions are never offered (see `ws`).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version, request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};

use gateway_config::WebSocket as Limits;
use gateway_proxy::{Error, Peer, ResponseBody, ServingState};
use gateway_upstream::{ErrorKind, UpgradeSlot};

use super::hub::HubSocket;

/// The request-context key the auth filter writes its roles to, comma-separated.
const AUTH_ROLES: &str = "auth.roles";

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
const SEC_WEBSOCKET_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
const SEC_WEBSOCKET_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");

/// A socket's read buffer: small, since most sockets sit idle most of the time; a large
/// message grows it while it is read.
const READ_BUFFER: usize = 4 * 1024;

/// Whether a request head asks to become a WebSocket (RFC 6455, 4.1): `GET`, HTTP/1.1,
/// `Upgrade: websocket` and `Connection: upgrade`.
pub(crate) fn is_upgrade(parts: &request::Parts) -> bool {
    parts.method == http::Method::GET
        && parts.version == Version::HTTP_11
        && has_token(&parts.headers, &header::UPGRADE, "websocket")
        && has_token(&parts.headers, &header::CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// An upgrade the gateway accepted: the client's `101`, and what serves the socket after it.
pub(crate) struct Accepted {
    /// The client's `101` head, whole.
    pub(crate) head: Vec<u8>,
    socket: Socket,
}

enum Socket {
    // Boxed: the relay's two sockets are large, and the enum is moved once per socket.
    Relay(Box<Relay>),
    Hub(HubSocket),
}

impl Accepted {
    /// The instance a relayed socket goes to, `service@host:port`; `None` for the hub.
    fn instance(&self) -> Option<&str> {
        match &self.socket {
            Socket::Relay(relay) => Some(&relay.instance),
            Socket::Hub(_) => None,
        }
    }

    /// Serves the socket until it closes. `tail` is what the client sent after its handshake
    /// head before it was answered (frames sent early).
    pub(crate) async fn run<S>(self, client: S, tail: Vec<u8>, shutdown: &mut watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.socket {
            Socket::Relay(relay) => relay.relay(client, tail, shutdown).await,
            Socket::Hub(hub) => hub.serve(client, tail, shutdown).await,
        }
    }
}

/// A socket both handshakes agreed on, to be relayed to its instance.
pub(crate) struct Relay {
    pub(crate) upstream: WebSocketStream<TcpStream>,
    pub(crate) config: WebSocketConfig,
    pub(crate) limits: Limits,
    /// How long a write to either side may wait for it to take bytes (`limits.send_timeout`).
    pub(crate) send_timeout: std::time::Duration,
    /// `service@host:port`, for the log.
    pub(crate) instance: String,
    /// Holds the instance's count of requests in flight while the socket lives.
    pub(crate) _slot: UpgradeSlot,
}

/// Takes a client's upgrade through both handshakes: the accepted socket, or the answer the
/// client gets instead (the gateway's JSON error, a filter's answer, or the instance's own
/// refusal).
///
/// Either way the handshake gets its access-log line: `101` and the instance, or the refusal.
pub(crate) async fn accept(
    gateway: &ServingState,
    peer: &Peer,
    mut parts: request::Parts,
) -> Result<Accepted, Response<ResponseBody>> {
    let request_id = gateway_proxy::request_id(&parts.headers);
    // The proxy then takes this id as the client's, so every answer carries the same one.
    parts
        .headers
        .insert(gateway_wire::fields::REQUEST_ID, request_id.clone());
    if !gateway_access_log::enabled() {
        return handshakes(gateway, peer, parts, &request_id).await;
    }
    let started = std::time::Instant::now();
    let target = parts.uri.path_and_query().map(ToString::to_string);
    let user_agent = parts.headers.get(header::USER_AGENT).cloned();
    let accepted = handshakes(gateway, peer, parts, &request_id).await;
    let (status, upstream) = match &accepted {
        Ok(accepted) => (101, accepted.instance()),
        Err(response) => (response.status().as_u16(), None),
    };
    gateway_access_log::write(&gateway_access_log::Line {
        time: std::time::SystemTime::now(),
        request_id: request_id.to_str().unwrap_or("-"),
        client: peer.client.ip(),
        method: Some("GET"),
        target: target.as_deref(),
        version: Version::HTTP_11,
        status,
        bytes: None,
        duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        route: None,
        upstream,
        error: None,
        referer: None,
        user_agent: user_agent.as_ref().map(HeaderValue::as_bytes),
        trace_id: None,
        span_id: None,
        debug_trace: None,
    });
    accepted
}

async fn handshakes(
    gateway: &ServingState,
    peer: &Peer,
    parts: request::Parts,
    request_id: &HeaderValue,
) -> Result<Accepted, Response<ResponseBody>> {
    let request_id = request_id.clone();
    let refuse = |error: Error| {
        tracing::info!(client = %peer.client, %error, "WebSocket handshake refused");
        let mut response = gateway_proxy::error_response(&error, &request_id, Version::HTTP_11);
        if matches!(error, Error::WebSocketVersion) {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    };
    let client_key = check_client(&parts.headers).map_err(refuse)?;
    let offered = parts.headers.get(SEC_WEBSOCKET_PROTOCOL).cloned();
    let limits = gateway.websocket.clone();
    let config = socket_config(&limits);
    let hub = limits
        .hub
        .as_ref()
        .filter(|hub| hub.path == parts.uri.path())
        .cloned();
    let approved =
        gateway_proxy::approve_handshake(gateway, peer, Request::from_parts(parts, ())).await?;
    if let Some(settings) = hub {
        let roles = approved
            .context(AUTH_ROLES)
            .map(|roles| {
                roles
                    .split(',')
                    .filter(|role| !role.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Accepted {
            head: switching_protocols(&client_key, None, &request_id),
            socket: Socket::Hub(HubSocket {
                settings,
                roles,
                config,
                send_timeout: gateway.limits.send_timeout,
                ping_interval: limits.ping_interval,
                ping_timeout: limits.ping_timeout,
            }),
        });
    }
    let handshake = approved.pick(gateway)?;
    let upgrade = handshake.upgrade;

    let mut request = Request::builder()
        .uri(format!("ws://{}{}", upgrade.authority(), handshake.target))
        .header(header::HOST, upgrade.host_header())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_VERSION, "13")
        .header(SEC_WEBSOCKET_KEY, generate_key())
        .body(())
        .map_err(|_| refuse(Error::BadHandshake("the request target is not usable")))?;
    let mut headers = handshake.headers;
    for name in [
        header::HOST,
        SEC_WEBSOCKET_KEY,
        SEC_WEBSOCKET_VERSION,
        SEC_WEBSOCKET_EXTENSIONS,
    ] {
        headers.remove(name);
    }
    request.headers_mut().extend(headers);

    let instance = upgrade.label().to_owned();
    let connecting = async {
        let socket = TcpStream::connect(upgrade.authority()).await?;
        let _ = socket.set_nodelay(true);
        Ok::<_, std::io::Error>(socket)
    };
    let timeout = upgrade.timeout();
    let shaken = tokio::time::timeout(timeout, async {
        let socket = connecting.await.map_err(tungstenite::Error::Io)?;
        tokio_tungstenite::client_async_with_config(request, socket, Some(config)).await
    })
    .await;
    let (upstream, answer) = match shaken {
        Err(_) => {
            let error = upgrade.failed(
                ErrorKind::ResponseTimeout,
                format!("no WebSocket handshake within {timeout:?}"),
            );
            return Err(refuse(Error::UpstreamHandshake(error)));
        }
        Ok(Err(tungstenite::Error::Http(answer))) => {
            // The instance refused the upgrade: the client gets its answer.
            let _ = upgrade.answered(answer.status().as_u16());
            tracing::info!(client = %peer.client, %instance, status = answer.status().as_u16(), "the instance refused the WebSocket upgrade");
            return Err(relay_refusal(*answer, &request_id));
        }
        Ok(Err(tungstenite::Error::Io(error))) => {
            let error = upgrade.failed(ErrorKind::ConnectRefused, error.to_string());
            return Err(refuse(Error::UpstreamHandshake(error)));
        }
        Ok(Err(error)) => {
            let error = upgrade.failed(ErrorKind::Protocol, error.to_string());
            return Err(refuse(Error::UpstreamHandshake(error)));
        }
        Ok(Ok(shaken)) => shaken,
    };
    if answer.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS) {
        let error = upgrade.failed(
            ErrorKind::Protocol,
            "the instance accepted an extension that was not offered",
        );
        return Err(refuse(Error::UpstreamHandshake(error)));
    }
    let chosen = answer.headers().get(SEC_WEBSOCKET_PROTOCOL);
    if chosen.is_some() && offered.is_none() {
        let error = upgrade.failed(
            ErrorKind::Protocol,
            "the instance chose a subprotocol that was not offered",
        );
        return Err(refuse(Error::UpstreamHandshake(error)));
    }
    let head = switching_protocols(&client_key, chosen, &request_id);
    Ok(Accepted {
        head,
        socket: Socket::Relay(Box::new(Relay {
            upstream,
            config,
            limits,
            send_timeout: gateway.limits.send_timeout,
            instance,
            _slot: upgrade.answered(101),
        })),
    })
}

/// The client's key, if its handshake is one the gateway takes (RFC 6455, 4.2.1).
fn check_client(headers: &HeaderMap) -> Result<HeaderValue, Error> {
    let versions: Vec<_> = headers.get_all(SEC_WEBSOCKET_VERSION).iter().collect();
    match versions.as_slice() {
        [] => return Err(Error::BadHandshake("Sec-WebSocket-Version is missing")),
        [version] if version.as_bytes() == b"13" => {}
        _ => return Err(Error::WebSocketVersion),
    }
    let keys: Vec<_> = headers.get_all(SEC_WEBSOCKET_KEY).iter().collect();
    match keys.as_slice() {
        [] => Err(Error::BadHandshake("Sec-WebSocket-Key is missing")),
        // A key is 16 random bytes in base64: 22 characters and `==`.
        [key] if key.len() == 24 && key.as_bytes().ends_with(b"==") => Ok((*key).clone()),
        _ => Err(Error::BadHandshake(
            "Sec-WebSocket-Key must be one base64 nonce of 16 bytes",
        )),
    }
}

fn socket_config(limits: &Limits) -> WebSocketConfig {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = READ_BUFFER;
    // Each message goes out as soon as it is relayed: the relay has nothing to batch.
    config.write_buffer_size = 0;
    // One message in the write buffer at most, whatever its size: the relay waits on writes.
    config.max_write_buffer_size = limits.max_message_size.as_usize().saturating_mul(2);
    config.max_message_size = Some(limits.max_message_size.as_usize());
    config.max_frame_size = Some(limits.max_frame_size.as_usize());
    config
}

/// The client's `101`: the accept key for its own key, and the subprotocol the instance chose.
fn switching_protocols(
    client_key: &HeaderValue,
    protocol: Option<&HeaderValue>,
    request_id: &HeaderValue,
) -> Vec<u8> {
    let accept = derive_accept_key(client_key.as_bytes());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    head.extend_from_slice(accept.as_bytes());
    if let Some(protocol) = protocol {
        head.extend_from_slice(b"\r\nsec-websocket-protocol: ");
        head.extend_from_slice(protocol.as_bytes());
    }
    head.extend_from_slice(b"\r\nx-request-id: ");
    head.extend_from_slice(request_id.as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// The instance's refusal as the client gets it: its status and headers, and the part of its
/// body that came with its head (the handshake reads no further).
fn relay_refusal(
    answer: Response<Option<Vec<u8>>>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let (mut parts, body) = answer.into_parts();
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::HeaderName::from_static("keep-alive"),
    ] {
        parts.headers.remove(name);
    }
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        parts.status = StatusCode::BAD_GATEWAY;
    }
    parts
        .headers
        .insert(gateway_wire::fields::REQUEST_ID, request_id.clone());
    Response::from_parts(
        parts,
        gateway_proxy::full(Bytes::from(body.unwrap_or_default())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, version: Version, headers: &[(&str, &str)]) -> request::Parts {
        let mut request = Request::builder()
            .method(method)
            .version(version)
            .uri("/ws");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn an_upgrade_is_a_get_on_http_1_1_naming_websocket_and_upgrade_as_tokens() {
        let upgrade = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert!(is_upgrade(&head("GET", Version::HTTP_11, &upgrade)));
        assert!(!is_upgrade(&head("POST", Version::HTTP_11, &upgrade)));
        assert!(!is_upgrade(&head("GET", Version::HTTP_10, &upgrade)));
        assert!(!is_upgrade(&head(
            "GET",
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "h2c")]
        )));
        assert!(!is_upgrade(&head(
            "GET",
            Version::HTTP_11,
            &[("connection", "upgraded"), ("upgrade", "websocket")]
        )));
    }

    #[test]
    fn the_client_handshake_needs_version_13_and_one_well_formed_key() {
        let check = |headers: &[(&str, &str)]| {
            check_client(&head("GET", Version::HTTP_11, headers).headers)
        };
        let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(check(&[("sec-websocket-version", "13"), key]).is_ok());
        assert!(matches!(check(&[key]), Err(Error::BadHandshake(_))));
        assert!(matches!(
            check(&[("sec-websocket-version", "8"), key]),
            Err(Error::WebSocketVersion)
        ));
        assert!(matches!(
            check(&[("sec-websocket-version", "13")]),
            Err(Error::BadHandshake(_))
        ));
        assert!(matches!(
            check(&[
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "short")
            ]),
            Err(Error::BadHandshake(_))
        ));
    }

    #[test]
    fn the_101_answers_the_clients_own_key_as_rfc_6455_computes_it() {
        let head = switching_protocols(
            &HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
            Some(&HeaderValue::from_static("chat")),
            &HeaderValue::from_static("id-1"),
        );
        let head = String::from_utf8(head).expect("ASCII");
        assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(head.contains("sec-websocket-protocol: chat\r\n"));
        assert!(head.ends_with("x-request-id: id-1\r\n\r\n"));
    }
}
