//! Evidence of ambiguous request framing that hyper's parsed request no longer carries.
//!
//! Given both `Content-Length` and `Transfer-Encoding`, hyper's HTTP/1 parser drops the length,
//! frames the body as chunked and closes the connection after answering (RFC 9112 §6.1). That
//! is safe for hyper, but the request still goes upstream, and a message that two parsers can
//! frame two ways is exactly what request smuggling is built from. By the time the gateway sees
//! the request the `Content-Length` is gone, so [`hygiene::check_request`] cannot tell.
//!
//! [`FramingSniffer`] sits between the socket and hyper and feeds every byte hyper reads to a
//! small HTTP/1 scanner. The scanner follows message boundaries the way hyper does (heads, then
//! bodies framed by chunked coding or by length), so it never mistakes body bytes for a head,
//! and records one verdict per request head in [`FramingVerdicts`]. The request pipeline takes
//! the verdict for each HTTP/1 request before its edge checks and refuses an ambiguous one.
//!
//! The scanner stops for good, and later requests on the connection get [`Framing::Clear`], when
//! following hyper any further is either pointless or impossible:
//! - the connection speaks HTTP/2 (its preface starts with `PRI * HTTP/2.0`, which is no
//!   HTTP/1 request line);
//! - a message is malformed or its head longer than the limit, which hyper refuses, closing
//!   the connection;
//! - a head was ambiguous, after which hyper closes the connection;
//! - a head asks for `Upgrade` or is a `CONNECT`, after which the bytes may not be HTTP at all.
//!   If the gateway answers such a request without switching protocols, the requests after it
//!   are left to hyper's own rule for the pair (chunked wins, then close): the connection is
//!   not reused, but that one request goes upstream.
//!
//! Until it stops, the scanner sees the heads hyper parses, in the same order, so the n-th
//! verdict belongs to the n-th request; once it has stopped there is no `Ambiguous` verdict left
//! to misplace.
//!
//! [`hygiene::check_request`]: super::hygiene::check_request

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use memchr::{memchr2, memchr3};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the scanner found in one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Nothing hyper would have settled silently, or a head the scanner no longer looks at.
    Clear,
    /// The head had both a `Content-Length` and a `Transfer-Encoding` line, whatever their values.
    Ambiguous,
}

/// One connection's verdicts, handed out in request order; clones share them.
#[derive(Debug, Clone, Default)]
pub struct FramingVerdicts(Arc<Verdicts>);

/// The scanner stops at the first ambiguous head, so the verdicts are always some `Clear`s and at
/// most one `Ambiguous` after them: two counters say as much as a queue would, without a lock
/// or a buffer that grows with pipelining.
#[derive(Debug, Default)]
struct Verdicts {
    /// One more than the index of the ambiguous head; 0 while there is none.
    ambiguous_head: AtomicU64,
    /// How many verdicts [`FramingVerdicts::next`] has handed out.
    taken: AtomicU64,
}

impl FramingVerdicts {
    /// The verdict for the next HTTP/1 request on the connection.
    ///
    /// Call it exactly once for every HTTP/1 request, as it is served: hyper parses a
    /// connection's next head only after answering the one before, so that order is the order
    /// of the heads on the wire.
    pub fn next(&self) -> Framing {
        let index = self.0.taken.fetch_add(1, Ordering::Relaxed);
        // The sniffer records the verdict inside the read that completes the head, so it is in
        // place before hyper can parse that head.
        if self.0.ambiguous_head.load(Ordering::Acquire) == index + 1 {
            Framing::Ambiguous
        } else {
            Framing::Clear
        }
    }

    fn record_ambiguous(&self, head: u64) {
        self.0.ambiguous_head.store(head + 1, Ordering::Release);
    }
}

/// A connection's byte stream, passed through unchanged, with everything read scanned for
/// ambiguous request framing.
#[derive(Debug)]
pub struct FramingSniffer<IO> {
    io: IO,
    scanner: Scanner,
    verdicts: FramingVerdicts,
}

