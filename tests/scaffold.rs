//! A plugin author's path, walked with the real tools in a folder outside this repository: the
//! commands the generated README gives, then the new filter answering in a running gateway in
//! front of a real upstream.
//!
//! Each step prints its wall time (`cargo test --test scaffold -- --nocapture` shows them), then
//! one summary line. The crate's cargo commands build in one folder inside this workspace's
//! target folder instead of the crate's own `target/`, so only the first run compiles the
//! dependencies; its `wasm32-wasip2/release` folder is the gateway's `plugin_dir`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{
    Gateway, Run, Upstream, gateway_bin, get, http1_client, run, run_gateway, send, target_dir,
};
use http::Request;
use http_body_util::Full;

const NAME: &str = "stamp-filter";

/// The crate's own commands: long enough for a cold build of the SDK's dependencies.
const CARGO_WITHIN: Duration = Duration::from_secs(600);

/// `gateway plugin new` and `gateway plugin test`.
const GATEWAY_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn a_new_plugin_builds_passes_its_tests_and_filters_traffic() {
    let mut steps = Steps::default();
    let parent = tempfile::tempdir().expect("a temporary folder");
    let crate_dir = parent.path().join(NAME);

    let args = ["plugin", "new", NAME, "--path"].map(OsStr::new);
    let new = steps.time("new", || {
        run_gateway(
            args.into_iter().chain([parent.path().as_os_str()]),
            GATEWAY_WITHIN,
        )
    });
    assert_success("gateway plugin new", &new);
    // What the rest of this test runs is what the author is told to run.
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("a README");
    let wasm_path = "target/wasm32-wasip2/release/stamp_filter.wasm";
    for command in [
        "cargo test",
        "cargo build --release --target wasm32-wasip2",
        &format!("gateway plugin test {wasm_path} cases.yaml"),
    ] {
        assert!(
            readme.contains(command),
            "the README lacks `{command}`:\n{readme}"
        );
        assert!(
            new.stdout.contains(command),
            "`plugin new` does not suggest `{command}`:\n{}",
            new.stdout
        );
    }

    let test = steps.time("test", || {
        run(&mut cargo(&crate_dir, &["test"]), CARGO_WITHIN)
    });
    assert_success("cargo test", &test);
    assert_eq!(tests_passed(&test.stdout), 3, "{}", test.stdout);

    let build = steps.time("build", || {
        run(
            &mut cargo(
                &crate_dir,
                &["build", "--release", "--target", "wasm32-wasip2"],
            ),
            CARGO_WITHIN,
        )
    });
    assert_success("cargo build", &build);
    let wasm_dir = scaffold_target().join("wasm32-wasip2/release");
    let wasm = wasm_dir.join("stamp_filter.wasm");
    assert!(wasm.is_file(), "no component at {}", wasm.display());

    let cases = steps.time("plugin test", || {
        let mut command = Command::new(gateway_bin());
        command
            .current_dir(&crate_dir)
            .args(["plugin", "test"])
            .arg(&wasm)
            .arg("cases.yaml");
        run(&mut command, GATEWAY_WITHIN)
    });
    assert_success("gateway plugin test", &cases);
    assert!(
        cases.stdout.contains("4 passed, 0 failed"),
        "{}",
        cases.stdout
    );

    let upstream = Upstream::start("backend").await;
    let config = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
plugin_dir: "{plugins}"
filters:
  {NAME}:
    module: stamp_filter.wasm
services:
  backend:
    instances: ["{upstream}"]
routes:
  - name: checked
    match: {{ path_prefix: / }}
    service: backend
    filters:
      - filter: {NAME}
        config:
          stamp: {{ name: x-checked-by, value: {NAME} }}
          require_header: x-api-key
"#,
        plugins = wasm_dir.display(),
        upstream = upstream.url(),
    );
    let started = Instant::now();
    let gateway = Gateway::start(&config);
    let request = Request::get(gateway.url("/orders/7"))
        .header("x-api-key", "k")
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let passed = send(&http1_client(), request).await;
    steps.record("first response", started.elapsed());

    assert_eq!(passed.status, 200, "{:?}", passed.body);
    assert_eq!(
        passed.json()["headers"]["x-checked-by"],
        serde_json::json!([NAME]),
        "the upstream got the stamp"
    );
    let refused = get(&gateway.url("/orders/7")).await;
    let error = refused.assert_gateway_error(400, "MISSING_HEADER");
    assert_eq!(error["error"], "the x-api-key header is required");
    assert_eq!(
        upstream.requests(),
        1,
        "the refused request never reached the upstream"
    );

    eprintln!("{}", steps.summary());
}

/// The wall time of each step, in order.
#[derive(Default)]
struct Steps(Vec<(&'static str, Duration)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, step: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = step();
        self.record(name, started.elapsed());
        result
    }

    fn record(&mut self, name: &'static str, took: Duration) {
        eprintln!("scaffold step `{name}`: {:.1}s", took.as_secs_f64());
        self.0.push((name, took));
    }

    /// `scaffold flow: 5 commands, new 0.0s, test 24.1s, ...`: every step is one command the
    /// author types, the last being the gateway started on the new filter.
    fn summary(&self) -> String {
        let times: Vec<String> = self
            .0
            .iter()
            .map(|(name, took)| format!("{name} {:.1}s", took.as_secs_f64()))
            .collect();
        format!(
            "scaffold flow: {} commands, {}",
            self.0.len(),
            times.join(", ")
        )
    }
}

/// Where the crate's cargo commands build, kept between runs.
fn scaffold_target() -> PathBuf {
    target_dir().join("scaffold-e2e")
}

/// `cargo <args>` in the crate, as its author would type it, but building in
/// [`scaffold_target`] and without what the outer `cargo test` exports about this package.
fn cargo(crate_dir: &Path, args: &[&str]) -> Command {
    // The cargo running this test, so the crate builds with the same toolchain.
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .args(args)
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", scaffold_target());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
            command.env_remove(key.as_ref());
        }
    }
    // The outer cargo put this workspace's library folders first; the crate must not load from
    // them.
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        let outer = target_dir();
        let kept = std::env::split_paths(&paths).filter(|path| !path.starts_with(&outer));
        command.env(
            "LD_LIBRARY_PATH",
            std::env::join_paths(kept).expect("the paths were joined before"),
        );
    }
    command
}

fn assert_success(what: &str, run: &Run) {
    assert!(
        run.status.success(),
        "`{what}` failed ({}):\n--- stdout\n{}--- stderr\n{}",
        run.status,
        run.stdout,
        run.stderr
    );
}

/// The tests `cargo test` reports as passed, over every test binary and the doc tests.
fn tests_passed(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum()
}
