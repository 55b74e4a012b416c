//! An h2spec-style conformance suite for the gateway's HTTP/2 listener: raw frames over TCP
//! against the real binary, one case per requirement of RFC 9113 (and RFC 9110's field rules),
//! each named after its section.
//!
//! h2spec is not packaged here, so its verdicts are reproduced. A connection error is a GOAWAY
//! with the expected code, or the connection closing; a stream error is an RST_STREAM or a GOAWAY
//! with the expected code, or the connection closing. Unlike h2spec, the first RST_STREAM or
//! GOAWAY seen decides: one with another code fails the case even if a close follows.
//!
//! The cases marked `#[ignore]` are findings: the gateway answers otherwise than RFC 9113
//! requires, and each reason names what it does instead and which component is at fault. Most
//! are h2 answering PROTOCOL_ERROR where the RFC names another code in a MUST; h2spec would pass
//! those only because its verifier counts the close that follows a GOAWAY of any code.
//!
//! Frames are written by hand, and header blocks are plain HPACK literals, because a client
//! library refuses to send most of what these cases need. Every read is bounded by [`WAIT`].

use std::time::Duration;

use gateway_tests::{Gateway, Upstream, route_everything_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a case waits for the gateway's verdict.
const WAIT: Duration = Duration::from_secs(2);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The largest frame payload a peer must accept before SETTINGS say otherwise (§4.2).
const DEFAULT_MAX_FRAME: usize = 16_384;

// Frame types (§6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Frame flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

// SETTINGS identifiers (§6.5.2).
const ENABLE_PUSH: u16 = 0x2;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;

// Error codes (§7).
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const STREAM_CLOSED: u32 = 0x5;
const FRAME_SIZE_ERROR: u32 = 0x6;
const COMPRESSION_ERROR: u32 = 0x9;

/// A frame as read off the wire.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let code = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(code.try_into().ok()?))
    }
}

/// What one read brought.
#[derive(Debug)]
enum Event {
    Frame(Frame),
    Closed,
    Timeout,
}

/// How the gateway answered a malformed request.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// RST_STREAM(PROTOCOL_ERROR): the connection stays usable.
    Reset,
    /// A 4xx response: the connection stays usable.
    Status(u16),
    /// GOAWAY(PROTOCOL_ERROR) or a close, which §5.4 allows for any stream error.
    ConnectionEnded,
}

/// The bytes of one frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("a frame payload fits 24 bits");
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// A SETTINGS payload.
fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|(id, value)| [id.to_be_bytes().as_slice(), &value.to_be_bytes()].concat())
        .collect()
}

/// An HPACK integer with an `prefix`-bit prefix, its first byte or-ed with `high` (§5.1 of
/// RFC 7541).
fn hpack_integer(out: &mut Vec<u8>, high: u8, prefix: u32, mut value: usize) {
    let limit = (1usize << prefix) - 1;
    if value < limit {
        out.push(high | value as u8);
        return;
    }
    out.push(high | limit as u8);
    value -= limit;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literals with new names: pseudo-headers without indexing, regular fields
/// never indexed, so both representations are exercised and the dynamic table stays empty.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(if name.starts_with(':') { 0x00 } else { 0x10 });
        for string in [name, value] {
            hpack_integer(&mut block, 0x00, 7, string.len());
            block.extend_from_slice(string.as_bytes());
        }
    }
    block
}

/// A valid GET for `path`.
fn get(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "gateway.test"),
    ]
}

/// The head of a POST to `path`, its body to follow.
fn post(path: &str) -> Vec<(&str, &str)> {
    let mut fields = get(path);
    fields[0].1 = "POST";
    fields
}

/// The `:status` of a response header block, which h2 always encodes first: a static-table
/// index, or a literal with the `:status` name and a plain or Huffman-coded value.
fn status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if first & 0x80 != 0 {
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    // Literal with incremental indexing (0x40 | 8) or without / never indexed (0x00 / 0x10 | 8).
    if first != 0x48 && first != 0x08 && first != 0x18 {
        return None;
    }
    let length = *block.get(1)?;
    let value = block.get(2..2 + usize::from(length & 0x7f))?;
    let digits = if length & 0x80 == 0 {
        String::from_utf8(value.to_vec()).ok()?
    } else {
        huffman_digits(value)?
    };
    digits.parse().ok()
}

