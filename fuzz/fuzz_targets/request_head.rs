//! The client request-head parser: any bytes, never a panic, and a head it accepts holds only
//! what RFC 9112 allows (the checks `http` makes on building it).
#![no_main]

use bytes::BytesMut;
use gateway_wire::client::{HeadLimits, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_head_bytes: 16 * 1024,
        max_header_lines: 64,
    };
    let mut buffer = BytesMut::from(data);
    if let Ok(Some(head)) = parse_request_head(&mut buffer, limits) {
        // What was taken off is the head; what is left is no more than what came.
        assert!(buffer.len() < data.len());
        for (name, value) in &head.parts.headers {
            assert!(!name.as_str().is_empty());
            assert!(!value.as_bytes().contains(&b'\n'));
        }
    }
});
