//! Request-path normalisation, done once per request before routing and filters run.
//!
//! Routing, path filters and the upstream all have to agree on which resource a request names.
//! If each of them interpreted `/public/%2e%2e/admin` or `/a//b` in its own way, a path that a
//! filter sees as harmless could reach a protected route upstream. So the gateway rewrites every
//! path into one canonical form up front and rejects the spellings that have no safe canonical
//! form (encoded slashes, backslashes, control characters, climbing above the root).
//!
//! The steps run in a fixed order, because changing it changes the result:
//! 1. reject unsafe input,
//! 2. decode percent-escapes of unreserved characters and upper-case the hex of all others,
//! 3. remove dot segments (RFC 3986 §5.2.4), failing instead of clamping at the root,
//! 4. merge runs of slashes.
//!
//! Most real paths are already canonical, so a single validating scan decides whether any
//! rewrite is needed and the input is handed back borrowed when it is not.

use std::borrow::Cow;

/// Why a request path was refused. The messages are sent to clients, so they never quote the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("path contains an invalid percent-encoding")]
    InvalidEncoding,
    /// `%2F`: decoding it would change the segment structure, and keeping it lets two parties
    /// disagree about it, so there is no safe canonical form.
    #[error("path contains an encoded slash")]
    EncodedSlash,
    /// A raw `\` or `%5C`; some servers treat it as a separator.
    #[error("path contains a backslash")]
    Backslash,
    /// A raw NUL or `%00`.
    #[error("path contains a NUL byte")]
    Nul,
    /// A raw or percent-encoded control character other than NUL.
    #[error("path contains a control character")]
    ControlCharacter,
    /// A `..` segment with nothing left to remove.
    #[error("path climbs above the root")]
    AboveRoot,
    /// The path does not start with `/`.
    #[error("path must start with `/`")]
    NotAbsolute,
    /// A `.` or `..` segment with a `;` parameter, which Java servers read as a dot segment:
    /// refused unless the route allows it.
    #[error("path has a dot segment with a parameter")]
    DotSegmentParams,
}

/// Whether a normalised `path` has a segment that is `.` or `..` followed by a `;` parameter
/// (`/..;/`, `/.;jsessionid=x/`). Normalisation keeps them, since RFC 3986 does not make them
/// dot segments, but a backend that strips parameters first would.
pub fn has_dot_segment_params(path: &str) -> bool {
    // Nearly every path has no `;` at all: one scan settles it.
    path.contains(';')
        && path.split('/').any(|segment| {
            segment
                .split_once(';')
                .is_some_and(|(name, _)| name == "." || name == "..")
        })
}

/// Returns the canonical form of `raw`, the path part of a request target (without the query).
///
/// Borrows `raw` when it is already canonical, which is the common case.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !scan(raw)? {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw);
    // `scan` only asks for a rewrite when one of the steps below changes something, so the
    // result always differs from `raw`.
    Ok(Cow::Owned(remove_dots_and_merge(&decoded)?))
}

/// Validates `raw` and reports whether it needs rewriting.
fn scan(raw: &str) -> Result<bool, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut needs_rewrite = false;
    // Start of the current segment, to spot `.` and `..` without a second pass.
    let mut segment_start = 1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let value = escape_at(bytes, i)?;
                check_decoded_byte(value)?;
                // Lower-case hex or an unreserved byte means the escape is not canonical.
                if is_unreserved(value) || bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) {
                    needs_rewrite = true;
                }
                i += 3;
                continue;
            }
            b'/' => {
                if i > 0 {
                    let segment = &bytes[segment_start..i];
                    // An empty segment between two slashes is a `//` run.
                    if segment.is_empty() || segment == b"." || segment == b".." {
                        needs_rewrite = true;
                    }
                }
                segment_start = i + 1;
            }
            _ => check_raw_byte(b)?,
        }
        i += 1;
    }
    let last = &bytes[segment_start..];
    if last == b"." || last == b".." {
        needs_rewrite = true;
    }
    Ok(needs_rewrite)
}

