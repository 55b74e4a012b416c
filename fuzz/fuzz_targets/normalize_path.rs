//! Path normalisation: any text, never a panic, and a normalised path is a fixed point: starts
//! with `/`, holds no dot segment and no empty segment, and normalises to itself.
#![no_main]

use gateway_routing::normalize::normalize_path;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    assert!(!path.contains("//"), "{raw:?} -> {path:?}");
    for segment in path.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{raw:?} -> {path:?}");
    }
    let again = normalize_path(&path).expect("a normalised path normalises");
    assert_eq!(again, path, "not a fixed point: {raw:?}");
});
