//! What a phase hands back besides its action: its edits, context entries and metric updates,
//! as one byte string.
//!
//! A list of edits as WIT variants costs the filter an allocation per string and one for the
//! list, and the host one per string again; in Wasm each allocation weighs (measured: see
//! `docs/decisions/0006-contract-0.2.md`). Written into one buffer as they are made, a call's
//! changes cost the filter one allocation and the host one copy. The SDK writes them; the
//! gateway and the SDK's test host read them with [`changes`], borrowing from the buffer.
//!
//! The encoding follows [`crate::input`]: a kind byte, a little-endian `u32` length, that many
//! bytes. A name and value pair is a little-endian `u16` name length, the name, the value.
//! Kinds: 1 set the path, 2 set the query, 3 remove the query (empty), 4 set a header, 5 append
//! a header, 6 remove a header (the name), 7 set the status (`u16`), 8 set the body, 9 set a
//! context entry, 10 remove a context entry (the key), 11 a metric update (`u32` metric, `u32`
//! series, `f64` value, little-endian). They apply in order.
//!
//! ```
//! use gateway_rules::changes::{self, Change, Writer};
//!
//! let mut writer = Writer::default();
//! writer.push(&Change::SetHeader("x-tenant", "acme"));
//! writer.push(&Change::Metric { metric: 0, series: 1, value: 1.0 });
//! let bytes = writer.finish();
//! let read: Vec<Change> = changes::changes(&bytes).collect::<Result<_, _>>().expect("well formed");
//! assert_eq!(read, [Change::SetHeader("x-tenant", "acme"), Change::Metric { metric: 0, series: 1, value: 1.0 }]);
//! ```

use crate::input::{DecodeError, put_field, put_pair, split_pair, text};

const SET_PATH: u8 = 1;
const SET_QUERY: u8 = 2;
const REMOVE_QUERY: u8 = 3;
const SET_HEADER: u8 = 4;
const APPEND_HEADER: u8 = 5;
const REMOVE_HEADER: u8 = 6;
const SET_STATUS: u8 = 7;
const SET_BODY: u8 = 8;
const SET_CONTEXT: u8 = 9;
const REMOVE_CONTEXT: u8 = 10;
const METRIC: u8 = 11;

