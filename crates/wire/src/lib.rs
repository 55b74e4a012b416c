//! HTTP/1.1 on the wire (RFC 9112), as the gateway speaks it on both of its sides, without I/O:
//! the connection loops (`gateway-server` towards clients, `gateway-upstream` towards instances)
//! read into buffers and hand them here.
//! - [`client`]: requests read from clients and the responses written back to them;
//! - [`upstream`]: requests written to instances and the responses read from them;
//! - [`fields`]: the header fields the gateway writes itself (the request id, client addresses).
//!
//! What every side shares lives here: header tokens, chunk-size lines, and reading a body out
//! of whatever the connection has delivered, however the reads split it.
//!
//! The gateway has its own codec rather than hyper's for speed (docs/decisions/0001 and 0002),
//! so the codec carries the burden of proof: every framing the edge checks let through must be
//! read here as every other reader reads it.

pub mod client;
pub mod fields;
pub mod upstream;

use std::io::Write;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName};
use http_body::SizeHint;

/// The longest chunk extension, and the most trailer bytes read past.
const MAX_CHUNK_EXTENSION: usize = 1024;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why what the peer sent cannot be read as HTTP/1.1.
pub type Malformed = &'static str;

/// The line that starts a chunk of `length` bytes.
#[inline]
pub fn chunk_size_line(length: usize) -> ChunkSizeLine {
    let mut line = ChunkSizeLine {
        bytes: [0; 18],
        length: 0,
    };
    let mut cursor = std::io::Cursor::new(&mut line.bytes[..]);
    let _ = write!(cursor, "{length:x}\r\n");
    line.length = usize::try_from(cursor.position()).unwrap_or(0);
    line
}

/// A chunk-size line, kept on the stack: at most 16 hex digits and CRLF.
pub struct ChunkSizeLine {
    bytes: [u8; 18],
    length: usize,
}

impl AsRef<[u8]> for ChunkSizeLine {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the instance closes the connection.
    UntilClose,
}

/// Makes `chunk` bytes of room for the next read, unless a good part of that is still free: the
/// buffer's memory is shared with the bodies and header values taken from it, so a new
/// allocation is made only when the old one is nearly used up.
#[inline]
pub fn make_room(buffer: &mut BytesMut, chunk: usize) {
    if buffer.capacity() - buffer.len() < chunk / 4 {
        buffer.reserve(chunk);
    }
}

/// A `Content-Length` value as every reader takes it: decimal digits only (around them, spaces),
/// small enough to be a real length. `str::parse` alone would accept a leading `+`, which other
/// parsers do not.
#[inline]
pub fn plain_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The comma-separated tokens of every `name` header, in order.
pub fn tokens<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

#[inline]
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    tokens(headers, name).any(|found| found.eq_ignore_ascii_case(token))
}

/// What the buffer gave of a body.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// Nothing more until more is read.
    NeedMore,
    /// The body is complete.
    End,
}

/// Reads a response body out of what the connection delivers.
#[derive(Debug)]
pub struct BodyDecoder {
    state: DecoderState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecoderState {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Where a chunked body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In the hex digits of a chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size, in an extension we skip.
    Extension {
        size: u64,
        length: usize,
    },
    /// The size line's CR has been read.
    SizeEnd {
        size: u64,
    },
    Data {
        left: u64,
    },
    /// Expecting the CR, then the LF, that close a chunk's data.
    DataCr,
    DataLf,
    /// At the start of a trailer line, or after the last chunk; `seen` counts trailer bytes.
    TrailerStart {
        seen: usize,
    },
    Trailer {
        seen: usize,
    },
    TrailerLf {
        seen: usize,
    },
    /// The CR of the empty line that ends the body has been read.
    EndLf,
}

impl BodyDecoder {
    #[inline]
    pub fn new(framing: BodyFraming) -> BodyDecoder {
        let state = match framing {
            BodyFraming::Empty => DecoderState::Done,
            BodyFraming::Length(length) => DecoderState::Length(length),
            BodyFraming::Chunked => DecoderState::Chunked(Chunk::Size { size: 0, digits: 0 }),
            BodyFraming::UntilClose => DecoderState::UntilClose,
        };
        BodyDecoder { state }
    }