impl<IO> FramingSniffer<IO> {
    /// Wraps `io`; the returned handle receives a verdict for each request head read through it.
    /// `max_head_bytes` bounds the head the scanner follows: set it above anything hyper accepts.
    pub fn new(io: IO, max_head_bytes: usize) -> (Self, FramingVerdicts) {
        let verdicts = FramingVerdicts::default();
        let sniffer = Self {
            io,
            scanner: Scanner::new(max_head_bytes),
            verdicts: verdicts.clone(),
        };
        (sniffer, verdicts)
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Every byte read so far belongs to a complete request: the stream is between two
    /// messages. False once the scanner has stopped, since it can no longer tell.
    pub fn between_messages(&self) -> bool {
        self.scanner.between_messages()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingSniffer<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Some(head) = this.scanner.feed(&buf.filled()[before..]) {
            this.verdicts.record_ambiguous(head);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingSniffer<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Where the scanner is in the request stream. The chunked states mirror hyper's chunked
/// decoder, which wants CRLF everywhere in the body; heads take LF alone as well, as httparse
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages, where empty lines are skipped.
    Idle,
    RequestLine,
    /// At the start of a header line or of the empty line that ends the head.
    LineStart,
    Name,
    Value,
    /// A length-framed body with this many bytes left.
    Length(u64),
    ChunkSizeFirst,
    ChunkSize(u64),
    /// Whitespace after the size; only more of it, an extension or the line end may follow.
    ChunkSizeSpace(u64),
    ChunkExtension(u64),
    ChunkSizeLf(u64),
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    /// After the last chunk and after each trailer line: CR starts the end of the body, anything
    /// else a trailer line.
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    /// Stopped for good; bytes pass unlooked at.
    Off,
}

/// The header lines that matter for framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Upgrade,
    Other,
}

/// What the `Content-Length` lines of a head add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Length {
    #[default]
    Absent,
    Valid(u64),
    /// Not a number, or lines that disagree: hyper refuses the request unless chunked framing
    /// made it skip the lines.
    Invalid,
}

/// One `Content-Length` value as it streams past: optional whitespace, digits, optional
/// whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Digits {
    #[default]
    Leading,
    Number(u64),
    Trailing(u64),
    Bad,
}

impl Digits {
    fn push(self, b: u8) -> Self {
        match (self, b) {
            (Self::Leading, b' ' | b'\t') => Self::Leading,
            (Self::Number(n) | Self::Trailing(n), b' ' | b'\t') => Self::Trailing(n),
            (Self::Leading, b'0'..=b'9') => Self::Number(u64::from(b - b'0')),
            (Self::Number(n), b'0'..=b'9') => n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .map_or(Self::Bad, Self::Number),
            _ => Self::Bad,
        }
    }
}

/// The longest header name the scanner needs to recognise: `transfer-encoding`.
const NAME_BYTES: usize = 17;

/// What the scanner keeps about the head it is in; all fixed-size.
#[derive(Debug, Default)]
struct Head {
    /// Bytes since the request line started.
    bytes: usize,
    /// The request line's current space-separated token: its first bytes and its full length.
    token: [u8; 8],
    token_len: usize,
    /// The method has ended.
    past_method: bool,
    connect: bool,
    /// The current header name so far, lower-cased: its first bytes and its full length.
    name: [u8; NAME_BYTES],
    name_len: usize,
    field: Option<Field>,
    digits: Digits,
    content_length: Length,
    transfer_encoding: bool,
    upgrade: bool,
}

impl Head {
    fn token(&self) -> Option<&[u8]> {
        self.token.get(..self.token_len)
    }

    fn name(&self) -> Option<&[u8]> {
        self.name.get(..self.name_len)
    }
}

/// Follows an HTTP/1 request stream fed to it in pieces of any size, counting the heads and
/// reporting the first ambiguous one.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    /// The last head byte was a CR, so only LF may come next.
    cr: bool,
    head: Head,
    /// Heads completed so far.
    heads: u64,
    ambiguous_head: Option<u64>,
    max_head_bytes: usize,
}