/// Decodes the escape whose `%` is at `i`.
fn escape_at(bytes: &[u8], i: usize) -> Result<u8, PathError> {
    match (
        bytes.get(i + 1).copied().and_then(hex_value),
        bytes.get(i + 2).copied().and_then(hex_value),
    ) {
        (Some(high), Some(low)) => Ok(high << 4 | low),
        _ => Err(PathError::InvalidEncoding),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_raw_byte(b: u8) -> Result<(), PathError> {
    match b {
        b'\\' => Err(PathError::Backslash),
        0 => Err(PathError::Nul),
        0x01..=0x1f | 0x7f => Err(PathError::ControlCharacter),
        _ => Ok(()),
    }
}

fn check_decoded_byte(b: u8) -> Result<(), PathError> {
    if b == b'/' {
        return Err(PathError::EncodedSlash);
    }
    check_raw_byte(b)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Step 2. `raw` has passed [`scan`], so every `%` starts a valid escape.
fn decode_unreserved(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        // `%` is ASCII, so these indices are always char boundaries.
        out.push_str(&raw[run_start..i]);
        match escape_at(bytes, i) {
            Ok(value) if is_unreserved(value) => out.push(char::from(value)),
            Ok(value) => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(value >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(value & 0xf)]));
            }
            // Unreachable after `scan`; copying the bytes keeps this function total anyway.
            Err(_) => out.push_str(&raw[i..(i + 3).min(raw.len())]),
        }
        i += 3;
        run_start = i.min(raw.len());
    }
    out.push_str(&raw[run_start..]);
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Steps 3 and 4 on a decoded path that starts with `/`.
fn remove_dots_and_merge(decoded: &str) -> Result<String, PathError> {
    let body = decoded.strip_prefix('/').unwrap_or(decoded);
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                // Empty segments count as levels here: merging happens after dot removal, so
                // `/a//../b` is `/a/b`.
                if kept.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            other => {
                kept.push(other);
                continue;
            }
        }
        // A dot segment at the end leaves the path pointing at a directory (RFC 3986 §5.2.4),
        // so the trailing slash is kept.
        if is_last {
            kept.push("");
        }
    }

    let mut out = String::with_capacity(decoded.len());
    for segment in kept.iter().filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    let trailing_slash = kept.last().is_some_and(|s| s.is_empty());
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_to_canonical_form() {
        let cases = [
            ("/public/../admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b", "/a/b"),
            ("/a/%2e%2e/b", "/b"),
            ("/a//../b", "/a/b"),
            ("/%7Euser", "/~user"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/.", "/"),
            ("/./", "/"),
            ("//", "/"),
            ("///a", "/a"),
            ("/a//", "/a/"),
            ("/%41%62%2D%5f%2E", "/Ab-_."),
            ("/%2e", "/"),
            ("/a/%2E./b", "/b"),
            ("/a/.%2e", "/"),
            ("/%20x%3f", "/%20x%3F"),
            ("/a/b/c/./../../d", "/a/d"),
            ("//..", "/"),
            ("/é/%c3", "/é/%C3"),
        ];
        for (input, expected) in cases {
            match normalize_path(input) {
                Ok(Cow::Owned(out)) => assert_eq!(out, expected, "input {input:?}"),
                other => panic!("input {input:?}: expected owned {expected:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        let cases = [
            "/",
            "/a",
            "/a/b/",
            "/api/v1/users/42",
            "/caf%C3%A9",
            "/a/.../b",
            "/.well-known/x",
            "/a..b/..c/c..",
            "/a/..b/c.",
            "/%20",
            "/é",
        ];
        for input in cases {
            match normalize_path(input) {
                Ok(Cow::Borrowed(out)) => assert_eq!(out, input),
                other => panic!("input {input:?}: expected borrowed, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_unsafe_paths() {
        let cases = [
            ("/%2E%2E/x", PathError::AboveRoot),
            ("/..", PathError::AboveRoot),
            ("/a/b/../../..", PathError::AboveRoot),
            ("/../a", PathError::AboveRoot),
            ("/a/%2e%2e/%2e%2e", PathError::AboveRoot),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%zz", PathError::InvalidEncoding),
            ("/a%", PathError::InvalidEncoding),
            ("/a%4", PathError::InvalidEncoding),
            ("/a%g1", PathError::InvalidEncoding),
            ("/a%%41", PathError::InvalidEncoding),
            ("/a\\b", PathError::Backslash),
            ("/a%5Cb", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/a\0b", PathError::Nul),
            ("/a%00b", PathError::Nul),
            ("/a\tb", PathError::ControlCharacter),
            ("/a\nb", PathError::ControlCharacter),
            ("/a\x7fb", PathError::ControlCharacter),
            ("/a%0d%0a", PathError::ControlCharacter),
            ("/a%7F", PathError::ControlCharacter),
            ("/a%1f", PathError::ControlCharacter),
            ("", PathError::NotAbsolute),
            ("a/b", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("http://example.com/a", PathError::NotAbsolute),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_path(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn rejection_beats_rewriting() {
        // Step 1 runs on the whole path first, so a later bad byte wins over an earlier `..`.
        assert_eq!(normalize_path("/../a%2F"), Err(PathError::EncodedSlash));
        assert_eq!(normalize_path("/a/../b\\"), Err(PathError::Backslash));
    }

    #[test]
    fn output_is_a_fixed_point() {
        let inputs = [
            "/public/../admin",
            "/a//b/./c/",
            "/%7e%41/%c3%a9/..",
            "/x/%2E/",
        ];
        for input in inputs {
            let once = match normalize_path(input) {
                Ok(out) => out.into_owned(),
                Err(e) => panic!("input {input:?}: {e}"),
            };
            assert!(
                matches!(normalize_path(&once), Ok(Cow::Borrowed(_))),
                "normalising {once:?} again changed it"
            );
        }
    }

    #[test]
    fn every_short_combination_is_consistent() {
        // Exhaustive over short paths built from the pieces that interact: an owned result
        // must differ from its input, and any result must be a fixed point.
        const PIECES: [&str; 7] = ["/", ".", "a", "%2e", "%2E", "%41", "%c3"];
        let mut stack = vec![String::from("/")];
        let mut checked = 0;
        while let Some(path) = stack.pop() {
            match normalize_path(&path) {
                Ok(Cow::Owned(out)) => {
                    assert_ne!(out, path, "owned but unchanged");
                    assert!(
                        matches!(normalize_path(&out), Ok(Cow::Borrowed(_))),
                        "{path:?} -> {out:?} is not a fixed point"
                    );
                }
                Ok(Cow::Borrowed(out)) => assert_eq!(out, path),
                Err(e) => assert_eq!(e, PathError::AboveRoot, "input {path:?}"),
            }
            checked += 1;
            if path.len() < 10 {
                stack.extend(PIECES.iter().map(|piece| format!("{path}{piece}")));
            }
        }
        assert!(checked > 10_000, "only {checked} paths generated");
    }

    #[test]
    fn messages_do_not_echo_the_path() {
        let secret = "/very-secret-segment%2F";
        let message = match normalize_path(secret) {
            Err(e) => e.to_string(),
            Ok(out) => panic!("expected an error, got {out:?}"),
        };
        assert_eq!(message, "path contains an encoded slash");
    }

    #[test]
    fn dot_segments_with_parameters_are_found() {
        for path in ["/public/..;/admin", "/.;/x", "/a/..;jsessionid=1", "/..;"] {
            assert!(has_dot_segment_params(path), "{path}");
        }
        for path in ["/a;b/c", "/...;/x", "/a/..b;c", "/plain", "/;/x", "/a.;"] {
            assert!(!has_dot_segment_params(path), "{path}");
        }
        // Decoding comes first: an encoded dot is a dot by the time this is asked.
        let normalised = normalize_path("/public/%2e%2e;/admin").expect("normalised");
        assert!(has_dot_segment_params(&normalised), "{normalised}");
    }
}
