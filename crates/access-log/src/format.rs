//! One access-log line, written straight into a worker's buffer: no `String` per field, no
//! allocation unless the buffer itself must grow.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::SystemTime;

use gateway_config::AccessLogFormat;
use http::Version;

/// What one line says about a request, borrowed from the pipeline: nothing is copied until
/// the line is formatted into the buffer.
pub struct Line<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client: IpAddr,
    /// `None` when the request head could not be read.
    pub method: Option<&'a str>,
    /// As received, before normalising.
    pub target: Option<&'a str>,
    pub version: Version,
    pub status: u16,
    /// The response body's length, when known as the head is sent.
    pub bytes: Option<u64>,
    pub duration_us: u64,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub error: Option<&'a dyn std::fmt::Display>,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// 32 lower-case hex digits, when the request is part of a trace.
    pub trace_id: Option<&'a str>,
    /// The gateway's own span in that trace: 16 lower-case hex digits.
    pub span_id: Option<&'a str>,
    /// The route's trace of decisions (`x-gateway-trace`), when it asks for it in the log.
    pub debug_trace: Option<&'a [u8]>,
}

/// Appends `line` and its newline to `out`.
pub(crate) fn write(format: AccessLogFormat, line: &Line<'_>, out: &mut Vec<u8>) {
    match format {
        AccessLogFormat::Json => json(line, out),
        AccessLogFormat::Combined => combined(line, out),
    }
    out.push(b'\n');
}