impl Scanner {
    pub(crate) fn new(max_head_bytes: usize) -> Self {
        Self {
            state: State::Idle,
            cr: false,
            head: Head::default(),
            heads: 0,
            ambiguous_head: None,
            max_head_bytes,
        }
    }

    pub(crate) fn between_messages(&self) -> bool {
        self.state == State::Idle && !self.cr
    }

    /// Scans the next bytes of the stream and returns the index (0-based) of the head found
    /// ambiguous in them, if any. There is at most one per stream: scanning stops after it.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        if self.state == State::Off {
            return None;
        }
        while !bytes.is_empty() && self.state != State::Off {
            let used = self.step(bytes);
            bytes = &bytes[used..];
        }
        if self.state == State::Off {
            self.ambiguous_head
        } else {
            None
        }
    }

    /// Consumes at least one byte of `bytes` (never empty) and returns how many.
    fn step(&mut self, bytes: &[u8]) -> usize {
        match self.state {
            State::Length(left) | State::ChunkData(left) => {
                let used = usize::try_from(left).map_or(bytes.len(), |left| left.min(bytes.len()));
                let left = left - used as u64;
                self.state = match self.state {
                    State::Length(_) if left == 0 => State::Idle,
                    State::Length(_) => State::Length(left),
                    _ if left == 0 => State::ChunkDataCr,
                    _ => State::ChunkData(left),
                };
                used
            }
            State::Idle | State::RequestLine | State::LineStart | State::Name | State::Value => {
                let before = self.state;
                let used = match self.head_run(bytes) {
                    0 => {
                        self.head_byte(bytes[0]);
                        1
                    }
                    run => run,
                };
                // Empty lines between messages belong to no head.
                if before != State::Idle || self.state != State::Idle {
                    self.head.bytes += used;
                    if self.head.bytes > self.max_head_bytes {
                        self.state = State::Off;
                    }
                }
                used
            }
            _ => {
                self.body_byte(bytes[0]);
                1
            }
        }
    }

    /// Takes the bytes at the start of `bytes` that only add to the current token, name or
    /// value, all at once, and returns how many; 0 when the first byte needs [`Self::head_byte`].
    fn head_run(&mut self, bytes: &[u8]) -> usize {
        if self.cr {
            return 0;
        }
        let head = &mut self.head;
        match self.state {
            State::RequestLine => {
                let run = memchr3(b' ', b'\r', b'\n', bytes).unwrap_or(bytes.len());
                keep_prefix(&mut head.token, &mut head.token_len, &bytes[..run]);
                run
            }
            State::Name => {
                // Names are short: a plain loop beats a search.
                let run = bytes
                    .iter()
                    .position(|&b| matches!(b, b':' | b'\r' | b'\n'))
                    .unwrap_or(bytes.len());
                let room = head.name.get_mut(head.name_len..).unwrap_or_default();
                for (slot, b) in room.iter_mut().zip(&bytes[..run]) {
                    *slot = b.to_ascii_lowercase();
                }
                head.name_len = head.name_len.saturating_add(run);
                run
            }
            State::Value => {
                let run = memchr2(b'\r', b'\n', bytes).unwrap_or(bytes.len());
                if head.field == Some(Field::ContentLength) {
                    for &b in &bytes[..run] {
                        head.digits = head.digits.push(b);
                    }
                }
                run
            }
            _ => 0,
        }
    }

    /// One head byte that [`Self::head_run`] leaves: a line end, a separator, or the first byte
    /// of a line.
    fn head_byte(&mut self, b: u8) {
        if self.cr {
            self.cr = false;
            if b == b'\n' {
                self.end_of_line();
            } else {
                // httparse refuses a CR that does not end a line.
                self.state = State::Off;
            }
            return;
        }
        match (self.state, b) {
            (_, b'\r') => self.cr = true,
            (_, b'\n') => self.end_of_line(),
            (State::Idle, _) => {
                self.head = Head::default();
                self.state = State::RequestLine;
                self.request_line_byte(b);
            }
            (State::RequestLine, _) => self.request_line_byte(b),
            (State::LineStart, _) => {
                self.state = State::Name;
                self.head.name_len = 0;
                self.name_byte(b);
            }
            (State::Name, _) => self.name_byte(b),
            _ => {}
        }
    }

    fn request_line_byte(&mut self, b: u8) {
        let head = &mut self.head;
        if b == b' ' {
            if !head.past_method {
                head.past_method = true;
                // hyper compares methods case-sensitively.
                head.connect = head.token() == Some(b"CONNECT");
            }
            head.token_len = 0;
        } else {
            if let Some(slot) = head.token.get_mut(head.token_len) {
                *slot = b;
            }
            head.token_len = head.token_len.saturating_add(1);
        }
    }

    fn name_byte(&mut self, b: u8) {
        let head = &mut self.head;
        if b != b':' {
            if let Some(slot) = head.name.get_mut(head.name_len) {
                *slot = b.to_ascii_lowercase();
            }
            head.name_len = head.name_len.saturating_add(1);
            return;
        }
        let field = match head.name() {
            Some(b"content-length") => Field::ContentLength,
            Some(b"transfer-encoding") => Field::TransferEncoding,
            Some(b"upgrade") => Field::Upgrade,
            _ => Field::Other,
        };
        match field {
            Field::TransferEncoding => head.transfer_encoding = true,
            Field::Upgrade => head.upgrade = true,
            Field::ContentLength | Field::Other => {}
        }
        head.field = Some(field);
        head.digits = Digits::default();
        self.state = State::Value;
    }

    fn end_of_line(&mut self) {
        match self.state {
            // An empty line before a request line, which httparse skips.
            State::Idle => {}
            State::RequestLine => {
                let head = &self.head;
                let http1 = matches!(head.token(), Some(b"HTTP/1.1" | b"HTTP/1.0"));
                self.state = if head.past_method && http1 {
                    State::LineStart
                } else {
                    // Not a request line httparse accepts; the HTTP/2 preface ends up here.
                    State::Off
                };
            }
            State::LineStart => self.end_of_head(),
            // A header line without a colon, which httparse refuses.
            State::Name => self.state = State::Off,
            State::Value => {
                let head = &mut self.head;
                if head.field == Some(Field::ContentLength) {
                    let length = match head.digits {
                        Digits::Number(n) | Digits::Trailing(n) => Length::Valid(n),
                        Digits::Leading | Digits::Bad => Length::Invalid,
                    };
                    head.content_length = match (head.content_length, length) {
                        (Length::Absent, length) => length,
                        (Length::Valid(a), Length::Valid(b)) if a == b => length,
                        _ => Length::Invalid,
                    };
                }
                head.field = None;
                self.state = State::LineStart;
            }
            _ => {}
        }
    }

    fn end_of_head(&mut self) {
        let index = self.heads;
        self.heads += 1;
        let head = &self.head;
        self.state = if head.content_length != Length::Absent && head.transfer_encoding {
            self.ambiguous_head = Some(index);
            State::Off
        } else if head.upgrade || head.connect {
            State::Off
        } else if head.transfer_encoding {
            // hyper frames any accepted Transfer-Encoding as chunked and refuses the rest.
            State::ChunkSizeFirst
        } else {
            match head.content_length {
                Length::Absent | Length::Valid(0) => State::Idle,
                Length::Valid(n) => State::Length(n),
                Length::Invalid => State::Off,
            }
        };
    }

    /// One byte of chunked framing, by the rules of hyper's chunked decoder. Whatever it refuses
    /// turns the scanner off.
    fn body_byte(&mut self, b: u8) {
        self.state = match (self.state, b) {
            (State::ChunkSizeFirst, _) => hex(b).map_or(State::Off, State::ChunkSize),
            (State::ChunkSize(size), b' ' | b'\t') => State::ChunkSizeSpace(size),
            (State::ChunkSize(size), _) if hex(b).is_some() => size
                .checked_mul(16)
                .zip(hex(b))
                .and_then(|(size, digit)| size.checked_add(digit))
                .map_or(State::Off, State::ChunkSize),
            (State::ChunkSizeSpace(size), b' ' | b'\t') => State::ChunkSizeSpace(size),
            (
                State::ChunkSize(size) | State::ChunkSizeSpace(size) | State::ChunkExtension(size),
                b'\r',
            ) => State::ChunkSizeLf(size),
            (State::ChunkSize(size) | State::ChunkSizeSpace(size), b';') => {
                State::ChunkExtension(size)
            }
            (State::ChunkExtension(_), b'\n') => State::Off,
            (State::ChunkExtension(size), _) => State::ChunkExtension(size),
            (State::ChunkSizeLf(0), b'\n') => State::TrailerStart,
            (State::ChunkSizeLf(size), b'\n') => State::ChunkData(size),
            (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
            (State::ChunkDataLf, b'\n') => State::ChunkSizeFirst,
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::TrailerStart | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Idle,
            _ => State::Off,
        };
    }
}

