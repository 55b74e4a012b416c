//! Split agreement: the codec must reach the same verdict on an input whether it arrives whole,
//! byte by byte, or cut anywhere. A parser that decides differently by where the reads fell is
//! one a client can steer by timing its writes, which is how smuggling starts.

use bytes::BytesMut;
use gateway_wire::client::{HeadLimits, parse_request_head};
use gateway_wire::{BodyDecoder, BodyFraming, Decoded};
use proptest::prelude::*;

/// Cuts `input` into pieces: whole, byte by byte, and at the given lengths (the rest whole).
fn ways_to_cut(input: &[u8], cuts: &[usize]) -> Vec<Vec<Vec<u8>>> {
    let whole = vec![input.to_vec()];
    let bytes = input.iter().map(|byte| vec![*byte]).collect();
    let mut random = Vec::new();
    let mut rest = input;
    for &cut in cuts {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(cut.min(rest.len()));
        random.push(piece.to_vec());
        rest = after;
    }
    if !rest.is_empty() {
        random.push(rest.to_vec());
    }
    vec![whole, bytes, random]
}

/// What the head parser made of the pieces, in a form two runs can be compared by.
fn parse_head(pieces: &[Vec<u8>]) -> String {
    let limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_header_lines: 100,
    };
    let mut buffer = BytesMut::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        match parse_request_head(&mut buffer, limits) {
            Ok(None) => continue,
            Ok(Some(head)) => {
                let headers: Vec<(String, Vec<u8>)> = head
                    .parts
                    .headers
                    .iter()
                    .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                    .collect();
                return format!(
                    "head {} {} {:?} {headers:?} body {:?} keep-alive {} continue {}",
                    head.parts.method,
                    head.parts.uri,
                    head.parts.version,
                    head.body,
                    head.keep_alive,
                    head.expects_continue
                );
            }
            Err(error) => return format!("refused {error:?}"),
        }
    }
    "incomplete".to_owned()
}

/// What the body decoder made of the pieces: the data, and how it ended.
fn decode_body(framing: BodyFraming, pieces: &[Vec<u8>]) -> (Vec<u8>, String) {
    let mut decoder = BodyDecoder::new(framing);
    let mut buffer = BytesMut::new();
    let mut data = Vec::new();
    for (index, piece) in pieces.iter().enumerate() {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Decoded::Data(bytes)) => data.extend_from_slice(&bytes),
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) => {
                    let left: usize =
                        buffer.len() + pieces[index + 1..].iter().map(Vec::len).sum::<usize>();
                    return (data, format!("end, {left} bytes after it"));
                }
                Err(error) => return (data, format!("malformed: {error}")),
            }
        }
    }
    (data, "incomplete".to_owned())
}

/// A chunked body from these chunk sizes, with extensions, trailers and line endings varied.
fn chunked(sizes: &[usize], extension: bool, trailer: bool, bare_lf: bool) -> Vec<u8> {
    let end = if bare_lf { "\n" } else { "\r\n" };
    let mut body = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        body.extend_from_slice(format!("{size:x}").as_bytes());
        if extension {
            body.extend_from_slice(b";name=\"value\"");
        }
        body.extend_from_slice(b"\r\n");
        body.extend(std::iter::repeat_n(b'a' + (index % 26) as u8, *size));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n");
    if trailer {
        body.extend_from_slice(b"x-checksum: 42\r\n");
    }
    body.extend_from_slice(end.as_bytes());
    body.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    body
}

/// Changes one byte, if asked: most mutants are malformed, some only differently so.
fn mutate(mut input: Vec<u8>, mutation: Option<(usize, u8)>) -> Vec<u8> {
    if let Some((at, byte)) = mutation
        && !input.is_empty()
    {
        let at = at % input.len();
        input[at] = byte;
    }
    input
}

fn head_text() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "get", "CONNECT", "G E T"]);
    let target = prop::sample::select(vec![
        "/",
        "/a/b?c=d",
        "http://example.com/x",
        "*",
        "/%2e%2e/",
        "/a b",
        "example.com:443",
    ]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "http/1.1"]);
    let header = prop::sample::select(vec![
        "Host: example.com",
        "host: a, b",
        "Content-Length: 5",
        "Content-Length: 5, 5",
        "Content-Length: -1",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Connection: close",
        "Expect: 100-continue",
        " folded: continuation",
        "X-Empty:",
        "Bad Name: x",
        "X-Tab:\tvalue\t",
    ]);
    let line_end = prop::sample::select(vec!["\r\n", "\n"]);
    (
        method,
        target,
        version,
        prop::collection::vec(header, 0..6),
        line_end,
    )
        .prop_map(|(method, target, version, headers, end)| {
            let mut head = format!("{method} {target} {version}{end}");
            for header in headers {
                head.push_str(header);
                head.push_str(end);
            }
            head.push_str(end);
            head.push_str("body");
            head.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_heads_parse_the_same_however_they_are_cut(
        head in head_text(),
        mutation in prop::option::of((any::<usize>(), any::<u8>())),
        cuts in prop::collection::vec(1..40usize, 0..12),
    ) {
        let input = mutate(head, mutation);
        let verdicts: Vec<String> = ways_to_cut(&input, &cuts)
            .iter()
            .map(|pieces| parse_head(pieces))
            .collect();
        prop_assert_eq!(&verdicts[0], &verdicts[1], "whole against byte by byte");
        prop_assert_eq!(&verdicts[0], &verdicts[2], "whole against cut at {:?}", cuts);
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_they_are_cut(
        sizes in prop::collection::vec(0..300usize, 0..5),
        extension in any::<bool>(),
        trailer in any::<bool>(),
        bare_lf in any::<bool>(),
        mutation in prop::option::of((any::<usize>(), any::<u8>())),
        cuts in prop::collection::vec(1..64usize, 0..12),
    ) {
        let input = mutate(chunked(&sizes, extension, trailer, bare_lf), mutation);
        let outcomes: Vec<(Vec<u8>, String)> = ways_to_cut(&input, &cuts)
            .iter()
            .map(|pieces| decode_body(BodyFraming::Chunked, pieces))
            .collect();
        prop_assert_eq!(&outcomes[0], &outcomes[1], "whole against byte by byte");
        prop_assert_eq!(&outcomes[0], &outcomes[2], "whole against cut at {:?}", cuts);
    }

    #[test]
    fn length_bodies_decode_the_same_however_they_are_cut(
        body in prop::collection::vec(any::<u8>(), 0..600),
        length in 0..700u64,
        cuts in prop::collection::vec(1..64usize, 0..12),
    ) {
        let outcomes: Vec<(Vec<u8>, String)> = ways_to_cut(&body, &cuts)
            .iter()
            .map(|pieces| decode_body(BodyFraming::Length(length), pieces))
            .collect();
        prop_assert_eq!(&outcomes[0], &outcomes[1], "whole against byte by byte");
        prop_assert_eq!(&outcomes[0], &outcomes[2], "whole against cut at {:?}", cuts);
    }
}
