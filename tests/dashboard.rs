//! The dashboard (`GET /admin/ui`) end to end: the page is public and served with a strict
//! content-security-policy while its data endpoints stay behind the token; and, in Debian's
//! headless Chromium driven by `tests/browser/dashboard.mjs` (playwright-core), the page asks
//! for the token, then shows the configured routes and services, the filter timings and the
//! reload history, and figures that grow under light traffic, with no console error (a CSP
//! violation would be one).
//!
//! The browser test needs `chromium`, `node` and `tests/browser/node_modules`, which
//! `scripts/test` installs; without them it fails and says so, rather than passing unseen. Its
//! screenshot is saved to `<target>/test-artifacts/dashboard.png`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use gateway_tests::upstream::refusing_address;
use gateway_tests::{Gateway, Upstream, get, http1_client, send, standard_filters, target_dir};
use http::Request;
use http_body_util::Full;

const TOKEN: &str = "dashboard-token-for-the-tests-0123456789";

/// The gap between the browser's two readings of the request total.
const GAP: Duration = Duration::from_secs(4);

/// Upper bounds on the traffic: a request every 50 ms, for at most a minute.
const TRAFFIC_EVERY: Duration = Duration::from_millis(50);
const TRAFFIC_REQUESTS: u32 = 1200;

/// A gateway with a token on its admin API, a route through the rewrite filter to a live
/// upstream and one to an instance that refuses connections (its breaker opens).
async fn start(upstream: &Upstream, token_dir: &Path) -> Gateway {
    let token_file = token_dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token written");
    Gateway::start(&format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
  token_file: "{token_file}"
watch: false
access_log: {{ enabled: false }}
{filters}
services:
  backend:
    instances: ["{upstream}"]
  dead:
    circuit_breaker: {{ failure_threshold: 3, open_duration: 60s }}
    instances: ["http://{refusing}"]
routes:
  - name: api
    match: {{ path_prefix: /api }}
    service: backend
    filters:
      - filter: rewrite
        config: {{ request_headers: {{ set: {{ x-from: gateway }} }} }}
  - name: dead
    match: {{ path_prefix: /dead }}
    service: dead
"#,
        token_file = token_file.display(),
        filters = standard_filters(),
        upstream = upstream.url(),
        refusing = refusing_address().await,
    ))
}

async fn admin(
    gateway: &Gateway,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> gateway_tests::Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(gateway.admin_url(path));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send(
        &http1_client(),
        request.body(Full::new(Bytes::new())).expect("request"),
    )
    .await
}

