//! Transcripts: parsing never panics, and an error names a line of the text.
#![no_main]

use comfy_proxy::transcript::Transcript;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Transcript::parse(text) {
        assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{e}");
    }
});