/// Decodes a Huffman string of decimal digits: '0'-'2' have 5-bit codes, '3'-'9' 6-bit ones
/// (RFC 7541 Appendix B); the padding is all ones.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<bool> = bytes
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |bit| byte >> bit & 1 == 1))
        .collect();
    let value = |from: usize, count: usize| {
        bits.get(from..from + count)
            .map(|slice| slice.iter().fold(0u8, |acc, &bit| acc << 1 | u8::from(bit)))
    };
    let mut digits = String::new();
    let mut at = 0;
    while digits.len() < 3 {
        let five = value(at, 5)?;
        if five < 3 {
            digits.push(char::from(b'0' + five));
            at += 5;
        } else {
            let six = value(at, 6)?;
            if !(0x19..=0x1f).contains(&six) {
                return None;
            }
            digits.push(char::from(b'3' + six - 0x19));
            at += 6;
        }
    }
    Some(digits)
}

/// A gateway routing everything to an echo upstream.
struct Setup {
    gateway: Gateway,
    _upstream: Upstream,
}

async fn setup() -> Setup {
    let upstream = Upstream::start("echo").await;
    let gateway = Gateway::start(&route_everything_to(&upstream.url(), ""));
    Setup {
        gateway,
        _upstream: upstream,
    }
}

/// One raw HTTP/2 connection.
struct Conn {
    stream: TcpStream,
    read: Vec<u8>,
    /// Every frame read so far, for failure messages.
    seen: Vec<String>,
}

impl Conn {
    /// A TCP connection with nothing sent yet.
    async fn connect(setup: &Setup) -> Conn {
        Conn {
            stream: TcpStream::connect(setup.gateway.address)
                .await
                .expect("connects"),
            read: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// A connection past the handshake, as h2spec's: the preface and empty SETTINGS sent, the
    /// server's SETTINGS acknowledged and ours acknowledged by it.
    async fn open(setup: &Setup) -> Conn {
        let mut conn = Conn::connect(setup).await;
        conn.write(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
            .await;
        let deadline = Instant::now() + WAIT;
        let (mut theirs, mut our_ack) = (false, false);
        while !(theirs && our_ack) {
            match conn.next(deadline).await {
                Event::Frame(f) if f.kind == SETTINGS && f.flags & ACK != 0 => our_ack = true,
                Event::Frame(f) if f.kind == SETTINGS => {
                    theirs = true;
                    conn.send(SETTINGS, ACK, 0, &[]).await;
                }
                Event::Frame(_) => {}
                other => panic!("handshake: {other:?}; seen {:?}", conn.seen),
            }
        }
        conn
    }

    /// Writes bytes. A failed write is not a failure: the gateway may already have closed the
    /// connection over an earlier frame, and what it read decides the case.
    async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.write(&frame(kind, flags, stream, payload)).await;
    }

    /// Sends a complete header block on `stream` in one HEADERS frame.
    async fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, &hpack(fields)).await;
    }

