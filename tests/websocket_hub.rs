//! The WebSocket topic hub end to end: real `tokio-tungstenite` clients behind the real auth
//! filter (API keys with roles), publishing through the admin API, and two gateways sharing one
//! real `redis-server`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_tests::websocket::{Client, close_code, connect, next_message};
use gateway_tests::{Gateway, RedisServer, http1_client, plugin_dir, send};
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);
const TRADER_KEY: &str = "trader-key";
const VIEWER_KEY: &str = "viewer-key";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A gateway with the hub on `/ws/hub` behind the auth filter, and `extra` top-level YAML
/// (a `kv:` section); `hub` adds keys to `websocket.hub`, `websocket` to `websocket`.
fn hub_gateway(hub: &str, extra: &str, websocket: &str) -> Gateway {
    let auth = json!({
        "api_keys": {"keys": [
            {"sha256": sha256_hex(TRADER_KEY), "consumer": "desk", "roles": ["trader"]},
            {"sha256": sha256_hex(VIEWER_KEY), "consumer": "screen", "roles": ["viewer"]},
        ]},
    });
    Gateway::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: false
{extra}
plugin_dir: "{plugins}"
filters:
  auth:
    module: gateway_plugin_auth.wasm
    timeout: 10s
    memory_limit: 64MiB
websocket:
  {websocket}
  hub:
    path: /ws/hub
    topics:
      trading_signals: {{ roles: [trader] }}
      news: {{}}
    {hub}
routes:
  - name: hub
    match: {{ path_prefix: /ws/hub }}
    filters:
      - filter: auth
        config: {auth}
"#,
        plugins = plugin_dir().display(),
    ))
}

async fn subscriber(gateway: &Gateway, key: &str) -> Client {
    connect(gateway.address, "/ws/hub", &[("x-api-key", key)])
        .await
        .expect("the hub accepts the socket")
}

async fn command(socket: &mut Client, kind: &str, topic: &str) -> Value {
    socket
        .send(Message::text(
            json!({"type": kind, "topic": topic}).to_string(),
        ))
        .await
        .expect("command sent");
    json_message(socket).await
}

async fn json_message(socket: &mut Client) -> Value {
    match next_message(socket, WAIT).await {
        Some(Message::Text(text)) => serde_json::from_str(text.as_str()).expect("JSON"),
        other => panic!("expected a JSON text message, got {other:?}"),
    }
}

