//! Websocket text messages: decoding never panics.
#![no_main]

use comfy_proxy::wire::ServerMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = ServerMessage::decode(text) {
        let _ = (msg.kind(), msg.prompt_id());
    }
});