    /// The next frame, or the close, or [`Event::Timeout`] at `deadline`.
    async fn next(&mut self, deadline: Instant) -> Event {
        loop {
            if self.read.len() >= 9 {
                let length = usize::from(self.read[0]) << 16
                    | usize::from(self.read[1]) << 8
                    | usize::from(self.read[2]);
                if self.read.len() >= 9 + length {
                    let head: Vec<u8> = self.read.drain(..9).collect();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: self.read.drain(..length).collect(),
                    };
                    self.seen.push(format!(
                        "type {:#x} flags {:#x} stream {} code {:?}",
                        frame.kind,
                        frame.flags,
                        frame.stream,
                        frame.error_code()
                    ));
                    return Event::Frame(frame);
                }
            }
            let mut chunk = [0u8; 16_384];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Event::Timeout,
                Ok(Ok(0) | Err(_)) => return Event::Closed,
                Ok(Ok(read)) => self.read.extend_from_slice(&chunk[..read]),
            }
        }
    }

    /// Asserts a connection error with `code`: a GOAWAY carrying it, or the connection closed.
    async fn connection_error(&mut self, code: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next(deadline).await {
                Event::Frame(f) if f.kind == GOAWAY => {
                    assert_eq!(
                        f.error_code(),
                        Some(code),
                        "GOAWAY with another code; seen {:?}",
                        self.seen
                    );
                    return;
                }
                Event::Frame(_) => {}
                Event::Closed => return,
                Event::Timeout => panic!(
                    "no connection error {code:#x} within {WAIT:?}; seen {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Asserts a stream error with `code` on `stream`: an RST_STREAM or GOAWAY carrying it, or
    /// the connection closed.
    async fn stream_error(&mut self, stream: u32, code: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next(deadline).await {
                Event::Frame(f)
                    if f.kind == GOAWAY || f.kind == RST_STREAM && f.stream == stream =>
                {
                    assert_eq!(
                        f.error_code(),
                        Some(code),
                        "{} with another code; seen {:?}",
                        if f.kind == GOAWAY {
                            "GOAWAY"
                        } else {
                            "RST_STREAM"
                        },
                        self.seen
                    );
                    return;
                }
                Event::Frame(_) => {}
                Event::Closed => return,
                Event::Timeout => panic!(
                    "no stream error {code:#x} on stream {stream} within {WAIT:?}; seen {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Reads the response on `stream` to its end: its status and its body.
    async fn response(&mut self, stream: u32) -> (u16, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        let mut code = None;
        let mut body = Vec::new();
        loop {
            match self.next(deadline).await {
                Event::Frame(f) if f.stream == stream && f.kind == HEADERS => {
                    code = code.or_else(|| status(&f.payload));
                    if f.flags & END_STREAM != 0 {
                        break;
                    }
                }
                Event::Frame(f) if f.stream == stream && f.kind == DATA => {
                    body.extend_from_slice(&f.payload);
                    if f.flags & END_STREAM != 0 {
                        break;
                    }
                }
                Event::Frame(f) if f.kind == GOAWAY || f.stream == stream => {
                    panic!(
                        "no response on stream {stream}: {f:?}; seen {:?}",
                        self.seen
                    )
                }
                Event::Frame(_) => {}
                other => panic!(
                    "no response on stream {stream}: {other:?}; seen {:?}",
                    self.seen
                ),
            }
        }
        let code = code.unwrap_or_else(|| panic!("no :status read; seen {:?}", self.seen));
        (code, body)
    }

    /// Asserts a GET for `path` on `stream` is answered by the upstream's echo.
    async fn echoes(&mut self, stream: u32, path: &str) {
        self.headers(stream, &get(path), true).await;
        let (code, body) = self.response(stream).await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("the echo is JSON");
        assert_eq!(echo["target"], path, "{echo}");
    }

    /// How the gateway refused the malformed request on `stream`: RST_STREAM(PROTOCOL_ERROR),
    /// a 4xx response, or GOAWAY(PROTOCOL_ERROR) / a close. Anything else fails.
    async fn refusal(&mut self, stream: u32) -> Refusal {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next(deadline).await {
                Event::Frame(f) if f.kind == RST_STREAM && f.stream == stream => {
                    assert_eq!(f.error_code(), Some(PROTOCOL_ERROR), "seen {:?}", self.seen);
                    return Refusal::Reset;
                }
                Event::Frame(f) if f.kind == GOAWAY => {
                    assert_eq!(f.error_code(), Some(PROTOCOL_ERROR), "seen {:?}", self.seen);
                    return Refusal::ConnectionEnded;
                }
                Event::Frame(f) if f.kind == HEADERS && f.stream == stream => {
                    let code = status(&f.payload)
                        .unwrap_or_else(|| panic!("no :status read; seen {:?}", self.seen));
                    assert!(
                        (400..500).contains(&code),
                        "the malformed request was answered {code}; seen {:?}",
                        self.seen
                    );
                    return Refusal::Status(code);
                }
                Event::Frame(_) => {}
                Event::Closed => return Refusal::ConnectionEnded,
                Event::Timeout => panic!(
                    "the malformed request on stream {stream} was neither reset nor refused \
                     within {WAIT:?}; seen {:?}",
                    self.seen
                ),
            }
        }
    }
}

// §3.4: the preface must be followed by SETTINGS; anything else is an invalid preface, a
// connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) does not require SETTINGS as the first frame: it \
            answers a PING sent straight after the preface with a PING ACK and keeps the connection"]
async fn s3_4_a_first_frame_other_than_settings_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::connect(&setup).await;
    conn.write(&[PREFACE, &frame(PING, 0, 0, &[0; 8])].concat())
        .await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §4.1, §5.5: frames of an unknown type are ignored, on the connection and on a stream.
#[tokio::test(flavor = "multi_thread")]
async fn s4_1_unknown_frame_types_are_ignored() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(0xff, 0, 0, b"unknown").await;
    conn.send(0x42, 0xff, 1, b"unknown").await;
    conn.echoes(1, "/after-unknown").await;
}

// §4.2: a frame longer than SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR (h2spec 4.2/1: a DATA
// frame on an open stream; a stream or connection error).
#[tokio::test(flavor = "multi_thread")]
async fn s4_2_a_frame_over_max_frame_size_is_a_frame_size_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(1, &post("/big"), false).await;
    conn.send(DATA, END_STREAM, 1, &vec![b'x'; DEFAULT_MAX_FRAME + 1])
        .await;
    conn.stream_error(1, FRAME_SIZE_ERROR).await;
}

// §4.2: a frame of exactly the default SETTINGS_MAX_FRAME_SIZE is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn s4_2_a_frame_of_max_frame_size_is_accepted() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(1, &post("/full-frame"), false).await;
    conn.send(DATA, END_STREAM, 1, &vec![b'x'; DEFAULT_MAX_FRAME])
        .await;
    let (code, body) = conn.response(1).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let echo: serde_json::Value = serde_json::from_slice(&body).expect("the echo is JSON");
    assert_eq!(echo["body_bytes"], DEFAULT_MAX_FRAME, "{echo}");
}

// §4.3: a header block that does not decode is a connection error COMPRESSION_ERROR; here an
// indexed field past the static table with an empty dynamic table.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps an HPACK decoding error to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s4_3_an_undecodable_header_block_is_a_compression_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    let mut block = hpack(&get("/"));
    block.push(0x80 | 0x7e);
    conn.send(HEADERS, END_HEADERS | END_STREAM, 1, &block)
        .await;
    conn.connection_error(COMPRESSION_ERROR).await;
}

