//! Any bytes a bus client might send: decoding never panics, and whatever decodes re-encodes to
//! a line that decodes to the same frame.
#![no_main]

use fieldnet::bus::frame::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Ok(frame) = decode(line) {
            let again = encode(&frame);
            assert!(again.ends_with('\n') && !again[..again.len() - 1].contains('\n'));
            let decoded =
                decode(again.trim_end_matches('\n').as_bytes()).expect("re-encoded frame decodes");
            assert_eq!(decoded, frame);
        }
    }
});
