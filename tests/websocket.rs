//! The WebSocket relay end to end: a real `tokio-tungstenite` client, the real gateway binary
//! and a real WebSocket echo upstream (`support/websocket.rs`), on loopback ports.

use std::time::Duration;

use futures_util::SinkExt;
use gateway_tests::websocket::{
    WsUpstream, close_code, connect, connect_with_answer, next_message, refusing_upstream,
};
use gateway_tests::{Gateway, plugin_dir, raw_exchange};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

const WAIT: Duration = Duration::from_secs(5);

/// A gateway routing `/ws/{service}/...` to the echo upstream as `/ws/...`, with `websocket`
/// settings (YAML under `websocket:`, may be empty).
fn gateway_for(upstream: &str, websocket: &str) -> Gateway {
    Gateway::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
watch: false
websocket:
  {websocket}
services:
  market:
    instances: ["{upstream}"]
routes:
  - name: sockets
    match: {{ path_prefix: /ws }}
    service: market
"#
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn text_binary_large_and_fragmented_messages_are_echoed_and_pings_answered() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 30s");
    let mut socket = connect(gateway.address, "/ws/market/ticks?from=now", &[])
        .await
        .expect("the gateway accepts the upgrade");

    socket.send(Message::text("path")).await.expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("/ws/market/ticks?from=now")),
        "the instance gets the client's target"
    );

    socket.send(Message::text("hello")).await.expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("hello"))
    );

    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::binary(vec![0u8, 1, 2, 255]))
    );

    let large: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    socket
        .send(Message::binary(large.clone()))
        .await
        .expect("sent");
    match next_message(&mut socket, WAIT).await {
        Some(Message::Binary(echoed)) => {
            assert_eq!(echoed.len(), large.len());
            assert_eq!(
                Sha256::digest(&echoed),
                Sha256::digest(&large),
                "1 MiB intact"
            );
        }
        other => panic!("expected the 1 MiB message back, got {other:?}"),
    }

    // One text message in three frames: reassembled, it reaches the instance and comes back.
    for (piece, opcode, last) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("men", OpCode::Data(Data::Continue), false),
        ("ted", OpCode::Data(Data::Continue), true),
    ] {
        socket
            .send(Message::Frame(Frame::message(piece, opcode, last)))
            .await
            .expect("frame sent");
    }
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("fragmented"))
    );

    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping sent");
    let pong = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            match socket.next().await {
                Some(Ok(Message::Pong(payload))) => return payload,
                Some(Ok(_)) => continue,
                other => panic!("socket ended before the pong: {other:?}"),
            }
        }
    })
    .await
    .expect("a pong in time");
    assert_eq!(&pong[..], b"are you there");

    let status = gateway_status(&gateway);
    assert!(status.is_empty(), "no error logged: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_instances_subprotocol_is_relayed_and_extensions_are_not_offered() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 30s");
    let (mut socket, answer) = connect_with_answer(
        gateway.address,
        "/ws/a",
        &[
            ("sec-websocket-protocol", "chat.v2, chat.v1"),
            ("sec-websocket-extensions", "permessage-deflate"),
        ],
    )
    .await
    .expect("upgraded");
    let header = |name| {
        answer
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    assert_eq!(header("sec-websocket-protocol"), Some("chat.v2"));
    assert_eq!(header("sec-websocket-extensions"), None);
    assert!(header("x-request-id").is_some(), "{answer:?}");
    socket.send(Message::text("plain")).await.expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("plain"))
    );
}