// §5.1: DATA on a stream the client ended (half-closed remote) is a stream error STREAM_CLOSED.
// The request waits at the upstream, so the stream is still half-closed when the DATA arrives.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead, for any DATA \
            on a stream not receiving (h2 src/proto/streams/recv.rs, marked TODO there)"]
async fn s5_1_data_after_end_stream_is_stream_closed() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    let request = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &hpack(&get("/slow?ms=1000")),
    );
    let data = frame(DATA, 0, 1, b"late");
    conn.write(&[request, data].concat()).await;
    conn.stream_error(1, STREAM_CLOSED).await;
}

// §5.1: RST_STREAM on an idle stream is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s5_1_rst_stream_on_an_idle_stream_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(RST_STREAM, 0, 1, &0x8u32.to_be_bytes()).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §5.1.1: a client stream identifier must be odd.
#[tokio::test(flavor = "multi_thread")]
async fn s5_1_1_an_even_stream_id_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(2, &get("/"), true).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §5.1.1: a new stream identifier must be greater than every one opened before.
#[tokio::test(flavor = "multi_thread")]
async fn s5_1_1_a_decreasing_stream_id_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(5, &get("/"), true).await;
    conn.headers(3, &get("/"), true).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §5.3.1: a stream cannot depend on itself, in HEADERS or in PRIORITY: a stream error
