//! The chunked and length body decoders: any bytes, cut anywhere, never a panic, never more data
//! than came, and the same data and verdict whether the bytes come whole or in two pieces.
#![no_main]

use bytes::BytesMut;
use gateway_wire::{BodyDecoder, BodyFraming, Decoded};
use libfuzzer_sys::fuzz_target;

fn decode(framing: BodyFraming, pieces: &[&[u8]]) -> (Vec<u8>, Option<&'static str>) {
    let mut decoder = BodyDecoder::new(framing);
    let mut buffer = BytesMut::new();
    let mut data = Vec::new();
    for piece in pieces {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Decoded::Data(bytes)) => data.extend_from_slice(&bytes),
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) => return (data, None),
                Err(error) => return (data, Some(error)),
            }
        }
    }
    (data, Some("incomplete"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let framing = if selector & 1 == 0 {
        BodyFraming::Chunked
    } else {
        BodyFraming::Length(u64::from(selector >> 1) * 7)
    };
    let cut = usize::from(selector).min(rest.len());
    let whole = decode(framing, &[rest]);
    let split = decode(framing, &[&rest[..cut], &rest[cut..]]);
    assert!(whole.0.len() <= rest.len());
    assert_eq!(whole, split, "cut at {cut}");
});
