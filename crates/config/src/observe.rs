//! What the gateway tells operators about each request: the access log.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ByteSize;

/// The access log: one line per request, gathered in per-worker buffers and written by a
/// thread of its own, so the request path never waits on the destination (as nginx's
/// `access_log ... buffer= flush=`). Read at start-up: a reload does not change it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// Write the access log at all; on by default.
    pub enabled: bool,
    /// `json` (one object per line) or `combined` (the Apache and nginx combined format).
    pub format: AccessLogFormat,
    /// `stderr`, or `{ file: PATH }` (relative to the config file's folder), appended to and
    /// reopened on SIGUSR1 so logrotate can move it away.
    pub destination: AccessLogDestination,
    /// Bytes of lines a worker gathers before handing them to the writer (nginx's `buffer=`).
    pub buffer: ByteSize,
    /// Longest a line waits in a worker's buffer before it is written (nginx's `flush=`).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Full buffers that may wait for a slow destination; past it, new lines are dropped and
    /// counted (a warning at most once a second says how many), so memory stays bounded.
    pub max_pending_buffers: usize,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: true,
            format: AccessLogFormat::Json,
            destination: AccessLogDestination::Stderr,
            buffer: ByteSize(64 * 1024),
            flush_interval: Duration::from_secs(1),
            max_pending_buffers: 16,
        }
    }
}

/// The gateway's own Prometheus metrics, at `GET /metrics` on the admin listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Count requests, filter calls, upstream tries, connections and bytes; on by default.
    /// Off, the request path reads no clock for them and `/metrics` shows only what the
    /// gateway's state says (instance health, breakers, reloads, kv, the filters' metrics).
    /// Takes effect on reload too.
    pub enabled: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics { enabled: true }
    }
}

/// How an access-log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLogFormat {
    /// One JSON object per line, with every field the gateway knows.
    Json,
    /// `client - - [time] "request line" status bytes "referer" "user agent"`, as log
    /// analysers read it.
    Combined,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "DestinationFile")]
pub enum AccessLogDestination {
    /// The gateway's standard error, with its other logs.
    Stderr,
    /// This file, created if missing, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// `stderr` or `{ file: PATH }` as written in YAML, which has no plain form for an enum
/// variant with data.
#[derive(Deserialize)]
#[serde(untagged)]
enum DestinationFile {
    Word(String),
    File(FileDestination),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDestination {
    /// The log file.
    file: PathBuf,
}

impl TryFrom<DestinationFile> for AccessLogDestination {
    type Error = String;

    fn try_from(written: DestinationFile) -> Result<Self, String> {
        match written {
            DestinationFile::Word(word) if word == "stderr" => Ok(AccessLogDestination::Stderr),
            DestinationFile::Word(word) => Err(format!(
                "`{word}` is not a destination: write `stderr` or `{{ file: PATH }}`"
            )),
            DestinationFile::File(FileDestination { file }) => Ok(AccessLogDestination::File(file)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_stderr_or_a_file() {
        let parse = |text: &str| serde_yaml_ng::from_str::<AccessLogDestination>(text);
        assert_eq!(parse("stderr").ok(), Some(AccessLogDestination::Stderr));
        assert_eq!(
            parse("{ file: /var/log/access.log }").ok(),
            Some(AccessLogDestination::File("/var/log/access.log".into()))
        );
        assert!(parse("stdout").is_err());
        assert!(parse("{ file: a, mode: b }").is_err());
    }
}
