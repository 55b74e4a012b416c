//! Shared helpers for the end-to-end tests: real upstream servers on ephemeral loopback ports,
//! the real `gateway` binary with real compiled plugins, and real HTTP clients.
//!
//! The binary and the plugins are found through `GATEWAY_BIN` and `GATEWAY_PLUGIN_DIR` (set by
//! `scripts/test`), or next to this test binary in the cargo target folder.

/// The echo upstream servers the tests send traffic to.
pub use gateway_demo_upstream as upstream;

pub mod redis;
pub use redis::RedisServer;

pub mod controlled;
pub mod otlp;
pub mod websocket;
pub use controlled::{ControlledUpstream, eventually};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use upstream::Upstream;

/// The cargo target folder this test binary was built in (`.../target/debug/deps/<test>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.ancestors()
        .nth(3)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// The `gateway` binary under test.
pub fn gateway_bin() -> PathBuf {
    let path = std::env::var_os("GATEWAY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("the test binary has a path");
            exe.ancestors()
                .nth(2)
                .expect("the test binary lives in <target>/<profile>/deps")
                .join("gateway")
        });
    assert!(
        path.is_file(),
        "no gateway binary at {}: build it with `cargo build -p gateway-host` or run scripts/test",
        path.display()
    );
    path
}

/// The folder holding the compiled plugins, checked to hold every one the tests use.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("GATEWAY_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wasm32-wasip2/wasm"));
    for plugin in [
        "gateway_plugin_rewrite.wasm",
        "gateway_plugin_cache.wasm",
        "gateway_test_misbehave.wasm",
        "gateway_example_ip_filter.wasm",
        "gateway_test_kv_probe.wasm",
        "gateway_test_wrong_version.wasm",
        "gateway_test_exchange.wasm",
        "gateway_test_raw_outcome.wasm",
        "gateway_test_outbound_probe.wasm",
        "gateway_plugin_rate_limit.wasm",
        "gateway_test_set_context.wasm",
        "stamp-blue.wasm",
        "stamp-green.wasm",
        "stamp-broken-init.wasm",
    ] {
        assert!(
            dir.join(plugin).is_file(),
            "no {plugin} in {}: build the plugins with scripts/test (or `cargo build --profile wasm \
             --target wasm32-wasip2 -p gateway-plugin-rewrite -p gateway-plugin-auth -p gateway-test-misbehave \
             -p gateway-example-ip-filter -p gateway-test-kv-probe \
             -p gateway-test-wrong-version -p gateway-test-exchange -p gateway-test-raw-outcome \
             -p gateway-test-outbound-probe -p gateway-plugin-rate-limit \
             -p gateway-test-set-context`)",
            dir.display()
        );
    }
    dir
}

/// The `filters:` section every test config can use.
pub fn standard_filters() -> String {
    format!(
        r#"plugin_dir: "{}"
filters:
  rewrite:
    module: gateway_plugin_rewrite.wasm
  misbehave:
    module: gateway_test_misbehave.wasm
    timeout: 100ms
    memory_limit: 8MiB
    max_uses: 5
"#,
        plugin_dir().display()
    )
}

/// A config with one listener on an ephemeral port that routes every path to the one instance
/// at `upstream`, plus `sections` (top-level YAML such as a `limits:` block; may be empty).
pub fn route_everything_to(upstream: &str, sections: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
{sections}
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: all
    match: {{ path_prefix: / }}
    service: backend
"#
    )
}

/// The worker threads every test gateway runs with: more than one, as in production.
pub const GATEWAY_WORKERS: usize = 2;

/// A running gateway process, killed when dropped.
pub struct Gateway {
    child: Child,
    pub address: SocketAddr,
    /// The admin API's address, if the config has an `admin` section.
    pub admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `config` to a temporary file and starts `gateway serve` on it, waiting until it
    /// listens. The config's listener should use port 0.
    pub fn start(config: &str) -> Gateway {
        Gateway::start_logging(config, "info")
    }

    /// [`Gateway::start`] with the log filter `log` (`RUST_LOG` syntax), for tests that watch
    /// debug or trace lines.
    pub fn start_logging(config: &str, log: &str) -> Gateway {
        Gateway::start_with(config, log, GATEWAY_WORKERS)
    }

    /// [`Gateway::start`] with `workers` worker threads, for tests about what shares one.
    pub fn start_with_workers(config: &str, workers: usize) -> Gateway {
        Gateway::start_with(config, "info", workers)
    }

