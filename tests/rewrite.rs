//! The bundled `rewrite` filter end to end: the real compiled component in the real gateway, in
//! front of a real echo upstream, so every expectation is on what the upstream received and what
//! the client got back. One route per feature; the path, query and header cases are tables run
//! over HTTP/1.1 and HTTP/2. Chains, a refused edit and bad configurations have their own tests.

use std::ffi::OsStr;
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::{
    Gateway, Reply, Upstream, http1_client, http2_client, run_gateway, send, standard_filters,
};
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Routes whose names say what they exercise; the last one takes every path the others do not,
/// which is what segment-aware prefix stripping needs to be seen.
const ROUTES: &str = r#"
routes:
  - name: replace
    match: { path_prefix: /old }
    service: users
    filters:
      - filter: rewrite
        config: { path: { replace_prefix: { from: /old/v1, to: /new/v3/ } } }
  - name: add
    match: { path_prefix: /add }
    service: users
    filters:
      - filter: rewrite
        config: { path: { add_prefix: /v2 } }
  - name: strip-add
    match: { path_prefix: /shop }
    service: users
    filters:
      - filter: rewrite
        config: { path: { strip_prefix: /shop/, add_prefix: /internal/v2 } }
  - name: by-service
    match: { path: "/api/v1/{service}/{*rest}" }
    service: "{service}"
    filters:
      - filter: rewrite
        config:
          path: { regex: { pattern: "^/api/v1/[^/]+(/.*)?$", replacement: "${1}" } }
  - name: query-remove
    match: { path_prefix: /q/remove }
    service: users
    filters:
      - filter: rewrite
        config: { query: { remove: [debug, token] } }
  - name: query-edit
    match: { path_prefix: /q/edit }
    service: users
    filters:
      - filter: rewrite
        config:
          query:
            remove: [debug]
            set: { page: "1" }
            add: { source: gateway, note: "a b&c=d" }
  - name: headers
    match: { path_prefix: /headers }
    service: users
    filters:
      - filter: rewrite
        config:
          request_headers:
            remove: [cookie]
            set: { x-tenant: acme }
            add: { x-via: gateway }
          response_headers:
            remove: [x-upstream]
            set: { x-frame-options: DENY }
            add: { x-served-by: gateway }
  - name: response-merge
    match: { path_prefix: /merge }
    service: users
    filters:
      - filter: rewrite
        config:
          response_headers:
            set: { content-type: "application/json; charset=utf-8" }
            add: { x-upstream: gateway }
  - name: chain
    match: { path_prefix: /chain }
    service: users
    filters:
      - filter: rewrite
        config:
          path: { replace_prefix: { from: /chain, to: /step1 } }
          request_headers: { set: { x-step: one } }
          response_headers: { set: { x-order: first }, add: { x-trace: first } }
      - filter: rewrite
        config:
          path: { regex: { pattern: "^/step1(/.*)?$", replacement: "/step2${1}" } }
          request_headers: { add: { x-step: two } }
          response_headers: { set: { x-order: second }, add: { x-trace: second } }
  - name: refused-edit
    match: { path_prefix: /refused }
    service: users
    filters:
      - filter: rewrite
        config: { path: { regex: { pattern: "^/refused", replacement: "/has space" } } }
  - name: strip
    match: { path_prefix: / }
    service: users
    filters:
      - filter: rewrite
        config: { path: { strip_prefix: /users } }
"#;

struct Setup {
    gateway: Gateway,
    users: Upstream,
    _orders: Upstream,
}

async fn setup() -> Setup {
    let users = Upstream::start("users").await;
    let orders = Upstream::start("orders").await;
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
{filters}services:
  users:
    instances: ["{users}"]
  orders:
    instances: ["{orders}"]
{ROUTES}"#,
        filters = standard_filters(),
        users = users.url(),
        orders = orders.url(),
    );
    Setup {
        gateway: Gateway::start(&config),
        users,
        _orders: orders,
    }
}