#[tokio::test]
async fn the_page_is_public_and_strict_while_its_data_stays_guarded() {
    let upstream = Upstream::start("backend").await;
    let token_dir = tempfile::tempdir().expect("a temporary folder");
    let gateway = start(&upstream, token_dir.path()).await;

    let page = get(&gateway.admin_url("/admin/ui")).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let policy = page.header("content-security-policy").expect("a policy");
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    let html = page.text();
    for id in [
        "requests-total",
        "request-rate",
        "error-rate",
        "generation",
        "routes",
        "services",
    ] {
        assert!(
            html.contains(&format!(r#"id="{id}""#)),
            "no #{id} in the page"
        );
    }

    for path in [
        "/admin/stats",
        "/admin/status",
        "/admin/routes",
        "/admin/services",
        "/admin/filters",
        "/admin/reload",
    ] {
        admin(&gateway, "GET", path, None)
            .await
            .assert_gateway_error(401, "ADMIN_UNAUTHORIZED");
        assert_eq!(
            admin(&gateway, "GET", path, Some(TOKEN)).await.status,
            200,
            "{path}"
        );
    }
    // Only reading the page is public.
    admin(&gateway, "POST", "/admin/ui", None)
        .await
        .assert_gateway_error(401, "ADMIN_UNAUTHORIZED");
}

/// What `dashboard.mjs` read off the page.
struct Seen(serde_json::Value);

impl Seen {
    fn number(&self, key: &str) -> f64 {
        self.0[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number {key} in {}", self.0))
    }

    /// The rows of a table whose cells include every one of `cells`.
    fn rows_with(&self, table: &str, cells: &[&str]) -> Vec<Vec<String>> {
        self.0[table]
            .as_array()
            .unwrap_or_else(|| panic!("no table {table} in {}", self.0))
            .iter()
            .map(|row| {
                row.as_array()
                    .expect("a row is a list of cells")
                    .iter()
                    .map(|cell| cell.as_str().unwrap_or_default().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|row| cells.iter().all(|cell| row.iter().any(|seen| seen == cell)))
            .collect()
    }
}

/// The browser script, checked to be runnable: the reason otherwise, naming the fix.
fn browser_script() -> (PathBuf, PathBuf) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "no Chromium at {}: run scripts/test, which installs Debian's `chromium` (or set CHROMIUM)",
        chromium.display()
    );
    assert!(
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success()),
        "no `node` on PATH: run scripts/test, which installs Debian's `nodejs`"
    );
    assert!(
        folder
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "no playwright-core in {}/node_modules: run scripts/test (or `npm ci --prefix tests/browser`)",
        folder.display()
    );
    (folder.join("dashboard.mjs"), chromium)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_in_a_headless_chromium_shows_what_serves_and_updates_live() {
    let (script, chromium) = browser_script();
    let upstream = Upstream::start("backend").await;
    let token_dir = tempfile::tempdir().expect("a temporary folder");
    let gateway = start(&upstream, token_dir.path()).await;
    // A reload the history shows, as generation 2.
    let reload = admin(&gateway, "POST", "/admin/reload", Some(TOKEN)).await;
    assert_eq!(reload.status, 200, "{}", reload.text());

    // Light traffic, bounded in count, for as long as the browser looks: one request in ten
    // goes to the refusing instance, so errors and an open breaker show too.
    let traffic = {
        let (api, dead) = (gateway.url("/api/items"), gateway.url("/dead"));
        tokio::spawn(async move {
            let client = http1_client();
            let mut every = tokio::time::interval(TRAFFIC_EVERY);
            for sent in 0..TRAFFIC_REQUESTS {
                every.tick().await;
                let url = if sent % 10 == 9 { &dead } else { &api };
                let request = Request::get(url.as_str())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let _ = client.request(request).await;
            }
        })
    };

    let artifacts = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("the artefacts folder");
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("DASHBOARD_URL", gateway.admin_url("/admin/ui"))
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("DASHBOARD_SCREENSHOT", &screenshot)
        .env("DASHBOARD_GAP_MS", GAP.as_millis().to_string())
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser script finishes within 120s")
        .expect("node runs");
    traffic.abort();
    println!("dashboard screenshot: {}", screenshot.display());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser script failed ({}); screenshot {}:\n{stderr}",
        output.status,
        screenshot.display()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen = Seen(
        stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("no JSON line from the script:\n{stdout}\n{stderr}")),
    );
    let shown = &seen.0;

    assert_eq!(seen.number("status"), 200.0, "{shown}");
    assert_eq!(shown["asked_for_token"], true, "{shown}");
    assert_eq!(shown["state"], "live", "{shown}");
    assert!(
        seen.number("second") > seen.number("first"),
        "the request total grew under traffic: {shown}"
    );
    assert!(seen.number("request_rate") > 0.0, "{shown}");
    assert_eq!(seen.number("generation"), 2.0, "{shown}");

    assert_eq!(
        seen.rows_with("routes", &["api", "/api", "backend", "rewrite"])
            .len(),
        1,
        "{shown}"
    );
    assert_eq!(
        seen.rows_with("routes", &["dead", "/dead", "dead"]).len(),
        1,
        "{shown}"
    );
    let backend = seen.rows_with("services", &["backend", &upstream.url(), "healthy"]);
    assert_eq!(backend.len(), 1, "{shown}");
    assert_eq!(
        seen.rows_with("services", &["dead", "open"]).len(),
        1,
        "the refusing instance's breaker opened: {shown}"
    );
    let rewrite = seen.rows_with("filters", &["rewrite", "request"]);
    assert_eq!(rewrite.len(), 1, "{shown}");
    let calls: u64 = rewrite[0][2]
        .parse()
        .unwrap_or_else(|_| panic!("calls: {shown}"));
    assert!(calls > 0, "{shown}");
    assert!(rewrite[0][5].ends_with("µs"), "a mean time shows: {shown}");
    assert_eq!(
        seen.rows_with("reloads", &["admin", "applied"]).len(),
        1,
        "{shown}"
    );

    // Without a token the page makes one request, refused; then it asks for the token.
    assert_eq!(seen.number("refusals"), 1.0, "{shown}");
    assert_eq!(
        shown["errors"],
        serde_json::json!([]),
        "no console error, no CSP violation"
    );
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|file| file.len() > 0),
        "a screenshot at {}",
        screenshot.display()
    );
}
