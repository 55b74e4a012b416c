//! Route patterns: any pattern text and any path, never a panic; a pattern that parses shows
//! itself as written, and whatever it captures is a part of the path.
#![no_main]

use gateway_routing::pattern::PathPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, "/"));
    let Ok(parsed) = PathPattern::parse(pattern) else {
        return;
    };
    assert_eq!(parsed.as_str(), pattern);
    if let Some(params) = parsed.matches(path) {
        for (_, value) in params.iter() {
            assert!(path.contains(value), "{value:?} not in {path:?}");
        }
    }
});