fn json(line: &Line<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"time\":\"");
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(line.time));
    out.extend_from_slice(b"\",\"request_id\":");
    json_string(line.request_id.as_bytes(), out);
    out.extend_from_slice(b",\"client\":\"");
    let _ = write!(out, "{}", line.client);
    out.extend_from_slice(b"\",\"method\":");
    json_optional(line.method.map(str::as_bytes), out);
    out.extend_from_slice(b",\"target\":");
    json_optional(line.target.map(str::as_bytes), out);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(version(line.version).as_bytes());
    out.extend_from_slice(b"\",\"status\":");
    number(u64::from(line.status), out);
    out.extend_from_slice(b",\"bytes\":");
    match line.bytes {
        Some(bytes) => number(bytes, out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"duration_us\":");
    number(line.duration_us, out);
    out.extend_from_slice(b",\"route\":");
    json_optional(line.route.map(str::as_bytes), out);
    out.extend_from_slice(b",\"upstream\":");
    json_optional(line.upstream.map(str::as_bytes), out);
    out.extend_from_slice(b",\"error\":");
    match line.error {
        Some(error) => {
            out.push(b'"');
            let _ = write!(JsonEscaped(out), "{error}");
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"referer\":");
    json_optional(line.referer, out);
    out.extend_from_slice(b",\"user_agent\":");
    json_optional(line.user_agent, out);
    out.extend_from_slice(b",\"trace_id\":");
    json_optional(line.trace_id.map(str::as_bytes), out);
    out.extend_from_slice(b",\"span_id\":");
    json_optional(line.span_id.map(str::as_bytes), out);
    // Only on traced lines, so that the usual line stays as it was.
    if let Some(trace) = line.debug_trace {
        out.extend_from_slice(b",\"debug_trace\":");
        json_optional(Some(trace), out);
    }
    out.push(b'}');
}

/// `client - - [02/Dec/2026:10:16:33 +0000] "GET /a HTTP/1.1" 200 12 "referer" "agent"`.
fn combined(line: &Line<'_>, out: &mut Vec<u8>) {
    let _ = write!(out, "{}", line.client);
    out.extend_from_slice(b" - - [");
    combined_time(line.time, out);
    out.extend_from_slice(b"] \"");
    match (line.method, line.target) {
        (Some(method), Some(target)) => {
            quoted(method.as_bytes(), out);
            out.push(b' ');
            quoted(target.as_bytes(), out);
            out.push(b' ');
            out.extend_from_slice(version(line.version).as_bytes());
        }
        // What nginx writes for a request it could not read.
        _ => out.push(b'-'),
    }
    out.extend_from_slice(b"\" ");
    number(u64::from(line.status), out);
    out.push(b' ');
    match line.bytes {
        Some(bytes) => number(bytes, out),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" \"");
    quoted(line.referer.unwrap_or(b"-"), out);
    out.extend_from_slice(b"\" \"");
    quoted(line.user_agent.unwrap_or(b"-"), out);
    out.push(b'"');
    // After the combined fields, where log parsers expect extra ones.
    if let Some(trace) = line.debug_trace {
        out.extend_from_slice(b" \"");
        quoted(trace, out);
        out.push(b'"');
    }
}

fn version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn number(value: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `02/Dec/2026:10:16:33 +0000`, rearranged from the RFC 3339 form humantime writes
/// (`2026-12-02T10:16:33Z`), so no calendar arithmetic is repeated here.
fn combined_time(time: SystemTime, out: &mut Vec<u8>) {
    let mut rfc3339 = [0u8; 20];
    let mut cursor = std::io::Cursor::new(&mut rfc3339[..]);
    let written = write!(cursor, "{}", humantime::format_rfc3339_seconds(time)).is_ok()
        && cursor.position() == 20;
    let month = std::str::from_utf8(&rfc3339[5..7])
        .ok()
        .and_then(|month| month.parse::<usize>().ok())
        .and_then(|month| MONTHS.get(month.wrapping_sub(1)));
    let Some(month) = month.filter(|_| written) else {
        // Only a time past year 9999 gets here.
        out.extend_from_slice(b"01/Jan/1970:00:00:00 +0000");
        return;
    };
    out.extend_from_slice(&rfc3339[8..10]);
    out.push(b'/');
    out.extend_from_slice(&month[..]);
    out.push(b'/');
    out.extend_from_slice(&rfc3339[0..4]);
    out.push(b':');
    out.extend_from_slice(&rfc3339[11..19]);
    out.extend_from_slice(b" +0000");
}

/// Bytes inside a combined-format quoted field, escaped as nginx does: `"`, `\`, control
/// characters and bytes past ASCII as `\xHH`, so a client cannot forge a line or a field.
fn quoted(bytes: &[u8], out: &mut Vec<u8>) {
    for &byte in bytes {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            out.extend_from_slice(b"\\x");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.push(byte);
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn json_optional(bytes: Option<&[u8]>, out: &mut Vec<u8>) {
    match bytes {
        Some(bytes) => json_string(bytes, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string of `bytes`. Header values may hold bytes that are not UTF-8: those become
/// `\u00HH`, so the line is always valid JSON.
fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        json_escape(chunk.valid(), out);
        for &byte in chunk.invalid() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)].to_ascii_lowercase());
            out.push(HEX[usize::from(byte & 0xf)].to_ascii_lowercase());
        }
    }
    out.push(b'"');
}

fn json_escape(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..0x20 | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)].to_ascii_lowercase());
            out.push(HEX[usize::from(byte & 0xf)].to_ascii_lowercase());
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Formats a `Display` value (an error) into the buffer as the inside of a JSON string.
struct JsonEscaped<'o>(&'o mut Vec<u8>);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        json_escape(text, self.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn line(error: Option<&dyn std::fmt::Display>) -> Line<'_> {
        Line {
            // 2026-12-02T10:16:33.250Z
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_206_593_250),
            request_id: "abc-1",
            client: "192.0.2.7".parse().expect("an address"),
            method: Some("GET"),
            target: Some("/a?q=\"x\""),
            version: Version::HTTP_11,
            status: 404,
            bytes: Some(57),
            duration_us: 1234,
            route: Some("shop"),
            upstream: None,
            error,
            referer: None,
            user_agent: Some(b"curl/8 \xff\n"),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            span_id: Some("00f067aa0ba902b7"),
            debug_trace: None,
        }
    }

    #[test]
    fn a_json_line_is_one_valid_object_with_every_field() {
        let error = "no route \"matched\"\n";
        let mut out = Vec::new();
        write(AccessLogFormat::Json, &line(Some(&error)), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(value["time"], "2026-12-02T10:16:33.250Z");
        assert_eq!(value["request_id"], "abc-1");
        assert_eq!(value["client"], "192.0.2.7");
        assert_eq!(value["method"], "GET");
        assert_eq!(value["target"], "/a?q=\"x\"");
        assert_eq!(value["version"], "HTTP/1.1");
        assert_eq!(value["status"], 404);
        assert_eq!(value["bytes"], 57);
        assert_eq!(value["duration_us"], 1234);
        assert_eq!(value["route"], "shop");
        assert_eq!(value["upstream"], serde_json::Value::Null);
        assert_eq!(value["error"], error);
        assert_eq!(value["referer"], serde_json::Value::Null);
        assert_eq!(value["user_agent"], "curl/8 \u{ff}\n");
        assert_eq!(value["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(value["span_id"], "00f067aa0ba902b7");
    }

    #[test]
    fn a_combined_line_is_what_log_analysers_read_and_cannot_be_forged() {
        let mut out = Vec::new();
        write(AccessLogFormat::Combined, &line(None), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "192.0.2.7 - - [02/Dec/2026:10:16:33 +0000] \"GET /a?q=\\x22x\\x22 HTTP/1.1\" 404 57 \"-\" \"curl/8 \\xFF\\x0A\"\n"
        );
    }

    #[test]
    fn an_unreadable_request_is_a_dash() {
        let mut unreadable = line(None);
        unreadable.method = None;
        unreadable.target = None;
        unreadable.bytes = None;
        let mut out = Vec::new();
        write(AccessLogFormat::Combined, &unreadable, &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        assert!(text.contains("] \"-\" 404 - \"-\""), "{text}");
    }
}
