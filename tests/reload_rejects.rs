//! Hot reload refuses what it cannot serve. Bad components and bad configuration edits dropped
//! in under load leave the old state answering every request, the admin API says what was wrong
//! and where, and fixing the file recovers. Also: configuration edits apply without a restart,
//! reloads can be left to the admin API and SIGHUP (`watch: false`), and the admin API has a
//! listener of its own.
//!
//! Every gateway gets a private plugin folder (a copy of the built components), so builds
//! running beside the tests cannot trigger its reloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{
    Gateway, Reply, Upstream, get, http1_client, plugin_dir, replace_by_rename, send,
};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// Longest wait for a reload to be seen, in the status or in answers.
const WAIT: Duration = Duration::from_secs(15);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// Clients sending requests concurrently while files change.
const LOAD_TASKS: usize = 4;

/// The load stops at whichever of these bounds comes first, even if the test never stops it.
const LOAD_MAX_REQUESTS_PER_TASK: u64 = 20_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(60);

/// Requests the load must complete after a change was seen, so the state it left (old or new)
/// is known to serve under load.
const LOAD_AFTER_CHANGE: u64 = 100;

/// Longer than the watcher's quiet period many times over: a reload that was going to happen
/// has happened.
const WATCHER_WOULD_HAVE_RELOADED: Duration = Duration::from_secs(1);

/// What the `stamp` filter stamps, as bits of a set of accepted answers.
const BLUE: u8 = 1;
const GREEN: u8 = 2;

/// The built components copied into every gateway's plugin folder: `stamp.wasm` starts blue.
const INSTALLED: [(&str, &str); 3] = [
    ("stamp-blue.wasm", "stamp.wasm"),
    ("gateway_test_misbehave.wasm", "gateway_test_misbehave.wasm"),
    ("gateway_plugin_rewrite.wasm", "gateway_plugin_rewrite.wasm"),
];

/// How a test replaces a file.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// As editors and deploy tools do: write a temporary file beside it and rename it over.
    Rename,
    /// Truncate and rewrite the same file, so the watcher may see it half written.
    InPlace,
}

fn replace(path: &Path, bytes: &[u8], how: Write) {
    match how {
        Write::Rename => {
            replace_by_rename(path, bytes);
        }
        Write::InPlace => std::fs::write(path, bytes).expect("file rewritten"),
    }
}

/// A component from the build.
fn built(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// Additions to the stamp configuration: filter definitions, and routes tried before the
/// catch-all `stamped` route.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    filters: &'static str,
    routes: &'static str,
}

/// A gateway whose catch-all route `stamped` runs the `stamp` filter from `plugins/stamp.wasm`
/// in front of an echo upstream, with the admin API on.
struct Stamped {
    gateway: Gateway,
    upstream: Upstream,
    plugins: tempfile::TempDir,
    watch: bool,
}

impl Stamped {
    async fn start(watch: bool, extra: Extra) -> Stamped {
        let upstream = Upstream::start("echo").await;
        let plugins = tempfile::tempdir().expect("a plugin folder");
        for (from, to) in INSTALLED {
            std::fs::write(plugins.path().join(to), built(from)).expect("plugin copied");
        }
        let config = stamp_config(plugins.path(), &upstream.url(), watch, extra);
        Stamped {
            gateway: Gateway::start(&config),
            upstream,
            plugins,
            watch,
        }
    }

    /// The configuration with `extra` in place of what it started with.
    fn config(&self, extra: Extra) -> String {
        stamp_config(self.plugins.path(), &self.upstream.url(), self.watch, extra)
    }

    fn stamp_file(&self) -> PathBuf {
        self.plugins.path().join("stamp.wasm")
    }

    /// The stamp a fresh request gets.
    async fn stamp(&self) -> String {
        let reply = get(&self.gateway.url("/stamped")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply
            .header("x-stamp")
            .unwrap_or_else(|| panic!("no x-stamp on {reply:?}"))
            .to_owned()
    }
}

fn stamp_config(plugins: &Path, upstream: &str, watch: bool, extra: Extra) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
watch: {watch}
plugin_dir: "{plugins}"
filters:
  stamp:
    module: stamp.wasm
{filters}services:
  echo:
    instances: ["{upstream}"]
routes:
{routes}  - name: stamped
    match: {{ path_prefix: / }}
    service: echo
    filters:
      - filter: stamp
"#,
        plugins = plugins.display(),
        filters = extra.filters,
        routes = extra.routes,
    )
}

