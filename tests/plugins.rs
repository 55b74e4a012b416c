//! Component tests: every bundled filter's cases file, run by the real `gateway plugin test`
//! against the compiled component.

use std::path::{Path, PathBuf};
use std::process::Command;

use gateway_tests::{gateway_bin, plugin_dir};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Runs `gateway plugin test` and returns (success, transcript).
fn plugin_test(component: &Path, cases: &Path) -> (bool, String) {
    let output = Command::new(gateway_bin())
        .args(["plugin", "test"])
        .arg(component)
        .arg(cases)
        .env("RUST_LOG", "off")
        .output()
        .expect("gateway runs");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), transcript)
}

#[test]
fn bundled_filters_pass_their_cases() {
    let bundled = [
        ("gateway_plugin_rewrite.wasm", "plugins/rewrite/cases.yaml"),
        ("gateway_plugin_auth.wasm", "plugins/auth/cases.yaml"),
        (
            "gateway_plugin_rate_limit.wasm",
            "plugins/rate-limit/cases.yaml",
        ),
        ("gateway_plugin_cache.wasm", "plugins/cache/cases.yaml"),
        (
            "gateway_example_ip_filter.wasm",
            "examples/ip-filter/cases.yaml",
        ),
        (
            "gateway_test_kv_probe.wasm",
            "tests/guests/kv-probe/cases.yaml",
        ),
        (
            "gateway_test_exchange.wasm",
            "tests/guests/exchange/cases.yaml",
        ),
        (
            "gateway_test_outbound_probe.wasm",
            "tests/guests/outbound-probe/cases.yaml",
        ),
    ];
    for (component, cases) in bundled {
        let (passed, transcript) =
            plugin_test(&plugin_dir().join(component), &repo_root().join(cases));
        assert!(passed, "{component} failed its cases:\n{transcript}");
        assert!(transcript.contains(" 0 failed"), "{transcript}");
    }
}

#[test]
fn a_failing_case_is_reported_with_a_diff_and_a_failing_exit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = dir.path().join("cases.yaml");
    std::fs::write(
        &cases,
        r#"
cases:
  - name: passes
    config: { path: { strip_prefix: /a } }
    request: { path: /a/b }
    expect: { path: /b }
  - name: expects the wrong path
    config: { path: { strip_prefix: /a } }
    request: { path: /a/b }
    expect: { path: /c, headers: { x-missing: "1" } }
"#,
    )
    .expect("cases written");
    let (passed, transcript) =
        plugin_test(&plugin_dir().join("gateway_plugin_rewrite.wasm"), &cases);
    assert!(!passed, "{transcript}");
    assert!(transcript.contains("ok    passes"), "{transcript}");
    assert!(
        transcript.contains("FAIL  expects the wrong path"),
        "{transcript}"
    );
    assert!(
        transcript.contains(r#"path: expected "/c", got "/b""#),
        "{transcript}"
    );
    assert!(
        transcript.contains("request header x-missing: expected [\"1\"], got (absent)"),
        "{transcript}"
    );
    assert!(transcript.contains("1 passed, 1 failed"), "{transcript}");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"not wasm at all").expect("written");
    let cases = repo_root().join("plugins/rewrite/cases.yaml");
    let (passed, transcript) = plugin_test(&fake, &cases);
    assert!(!passed);
    assert!(transcript.contains("fake.wasm"), "{transcript}");
    assert!(
        transcript.contains("not a WebAssembly file"),
        "{transcript}"
    );
}

#[test]
fn a_component_built_for_another_wit_version_is_refused_naming_both() {
    let component = plugin_dir().join("gateway_test_wrong_version.wasm");
    let cases = repo_root().join("plugins/rewrite/cases.yaml");
    let (passed, transcript) = plugin_test(&component, &cases);
    assert!(!passed, "{transcript}");
    assert!(
        transcript.contains("gateway_test_wrong_version.wasm"),
        "{transcript}"
    );
    assert!(
        transcript.contains(
            "built for gateway:filter@0.1.0, but this gateway provides gateway:filter@0.2.0"
        ),
        "{transcript}"
    );
}