    #[inline]
    pub fn is_done(&self) -> bool {
        self.state == DecoderState::Done
    }

    #[inline]
    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            DecoderState::Length(left) => SizeHint::with_exact(left),
            DecoderState::Done => SizeHint::with_exact(0),
            DecoderState::Chunked(_) | DecoderState::UntilClose => SizeHint::default(),
        }
    }

    /// The whole body, if `buffer` already holds all of it; the buffer keeps what follows.
    #[inline]
    pub fn take_whole(&mut self, buffer: &mut BytesMut) -> Option<Bytes> {
        match self.state {
            DecoderState::Done => Some(Bytes::new()),
            DecoderState::Length(length) if buffer.len() as u64 >= length => {
                self.state = DecoderState::Done;
                // Fits: it is no more than the buffer's length.
                Some(buffer.split_to(length as usize).freeze())
            }
            _ => None,
        }
    }

    /// Takes what `buffer` holds of the body.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Decoded, Malformed> {
        match &mut self.state {
            DecoderState::Done => Ok(Decoded::End),
            DecoderState::Length(left) => {
                if buffer.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = (*left).min(buffer.len() as u64);
                *left -= take;
                if *left == 0 {
                    self.state = DecoderState::Done;
                }
                // Fits: it is no more than the buffer's length.
                Ok(Decoded::Data(buffer.split_to(take as usize).freeze()))
            }
            DecoderState::UntilClose => Ok(if buffer.is_empty() {
                Decoded::NeedMore
            } else {
                Decoded::Data(buffer.split().freeze())
            }),
            DecoderState::Chunked(chunk) => {
                let decoded = decode_chunked(chunk, buffer)?;
                if decoded == Decoded::End {
                    self.state = DecoderState::Done;
                }
                Ok(decoded)
            }
        }
    }

    /// The instance closed the connection: the end of a body that runs until then, and a
    /// truncated one otherwise.
    pub fn closed(&mut self) -> Result<(), Malformed> {
        match self.state {
            DecoderState::UntilClose | DecoderState::Done => {
                self.state = DecoderState::Done;
                Ok(())
            }
            DecoderState::Length(_) | DecoderState::Chunked(_) => {
                Err("the connection closed before the end of the body")
            }
        }
    }
}

/// Steps through a chunked body: the framing byte by byte (a few per chunk), the data in bulk.
fn decode_chunked(chunk: &mut Chunk, buffer: &mut BytesMut) -> Result<Decoded, Malformed> {
    loop {
        if let Chunk::Data { left } = chunk {
            if buffer.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let take = (*left).min(buffer.len() as u64);
            *left -= take;
            if *left == 0 {
                *chunk = Chunk::DataCr;
            }
            // Fits: it is no more than the buffer's length.
            return Ok(Decoded::Data(buffer.split_to(take as usize).freeze()));
        }
        let Some(&byte) = buffer.first() else {
            return Ok(Decoded::NeedMore);
        };
        buffer.advance(1);
        *chunk = match (*chunk, byte) {
            (Chunk::Size { size, digits }, _) if byte.is_ascii_hexdigit() => {
                if digits == 16 {
                    return Err("chunk size too large");
                }
                Chunk::Size {
                    size: size << 4 | hex_value(byte),
                    digits: digits + 1,
                }
            }
            (Chunk::Size { digits: 0, .. }, _) => return Err("invalid chunk size"),
            (Chunk::Size { size, .. }, b'\r') => Chunk::SizeEnd { size },
            (Chunk::Size { size, .. }, b';' | b' ' | b'\t') => Chunk::Extension { size, length: 0 },
            (Chunk::Extension { size, .. }, b'\r') => Chunk::SizeEnd { size },
            (Chunk::Extension { size, length }, _) if byte != b'\n' => {
                if length == MAX_CHUNK_EXTENSION {
                    return Err("chunk extension too long");
                }
                Chunk::Extension {
                    size,
                    length: length + 1,
                }
            }
            (Chunk::SizeEnd { size: 0 }, b'\n') => Chunk::TrailerStart { seen: 0 },
            (Chunk::SizeEnd { size }, b'\n') => Chunk::Data { left: size },
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size { size: 0, digits: 0 },
            (Chunk::TrailerStart { .. }, b'\r') => Chunk::EndLf,
            (Chunk::Trailer { seen }, b'\r') => Chunk::TrailerLf { seen },
            (Chunk::TrailerStart { seen } | Chunk::Trailer { seen }, _) if byte != b'\n' => {
                if seen == MAX_TRAILER_BYTES {
                    return Err("chunked trailers too large");
                }
                Chunk::Trailer { seen: seen + 1 }
            }
            (Chunk::TrailerLf { seen }, b'\n') => Chunk::TrailerStart { seen },
            (Chunk::EndLf, b'\n') => return Ok(Decoded::End),
            (Chunk::Size { .. } | Chunk::Extension { .. } | Chunk::SizeEnd { .. }, _) => {
                return Err("invalid chunk size line");
            }
            _ => return Err("invalid chunked framing"),
        };
    }
}