// PROTOCOL_ERROR. RFC 9113 deprecates the priority scheme (§5.3.2) but keeps this rule, and
// h2spec still checks it.
#[tokio::test(flavor = "multi_thread")]
async fn s5_3_1_a_stream_depending_on_itself_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    let mut payload = [1u32.to_be_bytes().as_slice(), &[15]].concat();
    payload.extend(hpack(&get("/")));
    conn.send(
        HEADERS,
        END_HEADERS | END_STREAM | PRIORITY_FLAG,
        1,
        &payload,
    )
    .await;
    conn.stream_error(1, PROTOCOL_ERROR).await;

    let mut conn = Conn::open(&setup).await;
    let priority = [3u32.to_be_bytes().as_slice(), &[15]].concat();
    conn.send(PRIORITY, 0, 3, &priority).await;
    conn.stream_error(3, PROTOCOL_ERROR).await;
}

// §6.1: DATA on stream 0 is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_1_data_on_stream_0_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(DATA, END_STREAM, 0, b"test").await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §6.1: a pad length not less than the payload is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_1_data_padding_past_the_payload_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(1, &post("/padded"), false).await;
    conn.send(DATA, PADDED | END_STREAM, 1, &[6, b't', b'e', b's', b't'])
        .await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §6.2: HEADERS on stream 0 is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_2_headers_on_stream_0_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(0, &get("/"), true).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §6.3: PRIORITY on stream 0 is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_3_priority_on_stream_0_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(PRIORITY, 0, 0, &[0, 0, 0, 1, 15]).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §6.3: a PRIORITY frame whose length is not 5 is a stream error FRAME_SIZE_ERROR (a connection
// error FRAME_SIZE_ERROR is allowed too, §5.4).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps every frame that fails to load to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s6_3_a_priority_frame_of_the_wrong_length_is_a_frame_size_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(PRIORITY, 0, 1, &[0, 0, 0, 0]).await;
    conn.stream_error(1, FRAME_SIZE_ERROR).await;
}

// §6.4: RST_STREAM on stream 0 is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_4_rst_stream_on_stream_0_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(RST_STREAM, 0, 0, &0x8u32.to_be_bytes()).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §6.4: an RST_STREAM whose length is not 4 is a connection error FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps every frame that fails to load to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s6_4_rst_stream_of_the_wrong_length_is_a_frame_size_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.headers(1, &get("/slow?ms=1000"), true).await;
    conn.send(RST_STREAM, 0, 1, &[0, 0, 0]).await;
    conn.connection_error(FRAME_SIZE_ERROR).await;
}

// §6.5: a SETTINGS frame whose length is not a multiple of 6 is a connection error
// FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps every frame that fails to load to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s6_5_a_settings_length_not_a_multiple_of_6_is_a_frame_size_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(SETTINGS, 0, 0, &[0, 3, 0, 0, 0x40]).await;
    conn.connection_error(FRAME_SIZE_ERROR).await;
}

// §6.5: a SETTINGS ACK with a payload is a connection error FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps every frame that fails to load to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s6_5_a_settings_ack_with_a_payload_is_a_frame_size_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(SETTINGS, ACK, 0, &settings(&[(INITIAL_WINDOW_SIZE, 1)]))
        .await;
    conn.connection_error(FRAME_SIZE_ERROR).await;
}

// §6.5, §6.5.2: a SETTINGS frame on a stream, or one with SETTINGS_ENABLE_PUSH other than 0 or
// 1, is a connection error PROTOCOL_ERROR; each on a fresh connection.
#[tokio::test(flavor = "multi_thread")]
async fn s6_5_settings_breaking_the_frame_rules_are_protocol_errors() {
    let setup = setup().await;
    let cases: [(&str, Vec<u8>, u32); 2] = [
        (
            "a stream identifier other than 0",
            frame(SETTINGS, 0, 1, &settings(&[(INITIAL_WINDOW_SIZE, 1)])),
            PROTOCOL_ERROR,
        ),
        (
            "SETTINGS_ENABLE_PUSH = 2",
            frame(SETTINGS, 0, 0, &settings(&[(ENABLE_PUSH, 2)])),
            PROTOCOL_ERROR,
        ),
    ];
    for (case, bytes, code) in cases {
        let mut conn = Conn::open(&setup).await;
        conn.write(&bytes).await;
        println!("case: {case}");
        conn.connection_error(code).await;
    }
}

