//! The admin API end to end: the bearer token (missing, wrong, right; `/health` open), and
//! `GET /admin/status`, `/admin/routes`, `/admin/filters` and the seeds'
//! `/api/v1/gateway/status` describing what serves, through a reload.

use gateway_tests::{Gateway, Upstream, get, http1_client, send, standard_filters};
use http::Request;
use http_body_util::Full;

const TOKEN: &str = "admin-token-for-the-tests-0123456789";

fn config(upstream: &str, admin: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
{admin}
{filters}
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: api
    match: {{ path_prefix: /api, methods: [GET, POST] }}
    service: backend
    filters:
      - filter: rewrite
        config: {{ request_headers: {{ set: {{ x-from: gateway }} }} }}
  - name: by-name
    match: {{ path: "/svc/{{service}}/{{*rest}}" }}
    service: "{{service}}"
"#,
        filters = standard_filters(),
    )
}

async fn admin_get(
    gateway: &Gateway,
    path: &str,
    authorization: Option<&str>,
) -> gateway_tests::Reply {
    let mut request = Request::get(gateway.admin_url(path));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    send(
        &http1_client(),
        request.body(Full::default()).expect("the test's own setup"),
    )
    .await
}

#[tokio::test]
async fn a_token_file_guards_every_endpoint_but_health() {
    let upstream = Upstream::start("backend").await;
    let token_dir = tempfile::tempdir().expect("the test's own setup");
    let token_file = token_dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("the test's own setup");
    let admin = format!(
        "  address: 127.0.0.1:0\n  token_file: \"{}\"",
        token_file.display()
    );
    let gateway = Gateway::start(&config(&upstream.url(), &admin));

    for path in [
        "/admin/status",
        "/admin/reload",
        "/metrics",
        "/admin/services",
    ] {
        let missing = admin_get(&gateway, path, None).await;
        missing.assert_gateway_error(401, "ADMIN_UNAUTHORIZED");
        assert_eq!(
            missing.header("www-authenticate"),
            Some(r#"Bearer realm="gateway-admin""#),
            "{path}"
        );
        let wrong = admin_get(
            &gateway,
            path,
            Some("Bearer admin-token-for-the-tests-012345678X"),
        )
        .await;
        wrong.assert_gateway_error(401, "ADMIN_UNAUTHORIZED");
        assert!(
            wrong
                .header("www-authenticate")
                .is_some_and(|challenge| challenge.contains("invalid_token")),
            "{path}"
        );
        let basic = admin_get(&gateway, path, Some(&format!("Basic {TOKEN}"))).await;
        basic.assert_gateway_error(401, "ADMIN_UNAUTHORIZED");
        let right = admin_get(&gateway, path, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(right.status, 200, "{path}: {}", right.text());
    }
    let wrong = admin_get(&gateway, "/admin/reload", Some("Bearer nope")).await;
    assert!(
        !wrong.text().contains(TOKEN),
        "an error never shows the token"
    );
    assert_eq!(get(&gateway.admin_url("/health")).await.status, 200);
    // A refusal is logged once, not once per request.
    let refusals = gateway
        .logs()
        .iter()
        .filter(|line| line.contains("admin requests refused"))
        .count();
    assert!(refusals <= 1, "{refusals} log lines about refusals");
}

#[tokio::test]
async fn a_token_from_the_environment_variable_named_in_the_config() {
    let upstream = Upstream::start("backend").await;
    let variable = "GATEWAY_TEST_ADMIN_TOKEN_UNSET";
    let admin = format!("  address: 127.0.0.1:0\n  token_env: {variable}");
    let dir = tempfile::tempdir().expect("the test's own setup");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config(&upstream.url(), &admin)).expect("the test's own setup");
    let output = std::process::Command::new(gateway_tests::gateway_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .env_remove(variable)
        .output()
        .expect("the test's own setup");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("admin.token_env") && stderr.contains(variable),
        "{stderr}"
    );
    let output = std::process::Command::new(gateway_tests::gateway_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .env(variable, "short")
        .output()
        .expect("the test's own setup");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("at least 16 characters"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn status_routes_and_filters_describe_what_serves() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&config(&upstream.url(), "  address: 127.0.0.1:0"));

    let status = get(&gateway.admin_url("/admin/status")).await;
    assert_eq!(status.status, 200, "{}", status.text());
    let status = status.json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["generation"], 1);
    assert_eq!(status["routes"], 2);
    assert_eq!(status["services"], 1);
    assert_eq!(status["filters"], 2, "rewrite and misbehave are defined");
    assert_eq!(status["admin_token_required"], false);
    assert_eq!(
        status["listeners"][0].as_str(),
        Some(gateway.address.to_string().as_str())
    );
    assert!(status["uptime_seconds"].is_u64());
    assert!(status["websocket"].is_object());

    let seeds = get(&gateway.admin_url("/api/v1/gateway/status"))
        .await
        .json();
    assert_eq!(seeds["status"], "healthy");
    assert_eq!(seeds["routes"], 2);

    let routes = get(&gateway.admin_url("/admin/routes")).await.json();
    let routes = routes["routes"].as_array().expect("the test's own setup");
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["name"], "api");
    assert_eq!(routes[0]["path"], "/api");
    assert_eq!(routes[0]["service"], "backend");
    assert_eq!(routes[0]["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(routes[0]["filters"][0]["name"], "rewrite");
    assert_eq!(routes[0]["filters"][0]["phases"][0], "request");
    assert_eq!(routes[1]["service"], "{service}");
    assert_eq!(routes[1]["path"], "/svc/{service}/{*rest}");
    assert!(routes[1]["methods"].is_null());

    for _ in 0..3 {
        assert_eq!(get(&gateway.url("/api/x")).await.status, 200);
    }
    let filters = get(&gateway.admin_url("/admin/filters")).await.json();
    let named = |name: &str| {
        filters["filters"]
            .as_array()
            .expect("the test's own setup")
            .iter()
            .find(|filter| filter["name"] == name)
            .unwrap_or_else(|| panic!("no filter {name} in {filters}"))
            .clone()
    };
    let rewrite = named("rewrite");
    assert_eq!(rewrite["name"], "rewrite");
    assert_eq!(rewrite["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(rewrite["sha256"], routes[0]["filters"][0]["sha256"]);
    assert_eq!(rewrite["routes"][0]["route"], "api");
    // `misbehave` is defined but no route runs it.
    assert_eq!(rewrite["calls"]["request"]["calls"], 3);
    assert_eq!(rewrite["calls"]["request"]["failures"]["trap"], 0);
    assert!(rewrite["calls"]["request"]["mean_micros"].is_u64());
    assert_eq!(named("misbehave")["routes"], serde_json::json!([]));
    assert_eq!(named("misbehave")["calls"]["request"]["calls"], 0);

    // A reload shows up in the generation and the history.
    let reload = send(
        &http1_client(),
        Request::post(gateway.admin_url("/admin/reload"))
            .body(Full::default())
            .expect("the test's own setup"),
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    let status = get(&gateway.admin_url("/admin/status")).await.json();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["trigger"], "admin");
    let history = get(&gateway.admin_url("/admin/reload")).await.json();
    let history = history["history"].as_array().expect("the test's own setup");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["trigger"], "startup");
    assert_eq!(history[1]["trigger"], "admin");
}