/// Error-level lines in the gateway's log.
fn gateway_status(gateway: &Gateway) -> Vec<String> {
    gateway
        .logs()
        .into_iter()
        .filter(|line| line.contains("\"ERROR\""))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn close_codes_pass_both_ways() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 30s");

    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    socket
        .send(Message::text("close:4001"))
        .await
        .expect("sent");
    assert_eq!(
        close_code(&mut socket, WAIT).await,
        Some(4001),
        "the instance's close code reaches the client"
    );

    let mut socket = connect(gateway.address, "/ws/b", &[])
        .await
        .expect("upgraded");
    socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4002),
            reason: "done".into(),
        }))
        .await
        .expect("close sent");
    let reached = gateway_tests::eventually(WAIT, || upstream.closes().contains(&Some(4002))).await;
    assert!(
        reached,
        "the client's close code reaches the instance: {:?}",
        upstream.closes()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_dies_closes_the_client_with_1011() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 30s");
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    socket.send(Message::text("hello")).await.expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("hello"))
    );
    socket.send(Message::text("die")).await.expect("sent");
    assert_eq!(close_code(&mut socket, WAIT).await, Some(1011));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_message_closes_with_1009_and_the_instance_is_told() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(
        &upstream.url(),
        "{ idle_timeout: 30s, max_frame_size: 64KiB, max_message_size: 64KiB }",
    );
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    socket
        .send(Message::binary(vec![7u8; 64 * 1024]))
        .await
        .expect("sent");
    assert!(
        matches!(next_message(&mut socket, WAIT).await, Some(Message::Binary(echoed)) if echoed.len() == 64 * 1024),
        "a message at the limit passes"
    );
    socket
        .send(Message::binary(vec![7u8; 100 * 1024]))
        .await
        .expect("sent");
    assert_eq!(close_code(&mut socket, WAIT).await, Some(1009));
    let told = gateway_tests::eventually(WAIT, || upstream.closes().contains(&Some(1001))).await;
    assert!(told, "the instance gets 1001: {:?}", upstream.closes());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_socket_is_closed_after_its_own_timeout() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 400ms");
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut socket, WAIT).await, Some(1000));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    let told = gateway_tests::eventually(WAIT, || upstream.closes().contains(&Some(1000))).await;
    assert!(told, "the instance is closed too: {:?}", upstream.closes());
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_pings_go_out_and_shutdown_closes_with_1001() {
    let upstream = WsUpstream::start().await;
    let mut gateway = gateway_for(
        &upstream.url(),
        "{ idle_timeout: 30s, ping_interval: 100ms, ping_timeout: 2s }",
    );
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    let ping = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            if let Some(Ok(Message::Ping(_))) = socket.next().await {
                return;
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "the gateway pings the client");
    // Reading the socket answers the pings: it is still open a while later.
    socket.send(Message::text("still")).await.expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("still"))
    );

    gateway.signal("TERM");
    assert_eq!(close_code(&mut socket, WAIT).await, Some(1001));
    let status = gateway.stop(Duration::from_secs(10));
    assert!(status.success(), "the gateway exits cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_answering_pings_is_closed_with_1011() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(
        &upstream.url(),
        "{ idle_timeout: 30s, ping_interval: 100ms, ping_timeout: 300ms }",
    );
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    // Not reading the socket, the client answers no ping.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(close_code(&mut socket, WAIT).await, Some(1011));
    let told = gateway_tests::eventually(WAIT, || upstream.closes().contains(&Some(1001))).await;
    assert!(told, "the instance gets 1001: {:?}", upstream.closes());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_takes_nothing_is_given_up_after_send_timeout() {
    let upstream = WsUpstream::start().await;
    let gateway = Gateway::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
watch: false
limits:
  send_timeout: 300ms
services:
  market:
    instances: ["{}"]
routes:
  - match: {{ path_prefix: /ws }}
    service: market
"#,
        upstream.url()
    ));
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    socket.send(Message::text("flood")).await.expect("sent");
    // The client reads nothing while the instance floods: the socket buffers fill up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        use futures_util::StreamExt;
        let mut messages = 0;
        while let Some(Ok(_)) = socket.next().await {
            messages += 1;
        }
        messages
    })
    .await;
    assert!(
        drained.is_ok(),
        "the gateway gave the socket up: what was buffered ends"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_handshakes_get_the_gateway_json_error() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 30s");
    let upgrade = |extra: &str| {
        format!(
            "GET /ws/a HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: websocket\r\n{extra}\r\n"
        )
    };

    let wrong_version = raw_exchange(
        gateway.address,
        upgrade("sec-websocket-version: 8\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
            .as_bytes(),
        WAIT,
    )
    .await;
    assert!(
        wrong_version.starts_with("HTTP/1.1 426 "),
        "{wrong_version}"
    );
    assert!(
        wrong_version.contains("sec-websocket-version: 13"),
        "{wrong_version}"
    );
    assert!(
        wrong_version.contains(r#""code":"UNSUPPORTED_WEBSOCKET_VERSION""#),
        "{wrong_version}"
    );

    let missing_key = raw_exchange(
        gateway.address,
        upgrade("sec-websocket-version: 13\r\n").as_bytes(),
        WAIT,
    )
    .await;
    assert!(missing_key.starts_with("HTTP/1.1 400 "), "{missing_key}");
    assert!(
        missing_key.contains(r#""code":"BAD_HANDSHAKE""#),
        "{missing_key}"
    );
    assert!(
        missing_key.contains("Sec-WebSocket-Key is missing"),
        "{missing_key}"
    );

    // The gateway keeps serving after both.
    let mut socket = connect(gateway.address, "/ws/a", &[])
        .await
        .expect("upgraded");
    socket.send(Message::text("after")).await.expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("after"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_answering_200_has_its_answer_relayed() {
    let (address, _task) = refusing_upstream().await;
    let gateway = gateway_for(&format!("http://{address}"), "idle_timeout: 30s");
    let answer = raw_exchange(
        gateway.address,
        b"GET /ws/a HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("x-from: instance"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nno"), "{answer}");
    let refused = connect(gateway.address, "/ws/a", &[]).await;
    assert!(refused.is_err(), "a client sees no upgrade");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_auth_filter_refuses_a_handshake_without_a_key() {
    let upstream = WsUpstream::start().await;
    let key = "ws-test-key";
    let hash = hex(&Sha256::digest(key.as_bytes()));
    let gateway = Gateway::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
watch: false
plugin_dir: "{plugins}"
filters:
  auth:
    module: gateway_plugin_auth.wasm
    timeout: 10s
    memory_limit: 64MiB
services:
  market:
    instances: ["{upstream}"]
routes:
  - name: sockets
    match: {{ path_prefix: /ws }}
    service: market
    filters:
      - filter: auth
        config: {{ api_keys: {{ keys: [ {{ sha256: "{hash}", consumer: trader, roles: [trader] }} ] }} }}
"#,
        plugins = plugin_dir().display(),
        upstream = upstream.url(),
    ));
    let refused = raw_exchange(
        gateway.address,
        b"GET /ws/a HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
          sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 401 "), "{refused}");
    assert_eq!(upstream.closes(), Vec::<Option<u16>>::new());

    let mut socket = connect(gateway.address, "/ws/a", &[("x-api-key", key)])
        .await
        .expect("a client with a key is upgraded");
    socket
        .send(Message::text("authorised"))
        .await
        .expect("sent");
    assert_eq!(
        next_message(&mut socket, WAIT).await,
        Some(Message::text("authorised"))
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How many idle sockets the memory test holds open at once.
const IDLE_SOCKETS: usize = 1000;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_sockets_cost_little_resident_memory() {
    let upstream = WsUpstream::start().await;
    let gateway = gateway_for(&upstream.url(), "idle_timeout: 5m");
    // One socket first, so that what is allocated once (runtimes, tables) is in the baseline.
    let mut warm = connect(gateway.address, "/ws/warm", &[])
        .await
        .expect("upgraded");
    warm.send(Message::text("warm")).await.expect("sent");
    assert_eq!(
        next_message(&mut warm, WAIT).await,
        Some(Message::text("warm"))
    );
    let before = gateway_tests::resident_kib(gateway.pid());

    let mut sockets = Vec::with_capacity(IDLE_SOCKETS);
    for batch in 0..IDLE_SOCKETS / 100 {
        let opened = futures_util::future::join_all(
            (0..100).map(|_| connect(gateway.address, "/ws/idle", &[])),
        )
        .await;
        for socket in opened {
            sockets.push(socket.unwrap_or_else(|error| panic!("batch {batch}: {error}")));
        }
    }
    // Every socket relays, so every one is open at both ends.
    for socket in sockets.iter_mut().step_by(97) {
        socket.send(Message::text("alive")).await.expect("sent");
        assert_eq!(
            next_message(socket, WAIT).await,
            Some(Message::text("alive"))
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = gateway_tests::resident_kib(gateway.pid());
    let per_socket = after.saturating_sub(before) as f64 * 1024.0 / IDLE_SOCKETS as f64;
    println!(
        "{IDLE_SOCKETS} idle WebSockets: resident {before} KiB before, {after} KiB after, \
         {per_socket:.0} bytes per socket (client and instance sides together)"
    );
    assert!(
        per_socket < 48.0 * 1024.0,
        "an idle socket costs {per_socket:.0} bytes of resident memory"
    );
}