// §6.5.2: SETTINGS_INITIAL_WINDOW_SIZE past 2^31-1 is a connection error FLOW_CONTROL_ERROR.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps every frame that fails to load to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s6_5_2_an_initial_window_size_past_2_31_is_a_flow_control_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(SETTINGS, 0, 0, &settings(&[(INITIAL_WINDOW_SIZE, 1 << 31)]))
        .await;
    conn.connection_error(FLOW_CONTROL_ERROR).await;
}

// §6.5.2: SETTINGS_MAX_FRAME_SIZE outside 2^14..=2^24-1 is a connection error PROTOCOL_ERROR;
// each on a fresh connection.
#[tokio::test(flavor = "multi_thread")]
async fn s6_5_2_a_max_frame_size_out_of_range_is_a_protocol_error() {
    let setup = setup().await;
    let cases = [
        ("SETTINGS_MAX_FRAME_SIZE = 16383", (MAX_FRAME_SIZE, 16_383)),
        ("SETTINGS_MAX_FRAME_SIZE = 2^24", (MAX_FRAME_SIZE, 1 << 24)),
    ];
    for (case, setting) in cases {
        let mut conn = Conn::open(&setup).await;
        conn.send(SETTINGS, 0, 0, &settings(&[setting])).await;
        println!("case: {case}");
        conn.connection_error(PROTOCOL_ERROR).await;
    }
}

// §6.7: a PING is answered by a PING with ACK and the same payload.
#[tokio::test(flavor = "multi_thread")]
async fn s6_7_a_ping_is_acknowledged_with_its_payload() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(PING, 0, 0, b"h2spec!!").await;
    let deadline = Instant::now() + WAIT;
    loop {
        match conn.next(deadline).await {
            Event::Frame(f) if f.kind == PING => {
                assert_eq!(f.flags & ACK, ACK, "{f:?}");
                assert_eq!(f.stream, 0);
                assert_eq!(f.payload, b"h2spec!!");
                return;
            }
            Event::Frame(_) => {}
            other => panic!("no PING ACK: {other:?}; seen {:?}", conn.seen),
        }
    }
}

// §6.7: a PING whose length is not 8 is a connection error FRAME_SIZE_ERROR.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "h2 0.4.20 (hyper's HTTP/2 server) sends GOAWAY(PROTOCOL_ERROR) instead: its frame \
            decoder maps every frame that fails to load to PROTOCOL_ERROR (h2 src/codec/framed_read.rs)"]
async fn s6_7_a_ping_of_the_wrong_length_is_a_frame_size_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(PING, 0, 0, &[0; 6]).await;
    conn.connection_error(FRAME_SIZE_ERROR).await;
}

// §6.7: a PING on a stream other than 0 is a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_7_a_ping_on_a_stream_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(PING, 0, 1, &[0; 8]).await;
    conn.connection_error(PROTOCOL_ERROR).await;
}

// §6.9: a WINDOW_UPDATE increment of 0 is a connection error PROTOCOL_ERROR on the connection
// and a stream error PROTOCOL_ERROR on a stream.
#[tokio::test(flavor = "multi_thread")]
async fn s6_9_a_zero_window_increment_is_a_protocol_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(WINDOW_UPDATE, 0, 0, &0u32.to_be_bytes()).await;
    conn.connection_error(PROTOCOL_ERROR).await;

    let mut conn = Conn::open(&setup).await;
    conn.headers(1, &get("/slow?ms=1000"), true).await;
    conn.send(WINDOW_UPDATE, 0, 1, &0u32.to_be_bytes()).await;
    conn.stream_error(1, PROTOCOL_ERROR).await;
}

