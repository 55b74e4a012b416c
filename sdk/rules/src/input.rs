//! What a phase is handed with its call, and how it crosses into the filter: one byte string.
//!
//! Every string the host hands a Wasm call is a separate allocation the host must ask the guest
//! for, itself a call into Wasm (about a third of a filter call, measured: see
//! `docs/decisions/0006-contract-0.2.md`). So the declared fields, headers, context entries and
//! the body go in as one `list<u8>`, one allocation whatever the filter declared, and nothing
//! at all when it declared nothing. The gateway encodes it; the SDK decodes it.
//!
//! The encoding is a sequence of fields, each a kind byte, a little-endian `u32` length and that
//! many bytes. A header or context entry holds a little-endian `u16` name length, the name, and
//! the value. Kinds: 1 method, 2 path, 3 query, 4 authority, 5 client IP, 6 header (every value
//! of a declared header, in order, one field each), 7 context entry, 8 the body read whole,
//! 9 the body was too large (empty). A field that is absent is not sent.
//!
//! ```
//! use gateway_rules::input::{InputBody, RequestInput, Writer};
//!
//! let mut writer = Writer::default();
//! writer.path("/items/7");
//! writer.header("x-tenant", b"acme");
//! writer.body(Some(b"{}"));
//! let input = RequestInput::decode(&writer.finish()).expect("well formed");
//! assert_eq!(input.path.as_deref(), Some("/items/7"));
//! assert_eq!(input.headers, [("x-tenant".to_owned(), "acme".to_owned())]);
//! assert_eq!(input.body, Some(InputBody::Complete(b"{}".to_vec())));
//! ```

const METHOD: u8 = 1;
const PATH: u8 = 2;
const QUERY: u8 = 3;
const AUTHORITY: u8 = 4;
const CLIENT_IP: u8 = 5;
const HEADER: u8 = 6;
const CONTEXT: u8 = 7;
const BODY: u8 = 8;
const BODY_TOO_LARGE: u8 = 9;

/// A body as a filter that asked for it is handed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputBody {
    /// The whole body, within the filter's limit.
    Complete(Vec<u8>),
    /// Longer than the filter's limit: not handed over, it streams on untouched.
    TooLarge,
}

/// What a request phase is handed: exactly what the filter declared, where present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInput {
    pub method: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub authority: Option<String>,
    pub client_ip: Option<String>,
    /// The declared headers present, one entry per value, in order.
    pub headers: Vec<(String, String)>,
    /// The declared context entries present.
    pub context: Vec<(String, String)>,
    pub body: Option<InputBody>,
}

/// What a response phase is handed besides the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseInput {
    /// The declared response headers present, one entry per value, in order.
    pub headers: Vec<(String, String)>,
    /// The declared context entries present.
    pub context: Vec<(String, String)>,
    pub body: Option<InputBody>,
}

/// Why an input could not be read: the host and the SDK disagree on the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the gateway handed the filter an input it cannot read ({0}): are both built for the same contract?"
)]
pub struct DecodeError(&'static str);

impl DecodeError {
    pub(crate) fn new(reason: &'static str) -> DecodeError {
        DecodeError(reason)
    }
}

/// Encodes an input, from borrowed parts: the host copies each byte once, into the buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

/// Appends one field: its kind, its length, its bytes (given in parts).
pub(crate) fn put_field(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    out.push(kind);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// Appends a name and value field. Names are header names or context keys: far shorter than a
/// u16 allows.
pub(crate) fn put_pair(out: &mut Vec<u8>, kind: u8, name: &str, value: &[u8]) {
    let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    let name = &name.as_bytes()[..usize::from(name_len)];
    put_field(out, kind, &[&name_len.to_le_bytes(), name, value]);
}

/// Splits a name and value field, both as UTF-8 text.
pub(crate) fn split_pair(bytes: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or(DecodeError("a name is cut short"))?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return Err(DecodeError("a name is cut short"));
    }
    let (name, value) = rest.split_at(len);
    Ok((text(name)?, text(value)?))
}

/// A field's bytes as UTF-8 text.
pub(crate) fn text(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError("a text field is not UTF-8"))
}

impl Writer {
    fn field(&mut self, kind: u8, parts: &[&[u8]]) {
        put_field(&mut self.bytes, kind, parts);
    }

    fn pair(&mut self, kind: u8, name: &str, value: &[u8]) {
        put_pair(&mut self.bytes, kind, name, value);
    }

    pub fn method(&mut self, method: &str) {
        self.field(METHOD, &[method.as_bytes()]);
    }

    pub fn path(&mut self, path: &str) {
        self.field(PATH, &[path.as_bytes()]);
    }

    pub fn query(&mut self, query: &str) {
        self.field(QUERY, &[query.as_bytes()]);
    }

    pub fn authority(&mut self, authority: &str) {
        self.field(AUTHORITY, &[authority.as_bytes()]);
    }

    pub fn client_ip(&mut self, client_ip: &str) {
        self.field(CLIENT_IP, &[client_ip.as_bytes()]);
    }