    fn start_with(config: &str, log: &str, workers: usize) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, config).expect("config written");
        let mut child = Command::new(gateway_bin())
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .args(["--workers", &workers.to_string()])
            .env("RUST_LOG", log)
            // Compiled components are cached next to the build, not in the user's home.
            .env("XDG_CACHE_HOME", target_dir().join("test-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Only the traffic listener means "started": the admin one binds first.
                if let Some(Listening::Traffic(address)) = listening_address(&line) {
                    let _ = address_tx.send(address);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => {
                // The admin listener is bound before the traffic listeners, so its line is in.
                let admin =
                    logs.lock()
                        .expect("log lock")
                        .iter()
                        .find_map(|line| match listening_address(line) {
                            Some(Listening::Admin(admin)) => Some(admin),
                            _ => None,
                        });
                Gateway {
                    child,
                    address,
                    admin,
                    logs,
                    dir,
                }
            }
            Err(_) => {
                let _ = child.kill();
                let logs = logs.lock().expect("log lock").join("\n");
                panic!("the gateway did not start listening within 30s; its log:\n{logs}");
            }
        }
    }

    /// The temporary folder holding the config file; tests may put plugins in it too.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The config file the gateway serves from; editing it triggers a reload.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// `http://<admin address><path>`; panics if the config has no admin section.
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin.expect("the config has an `admin` section");
        format!("http://{admin}{path}")
    }

    /// The gateway's process id, for signals and memory readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://<address><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits up to `within` for a log line containing every one of `needles`.
    pub fn wait_for_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .logs()
                .into_iter()
                .find(|line| needles.iter().all(|needle| line.contains(needle)));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the gateway a signal by name (`TERM`, `USR1`), as an operator's `kill` does.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Sends SIGTERM and waits up to `within` for the gateway to exit; its exit status.
    pub fn stop(&mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener the gateway reported binding.
enum Listening {
    Traffic(SocketAddr),
    Admin(SocketAddr),
}

fn listening_address(line: &str) -> Option<Listening> {
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    let address = event.get("address")?.as_str()?.parse().ok()?;
    match event.get("message")?.as_str()? {
        "listening" => Some(Listening::Traffic(address)),
        "admin listening" => Some(Listening::Admin(address)),
        _ => None,
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as text, for assertions and failure messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts this is one of the gateway's own JSON errors with this status and code.
    pub fn assert_gateway_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        assert_eq!(body["code"], code, "body: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "body: {body}"
        );
        assert!(
            body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "body: {body}"
        );
        assert_eq!(
            body["request_id"].as_str(),
            self.header("x-request-id"),
            "the error names the request id the response carries"
        );
        body
    }
}

/// An HTTP/1.1 client with keep-alive.
pub fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 client using prior knowledge (no upgrade, no TLS).
pub fn http2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// Sends a request and reads the whole response.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .expect("response within 20s")
        .expect("the gateway answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET with a fresh HTTP/1.1 client.
/// Sends `per_task` requests from each of `tasks` concurrent clients to `url`.
pub async fn load(url: String, tasks: usize, per_task: usize) -> Vec<Reply> {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http1_client();
                let mut replies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let request = Request::get(&url)
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    replies.push(send(&client, request).await);
                }
                replies
            })
        })
        .collect();
    let mut replies = Vec::new();
    for handle in handles {
        replies.extend(handle.await.expect("load task"));
    }
    replies
}

pub async fn get(url: &str) -> Reply {
    let request = Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(&http1_client(), request).await
}

/// Writes raw bytes to `address` and reads until the server closes the connection or `within`
/// passes. Returns what was read.
pub async fn raw_exchange(address: SocketAddr, bytes: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(bytes).await.expect("request written");
    let mut received = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// What [`raw_replies`] read from one connection.
#[derive(Debug)]
pub struct RawReplies {
    /// Everything read, as text, for failure messages.
    pub text: String,
    /// Whether the server closed the connection before the wait ran out. A reset counts: a
    /// server that closes with a request it refused to read still queued makes the kernel
    /// send RST instead of FIN.
    pub closed: bool,
    /// From the end of the write to the close, or to giving up.
    pub elapsed: Duration,
}

impl RawReplies {
    /// The complete HTTP/1.x responses read, in order. Bodies are framed by `Content-Length`
    /// (absent means empty), which is how the gateway and hyper frame every answer these tests
    /// provoke; a trailing incomplete response is left out.
    pub fn responses(&self) -> Vec<Reply> {
        let mut responses = Vec::new();
        let mut rest = self.text.as_bytes();
        while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&rest[..end]);
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .and_then(|line| line.strip_prefix("HTTP/1."))
                .and_then(|line| line.get(2..5))
                .and_then(|code| StatusCode::from_bytes(code.as_bytes()).ok())
                .unwrap_or_else(|| panic!("not an HTTP/1.x status line: {head}"));
            let mut headers = HeaderMap::new();
            for line in lines {
                let (name, value) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("not a header line: {line:?}"));
                let name = http::HeaderName::from_bytes(name.trim().as_bytes()).expect("name");
                headers.append(name, value.trim().parse().expect("header value"));
            }
            let length: usize = match headers.get("content-length") {
                Some(value) => value.to_str().expect("length").parse().expect("length"),
                None => 0,
            };
            let body_start = end + 4;
            let Some(body) = rest.get(body_start..body_start + length) else {
                break;
            };
            responses.push(Reply {
                status,
                headers,
                body: Bytes::copy_from_slice(body),
            });
            rest = &rest[body_start + length..];
        }
        responses
    }
}