// §6.9.1: a window grown past 2^31-1 is a connection error FLOW_CONTROL_ERROR on the connection
// and a stream error FLOW_CONTROL_ERROR on a stream.
#[tokio::test(flavor = "multi_thread")]
async fn s6_9_1_a_window_past_2_31_is_a_flow_control_error() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.send(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .await;
    conn.send(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes())
        .await;
    conn.connection_error(FLOW_CONTROL_ERROR).await;

    let mut conn = Conn::open(&setup).await;
    conn.headers(1, &get("/slow?ms=1000"), true).await;
    conn.send(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes())
        .await;
    conn.send(WINDOW_UPDATE, 0, 1, &0x7fff_ffffu32.to_be_bytes())
        .await;
    conn.stream_error(1, FLOW_CONTROL_ERROR).await;
}

// §6.10: CONTINUATION must follow a HEADERS without END_HEADERS on the same stream, with no other
// frame between: otherwise a connection error PROTOCOL_ERROR.
#[tokio::test(flavor = "multi_thread")]
async fn s6_10_continuation_out_of_sequence_is_a_protocol_error() {
    let setup = setup().await;
    let block = hpack(&get("/"));
    let (first, rest) = block.split_at(block.len() / 2);
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "CONTINUATION with no HEADERS before it",
            frame(CONTINUATION, END_HEADERS, 1, &block),
        ),
        (
            "DATA between HEADERS and its CONTINUATION",
            [
                frame(HEADERS, END_STREAM, 1, first),
                frame(DATA, 0, 1, b"test"),
                frame(CONTINUATION, END_HEADERS, 1, rest),
            ]
            .concat(),
        ),
        (
            "the CONTINUATION on another stream",
            [
                frame(HEADERS, END_STREAM, 1, first),
                frame(CONTINUATION, END_HEADERS, 3, rest),
            ]
            .concat(),
        ),
    ];
    for (case, bytes) in cases {
        let mut conn = Conn::open(&setup).await;
        conn.write(&bytes).await;
        println!("case: {case}");
        conn.connection_error(PROTOCOL_ERROR).await;
    }
}

// §6.10: a header block split over HEADERS and CONTINUATION frames is one request.
#[tokio::test(flavor = "multi_thread")]
async fn s6_10_a_block_split_over_continuation_frames_is_one_request() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    let block = hpack(&get("/continued"));
    let (first, rest) = block.split_at(block.len() / 2);
    let (second, third) = rest.split_at(rest.len() / 2);
    conn.write(
        &[
            frame(HEADERS, END_STREAM, 1, first),
            frame(CONTINUATION, 0, 1, second),
            frame(CONTINUATION, END_HEADERS, 1, third),
        ]
        .concat(),
    )
    .await;
    let (code, body) = conn.response(1).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
}

/// A malformed request and the DATA sent with it.
struct Malformed {
    case: &'static str,
    fields: Vec<(&'static str, &'static str)>,
    /// The body, sent as one DATA frame per chunk; none means HEADERS ends the stream.
    data: Vec<&'static [u8]>,
}

fn malformed(case: &'static str, fields: &[(&'static str, &'static str)]) -> Malformed {
    Malformed {
        case,
        fields: fields.to_vec(),
        data: Vec::new(),
    }
}

const METHOD: (&str, &str) = (":method", "GET");
const SCHEME: (&str, &str) = (":scheme", "http");
const PATH: (&str, &str) = (":path", "/malformed");
const AUTHORITY: (&str, &str) = (":authority", "gateway.test");

/// Runs malformed-request cases, each on a fresh connection: each must be refused (RST_STREAM
/// PROTOCOL_ERROR, which h2spec asks for, or a 4xx, which RFC 9110 §15.5.1 allows a server that
/// reads the request and answers it), and where the refusal was a stream error the connection
/// must still serve a valid request.
async fn assert_refused(setup: &Setup, cases: Vec<Malformed>) {
    for Malformed { case, fields, data } in cases {
        let mut conn = Conn::open(setup).await;
        let end = if data.is_empty() { END_STREAM } else { 0 };
        let mut bytes = frame(HEADERS, END_HEADERS | end, 1, &hpack(&fields));
        for (at, chunk) in data.iter().enumerate() {
            let end = if at + 1 == data.len() { END_STREAM } else { 0 };
            bytes.extend(frame(DATA, end, 1, chunk));
        }
        conn.write(&bytes).await;
        let refusal = conn.refusal(1).await;
        println!("case: {case}: {refusal:?}");
        if refusal != Refusal::ConnectionEnded {
            conn.echoes(3, "/after-malformed").await;
        }
    }
}

