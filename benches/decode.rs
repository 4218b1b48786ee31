//! Decoding speed: each message kind from the recordings beside a plain `serde_json::Value`
//! parse of the same text, and binary frames from 1 KiB to 64 MiB (the cost must not grow
//! with the image: it is borrowed, not copied).
//!
//! Run with `cargo bench --bench decode`.

use comfy_proxy::replay::replay;
use comfy_proxy::transcript::{RecordKind, Transcript};
use comfy_proxy::wire::frame::{BinaryFrame, encode_image, encode_image_with_metadata};
use comfy_proxy::wire::{ImageFormat, ServerMessage};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// One recorded text message of the given type.
fn sample(kind: &str) -> String {
    for name in [
        "exec_error.jsonl",
        "feature_flags.jsonl",
        "saveimage_history.jsonl",
        "interrupt.jsonl",
    ] {
        let t = Transcript::parse(&fixture(name)).unwrap();
        for r in t.records {
            if let RecordKind::WsText { text } = r.kind
                && ServerMessage::decode(&text).is_ok_and(|m| m.kind() == kind)
            {
                return text;
            }
        }
    }
    panic!("no {kind} message in the fixtures")
}

const KINDS: &[&str] = &[
    "status",
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
    "feature_flags",
];

#[divan::bench(args = KINDS)]
fn typed(bencher: Bencher, kind: &str) {
    let text = sample(kind);
    bencher
        .counter(divan::counter::BytesCount::of_str(&text))
        .bench(|| ServerMessage::decode(black_box(&text)).unwrap());
}

#[divan::bench(args = KINDS)]
fn serde_json_value(bencher: Bencher, kind: &str) {
    let text = sample(kind);
    bencher
        .counter(divan::counter::BytesCount::of_str(&text))
        .bench(|| serde_json::from_str::<serde_json::Value>(black_box(&text)).unwrap());
}

const SIZES: &[usize] = &[1 << 10, 16 << 10, 1 << 20, 16 << 20, 64 << 20];

#[divan::bench(args = SIZES)]
fn frame_type1(bencher: Bencher, size: usize) {
    let frame = encode_image(ImageFormat::Png, &vec![7u8; size - 8]);
    bencher.bench(|| {
        BinaryFrame::decode_with_limit(black_box(&frame), usize::MAX)
            .unwrap()
            .image()
            .map(|(_, i)| i.len())
    });
}

#[divan::bench(args = SIZES)]
fn frame_type4(bencher: Bencher, size: usize) {
    let meta = r#"{"node_id": "save_image_websocket_node", "prompt_id": "37b6ead6-6beb-4dcd-a291-77848253196f", "display_node_id": "save_image_websocket_node", "parent_node_id": null, "real_node_id": "save_image_websocket_node", "image_type": "image/png"}"#;
    let frame = encode_image_with_metadata(meta, &vec![7u8; size]);
    bencher.bench(|| {
        BinaryFrame::decode_with_limit(black_box(&frame), usize::MAX)
            .unwrap()
            .image()
            .map(|(_, i)| i.len())
    });
}

const RECORDINGS: &[&str] = &[
    "ws_batch4",
    "progress_previews",
    "feature_flags",
    "queue_ops",
    "exec_error",
];

#[divan::bench(args = RECORDINGS)]
fn replay_recording(bencher: Bencher, name: &str) {
    let t = Transcript::parse(&fixture(&format!("{name}.jsonl"))).unwrap();
    let events = replay(&t).events.len();
    bencher
        .counter(divan::counter::ItemsCount::new(events))
        .bench(|| replay(black_box(&t)));
}

/// Building and serializing a Flux graph with 3 LoRAs, as a job submission does.
#[divan::bench]
fn flux_graph_with_3_loras() -> String {
    use comfy_proxy::workflow::{FluxParams, Lora};
    let graph = FluxParams::new(black_box("a lighthouse at dusk"), black_box(42))
        .lora(Lora::new("a.safetensors"))
        .lora(Lora::new("b.safetensors").weight(0.5))
        .lora(Lora::new("c.safetensors").weight(0.8))
        .build()
        .unwrap();
    graph.to_string()
}