/// The value of an ASCII hex digit.
fn hex_value(digit: u8) -> u64 {
    u64::from(match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `decoder` makes of `wire`, fed `step` bytes at a time, and what is left over.
    fn decode_all(
        framing: BodyFraming,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), Malformed> {
        let mut decoder = BodyDecoder::new(framing);
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buffer)? {
                Decoded::Data(bytes) => body.extend_from_slice(&bytes),
                Decoded::End => return Ok((body, buffer.to_vec())),
                Decoded::NeedMore if fed < wire.len() => {
                    let next = (fed + step).min(wire.len());
                    buffer.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
                Decoded::NeedMore => {
                    decoder.closed()?;
                    return Ok((body, buffer.to_vec()));
                }
            }
        }
    }

    #[test]
    fn length_bodies_end_at_their_length() {
        for step in [1, 3, 100] {
            let (body, rest) =
                decode_all(BodyFraming::Length(5), b"hello, next", step).expect("valid");
            assert_eq!(body, b"hello", "step {step}");
            assert!(b", next".starts_with(&rest), "step {step}: {rest:?} left");
        }
        assert!(
            decode_all(BodyFraming::Length(5), b"hel", 2).is_err(),
            "a truncated body"
        );
        let mut whole = BodyDecoder::new(BodyFraming::Length(2));
        let mut buffer = BytesMut::from(&b"hi!"[..]);
        assert_eq!(whole.take_whole(&mut buffer).as_deref(), Some(&b"hi"[..]));
        assert!(whole.is_done());
        assert_eq!(&buffer[..], b"!");
        let mut partial = BodyDecoder::new(BodyFraming::Length(4));
        assert_eq!(partial.take_whole(&mut buffer), None);
        assert_eq!(partial.size_hint().exact(), Some(4));
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads_split() {
        let wire = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                     0\r\nTrailer: x\r\nMore: y\r\n\r\nNEXT";
        for step in [1, 2, 7, wire.len()] {
            let (body, rest) = decode_all(BodyFraming::Chunked, wire, step).expect("valid");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?} left");
        }
        let (body, _) = decode_all(BodyFraming::Chunked, b"0\r\n\r\n", 1).expect("valid");
        assert!(body.is_empty());
        let malformed: [&[u8]; 7] = [
            b"x\r\n",
            b"\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b"5\r\nhel",
            b"0\r\nTrailer\n\r\n",
        ];
        for wire in malformed {
            assert!(
                decode_all(BodyFraming::Chunked, wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_extension = format!(
            "1;{}\r\na\r\n0\r\n\r\n",
            "e".repeat(MAX_CHUNK_EXTENSION + 1)
        );
        assert!(decode_all(BodyFraming::Chunked, long_extension.as_bytes(), 64).is_err());
        let long_trailer = format!("0\r\nT: {}\r\n\r\n", "t".repeat(MAX_TRAILER_BYTES));
        assert!(decode_all(BodyFraming::Chunked, long_trailer.as_bytes(), 64).is_err());
    }

    #[test]
    fn a_body_until_close_is_everything_until_the_close() {
        assert_eq!(
            decode_all(BodyFraming::UntilClose, b"all of it", 4),
            Ok((b"all of it".to_vec(), Vec::new()))
        );
    }
}