async fn publish(gateway: &Gateway, topic: &str, data: Value) -> Value {
    let body = json!({"topic": topic, "data": data}).to_string();
    let reply = send(
        &http1_client(),
        Request::post(gateway.admin_url("/admin/publish"))
            .header("content-type", "application/json")
            .body(Full::from(body))
            .expect("a request"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn websocket_status(gateway: &Gateway) -> Value {
    let reply = gateway_tests::get(&gateway.admin_url("/admin/websocket")).await;
    assert_eq!(reply.status, 200);
    reply.json()
}

/// Nothing but pings arrives within `within`.
async fn stays_quiet(socket: &mut Client, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .is_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_receives_its_topic_until_it_unsubscribes() {
    let gateway = hub_gateway("", "", "");
    let mut socket = subscriber(&gateway, TRADER_KEY).await;
    assert_eq!(
        command(&mut socket, "subscribe", "trading_signals").await,
        json!({"type": "subscribed", "topic": "trading_signals"})
    );
    let published = publish(
        &gateway,
        "trading_signals",
        json!({"symbol": "ACME", "side": "buy"}),
    )
    .await;
    assert_eq!(published["subscribers"], 1);
    assert_eq!(
        json_message(&mut socket).await,
        json!({"type": "message", "topic": "trading_signals", "data": {"symbol": "ACME", "side": "buy"}})
    );
    let status = websocket_status(&gateway).await;
    assert_eq!(status["hub"]["topics"]["trading_signals"], 1, "{status}");

    assert_eq!(
        command(&mut socket, "unsubscribe", "trading_signals").await,
        json!({"type": "unsubscribed", "topic": "trading_signals"})
    );
    let published = publish(&gateway, "trading_signals", json!("after")).await;
    assert_eq!(published["subscribers"], 0);
    assert!(stays_quiet(&mut socket, Duration::from_millis(300)).await);

    let unreadable = {
        socket
            .send(Message::text("{\"type\":\"dance\"}"))
            .await
            .expect("sent");
        json_message(&mut socket).await
    };
    assert_eq!(unreadable["type"], "error", "{unreadable}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_needs_one_of_its_roles_and_the_handshake_needs_the_filters() {
    let gateway = hub_gateway("", "", "");
    let mut viewer = subscriber(&gateway, VIEWER_KEY).await;
    let refused = command(&mut viewer, "subscribe", "trading_signals").await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["topic"], "trading_signals");
    let unknown = command(&mut viewer, "subscribe", "gossip").await;
    assert_eq!(unknown["type"], "error", "{unknown}");
    assert_eq!(
        command(&mut viewer, "subscribe", "news").await,
        json!({"type": "subscribed", "topic": "news"})
    );
    publish(&gateway, "trading_signals", json!("secret")).await;
    publish(&gateway, "news", json!("public")).await;
    assert_eq!(json_message(&mut viewer).await["data"], "public");

    let anonymous = connect(gateway.address, "/ws/hub", &[]).await;
    match anonymous {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| "a socket")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_subscriber_is_dropped_with_1008_and_the_others_get_everything() {
    let gateway = hub_gateway("queue: 8\n    overflow: drop_subscriber", "", "");
    let mut slow = subscriber(&gateway, VIEWER_KEY).await;
    let mut fast = subscriber(&gateway, VIEWER_KEY).await;
    command(&mut slow, "subscribe", "news").await;
    command(&mut fast, "subscribe", "news").await;

    // The slow client never reads: once the socket buffers are full its queue fills.
    let payload = "x".repeat(64 * 1024);
    let count = 300;
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            match next_message(&mut fast, WAIT).await {
                Some(Message::Text(_)) => received += 1,
                other => panic!("the fast subscriber lost its socket after {received}: {other:?}"),
            }
        }
        (received, fast)
    });
    for index in 0..count {
        publish(
            &gateway,
            "news",
            json!({"index": index, "payload": payload}),
        )
        .await;
    }
    let (received, _fast) = reader.await.expect("reader");
    assert_eq!(received, count, "the fast subscriber got every message");

    let status = websocket_status(&gateway).await;
    assert_eq!(status["hub"]["dropped_subscribers"], 1, "{status}");
    assert_eq!(
        status["hub"]["topics"]["news"], 1,
        "only the fast one is left: {status}"
    );
    // What the slow client reads now ends, with 1008 if the close frame got through the
    // buffered messages in time, without a code otherwise.
    let code = tokio::time::timeout(Duration::from_secs(20), close_code(&mut slow, WAIT)).await;
    assert!(
        matches!(code, Ok(Some(1008) | None)),
        "the slow socket is closed: {code:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_redis_deliver_each_others_messages() {
    let redis = RedisServer::start();
    let kv = format!("kv:\n  redis:\n    url: \"{}\"", redis.url());
    let first = hub_gateway("redis: true", &kv, "");
    let second = hub_gateway("redis: true", &kv, "");
    for gateway in [&first, &second] {
        assert!(
            gateway
                .wait_for_log(&["the hub listens on Redis"], WAIT)
                .is_some(),
            "the hub subscribes to Redis"
        );
    }
    let mut on_first = subscriber(&first, TRADER_KEY).await;
    let mut on_second = subscriber(&second, TRADER_KEY).await;
    command(&mut on_first, "subscribe", "trading_signals").await;
    command(&mut on_second, "subscribe", "trading_signals").await;

    let published = publish(&first, "trading_signals", json!({"n": 1})).await;
    assert_eq!(published["gateways"], 2, "{published}");
    for socket in [&mut on_first, &mut on_second] {
        assert_eq!(json_message(socket).await["data"], json!({"n": 1}));
    }
    publish(&second, "trading_signals", json!({"n": 2})).await;
    for socket in [&mut on_first, &mut on_second] {
        assert_eq!(json_message(socket).await["data"], json!({"n": 2}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_stops_answering_pings_is_closed_with_1011() {
    let gateway = hub_gateway("", "", "ping_interval: 100ms\n  ping_timeout: 300ms");
    let mut socket = subscriber(&gateway, VIEWER_KEY).await;
    command(&mut socket, "subscribe", "news").await;
    // Reading answers the pings: the socket stays open while the client reads.
    assert!(stays_quiet(&mut socket, Duration::from_millis(800)).await);
    publish(&gateway, "news", json!("still here")).await;
    assert_eq!(json_message(&mut socket).await["data"], "still here");
    // Not reading, it answers none.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(close_code(&mut socket, WAIT).await, Some(1011));
    let status = websocket_status(&gateway).await;
    assert_eq!(
        status["hub"]["topics"]["news"],
        serde_json::Value::Null,
        "{status}"
    );
}