    /// One value of a header; a value that is not UTF-8 must not be written.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        self.pair(HEADER, name, value);
    }

    pub fn context(&mut self, key: &str, value: &str) {
        self.pair(CONTEXT, key, value.as_bytes());
    }

    /// The body: `Some` whole, `None` too large.
    pub fn body(&mut self, body: Option<&[u8]>) {
        match body {
            Some(bytes) => self.field(BODY, &[bytes]),
            None => self.field(BODY_TOO_LARGE, &[]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// The fields of an encoded input or outcome, in order: each its kind and its bytes.
pub(crate) fn fields(bytes: &[u8]) -> Fields<'_> {
    Fields(bytes)
}

/// Reads the fields of an input, in order.
pub(crate) struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u8, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.0.split_first()?;
        let Some((len, rest)) = rest.split_first_chunk::<4>() else {
            self.0 = &[];
            return Some(Err(DecodeError("a field is cut short")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            self.0 = &[];
            return Some(Err(DecodeError("a field is cut short")));
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Some(Ok((kind, value)))
    }
}

fn owned(bytes: &[u8]) -> Result<String, DecodeError> {
    text(bytes).map(str::to_owned)
}

fn pair(bytes: &[u8]) -> Result<(String, String), DecodeError> {
    let (name, value) = split_pair(bytes)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The fields both phases share.
fn shared(
    kind: u8,
    value: &[u8],
    headers: &mut Vec<(String, String)>,
    context: &mut Vec<(String, String)>,
    body: &mut Option<InputBody>,
) -> Result<(), DecodeError> {
    match kind {
        HEADER => headers.push(pair(value)?),
        CONTEXT => context.push(pair(value)?),
        BODY => *body = Some(InputBody::Complete(value.to_vec())),
        BODY_TOO_LARGE => *body = Some(InputBody::TooLarge),
        _ => return Err(DecodeError("a field of an unknown kind")),
    }
    Ok(())
}

impl RequestInput {
    pub fn decode(bytes: &[u8]) -> Result<RequestInput, DecodeError> {
        let mut input = RequestInput::default();
        for field in Fields(bytes) {
            let (kind, value) = field?;
            match kind {
                METHOD => input.method = Some(owned(value)?),
                PATH => input.path = Some(owned(value)?),
                QUERY => input.query = Some(owned(value)?),
                AUTHORITY => input.authority = Some(owned(value)?),
                CLIENT_IP => input.client_ip = Some(owned(value)?),
                _ => shared(
                    kind,
                    value,
                    &mut input.headers,
                    &mut input.context,
                    &mut input.body,
                )?,
            }
        }
        Ok(input)
    }

    /// The encoding of this input; the test host hands inputs over this way too.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        let fields = [
            (METHOD, &self.method),
            (PATH, &self.path),
            (QUERY, &self.query),
            (AUTHORITY, &self.authority),
            (CLIENT_IP, &self.client_ip),
        ];
        for (kind, value) in fields {
            if let Some(value) = value {
                writer.field(kind, &[value.as_bytes()]);
            }
        }
        write_shared(
            &mut writer,
            &self.headers,
            &self.context,
            self.body.as_ref(),
        );
        writer.finish()
    }
}

impl ResponseInput {
    pub fn decode(bytes: &[u8]) -> Result<ResponseInput, DecodeError> {
        let mut input = ResponseInput::default();
        for field in Fields(bytes) {
            let (kind, value) = field?;
            shared(
                kind,
                value,
                &mut input.headers,
                &mut input.context,
                &mut input.body,
            )?;
        }
        Ok(input)
    }

    /// The encoding of this input.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        write_shared(
            &mut writer,
            &self.headers,
            &self.context,
            self.body.as_ref(),
        );
        writer.finish()
    }
}

fn write_shared(
    writer: &mut Writer,
    headers: &[(String, String)],
    context: &[(String, String)],
    body: Option<&InputBody>,
) {
    for (name, value) in headers {
        writer.header(name, value.as_bytes());
    }
    for (key, value) in context {
        writer.context(key, value);
    }
    match body {
        Some(InputBody::Complete(bytes)) => writer.body(Some(bytes)),
        Some(InputBody::TooLarge) => writer.body(None),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_survive_the_round_trip() {
        let request = RequestInput {
            method: Some("POST".into()),
            path: Some("/a".into()),
            query: Some(String::new()),
            authority: None,
            client_ip: Some("::1".into()),
            headers: vec![("x-a".into(), "1".into()), ("x-a".into(), "café".into())],
            context: vec![("auth.subject".into(), "alice".into())],
            body: Some(InputBody::Complete(vec![0, 1, 2])),
        };
        assert_eq!(RequestInput::decode(&request.encode()), Ok(request));
        let response = ResponseInput {
            headers: vec![("etag".into(), "\"x\"".into())],
            context: Vec::new(),
            body: Some(InputBody::TooLarge),
        };
        assert_eq!(ResponseInput::decode(&response.encode()), Ok(response));
        assert_eq!(RequestInput::decode(&[]), Ok(RequestInput::default()));
    }

    #[test]
    fn a_cut_or_unknown_input_is_an_error_not_a_panic() {
        let whole = RequestInput {
            path: Some("/abc".into()),
            headers: vec![("x".into(), "y".into())],
            ..RequestInput::default()
        }
        .encode();
        for cut in 1..whole.len() {
            let _ = RequestInput::decode(&whole[..cut]);
        }
        assert!(RequestInput::decode(&whole[..whole.len() - 1]).is_err());
        assert!(RequestInput::decode(&[42, 0, 0, 0, 0]).is_err());
        assert!(ResponseInput::decode(&[PATH, 0, 0, 0, 0]).is_err());
    }
}