/// Writes raw bytes to `address`, then reads until the server closes the connection or `within`
/// passes, reporting whether and when it closed.
pub async fn raw_replies(address: SocketAddr, bytes: &[u8], within: Duration) -> RawReplies {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(bytes).await.expect("request written");
    let started = Instant::now();
    let mut received = Vec::new();
    let closed = match tokio::time::timeout(within, stream.read_to_end(&mut received)).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
            true
        }
        Err(_) => false,
    };
    RawReplies {
        text: String::from_utf8_lossy(&received).into_owned(),
        closed,
        elapsed: started.elapsed(),
    }
}

/// How long a [`RawClient`] waits for a response.
const RESPONSE_WAIT: Duration = Duration::from_secs(10);

/// One raw client connection to a gateway, read response by response: every request on it goes
/// to the same worker, in order.
pub struct RawClient {
    pub stream: TcpStream,
    /// Everything the gateway has sent on the connection so far.
    pub received: Vec<u8>,
    /// Responses already returned, counted from the start of `received`.
    taken: usize,
}

impl RawClient {
    pub async fn connect(gateway: &Gateway) -> RawClient {
        RawClient {
            stream: TcpStream::connect(gateway.address).await.expect("connects"),
            received: Vec::new(),
            taken: 0,
        }
    }

    pub async fn send(&mut self, bytes: &str) {
        self.stream
            .write_all(bytes.as_bytes())
            .await
            .expect("request written");
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(&format!(
            "GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n"
        ))
        .await;
        self.response().await
    }

    /// The next response on the connection; panics if the gateway closes it first.
    pub async fn response(&mut self) -> Reply {
        let deadline = tokio::time::Instant::now() + RESPONSE_WAIT;
        loop {
            let parsed = RawReplies {
                text: String::from_utf8_lossy(&self.received).into_owned(),
                closed: false,
                elapsed: Duration::ZERO,
            }
            .responses();
            if let Some(reply) = parsed.into_iter().nth(self.taken) {
                self.taken += 1;
                return reply;
            }
            let mut buffer = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buffer))
                .await
                .expect("an answer in time")
                .expect("the connection stays readable");
            assert!(
                read > 0,
                "the gateway closed the connection; it had sent:\n{}",
                String::from_utf8_lossy(&self.received)
            );
            self.received.extend_from_slice(&buffer[..read]);
        }
    }

    /// How long after the call the gateway closed the connection, having sent nothing more;
    /// `None` if it was still open after `within`.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut rest = Vec::new();
        match tokio::time::timeout(within, self.stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => {
                assert!(
                    rest.is_empty(),
                    "unexpected bytes: {}",
                    String::from_utf8_lossy(&rest)
                );
                Some(started.elapsed())
            }
            Ok(Err(error)) => panic!("reading the close: {error}"),
            Err(_) => None,
        }
    }
}

/// How a command that ran to its end finished, with everything it printed.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end with stdin closed and both streams captured, or kills it and panics
/// once `within` has passed. The streams are read while it runs, so a command that prints a lot
/// (a cold cargo build) never stalls on a full pipe.
pub fn run(command: &mut Command, within: Duration) -> Run {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("`{line}` cannot start: {error}"));
    let stdout = Captured::start(child.stdout.take().expect("stdout is piped"));
    let stderr = Captured::start(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited on") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // Not joined: a grandchild may still hold the pipe open.
            panic!(
                "`{line}` still ran after {within:?}; stderr so far:\n{}",
                stderr.so_far()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status,
        stdout: stdout.finish(),
        stderr: stderr.finish(),
    }
}

/// Runs the `gateway` binary with `args` like [`run`]. The caller's log level, backtrace and
/// colour settings are removed, so what is captured is the gateway's own report.
pub fn run_gateway(args: impl IntoIterator<Item: AsRef<std::ffi::OsStr>>, within: Duration) -> Run {
    run(
        Command::new(gateway_bin())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("NO_COLOR", "1"),
        within,
    )
}

/// One output stream of a child, read to its end on a thread of its own.
struct Captured {
    bytes: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Captured {
    fn start(mut stream: impl std::io::Read + Send + 'static) -> Captured {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0; 8192];
            while let Ok(read @ 1..) = stream.read(&mut chunk) {
                sink.lock()
                    .expect("output lock")
                    .extend_from_slice(&chunk[..read]);
            }
        });
        Captured { bytes, reader }
    }

    fn so_far(&self) -> String {
        text(&self.bytes)
    }

    fn finish(self) -> String {
        let _ = self.reader.join();
        text(&self.bytes)
    }
}

fn text(bytes: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.lock().expect("output lock")).into_owned()
}

/// Writes a temporary file beside `path` and renames it over `path`, as editors and deploy
/// tools do: readers see the old file or the new one, never a mix. Returns when the rename
/// started.
pub fn replace_by_rename(path: &Path, bytes: &[u8]) -> Instant {
    let name = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, bytes).expect("temporary file written");
    let renaming = Instant::now();
    std::fs::rename(&temporary, path).expect("renamed over the original");
    renaming
}

/// The resident memory of process `pid`, in KiB (`VmRSS`).
pub fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}
