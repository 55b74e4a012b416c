//! Configuration checking through the real binary: every file in `config-cases/` is run through
//! `gateway validate`, and what the gateway says about it is compared with a reviewed snapshot in
//! `snapshots/config__validate@<case>.snap`.
//!
//! A case file's name says what is wrong with it (`valid-*` files have nothing wrong). A case
//! that needs plugin files writes `plugin_dir: "@PLUGINS@"` for the compiled test plugins or
//! `plugin_dir: "@FIXTURES@"` for `config-cases/fixtures`, files that only pretend to be plugins.
//! The test fills these in on a temporary copy and turns every machine-specific path in the
//! output back into a placeholder, so a snapshot reads the same everywhere.
//!
//! To add a case, add a file and run with `INSTA_UPDATE=always`, then read the new `.snap`: the
//! message must name the field path and say what to do about it.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use gateway_tests::{plugin_dir, run_gateway};

#[test]
fn validate() {
    insta::glob!("config-cases/*.yaml", |case| {
        let run = CaseRun::new(case);
        let (status, stdout, stderr) = run.gateway(&["validate"]);
        let transcript = transcript(status, &run.normalise(&stdout), &run.normalise(&stderr));
        insta::assert_snapshot!(transcript);
    });
}

/// `serve` must refuse what `validate` refuses, before binding anything, with the same problems:
/// one from validation, one found only while initialising filters.
#[test]
fn serve_refuses_a_bad_config_like_validate() {
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("config-cases");
    for case in [
        "many-problems.yaml",
        "filter-config-rejected.yaml",
        "admin-public-without-token.yaml",
    ] {
        let run = CaseRun::new(&cases.join(case));
        let (validate_status, _, validate_err) = run.gateway(&["validate"]);
        let started = Instant::now();
        let (serve_status, _, serve_err) = run.gateway(&["serve"]);
        let took = started.elapsed();

        assert!(!validate_status.success(), "{case}: validate accepted it");
        assert!(
            !serve_status.success(),
            "{case}: serve exited successfully; stderr:\n{serve_err}"
        );
        assert!(
            took < Duration::from_secs(10),
            "{case}: serve took {took:?} to refuse the configuration"
        );
        let validate_problems = problem_lines(&validate_err);
        assert!(
            !validate_problems.is_empty(),
            "{case}: validate listed no problems; stderr:\n{validate_err}"
        );
        assert_eq!(
            problem_lines(&serve_err),
            validate_problems,
            "{case}: serve and validate disagree; serve's stderr:\n{serve_err}"
        );
    }
}

/// The `  - ` lines of an error report, one per problem.
fn problem_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("  - "))
        .collect()
}

/// How long a gateway run may take before the test gives up on it: loading a filter compiles
/// it, which takes a moment in a debug build, but a refusal must never wait on anything.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A case file copied, with its placeholders filled in, into a temporary folder of its own.
struct CaseRun {
    /// The copy the gateway reads.
    config: PathBuf,
    plugins: PathBuf,
    fixtures: PathBuf,
    _dir: tempfile::TempDir,
}

impl CaseRun {
    fn new(case: &Path) -> CaseRun {
        let plugins = canonical(&plugin_dir());
        let fixtures = canonical(&case.with_file_name("fixtures"));
        let text = fs::read_to_string(case)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", case.display()))
            .replace("@PLUGINS@", &plugins.display().to_string())
            .replace("@FIXTURES@", &fixtures.display().to_string());
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = canonical(dir.path()).join(case.file_name().expect("a case is a file"));
        fs::write(&config, text).expect("case copied");
        CaseRun {
            config,
            plugins,
            fixtures,
            _dir: dir,
        }
    }

    /// Runs `gateway <command> --config <copy>` to the end (or kills it at [`RUN_LIMIT`]) and
    /// returns its exit status, stdout and stderr.
    fn gateway(&self, command: &[&str]) -> (ExitStatus, String, String) {
        let args = command.iter().map(OsStr::new);
        let config = [OsStr::new("--config"), self.config.as_os_str()];
        let run = run_gateway(args.chain(config), RUN_LIMIT);
        (run.status, run.stdout, run.stderr)
    }

    /// The output with colour codes removed and machine-specific paths replaced by placeholders,
    /// longest first so a path inside another is not half-replaced.
    fn normalise(&self, output: &str) -> String {
        let config_dir = self.config.parent().expect("the copy is in a folder");
        let mut replacements = [
            (self.config.as_path(), "<CONFIG>"),
            (config_dir, "<CONFIG_DIR>"),
            (self.plugins.as_path(), "<PLUGINS>"),
            (self.fixtures.as_path(), "<FIXTURES>"),
        ]
        .map(|(path, placeholder)| (path.display().to_string(), placeholder));
        replacements.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let mut text = strip_ansi(output);
        for (path, placeholder) in replacements {
            text = text.replace(&path, placeholder);
        }
        text
    }
}

/// The snapshot: how the run ended, then what it printed on each stream.
fn transcript(status: ExitStatus, stdout: &str, stderr: &str) -> String {
    let mut text = match status.code() {
        Some(0) => "exit: ok\n".to_owned(),
        Some(code) => format!("exit: failed (code {code})\n"),
        None => format!("exit: failed ({status})\n"),
    };
    for (name, output) in [("stdout", stdout), ("stderr", stderr)] {
        if !output.is_empty() {
            text.push_str(&format!("--- {name}\n{output}"));
        }
    }
    text
}

/// Removes ANSI escape sequences (`ESC [ ... final-byte`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize()
        .unwrap_or_else(|error| panic!("cannot resolve {}: {error}", path.display()))
}
