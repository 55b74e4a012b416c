//! What the gateway tells operators about each request: the access log, and the per-route
//! trace of filter decisions (`debug_trace`).

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
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
    /// counted (one warning per flush interval says how many), so memory stays bounded.
    pub max_pending_buffers: usize,
    /// Add the filters' decisions to the JSON line of requests that got a debug trace.
    pub decisions: bool,
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
            decisions: false,
        }
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
#[serde(rename_all = "kebab-case")]
pub enum AccessLogDestination {
    /// The gateway's standard error, with its other logs.
    Stderr,
    /// This file, created if missing, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// The per-request trace of filter decisions: the answer carries an `x-gateway-trace` header
/// listing each filter, its phase, what it decided and how long it took. Only for clients it
/// allows; give `clients`, `secret` or both (a client must then meet both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugTrace {
    /// Client address ranges (`10.0.0.0/8`, `::1/128`) allowed a trace; any address when
    /// omitted (then `secret` is required).
    #[serde(default)]
    pub clients: Option<Vec<IpNet>>,
    /// A value the client must send in `x-gateway-debug` (8 to 256 bytes); the header is
    /// never forwarded upstream.
    #[serde(default)]
    pub secret: Option<String>,
}

impl DebugTrace {
    /// Whether a request from `client` carrying `secret` (its `x-gateway-debug`) gets a trace.
    pub fn allows(&self, client: std::net::IpAddr, secret: Option<&[u8]>) -> bool {
        let address_allowed = self
            .clients
            .as_ref()
            .is_none_or(|ranges| ranges.iter().any(|range| range.contains(&client)));
        let secret_given = match (&self.secret, secret) {
            (None, _) => true,
            (Some(expected), Some(given)) => same_secret(expected.as_bytes(), given),
            (Some(_), None) => false,
        };
        address_allowed && secret_given
    }
}

/// Compares in time that depends only on the lengths, so a client cannot find the secret byte
/// by byte from how fast it is refused.
fn same_secret(expected: &[u8], given: &[u8]) -> bool {
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_needs_every_condition_given() {
        let both = DebugTrace {
            clients: Some(vec!["10.0.0.0/8".parse().expect("a range")]),
            secret: Some("let-me-see".to_owned()),
        };
        let inside = "10.1.2.3".parse().expect("an address");
        let outside = "192.0.2.1".parse().expect("an address");
        assert!(both.allows(inside, Some(b"let-me-see")));
        assert!(!both.allows(inside, Some(b"let-me-sea")));
        assert!(!both.allows(inside, Some(b"let-me")));
        assert!(!both.allows(inside, None));
        assert!(!both.allows(outside, Some(b"let-me-see")));

        let clients_only = DebugTrace {
            secret: None,
            ..both.clone()
        };
        assert!(clients_only.allows(inside, None));
        assert!(!clients_only.allows(outside, None));

        let secret_only = DebugTrace {
            clients: None,
            ..both
        };
        assert!(secret_only.allows(outside, Some(b"let-me-see")));
        assert!(!secret_only.allows(outside, None));
    }
}