/// Both protocols a client may speak to the gateway, labelled for failure messages.
fn clients() -> [(&'static str, HttpClient); 2] {
    [("HTTP/1.1", http1_client()), ("HTTP/2", http2_client())]
}

/// Sends a GET for `target` with these headers.
async fn request(
    client: &HttpClient,
    gateway: &Gateway,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut builder = Request::get(gateway.url(target));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(client, request).await
}

/// The echo of a request the upstream answered.
fn echo(reply: &Reply, context: &str) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{context}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// Every value of a request header as the upstream received it.
fn upstream_values(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every value of a response header as the client received it.
fn response_values(reply: &Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_paths() {
    let s = setup().await;
    // (target the client asks for, upstream that answers, target it receives)
    let cases: &[(&str, &str, &str)] = &[
        ("/users/42?x=1", "users", "/42?x=1"),
        ("/users/a/b", "users", "/a/b"),
        // The exact prefix leaves nothing, which is sent as `/`.
        ("/users", "users", "/"),
        ("/users/", "users", "/"),
        // Prefixes are stripped on segment boundaries only.
        ("/usersx/1", "users", "/usersx/1"),
        ("/other/users", "users", "/other/users"),
        // The filter sees the normalised path.
        ("/users/a/../b//c", "users", "/b/c"),
        ("/old/v1/x?y=1", "users", "/new/v3/x?y=1"),
        ("/old/v1", "users", "/new/v3"),
        ("/old/v1x", "users", "/old/v1x"),
        ("/old/v2/x", "users", "/old/v2/x"),
        ("/add/x", "users", "/v2/add/x"),
        ("/add", "users", "/v2/add"),
        ("/shop/items?id=3", "users", "/internal/v2/items?id=3"),
        ("/shop", "users", "/internal/v2"),
        // The route picks the service from the original path; the service sees its own path.
        ("/api/v1/users/profile/7?x=1", "users", "/profile/7?x=1"),
        ("/api/v1/orders/list", "orders", "/list"),
        ("/api/v1/users", "users", "/"),
        ("/api/v1/users/", "users", "/"),
    ];
    for (version, client) in clients() {
        for (target, upstream, expected) in cases {
            let context = format!("{version} {target}");
            let echo = echo(&request(&client, &s.gateway, target, &[]).await, &context);
            assert_eq!(echo["upstream"], *upstream, "{context}");
            assert_eq!(echo["target"], *expected, "{context}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_query_strings() {
    let s = setup().await;
    // (target the client asks for, target the upstream receives)
    let cases: &[(&str, &str)] = &[
        // A query left empty goes, `?` and all.
        ("/q/remove?debug=1", "/q/remove"),
        ("/q/remove?debug=1&token=s&debug", "/q/remove"),
        ("/q/remove", "/q/remove"),
        // Parameters that are not edited are kept byte for byte.
        (
            "/q/remove?q=a+b%20c&&token=s&x==y&flag",
            "/q/remove?q=a+b%20c&&x==y&flag",
        ),
        (
            "/q/remove?debugger=1&Token=2&%64ebug=3",
            "/q/remove?debugger=1&Token=2&%64ebug=3",
        ),
        // remove, then set (every `page` replaced by one), then add (percent-encoded, in name
        // order, next to a client's own `source`).
        (
            "/q/edit",
            "/q/edit?page=1&note=a%20b%26c%3Dd&source=gateway",
        ),
        (
            "/q/edit?page=3&x=y&debug=1&page=4",
            "/q/edit?x=y&page=1&note=a%20b%26c%3Dd&source=gateway",
        ),
        (
            "/q/edit?source=client",
            "/q/edit?source=client&page=1&note=a%20b%26c%3Dd&source=gateway",
        ),
    ];
    for (version, client) in clients() {
        for (target, expected) in cases {
            let context = format!("{version} {target}");
            let echo = echo(&request(&client, &s.gateway, target, &[]).await, &context);
            assert_eq!(echo["target"], *expected, "{context}");
        }
    }
}

/// A request with headers through a header-editing route, and what must come of it.
struct HeaderCase {
    target: &'static str,
    /// Headers the client sends.
    send: &'static [(&'static str, &'static str)],
    /// Request headers and every value the upstream must receive; no values means absent.
    upstream: &'static [(&'static str, &'static [&'static str])],
    /// Response headers and every value the client must get; no values means absent.
    response: &'static [(&'static str, &'static [&'static str])],
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_request_and_response_headers() {
    let s = setup().await;
    let cases = [
        HeaderCase {
            target: "/headers",
            send: &[
                ("cookie", "session=secret"),
                ("x-tenant", "evil"),
                ("x-via", "client"),
                ("x-kept", "yes"),
            ],
            upstream: &[
                ("cookie", &[]),
                ("x-tenant", &["acme"]),
                ("x-via", &["client", "gateway"]),
                ("x-kept", &["yes"]),
            ],
            response: &[
                ("x-upstream", &[]),
                ("x-frame-options", &["DENY"]),
                ("x-served-by", &["gateway"]),
                ("content-type", &["application/json"]),
            ],
        },
        HeaderCase {
            target: "/headers",
            send: &[],
            upstream: &[
                ("cookie", &[]),
                ("x-tenant", &["acme"]),
                ("x-via", &["gateway"]),
            ],
            response: &[("x-upstream", &[]), ("x-frame-options", &["DENY"])],
        },
        // Response `set` replaces the upstream's value, `add` keeps it.
        HeaderCase {
            target: "/merge",
            send: &[("cookie", "kept=1")],
            upstream: &[("cookie", &["kept=1"])],
            response: &[
                ("content-type", &["application/json; charset=utf-8"]),
                ("x-upstream", &["users", "gateway"]),
            ],
        },
    ];
    for (version, client) in clients() {
        for case in &cases {
            let context = format!("{version} {} {:?}", case.target, case.send);
            let reply = request(&client, &s.gateway, case.target, case.send).await;
            let echo = echo(&reply, &context);
            for (name, values) in case.upstream {
                assert_eq!(
                    upstream_values(&echo, name),
                    *values,
                    "{context}: upstream {name}"
                );
            }
            for (name, values) in case.response {
                assert_eq!(
                    response_values(&reply, name),
                    *values,
                    "{context}: response {name}"
                );
            }
            // The gateway's own headers survive the filter.
            assert_eq!(
                upstream_values(&echo, "x-request-id"),
                [reply.header("x-request-id").expect("a request id")],
                "{context}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_edits_requests_in_order_and_responses_in_reverse() {
    let s = setup().await;
    // (target the client asks for, target the upstream receives)
    let cases = [("/chain/x?q=1", "/step2/x?q=1"), ("/chain", "/step2")];
    for (version, client) in clients() {
        for (target, expected) in cases {
            let context = format!("{version} {target}");
            let reply = request(&client, &s.gateway, target, &[]).await;
            let echo = echo(&reply, &context);
            // The second filter's regex only matches the first one's output.
            assert_eq!(echo["target"], expected, "{context}");
            assert_eq!(
                upstream_values(&echo, "x-step"),
                ["one", "two"],
                "{context}"
            );
            // Back to front on the response: the filter listed first runs last, so its `set`
            // wins and its `add` comes after the second filter's.
            assert_eq!(response_values(&reply, "x-order"), ["first"], "{context}");
            assert_eq!(
                response_values(&reply, "x-trace"),
                ["second", "first"],
                "{context}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_the_gateway_refuses_is_answered_by_the_filter() {
    let s = setup().await;
    let reply = request(&http1_client(), &s.gateway, "/refused/x", &[]).await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["code"], "FILTER_FAILED", "{body}");
    let error = body["error"].as_str().expect("an error message");
    assert!(
        error.starts_with("rewrite failed: cannot set path `/has space/x`"),
        "{error}"
    );
    assert!(reply.header("x-request-id").is_some());
    assert_eq!(
        s.users.requests(),
        0,
        "a refused request never goes upstream"
    );
    assert!(
        s.gateway
            .wait_for_log(
                &["\"filter\":\"rewrite\"", "rewrite failed: cannot set path"],
                Duration::from_secs(5),
            )
            .is_some(),
        "the filter logs why"
    );
}

/// How long `gateway serve` may take to give up on a bad configuration.
const REFUSE_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn bad_configs_are_refused_at_startup() {
    // (route, the filter's config, what the reason must name)
    let cases = [
        (
            "bad-regex",
            r#"{ path: { regex: { pattern: "(unclosed", replacement: "/" } } }"#,
            "path.regex.pattern: invalid regex",
        ),
        (
            "typo",
            "{ path: { strip_prefx: /users } }",
            "invalid config at `path.strip_prefx`: unknown field `strip_prefx`",
        ),
        (
            "no-slash",
            r#"{ path: { add_prefix: "no-slash" } }"#,
            "path.add_prefix must start with `/`",
        ),
    ];
    let route = |name: &str, config: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name} }}\n    service: users\n    \
             filters:\n      - filter: rewrite\n        config: {config}\n"
        )
    };
    let file = |routes: &str| {
        format!(
            "listeners:\n  - address: 127.0.0.1:0\n{}services:\n  users:\n    instances: \
             [\"http://127.0.0.1:9\"]\nroutes:\n{routes}",
            standard_filters()
        )
    };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut files: Vec<(String, Vec<(&str, &str)>)> = cases
        .iter()
        .map(|(name, config, reason)| (file(&route(name, config)), vec![(*name, *reason)]))
        .collect();
    // One file with every mistake: each is reported, not just the first.
    let all: String = cases
        .iter()
        .map(|(name, config, _)| route(name, config))
        .collect();
    files.push((
        file(&all),
        cases
            .iter()
            .map(|(name, _, reason)| (*name, *reason))
            .collect(),
    ));

    for (index, (text, expected)) in files.iter().enumerate() {
        let path = dir.path().join(format!("gateway-{index}.yaml"));
        std::fs::write(&path, text).expect("config written");
        for args in [&["validate"][..], &["serve", "--workers", "1"][..]] {
            let config = [OsStr::new("--config"), path.as_os_str()];
            let output = run_gateway(args.iter().map(OsStr::new).chain(config), REFUSE_WITHIN);
            let stderr = &output.stderr;
            let context = format!("`gateway {}` on\n{text}\nstderr:\n{stderr}", args.join(" "));
            assert!(!output.status.success(), "{context}");
            for (route, reason) in expected {
                let named = format!("route `{route}`, filter `rewrite`:");
                assert!(
                    stderr
                        .lines()
                        .any(|line| line.contains(&named) && line.contains(reason)),
                    "no line names {named} and {reason}: {context}"
                );
            }
        }
    }
}
