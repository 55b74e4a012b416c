//! Stored answers and the keys they are stored under.
//!
//! Key layout, in the filter's kv namespace (on Redis `<key_prefix>:<filter>:<key>`):
//!
//! - `<zone> <host><path>[?<query>]`: the URL key. Spaces cannot occur in a host, a
//!   normalised path or a query, so a space ends the URL: a purge of one URL takes the key and
//!   everything that starts with it and a space, a purge by prefix everything that starts with
//!   `<zone> <host><prefix>`, a purge of a zone everything that starts with `<zone> `.
//! - ` k:<parts>` appended: the configured key parts (headers, cookies, context entries, the
//!   user's credential digest), percent-encoded.
//! - At a key whose answer had a `Vary`, a marker (`VARY <generation> <names>`) instead of the
//!   answer, and each variant under `<key> v<generation>:<values>`. A new set of names starts
//!   a new generation, so variants stored under the old names are never found again; deleting
//!   the marker (invalidation, purge) makes every variant unreachable at once.
//! - At a key whose last answer could not be stored, `HFM` for a short while (hit-for-miss):
//!   requests for it go upstream at once instead of queueing behind each other's lock.
//! - `<zone> <host><path>[?<query>] !inv`: when entries carry key parts, the time of the last
//!   invalidation of the URL: an entry stored before it is treated as absent, whoever's it is.
//!
//! An entry is its metadata as one line of JSON, a newline, and the body as received.

use serde::{Deserialize, Serialize};

/// The longest key stored; longer URLs pass through uncached. The store's own limit is 1024
/// bytes, and variants add to the key.
pub(crate) const MAX_KEY: usize = 768;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The status.
    #[serde(rename = "s")]
    pub status: u16,
    /// The headers, lower-case names, in order, without hop-by-hop ones.
    #[serde(rename = "h")]
    pub headers: Vec<(String, String)>,
    /// When the answer was received, milliseconds since the epoch.
    #[serde(rename = "r")]
    pub response_ms: u64,
    /// Its corrected initial age, seconds (RFC 9111 §4.2.3).
    #[serde(rename = "a")]
    pub initial_age: u64,
    /// Its freshness lifetime, seconds.
    #[serde(rename = "l")]
    pub lifetime: u64,
    /// The body.
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl Entry {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub(crate) fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The entry, or `None` for bytes this filter did not write (or an older layout).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Entry> {
        let end = bytes.iter().position(|&byte| byte == b'\n')?;
        let mut entry: Entry = serde_json::from_slice(&bytes[..end]).ok()?;
        entry.body = bytes[end + 1..].to_vec();
        Some(entry)
    }
}

/// What is stored at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stored {
    Entry(Entry),
    /// The answer varies on these request headers; its variants are under this generation.
    Vary {
        generation: String,
        names: Vec<String>,
    },
    /// The last answer was not storable: requests go upstream without waiting for each other.
    HitForMiss,
}

/// What marks a key whose last answer was not storable.
pub(crate) const HIT_FOR_MISS: &[u8] = b"HFM";

const VARY_MARKER: &str = "VARY ";

impl Stored {
    pub(crate) fn decode(bytes: &[u8]) -> Option<Stored> {
        if bytes == HIT_FOR_MISS {
            return Some(Stored::HitForMiss);
        }
        match bytes.strip_prefix(VARY_MARKER.as_bytes()) {
            Some(rest) => {
                let text = std::str::from_utf8(rest).ok()?;
                let (generation, names) = text.split_once(' ')?;
                Some(Stored::Vary {
                    generation: generation.to_owned(),
                    names: names.split(',').map(str::to_owned).collect(),
                })
            }
            None => Entry::decode(bytes).map(Stored::Entry),
        }
    }
}

pub(crate) fn vary_marker(generation: &str, names: &[String]) -> String {
    format!("{VARY_MARKER}{generation} {}", names.join(","))
}

/// Percent-encodes everything but unreserved characters, so a value can never forge a
/// separator of the key layout, nor a glob character of a Redis pattern.
pub(crate) fn escape(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// The URL key: zone, host, path and query (the layout the admin API's purge shares).
pub(crate) use gateway_rules::cache::url_key;

/// Where the last invalidation time of a URL is kept.
pub(crate) fn tombstone_key(url_key: &str) -> String {
    format!("{url_key} !inv")
}

/// The key of one variant: the request's values of the names the answer varies on.
///
/// Values are normalised as RFC 9111 §4.1 allows: every line of the field joined with commas,
/// whitespace around the commas dropped; an absent header differs from an empty one.
pub(crate) fn variant_key(key: &str, generation: &str, values: &[Option<Vec<String>>]) -> String {
    let mut variant = format!("{key} v{generation}:");
    for (at, value) in values.iter().enumerate() {
        if at > 0 {
            variant.push('|');
        }
        match value {
            None => variant.push('!'),
            Some(lines) => {
                let joined: Vec<&str> = lines
                    .iter()
                    .flat_map(|line| line.split(','))
                    .map(str::trim)
                    .collect();
                escape(&joined.join(","), &mut variant);
            }
        }
    }
    variant
}
