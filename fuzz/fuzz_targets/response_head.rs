//! The upstream response-head parser: any bytes an instance sends, never a panic.
#![no_main]

use bytes::BytesMut;
use gateway_wire::upstream::parse_response_head;
use http::Method;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (method, rest) = match data.split_first() {
        Some((0, rest)) => (Method::HEAD, rest),
        Some((_, rest)) => (Method::GET, rest),
        None => return,
    };
    let mut buffer = BytesMut::from(rest);
    let _ = parse_response_head(&mut buffer, &method);
});
