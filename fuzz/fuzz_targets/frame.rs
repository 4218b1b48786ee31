//! Binary websocket frames: decoding never panics, and what decodes lies inside the frame.
#![no_main]

use comfy_proxy::wire::BinaryFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = BinaryFrame::decode(data) else {
        return;
    };
    let range = data.as_ptr_range();
    if let Some((_, image)) = frame.image() {
        let inside = range.start <= image.as_ptr() && image.as_ptr_range().end <= range.end;
        assert!(inside, "the image is not a slice of the frame");
    }
    // A limit below the frame's length refuses it.
    if !data.is_empty() {
        assert!(BinaryFrame::decode_with_limit(data, data.len() - 1).is_err());
    }
});
