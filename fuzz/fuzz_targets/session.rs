//! The session fed an arbitrary sequence of inputs: recorded messages and frames (with our
//! prompt ids), arbitrary ones, HTTP answers to its open requests, disconnects, connects,
//! timeouts, cancels and submits. It never panics; every event names one of our prompts; no
//! prompt ends twice or reports after its end; and once the server answers everything and time
//! passes every deadline, each prompt with a total deadline has ended. The harness and its
//! checks are the test kit's (`comfy_proxy_testkit::session`), shared with the property tests.
#![no_main]

use arbitrary::Arbitrary;
use comfy_proxy::session::SessionConfig;
use comfy_proxy::wire::frame::encode_image_with_metadata;
use comfy_proxy_testkit::session::{Harness, Violation, corpus};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

#[derive(Debug, Arbitrary)]
enum Op {
    Submit {
        graph: u8,
        total: Option<u16>,
        accept: Option<u16>,
        idle: Option<u16>,
    },
    Recorded {
        pick: u16,
        prompt: u8,
    },
    Text(String),
    RecordedFrame {
        pick: u8,
        cut: Option<u16>,
    },
    Meta {
        prompt: u8,
        node: u8,
        image: Vec<u8>,
    },
    Binary(Vec<u8>),
    Respond {
        pick: u8,
        status: u16,
        body: Body,
    },
    HttpError(u8),
    Connected,
    Disconnect,
    Advance(u16),
    Cancel(u8),
}

#[derive(Debug, Arbitrary)]
enum Body {
    Plausible { prompt: u8, variant: u8 },
    Raw(Vec<u8>),
}

fn apply(h: &mut Harness, op: Op) -> Result<(), Violation> {
    let c = corpus();
    match op {
        Op::Submit {
            graph,
            total,
            accept,
            idle,
        } => h.submit(usize::from(graph), total, accept, idle),
        Op::Recorded { pick, prompt } => {
            let text = h.recorded_text(usize::from(pick), usize::from(prompt));
            h.text(&text)
        }
        Op::Text(text) => h.text(&text),
        Op::RecordedFrame { pick, cut } => {
            let frame = c.frames[usize::from(pick) % c.frames.len()].clone();
            let frame = match cut {
                Some(n) => frame.slice(..usize::from(n).min(frame.len())),
                None => frame,
            };
            h.binary(frame)
        }
        Op::Meta {
            prompt,
            node,
            image,
        } => {
            let nodes = ["9", "save_image_websocket_node", "save_a", "1", "x"];
            let meta = json!({
                "node_id": nodes[usize::from(node) % nodes.len()],
                "prompt_id": h.prompt(usize::from(prompt)), "image_type": "image/png",
            });
            h.binary(encode_image_with_metadata(&meta.to_string(), &image))
        }
        Op::Binary(bytes) => h.binary(bytes),
        Op::Respond { pick, status, body } => {
            let Some(open) = h.take_open(usize::from(pick)) else {
                return Ok(());
            };
            let body = match body {
                Body::Plausible { prompt, variant } => {
                    h.plausible_answer(&open, usize::from(prompt), variant)
                }
                Body::Raw(raw) => raw,
            };
            h.respond(open, status, body)
        }
        Op::HttpError(pick) => h.http_error(usize::from(pick)),
        Op::Connected => h.connected(),
        Op::Disconnect => h.disconnect(),
        Op::Advance(ms) => h.advance(ms),
        Op::Cancel(pick) => h.cancel(usize::from(pick)),
    }
}

fn run(ops: Vec<Op>) -> Result<(), Violation> {
    let config = SessionConfig::default().with_max_frame_len(4096);
    let mut h = Harness::new("fuzz", config);
    for op in ops.into_iter().take(200) {
        apply(&mut h, op)?;
    }
    h.settle()?;
    h.check_ends()
}

fuzz_target!(|ops: Vec<Op>| {
    if let Err(violation) = run(ops) {
        panic!("{violation}");
    }
});