/// The reload status from the admin API.
async fn status(gateway: &Gateway) -> Value {
    let reply = get(&gateway.admin_url("/admin/reload")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.json()
}

/// `POST /admin/reload`.
async fn post_reload(gateway: &Gateway) -> Reply {
    let request = Request::post(gateway.admin_url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    send(&http1_client(), request).await
}

fn count(status: &Value, field: &str) -> u64 {
    status[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no count `{field}` in {status:#}"))
}

/// An attempt's problems, one a line.
fn problems(attempt: &Value) -> String {
    attempt["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list in {attempt:#}"))
        .iter()
        .map(|problem| problem.as_str().expect("problems are text"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The serving filter named `name`, from a status.
fn filter<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["filters"]
        .as_array()
        .and_then(|filters| filters.iter().find(|filter| filter["name"] == name))
        .unwrap_or_else(|| panic!("no filter `{name}` in {status:#}"))
}

fn sha256(status: &Value, name: &str) -> String {
    filter(status, name)["sha256"]
        .as_str()
        .expect("a sha256")
        .to_owned()
}

/// Runs `probe` until it gives a value, or panics after [`WAIT`] saying `what` and what the
/// probe saw last.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() > deadline => {
                panic!("{what}: not within {WAIT:?}; last seen:\n{seen}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits until the status counts a failure after `before` whose problems include every one of
/// `needles`. Waiting for the needles, not the first failure, lets a reload that caught a file
/// half written fail on its own terms first.
async fn rejected(gateway: &Gateway, before: &Value, needles: &[&str], what: &str) -> Value {
    eventually(what, async || {
        let now = status(gateway).await;
        let failure = &now["last_failure"];
        let seen = count(&now, "failures") > count(before, "failures")
            && needles
                .iter()
                .all(|needle| problems(failure).contains(needle));
        if seen {
            Ok(now)
        } else {
            Err(format!("{now:#}"))
        }
    })
    .await
}

/// Waits until the status counts a success after `before`.
async fn applied(gateway: &Gateway, before: &Value, what: &str) -> Value {
    eventually(what, async || {
        let now = status(gateway).await;
        if count(&now, "successes") > count(before, "successes") {
            Ok(now)
        } else {
            Err(format!("{now:#}"))
        }
    })
    .await
}

/// What the load clients saw.
#[derive(Debug, Default)]
struct Tally {
    answered: u64,
    blue: u64,
    green: u64,
    failed: u64,
    /// The first few failures, described.
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.blue += other.blue;
        self.green += other.green;
        self.failed += other.failed;
        self.failures.extend(other.failures.into_iter().take(10));
    }

    fn fail(&mut self, failure: String) {
        self.failed += 1;
        if self.failures.len() < 10 {
            self.failures.push(failure);
        }
    }
}

/// Clients sending requests back to back, each checking its answer is a 200 with a stamp the
/// test accepts at the time the request is sent.
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU8>,
    answered: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    fn start(url: String, accepted: u8) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU8::new(accepted));
        let answered = Arc::new(AtomicU64::new(0));
        let tasks = (0..LOAD_TASKS)
            .map(|_| {
                let (stop, accepted, answered) = (stop.clone(), accepted.clone(), answered.clone());
                let url = url.clone();
                tokio::spawn(async move {
                    let client = http1_client();
                    let started = Instant::now();
                    let mut tally = Tally::default();
                    for _ in 0..LOAD_MAX_REQUESTS_PER_TASK {
                        if stop.load(Ordering::SeqCst) || started.elapsed() > LOAD_MAX_TIME {
                            break;
                        }
                        // Read before sending: the accepted set only ever widens.
                        let accepted = accepted.load(Ordering::SeqCst);
                        let request = Request::get(&url)
                            .body(Full::new(Bytes::new()))
                            .expect("valid request");
                        let answer = tokio::time::timeout(Duration::from_secs(10), async {
                            let response =
                                client.request(request).await.map_err(|e| e.to_string())?;
                            let (parts, body) = response.into_parts();
                            let body = body.collect().await.map_err(|e| e.to_string())?;
                            Ok::<_, String>((parts, body.to_bytes()))
                        })
                        .await;
                        tally.answered += 1;
                        answered.fetch_add(1, Ordering::SeqCst);
                        let (parts, body) = match answer {
                            Ok(Ok(answer)) => answer,
                            Ok(Err(error)) => {
                                tally.fail(format!("request failed: {error}"));
                                continue;
                            }
                            Err(_) => {
                                tally.fail("no answer within 10s".to_owned());
                                continue;
                            }
                        };
                        let stamp = parts.headers.get("x-stamp").and_then(|v| v.to_str().ok());
                        match (parts.status.as_u16(), stamp) {
                            (200, Some("blue")) if accepted & BLUE != 0 => tally.blue += 1,
                            (200, Some("green")) if accepted & GREEN != 0 => tally.green += 1,
                            (status, stamp) => tally.fail(format!(
                                "{status} stamped {stamp:?} (accepted {accepted:#04b}): {}",
                                String::from_utf8_lossy(&body)
                            )),
                        }
                    }
                    tally
                })
            })
            .collect();
        Load {
            stop,
            accepted,
            answered,
            tasks,
        }
    }

    /// Accepts these stamps from now on.
    fn accept(&self, stamps: u8) {
        self.accepted.store(stamps, Ordering::SeqCst);
    }

    /// Waits until the clients have had `more` answers (or failures) from now.
    async fn wait_for(&self, more: u64) {
        let target = self.answered.load(Ordering::SeqCst) + more;
        eventually("the load goes on", async || {
            let answered = self.answered.load(Ordering::SeqCst);
            if answered >= target {
                Ok(())
            } else {
                Err(format!("{answered} of {target} requests answered"))
            }
        })
        .await;
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for task in self.tasks {
            total.add(task.await.expect("a load task ends normally"));
        }
        total
    }
}

/// Something that must not be served, and what the rejection must say about it.
struct Case {
    name: &'static str,
    edit: Edit,
    how: Write,
    problems: &'static [&'static str],
}

enum Edit {
    /// `plugins/stamp.wasm` becomes these bytes.
    Stamp(Component),
    /// The configuration gets these additions.
    Config(Extra),
}

enum Component {
    Bytes(&'static [u8]),
    Built(&'static str),
}

const CASES: &[Case] = &[
    Case {
        name: "a text file",
        edit: Edit::Stamp(Component::Bytes(b"not a component, just text\n")),
        how: Write::InPlace,
        problems: &["filter `stamp`", "stamp.wasm", "not a WebAssembly file"],
    },
    Case {
        name: "a core module",
        edit: Edit::Stamp(Component::Bytes(b"\0asm\x01\0\0\0")),
        how: Write::Rename,
        problems: &[
            "filter `stamp`",
            "stamp.wasm",
            "a core Wasm module, not a component",
        ],
    },
    Case {
        name: "a component for another WIT version",
        edit: Edit::Stamp(Component::Built("gateway_test_wrong_version.wasm")),
        how: Write::InPlace,
        problems: &[
            "filter `stamp`",
            "stamp.wasm",
            "built for gateway:filter@0.1.0",
        ],
    },
    Case {
        name: "a component that traps in init",
        edit: Edit::Stamp(Component::Built("stamp-broken-init.wasm")),
        how: Write::Rename,
        problems: &["route `stamped`, filter `stamp`", "trapped"],
    },
    Case {
        name: "invalid YAML",
        edit: Edit::Config(Extra {
            filters: "",
            routes: "  - name: unclosed\n    match: { path_prefix: /unclosed\n",
        }),
        how: Write::InPlace,
        problems: &["gateway.yaml", "did not find expected", "at line"],
    },
    Case {
        name: "a route naming an unknown filter",
        edit: Edit::Config(Extra {
            filters: "",
            routes: "  - name: ghostly\n    match: { path_prefix: /ghostly }\n    service: echo\n    filters: [{ filter: ghost }]\n",
        }),
        how: Write::Rename,
        problems: &[
            "gateway.yaml",
            "routes[0].filters[0].filter",
            "unknown filter `ghost`",
        ],
    },
    Case {
        name: "a filter configuration init rejects",
        edit: Edit::Config(Extra {
            filters: "  misbehave:\n    module: gateway_test_misbehave.wasm\n",
            routes: "  - name: picky\n    match: { path_prefix: /picky }\n    service: echo\n    filters: [{ filter: misbehave, config: { reject: nope } }]\n",
        }),
        how: Write::InPlace,
        problems: &[
            "route `picky`, filter `misbehave`",
            "rejected its configuration: nope",
        ],
    },
];

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_dropped_in_under_load_are_rejected_and_the_old_state_serves() {
    for case in CASES {
        rejected_under_load(case).await;
    }
}

async fn rejected_under_load(case: &Case) {
    let name = case.name;
    let s = Stamped::start(true, Extra::default()).await;
    assert_eq!(s.stamp().await, "blue", "{name}: before the edit");
    let before = status(&s.gateway).await;
    let blue = sha256(&before, "stamp");

    let load = Load::start(s.gateway.url("/stamped/load"), BLUE);
    load.wait_for(LOAD_AFTER_CHANGE).await;
    match &case.edit {
        Edit::Stamp(Component::Bytes(bytes)) => replace(&s.stamp_file(), bytes, case.how),
        Edit::Stamp(Component::Built(file)) => replace(&s.stamp_file(), &built(file), case.how),
        Edit::Config(extra) => replace(
            &s.gateway.config_path(),
            s.config(*extra).as_bytes(),
            case.how,
        ),
    }
    let after = rejected(
        &s.gateway,
        &before,
        case.problems,
        &format!("{name}: the reload is rejected"),
    )
    .await;
    let failure = &after["last_failure"];
    assert_eq!(failure["applied"], false, "{name}: {failure:#}");
    assert_eq!(failure["trigger"], "watch", "{name}: {failure:#}");
    assert_eq!(
        after["generation"], before["generation"],
        "{name}: nothing applied"
    );
    assert_eq!(after["successes"], before["successes"], "{name}");
    assert_eq!(
        after["filters"], before["filters"],
        "{name}: the status still lists the filters serving"
    );
    load.wait_for(LOAD_AFTER_CHANGE).await;
    assert_eq!(s.stamp().await, "blue", "{name}: the old state serves");

    // Fix it: a green build, and the good configuration for a configuration case. The
    // component goes first so the configuration's fix applies both at once.
    load.accept(BLUE | GREEN);
    replace(&s.stamp_file(), &built("stamp-green.wasm"), Write::Rename);
    if matches!(case.edit, Edit::Config(_)) {
        replace(
            &s.gateway.config_path(),
            s.config(Extra::default()).as_bytes(),
            Write::Rename,
        );
    }
    let recovered = applied(&s.gateway, &after, &format!("{name}: the fix applies")).await;
    assert_eq!(recovered["last"]["applied"], true, "{name}: {recovered:#}");
    assert_eq!(
        count(&recovered, "generation"),
        count(&recovered, "successes") + 1,
        "{name}: every success is a generation after the start-up one"
    );
    assert_ne!(
        sha256(&recovered, "stamp"),
        blue,
        "{name}: the status shows the new component"
    );
    load.wait_for(LOAD_AFTER_CHANGE).await;

    let tally = load.finish().await;
    assert_eq!(
        tally.failed, 0,
        "{name}: every request under load is answered by a whole state; failures: {:#?}",
        tally.failures
    );
    assert!(
        tally.blue >= 2 * LOAD_AFTER_CHANGE,
        "{name}: the old state answered under load: {tally:?}"
    );
    for _ in 0..10 {
        assert_eq!(s.stamp().await, "green", "{name}: the fix serves");
    }
}

/// A rewrite route whose response header shows which configuration answered.
fn rewrite_config(plugins: &Path, upstream: &str, limit: &str, tail: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
admin:
  address: 127.0.0.1:0
plugin_dir: "{plugins}"
filters:
  rewrite:
    module: gateway_plugin_rewrite.wasm
services:
  echo:
    instances: ["{upstream}"]
routes:
  - name: limited
    match: {{ path_prefix: /limited }}
    service: echo
    filters:
      - filter: rewrite
        config: {{ response_headers: {{ set: {{ x-limit: "{limit}" }} }} }}
{tail}"#,
        plugins = plugins.display(),
    )
}

const EXTRA_ROUTE: &str =
    "  - name: extra\n    match: { path_prefix: /extra }\n    service: echo\n";

/// The `x-limit` a fresh request to `/limited` gets.
async fn limit(gateway: &Gateway) -> String {
    let reply = get(&gateway.url("/limited")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["target"], "/limited");
    reply.header("x-limit").unwrap_or("(none)").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_edits_apply_without_a_restart() {
    let upstream = Upstream::start("echo").await;
    let plugins = tempfile::tempdir().expect("a plugin folder");
    for (from, to) in INSTALLED {
        std::fs::write(plugins.path().join(to), built(from)).expect("plugin copied");
    }
    let config =
        |limit: &str, tail: &str| rewrite_config(plugins.path(), &upstream.url(), limit, tail);
    let gateway = Gateway::start(&config("10", ""));
    let path = gateway.config_path();
    assert_eq!(limit(&gateway).await, "10");
    get(&gateway.url("/extra"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");

    replace(&path, config("20", "").as_bytes(), Write::Rename);
    eventually(
        "a renamed-over edit of a filter's configuration applies",
        async || match limit(&gateway).await {
            limit if limit == "20" => Ok(()),
            other => Err(other),
        },
    )
    .await;

    replace(&path, config("20", EXTRA_ROUTE).as_bytes(), Write::InPlace);
    eventually("an added route serves", async || {
        let reply = get(&gateway.url("/extra/1")).await;
        if reply.status == 200 {
            Ok(reply)
        } else {
            Err(format!("{reply:?}"))
        }
    })
    .await;
    assert_eq!(
        get(&gateway.url("/extra/1")).await.json()["target"],
        "/extra/1"
    );

    replace(&path, config("20", "").as_bytes(), Write::Rename);
    eventually("a removed route stops serving", async || {
        let reply = get(&gateway.url("/extra/1")).await;
        if reply.status == 404 {
            Ok(())
        } else {
            Err(format!("{reply:?}"))
        }
    })
    .await;
    get(&gateway.url("/extra/1"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");

    let before = status(&gateway).await;
    let unknown_key = config("30", EXTRA_ROUTE)
        .replace("  - name: limited\n", "  - name: limited\n    retries: 3\n");
    replace(&path, unknown_key.as_bytes(), Write::InPlace);
    let after = rejected(
        &gateway,
        &before,
        &["gateway.yaml", "routes[0]", "unknown field `retries`"],
        "an edit with an unknown key is rejected",
    )
    .await;
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(limit(&gateway).await, "20", "the old configuration serves");
    get(&gateway.url("/extra/1"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");

    replace(&path, config("30", "").as_bytes(), Write::Rename);
    applied(&gateway, &after, "the corrected edit applies").await;
    assert_eq!(limit(&gateway).await, "30");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_watching_only_the_admin_api_and_sighup_reload() {
    let s = Stamped::start(false, Extra::default()).await;
    let started = status(&s.gateway).await;
    assert_eq!(started["last"]["trigger"], "startup");

    replace(&s.stamp_file(), &built("stamp-green.wasm"), Write::Rename);
    tokio::time::sleep(WATCHER_WOULD_HAVE_RELOADED).await;
    let unchanged = status(&s.gateway).await;
    assert_eq!(
        unchanged, started,
        "with `watch: false` a file change reloads nothing"
    );
    assert_eq!(s.stamp().await, "blue");

    let reply = post_reload(&s.gateway).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let attempt = reply.json();
    assert_eq!(attempt["applied"], true, "{attempt:#}");
    assert_eq!(attempt["trigger"], "admin", "{attempt:#}");
    assert_eq!(problems(&attempt), "", "{attempt:#}");
    assert_eq!(s.stamp().await, "green", "applied before the answer");
    let by_admin = status(&s.gateway).await;
    assert_eq!(
        count(&by_admin, "generation"),
        count(&started, "generation") + 1
    );
    assert_eq!(by_admin["last"]["trigger"], "admin");

    replace(&s.stamp_file(), b"garbage", Write::InPlace);
    let reply = post_reload(&s.gateway).await;
    assert_eq!(reply.status, 422, "{reply:?}");
    let attempt = reply.json();
    assert_eq!(attempt["applied"], false, "{attempt:#}");
    assert_eq!(attempt["trigger"], "admin", "{attempt:#}");
    for needle in ["filter `stamp`", "stamp.wasm", "not a WebAssembly file"] {
        assert!(problems(&attempt).contains(needle), "{needle}: {attempt:#}");
    }
    assert_eq!(s.stamp().await, "green", "the old state serves");
    let refused = status(&s.gateway).await;
    assert_eq!(
        count(&refused, "failures"),
        count(&by_admin, "failures") + 1
    );
    assert_eq!(
        refused["last_failure"], attempt,
        "the status shows the attempt answered"
    );
    assert_eq!(refused["generation"], by_admin["generation"]);

    replace(&s.stamp_file(), &built("stamp-blue.wasm"), Write::Rename);
    s.gateway.signal("HUP");
    let by_signal = applied(&s.gateway, &refused, "SIGHUP reloads").await;
    assert_eq!(by_signal["last"]["trigger"], "signal", "{by_signal:#}");
    assert_eq!(by_signal["last"]["applied"], true, "{by_signal:#}");
    assert_eq!(
        count(&by_signal, "generation"),
        count(&refused, "generation") + 1
    );
    assert_eq!(s.stamp().await, "blue");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_lists_serving_filters_by_content_hash() {
    let s = Stamped::start(
        true,
        Extra {
            filters: "  rewrite:\n    module: gateway_plugin_rewrite.wasm\n",
            routes: "  - name: rewritten\n    match: { path_prefix: /rewritten }\n    service: echo\n    filters: [{ filter: rewrite, config: { response_headers: { set: { x-rewritten: \"yes\" } } } }]\n",
        },
    )
    .await;
    let blue = status(&s.gateway).await;
    let names: Vec<&str> = blue["filters"]
        .as_array()
        .expect("a filter list")
        .iter()
        .map(|filter| filter["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["rewrite", "stamp"], "{blue:#}");
    for (name, module) in [
        ("rewrite", "gateway_plugin_rewrite.wasm"),
        ("stamp", "stamp.wasm"),
    ] {
        let listed = filter(&blue, name);
        assert_eq!(listed["module"], module, "{listed:#}");
        let hash = sha256(&blue, name);
        assert!(
            hash.len() == 64
                && hash
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "a sha256 in lower-case hex: {hash}"
        );
        assert!(
            ["compiled", "memory", "disk"]
                .contains(&listed["compiled_from"].as_str().unwrap_or("")),
            "{listed:#}"
        );
    }

    replace(&s.stamp_file(), &built("stamp-green.wasm"), Write::Rename);
    let green = applied(&s.gateway, &blue, "the green build applies").await;
    assert_ne!(
        sha256(&green, "stamp"),
        sha256(&blue, "stamp"),
        "a new file, a new hash"
    );
    assert_eq!(
        sha256(&green, "rewrite"),
        sha256(&blue, "rewrite"),
        "an unchanged file keeps its hash"
    );
    assert_eq!(s.stamp().await, "green");

    replace(&s.stamp_file(), &built("stamp-blue.wasm"), Write::InPlace);
    let blue_again = eventually("the blue build applies again", async || {
        let now = status(&s.gateway).await;
        if count(&now, "successes") > count(&green, "successes")
            && sha256(&now, "stamp") == sha256(&blue, "stamp")
        {
            Ok(now)
        } else {
            Err(format!("{now:#}"))
        }
    })
    .await;
    assert_eq!(
        blue_again["last"]["applied"], true,
        "the same bytes, the same hash: {blue_again:#}"
    );
    assert_eq!(s.stamp().await, "blue");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_is_not_on_the_traffic_listener() {
    let s = Stamped::start(true, Extra::default()).await;
    let admin = s.gateway.admin.expect("an admin listener");
    assert_ne!(admin, s.gateway.address);
    let before = status(&s.gateway).await;

    let proxied = get(&s.gateway.url("/admin/reload")).await;
    assert_eq!(proxied.status, 200, "{proxied:?}");
    assert_eq!(
        proxied.header("x-stamp"),
        Some("blue"),
        "the traffic listener routed it through the stamped route"
    );
    let echo = proxied.json();
    assert_eq!(echo["upstream"], "echo", "{echo:#}");
    assert_eq!(echo["target"], "/admin/reload", "{echo:#}");
    assert!(echo.get("generation").is_none(), "{echo:#}");

    let post = Request::post(s.gateway.url("/admin/reload"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let proxied = send(&http1_client(), post).await;
    assert_eq!(proxied.json()["method"], "POST", "{proxied:?}");
    assert_eq!(s.upstream.requests(), 2, "both went to the upstream");
    assert_eq!(
        status(&s.gateway).await["last"],
        before["last"],
        "a POST on the traffic listener reloads nothing"
    );

    get(&s.gateway.admin_url("/stamped"))
        .await
        .assert_gateway_error(404, "NO_ROUTE");
    assert_eq!(
        s.upstream.requests(),
        2,
        "the admin listener forwards nothing"
    );
}