/// Appends `bytes` to the text whose first bytes `buffer` holds and whose full length `len`
/// counts; what does not fit is only counted.
fn keep_prefix(buffer: &mut [u8], len: &mut usize, bytes: &[u8]) {
    if let Some(room) = buffer.get_mut(*len..) {
        let take = room.len().min(bytes.len());
        room[..take].copy_from_slice(&bytes[..take]);
    }
    *len = len.saturating_add(bytes.len());
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 * 1024;

    /// What a scan of a whole stream found: the verdict of every head completed, and whether
    /// the scanner stopped.
    #[derive(Debug, PartialEq, Eq)]
    struct Scan {
        verdicts: Vec<Framing>,
        off: bool,
    }

    fn scan_in_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Scan {
        let mut scanner = Scanner::new(LIMIT);
        let mut ambiguous = None;
        for piece in pieces {
            if let Some(head) = scanner.feed(piece) {
                assert_eq!(ambiguous, None, "a second ambiguous head was reported");
                ambiguous = Some(head);
            }
        }
        let verdicts = (0..scanner.heads)
            .map(|head| {
                if Some(head) == ambiguous {
                    Framing::Ambiguous
                } else {
                    Framing::Clear
                }
            })
            .collect();
        Scan {
            verdicts,
            off: scanner.state == State::Off,
        }
    }

    /// Scans `stream` whole, then byte by byte and split in two at every offset, checking all
    /// three agree.
    fn scan(stream: &[u8]) -> Scan {
        let whole = scan_in_pieces([stream]);
        let bytes = scan_in_pieces(stream.chunks(1));
        assert_eq!(bytes, whole, "fed byte by byte");
        for at in 0..=stream.len() {
            let (a, b) = stream.split_at(at);
            assert_eq!(scan_in_pieces([a, b]), whole, "split at {at}");
        }
        whole
    }

    fn clear(heads: usize) -> Scan {
        Scan {
            verdicts: vec![Framing::Clear; heads],
            off: false,
        }
    }

    /// `heads` verdicts with the last one ambiguous, after which scanning stops.
    fn ambiguous_at(heads: usize) -> Scan {
        let mut verdicts = vec![Framing::Clear; heads];
        verdicts[heads - 1] = Framing::Ambiguous;
        Scan {
            verdicts,
            off: true,
        }
    }

    fn stopped_after(heads: usize) -> Scan {
        Scan {
            verdicts: vec![Framing::Clear; heads],
            off: true,
        }
    }

    const GET: &str = "GET /a HTTP/1.1\r\nHost: a.test\r\nAccept: */*\r\n\r\n";

    #[test]
    fn single_requests() {
        let cases: &[(&str, &str)] = &[
            ("GET", GET),
            ("HTTP/1.0", "GET / HTTP/1.0\r\n\r\n"),
            (
                "a length-framed body",
                "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello",
            ),
            (
                "an empty length-framed body",
                "POST /a HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n",
            ),
            (
                "a chunked body",
                "POST /a HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5\r\nhello\r\n0\r\n\r\n",
            ),
            (
                "a repeated identical length, which hyper reads as one",
                "POST /a HTTP/1.1\r\nContent-Length: 2\r\ncontent-length:  2 \r\n\r\nhi",
            ),
            (
                "empty lines before the request line, which httparse skips",
                "\r\n\n\r\nGET / HTTP/1.1\r\n\r\n",
            ),
        ];
        for (case, request) in cases {
            assert_eq!(scan(request.as_bytes()), clear(1), "{case}");
        }
    }

    #[test]
    fn pipelined_requests_in_one_buffer() {
        let stream = format!(
            "{GET}POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
             POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n{GET}"
        );
        assert_eq!(scan(stream.as_bytes()), clear(4));

        let stream = format!("{GET}{GET}POST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(
            scan(stream.as_bytes()),
            clear(3),
            "the last body is still due"
        );
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let stream = format!(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             5;name=value\r\nhello\r\n\
             A \t; a=\"quoted;\" ; b\r\n0123456789\r\n\
             1a\r\nabcdefghijklmnopqrstuvwxyz\r\n\
             0;last\r\nX-Checksum: 1\r\nX-Other: two\r\n\r\n{GET}"
        );
        assert_eq!(scan(stream.as_bytes()), clear(2));
    }

    /// A body is skipped by its framing, however much it looks like requests.
    #[test]
    fn bodies_that_look_like_heads_are_not_read_as_heads() {
        let inner =
            "GET /inner HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let by_length = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{inner}{GET}",
            inner.len()
        );
        assert_eq!(scan(by_length.as_bytes()), clear(2), "length-framed");

        let chunked = format!(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n{GET}",
            inner.len()
        );
        assert_eq!(scan(chunked.as_bytes()), clear(2), "chunked");

        // Trailers are header lines, but not a head.
        let trailers = format!(
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\
             Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{GET}"
        );
        assert_eq!(scan(trailers.as_bytes()), clear(2), "trailers");
    }

    #[test]
    fn content_length_with_transfer_encoding_is_ambiguous_in_either_order() {
        let cases: &[(&str, &str)] = &[
            (
                "CL, then TE",
                "POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE, then CL",
                "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            ),
            (
                "any case, any values",
                "POST /a HTTP/1.1\r\ncontent-LENGTH: nonsense\r\nTRANSFER-encoding: gzip\r\n\r\n",
            ),
            (
                "CL.TE smuggling",
                "POST /a HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
                 0\r\n\r\nGGET /admin HTTP/1.1\r\nHost: a.test\r\n\r\n",
            ),
            (
                "LF-only line ends",
                "POST /a HTTP/1.1\nHost: a.test\nContent-Length: 1\nTransfer-Encoding: chunked\n\n",
            ),
        ];
        for (case, request) in cases {
            assert_eq!(scan(request.as_bytes()), ambiguous_at(1), "{case}");
        }

        let behind = format!(
            "{GET}POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n\
             0\r\n\r\n{GET}"
        );
        assert_eq!(
            scan(behind.as_bytes()),
            ambiguous_at(2),
            "behind a clean request"
        );
    }

    #[test]
    fn lf_only_line_ends_in_heads() {
        let stream = format!(
            "GET / HTTP/1.1\nHost: a.test\n\nPOST / HTTP/1.1\r\nContent-Length: 2\n\r\nhi{GET}"
        );
        assert_eq!(scan(stream.as_bytes()), clear(3));
    }

    #[test]
    fn http2_preface_turns_scanning_off() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // A SETTINGS frame whose payload happens to look like HTTP/1.
        stream.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        stream.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(scan(&stream), stopped_after(0));
    }

    /// After an upgrade the bytes may be anything; hyper's own rule is the backstop there.
    #[test]
    fn upgrade_and_connect_turn_scanning_off_after_their_head() {
        let ambiguous =
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases = [
            "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
        ];
        for head in cases {
            let stream = format!("{head}{ambiguous}");
            assert_eq!(scan(stream.as_bytes()), stopped_after(1), "{head}");
        }
        // Only the exact method is CONNECT to hyper; and an upgrade request is still judged.
        let lower = format!("connect a.test:443 HTTP/1.1\r\n\r\n{GET}");
        assert_eq!(scan(lower.as_bytes()), clear(2), "lower-case connect");
        let judged = "GET / HTTP/1.1\r\nUpgrade: h2c\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            scan(judged.as_bytes()),
            ambiguous_at(1),
            "ambiguous upgrade"
        );
    }

    /// What hyper refuses (and then closes the connection) turns scanning off.
    #[test]
    fn malformed_messages_turn_scanning_off() {
        let cases: &[(&str, &str, usize)] = &[
            ("no version", "GET /\r\n\r\n", 0),
            ("another version", "GET / HTTP/1.2\r\n\r\n", 0),
            ("lower-case version", "GET / http/1.1\r\n\r\n", 0),
            ("no target", "GET\r\n\r\n", 0),
            ("a bare CR", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 0),
            (
                "a header without colon",
                "GET / HTTP/1.1\r\nHost a.test\r\n\r\n",
                0,
            ),
            (
                "a bad length",
                "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
                1,
            ),
            (
                "differing lengths",
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
                1,
            ),
            (
                "a length list",
                "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
                1,
            ),
            (
                "a length past u64",
                "POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                1,
            ),
            (
                "a chunk size that is not hex",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nx\r\n",
                1,
            ),
            (
                "a chunk size past u64",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
                1,
            ),
            (
                "an LF-only chunk size line",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n",
                1,
            ),
            (
                "a newline in an extension",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb\r\n",
                1,
            ),
            (
                "chunk data not followed by CRLF",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
                1,
            ),
        ];
        for (case, stream, heads) in cases {
            let stream = format!("{stream}{GET}");
            assert_eq!(scan(stream.as_bytes()), stopped_after(*heads), "{case}");
        }
    }

    #[test]
    fn a_head_past_the_limit_turns_scanning_off() {
        let long = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(200));
        let mut scanner = Scanner::new(100);
        assert_eq!(scanner.feed(long.as_bytes()), None);
        assert_eq!((scanner.heads, scanner.state), (0, State::Off));

        let mut scanner = Scanner::new(long.len());
        assert_eq!(scanner.feed(long.as_bytes()), None);
        assert_eq!(
            (scanner.heads, scanner.state),
            (1, State::Idle),
            "the limit is inclusive"
        );
    }

    #[test]
    fn verdicts_are_handed_out_in_order() {
        let verdicts = FramingVerdicts::default();
        verdicts.record_ambiguous(1);
        let taken: Vec<_> = (0..4).map(|_| verdicts.next()).collect();
        use Framing::*;
        assert_eq!(taken, [Clear, Ambiguous, Clear, Clear]);
    }

    #[tokio::test]
    async fn the_sniffer_passes_bytes_through_and_records_verdicts() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (client, server) = tokio::io::duplex(64);
        let (mut sniffer, verdicts) = FramingSniffer::new(server, LIMIT);
        let stream = format!(
            "{GET}POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writer = tokio::spawn({
            let stream = stream.clone();
            async move {
                client_write.write_all(stream.as_bytes()).await?;
                client_write.shutdown().await
            }
        });
        let mut read = Vec::new();
        sniffer.read_to_end(&mut read).await.expect("reads");
        writer.await.expect("joins").expect("writes");
        assert_eq!(read, stream.as_bytes());
        assert_eq!(verdicts.next(), Framing::Clear);
        assert_eq!(verdicts.next(), Framing::Ambiguous);

        sniffer
            .write_all(b"HTTP/1.1 400 Bad Request\r\n")
            .await
            .expect("writes");
        sniffer.shutdown().await.expect("shuts down");
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.expect("reads");
        assert_eq!(answer, b"HTTP/1.1 400 Bad Request\r\n");
    }
}