// §8.2, §8.2.1: field names are lower case, and made of valid characters.
#[tokio::test(flavor = "multi_thread")]
async fn s8_2_malformed_field_names_are_refused() {
    let setup = setup().await;
    assert_refused(
        &setup,
        vec![
            malformed(
                "an upper-case field name",
                &[METHOD, SCHEME, PATH, AUTHORITY, ("X-Upper", "1")],
            ),
            malformed(
                "a space in a field name",
                &[METHOD, SCHEME, PATH, AUTHORITY, ("x bad", "1")],
            ),
        ],
    )
    .await;
}

// §8.2.2: connection-specific fields are malformed, and `te` may only be `trailers`.
#[tokio::test(flavor = "multi_thread")]
async fn s8_2_2_connection_specific_fields_are_refused() {
    let setup = setup().await;
    assert_refused(
        &setup,
        vec![
            malformed(
                "connection: keep-alive",
                &[
                    METHOD,
                    SCHEME,
                    PATH,
                    AUTHORITY,
                    ("connection", "keep-alive"),
                ],
            ),
            malformed(
                "te: trailers, deflate",
                &[METHOD, SCHEME, PATH, AUTHORITY, ("te", "trailers, deflate")],
            ),
        ],
    )
    .await;
}

// §8.3: pseudo-headers: only the defined request ones, each once, all before regular fields.
#[tokio::test(flavor = "multi_thread")]
async fn s8_3_malformed_pseudo_headers_are_refused() {
    let setup = setup().await;
    assert_refused(
        &setup,
        vec![
            malformed(
                "an unknown pseudo-header",
                &[METHOD, SCHEME, PATH, AUTHORITY, (":foo", "bar")],
            ),
            malformed(
                "a response pseudo-header",
                &[METHOD, SCHEME, PATH, AUTHORITY, (":status", "200")],
            ),
            malformed(
                "a pseudo-header after a regular field",
                &[METHOD, SCHEME, AUTHORITY, ("x-regular", "1"), PATH],
            ),
            malformed(
                "a repeated :method",
                &[METHOD, METHOD, SCHEME, PATH, AUTHORITY],
            ),
        ],
    )
    .await;
}

// §8.3.1: a request has :method, :scheme and a non-empty :path.
#[tokio::test(flavor = "multi_thread")]
async fn s8_3_1_missing_or_empty_pseudo_headers_are_refused() {
    let setup = setup().await;
    assert_refused(
        &setup,
        vec![
            malformed("no :method", &[SCHEME, PATH, AUTHORITY]),
            malformed("no :scheme", &[METHOD, PATH, AUTHORITY]),
            malformed("no :path", &[METHOD, SCHEME, AUTHORITY]),
            malformed(
                "an empty :path",
                &[METHOD, SCHEME, (":path", ""), AUTHORITY],
            ),
        ],
    )
    .await;
}

// §8.1.1: a content-length that the DATA frames do not add up to makes the request malformed.
#[tokio::test(flavor = "multi_thread")]
async fn s8_1_1_a_content_length_the_data_does_not_match_is_refused() {
    let setup = setup().await;
    let post = [
        (":method", "POST"),
        SCHEME,
        PATH,
        AUTHORITY,
        ("content-length", "1"),
    ];
    assert_refused(
        &setup,
        vec![
            Malformed {
                data: vec![b"test"],
                ..malformed("content-length 1, one DATA frame of 4", &post)
            },
            Malformed {
                data: vec![b"t", b"est"],
                ..malformed("content-length 1, DATA frames of 1 and 3", &post)
            },
        ],
    )
    .await;
}

// Control: a valid GET is proxied to the upstream and its echo comes back, on the same
// connection for several streams.
#[tokio::test(flavor = "multi_thread")]
async fn a_valid_get_is_proxied() {
    let setup = setup().await;
    let mut conn = Conn::open(&setup).await;
    conn.echoes(1, "/control").await;
    conn.echoes(3, "/control-again").await;
}
