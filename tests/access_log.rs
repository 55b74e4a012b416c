//! The access log end to end: both formats with their fields, the file destination, reopening
//! on SIGUSR1, nothing lost at shutdown, and bounded memory when the destination stalls.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_tests::{Gateway, Upstream, eventually, get, http1_client, load, resident_kib, send};
use http::Request;
use http_body_util::Full;

fn config(upstream: &Upstream, access_log: &str) -> String {
    format!(
        r#"
listeners:
  - address: 127.0.0.1:0
access_log:
{access_log}
services:
  backend:
    instances: ["{}"]
routes:
  - name: all
    match: {{ path_prefix: / }}
    service: backend
"#,
        upstream.url()
    )
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn request_with(gateway: &Gateway, path: &str, request_id: &str) -> u16 {
    let request = Request::get(gateway.url(path))
        .header("x-request-id", request_id)
        .header("user-agent", "access-test/1.0 \"quoted\"")
        .header("referer", "http://example.com/from")
        .body(Full::new(Bytes::new()))
        .expect("request");
    send(&http1_client(), request).await.status.as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_line_on_stderr_carries_every_field() {
    let upstream = Upstream::start("backend").await;
    let gateway = Gateway::start(&config(&upstream, "  flush_interval: 50ms"));
    assert_eq!(request_with(&gateway, "/a/b?x=1", "json-line-1").await, 200);

    let line = gateway
        .wait_for_log(&["\"request_id\":\"json-line-1\""], Duration::from_secs(5))
        .expect("an access-log line for the request");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["target"], "/a/b?x=1");
    assert_eq!(entry["version"], "HTTP/1.1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["client"], "127.0.0.1");
    assert_eq!(entry["route"], "all");
    assert_eq!(
        entry["upstream"]
            .as_str()
            .map(|label| label.starts_with("backend@")),
        Some(true),
        "{line}"
    );
    assert_eq!(entry["user_agent"], "access-test/1.0 \"quoted\"");
    assert_eq!(entry["referer"], "http://example.com/from");
    assert_eq!(entry["error"], serde_json::Value::Null);
    assert!(entry["duration_us"].as_u64().is_some(), "{line}");
    assert!(
        entry["bytes"].as_u64().is_some_and(|bytes| bytes > 0),
        "{line}"
    );
    assert_eq!(entry["trace_id"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(entry["span_id"].as_str().map(str::len), Some(16), "{line}");
    humantime::parse_rfc3339(entry["time"].as_str().expect("a time")).expect("RFC 3339");

    // The gateway's own errors are logged with their reason.
    let missing = get(&gateway.url("/nothing-here")).await;
    let id = missing.header("x-request-id").expect("an id").to_owned();
    let upstream_status = missing.status.as_u16();
    let line = gateway
        .wait_for_log(
            &[&format!("\"request_id\":\"{id}\"")],
            Duration::from_secs(5),
        )
        .expect("a line for the second request");
    let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(entry["status"], upstream_status);
}

#[tokio::test(flavor = "multi_thread")]
async fn combined_lines_go_to_a_file_that_sigusr1_reopens() {
    let upstream = Upstream::start("backend").await;
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("access.log");
    let gateway = Gateway::start(&config(
        &upstream,
        &format!(
            "  format: combined\n  flush_interval: 50ms\n  destination: {{ file: \"{}\" }}",
            path.display()
        ),
    ));
    assert_eq!(
        request_with(&gateway, "/before?n=1", "combined-1").await,
        200
    );
    assert!(
        eventually(Duration::from_secs(5), || !file_lines(&path).is_empty()).await,
        "the line reaches the file"
    );
    let lines = file_lines(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let (start, rest) = line.split_once(" [").expect("a time in brackets");
    assert_eq!(start, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").expect("the end of the time");
    assert_eq!(time.len(), "02/Dec/2026:10:16:33 +0000".len(), "{line}");
    assert!(time.ends_with(" +0000"), "{line}");
    assert!(
        rest.starts_with("\"GET /before?n=1 HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(
        rest.ends_with(" \"http://example.com/from\" \"access-test/1.0 \\x22quoted\\x22\""),
        "{line}"
    );
    assert!(
        !gateway.logs().iter().any(|log| log.contains("combined-1")),
        "a file destination keeps access lines off stderr"
    );

    // What logrotate does: move the file away, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rename");
    gateway.signal("USR1");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = 0;
    while file_lines(&path).is_empty() {
        assert!(Instant::now() < deadline, "no line reached a new file");
        sent += 1;
        assert_eq!(
            request_with(&gateway, &format!("/after?n={sent}"), "combined-2").await,
            200
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = file_lines(&rotated);
    assert!(old[0].contains("/before?n=1"), "{old:?}");
    let new = file_lines(&path);
    assert!(
        new.iter().all(|line| line.contains("GET /after?n=")),
        "{new:?}"
    );
    assert!(
        gateway
            .wait_for_log(&["access log reopened"], Duration::from_secs(1))
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_buffered_line_is_written_at_shutdown() {
    let upstream = Upstream::start("backend").await;
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("access.log");
    // Nothing would be written before the minute is up, or the megabyte full, but for the
    // flush at shutdown.
    let mut gateway = Gateway::start(&config(
        &upstream,
        &format!(
            "  buffer: 1MiB\n  flush_interval: 60s\n  destination: {{ file: \"{}\" }}",
            path.display()
        ),
    ));
    let replies = load(gateway.url("/counted"), 4, 50).await;
    assert!(replies.iter().all(|reply| reply.status == 200));
    assert!(file_lines(&path).is_empty(), "still buffered");

    let status = gateway.stop(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let lines = file_lines(&path);
    assert_eq!(lines.len(), 200, "one line per request, none lost");
    for line in &lines {
        let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(entry["target"], "/counted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_destination_drops_and_counts_lines_and_the_gateway_keeps_serving() {
    let upstream = Upstream::start("backend").await;
    let dir = tempfile::tempdir().expect("a folder");
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // Held open and never read: the pipe fills, and the writer blocks on it for good. On Linux
    // opening a FIFO for both reading and writing does not wait for the other end.
    let _stalled = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&fifo)
        .expect("the FIFO opens");
    let gateway = Gateway::start(&config(
        &upstream,
        &format!(
            "  buffer: 4KiB\n  max_pending_buffers: 2\n  flush_interval: 50ms\n  destination: {{ file: \"{}\" }}",
            fifo.display()
        ),
    ));

    let replies = load(gateway.url("/many"), 4, 500).await;
    assert!(replies.iter().all(|reply| reply.status == 200));
    let warning = gateway
        .wait_for_log(&["access-log lines dropped"], Duration::from_secs(5))
        .expect("a warning counting the dropped lines");
    let warning: serde_json::Value = serde_json::from_str(&warning).expect("JSON");
    assert!(
        warning["dropped"].as_u64().is_some_and(|n| n > 0),
        "{warning}"
    );

    // Memory stays where it was after a second burst as large as the first.
    let before = resident_kib(gateway.pid());
    let replies = load(gateway.url("/many"), 4, 500).await;
    assert!(replies.iter().all(|reply| reply.status == 200));
    let after = resident_kib(gateway.pid());
    assert!(
        after < before + 16 * 1024,
        "resident memory grew from {before} KiB to {after} KiB"
    );
    let warnings = gateway
        .logs()
        .iter()
        .filter(|line| line.contains("access-log lines dropped"))
        .count();
    assert!(
        warnings < 100,
        "one warning per flush interval, not one per line: {warnings}"
    );
}