/// One change, borrowed from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change<'a> {
    /// Request phase only.
    SetPath(&'a str),
    /// Request phase only; `None` removes the query.
    SetQuery(Option<&'a str>),
    /// Replaces every value of a header of the phase's message.
    SetHeader(&'a str, &'a str),
    /// Adds a value to a header of the phase's message.
    AppendHeader(&'a str, &'a str),
    /// Removes every value of a header of the phase's message.
    RemoveHeader(&'a str),
    /// Response phase only.
    SetStatus(u16),
    /// Replaces the body the filter was handed whole.
    SetBody(&'a [u8]),
    SetContext(&'a str, &'a str),
    RemoveContext(&'a str),
    /// Adds to a counter's series, or observes a value in a histogram's.
    Metric {
        metric: u32,
        series: u32,
        value: f64,
    },
}

/// Writes changes as they are made.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// A writer with room for `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(capacity),
        }
    }

    fn field(&mut self, kind: u8, parts: &[&[u8]]) {
        put_field(&mut self.bytes, kind, parts);
    }

    fn pair(&mut self, kind: u8, name: &str, value: &[u8]) {
        put_pair(&mut self.bytes, kind, name, value);
    }

    /// Appends a change.
    pub fn push(&mut self, change: &Change<'_>) {
        match *change {
            Change::SetPath(path) => self.field(SET_PATH, &[path.as_bytes()]),
            Change::SetQuery(Some(query)) => self.field(SET_QUERY, &[query.as_bytes()]),
            Change::SetQuery(None) => self.field(REMOVE_QUERY, &[]),
            Change::SetHeader(name, value) => self.pair(SET_HEADER, name, value.as_bytes()),
            Change::AppendHeader(name, value) => self.pair(APPEND_HEADER, name, value.as_bytes()),
            Change::RemoveHeader(name) => self.field(REMOVE_HEADER, &[name.as_bytes()]),
            Change::SetStatus(status) => self.field(SET_STATUS, &[&status.to_le_bytes()]),
            Change::SetBody(body) => self.field(SET_BODY, &[body]),
            Change::SetContext(key, value) => self.pair(SET_CONTEXT, key, value.as_bytes()),
            Change::RemoveContext(key) => self.field(REMOVE_CONTEXT, &[key.as_bytes()]),
            Change::Metric {
                metric,
                series,
                value,
            } => self.field(
                METRIC,
                &[
                    &metric.to_le_bytes(),
                    &series.to_le_bytes(),
                    &value.to_le_bytes(),
                ],
            ),
        }
    }

    /// The changes written so far, in order.
    pub fn iter(&self) -> impl Iterator<Item = Change<'_>> {
        // Written by this type, so always readable.
        changes(&self.bytes).filter_map(Result::ok)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends everything another writer wrote.
    pub fn extend(&mut self, other: &Writer) {
        self.bytes.extend_from_slice(&other.bytes);
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

fn change(kind: u8, value: &[u8]) -> Result<Change<'_>, DecodeError> {
    Ok(match kind {
        SET_PATH => Change::SetPath(text(value)?),
        SET_QUERY => Change::SetQuery(Some(text(value)?)),
        REMOVE_QUERY => Change::SetQuery(None),
        SET_HEADER => {
            let (name, value) = split_pair(value)?;
            Change::SetHeader(name, value)
        }
        APPEND_HEADER => {
            let (name, value) = split_pair(value)?;
            Change::AppendHeader(name, value)
        }
        REMOVE_HEADER => Change::RemoveHeader(text(value)?),
        SET_STATUS => Change::SetStatus(u16::from_le_bytes(
            value
                .try_into()
                .map_err(|_| DecodeError::new("a status is not two bytes"))?,
        )),
        SET_BODY => Change::SetBody(value),
        SET_CONTEXT => {
            let (key, value) = split_pair(value)?;
            Change::SetContext(key, value)
        }
        REMOVE_CONTEXT => Change::RemoveContext(text(value)?),
        METRIC => {
            let bytes: &[u8; 16] = value
                .try_into()
                .map_err(|_| DecodeError::new("a metric update is not 16 bytes"))?;
            let (metric, rest) = bytes.split_at(4);
            let (series, value) = rest.split_at(4);
            let word = |part: &[u8]| u32::from_le_bytes(part.try_into().unwrap_or_default());
            Change::Metric {
                metric: word(metric),
                series: word(series),
                value: f64::from_le_bytes(value.try_into().unwrap_or_default()),
            }
        }
        _ => return Err(DecodeError::new("a change of an unknown kind")),
    })
}

/// Reads the changes of a phase, in order, borrowing from `bytes`.
pub fn changes(bytes: &[u8]) -> impl Iterator<Item = Result<Change<'_>, DecodeError>> {
    crate::input::fields(bytes).map(|field| {
        let (kind, value) = field?;
        change(kind, value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_survives_the_round_trip() {
        let all = [
            Change::SetPath("/a"),
            Change::SetQuery(Some("")),
            Change::SetQuery(None),
            Change::SetHeader("x-a", "café"),
            Change::AppendHeader("x-a", ""),
            Change::RemoveHeader("x-b"),
            Change::SetStatus(418),
            Change::SetBody(&[0, 159, 146, 150]),
            Change::SetContext("auth.subject", "alice"),
            Change::RemoveContext("k"),
            Change::Metric {
                metric: 3,
                series: 7,
                value: -0.5,
            },
        ];
        let mut writer = Writer::default();
        for change in &all {
            writer.push(change);
        }
        assert_eq!(writer.iter().collect::<Vec<_>>(), all);
        let bytes = writer.finish();
        let read: Vec<Change> = changes(&bytes).collect::<Result<_, _>>().expect("readable");
        assert_eq!(read, all);
    }

    #[test]
    fn a_cut_or_unknown_change_is_an_error_not_a_panic() {
        let mut writer = Writer::default();
        writer.push(&Change::SetHeader("x-a", "b"));
        writer.push(&Change::SetStatus(200));
        let bytes = writer.finish();
        for cut in 0..bytes.len() {
            let _ = changes(&bytes[..cut]).count();
        }
        assert!(changes(&bytes[..bytes.len() - 1]).any(|change| change.is_err()));
        assert!(changes(&[99, 0, 0, 0, 0]).any(|change| change.is_err()));
        assert!(changes(&[SET_STATUS, 1, 0, 0, 0, 7]).any(|change| change.is_err()));
    }
}
