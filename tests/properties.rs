//! Property tests: the decoders and the session state machine never panic on what a server
//! (or a file) may hand them, frames round-trip, and the session ends each prompt at most once,
//! and exactly once by its total deadline.
//!
//! Inputs are arbitrary bytes and text, and mutations of everything recorded in `fixtures/`:
//! text messages, binary frames, HTTP bodies and whole transcripts.

use std::time::Duration;

use comfy_proxy::session::SessionConfig;
use comfy_proxy::transcript::Transcript;
use comfy_proxy::wire::frame::{encode_image, encode_image_with_metadata, encode_text};
use comfy_proxy::wire::{BinaryFrame, ImageFormat, ServerMessage};
use comfy_proxy_testkit::rng::SplitMix64 as Rng;
use comfy_proxy_testkit::session::{Harness, PNG, Violation, corpus, with_prompt_id};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// Values that break decoders: wrong types, edge numbers, odd strings.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.index(14) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1.5),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!(1e308),
        7 => json!(""),
        8 => json!("\u{0}\u{fffd}é"),
        9 => json!([]),
        10 => json!({}),
        11 => json!([1, "two", null]),
        12 => json!({"prompt_id": 5, "node": []}),
        _ => json!("x".repeat(rng.index(300))),
    }
}

/// A random change somewhere in a JSON value: a leaf replaced, a key removed or added.
fn mutate_value(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Object(map) if !map.is_empty() && rng.index(4) != 0 => {
            let key = map.keys().nth(rng.index(map.len())).unwrap().clone();
            match rng.index(4) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, odd_value(rng));
                }
                2 => {
                    map.insert(format!("{key}_"), odd_value(rng));
                }
                _ => mutate_value(map.get_mut(&key).unwrap(), rng),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.index(4) != 0 => {
            let i = rng.index(items.len());
            if rng.index(3) == 0 {
                items.remove(i);
            } else {
                mutate_value(&mut items[i], rng);
            }
        }
        other => *other = odd_value(rng),
    }
}

/// `text` changed by `seed`: inside its JSON when it is JSON, else (or sometimes) as characters.
fn mutate_text(text: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let rounds = 1 + rng.index(3);
    let mut out = text.to_owned();
    for _ in 0..rounds {
        if rng.index(3) != 0
            && let Ok(mut v) = serde_json::from_str::<Value>(&out)
        {
            mutate_value(&mut v, &mut rng);
            out = v.to_string();
            continue;
        }
        let mut chars: Vec<char> = out.chars().collect();
        let at = rng.index(chars.len() + 1);
        match rng.index(4) {
            0 => chars.truncate(at),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            2 => chars.insert(at, ['{', '"', '}', ']', '\\', '\u{7f}', '0'][rng.index(7)]),
            _ => {
                let len = chars.len();
                if len > 0 {
                    chars[at.min(len - 1)] = char::from(b' ' + (rng.index(95)) as u8);
                }
            }
        }
        out = chars.into_iter().collect();
    }
    out
}

/// `bytes` changed by `seed`: flipped, cut, grown, or its header lengths rewritten.
fn mutate_bytes(bytes: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.index(3) {
        let at = rng.index(out.len() + 1);
        match rng.index(5) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] ^= 1 << rng.index(8),
            2 => out.insert(at, rng.next_u64() as u8),
            3 if out.len() >= 8 => {
                let len = [0u32, 1, 7, 64 << 10, u32::MAX][rng.index(5)];
                out[4..8].copy_from_slice(&len.to_be_bytes());
            }
            _ => out.extend((0..rng.index(16)).map(|_| rng.next_u64() as u8)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Decoders
// ---------------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_decoder_never_panics(
        kind in prop_oneof![Just(1u32), Just(2), Just(3), Just(4), any::<u32>()],
        rest in proptest::collection::vec(any::<u8>(), 0..256),
        limit in 0usize..512,
    ) {
        let mut frame = kind.to_be_bytes().to_vec();
        frame.extend_from_slice(&rest);
        let _ = BinaryFrame::decode(&frame);
        let _ = BinaryFrame::decode(&rest);
        if let Err(e) = BinaryFrame::decode_with_limit(&frame, limit) {
            let _ = e.to_string();
        }
    }

    #[test]
    fn mutated_recorded_frames_never_panic(pick in any::<usize>(), seed in any::<u64>()) {
        let frames = &corpus().frames;
        let frame = mutate_bytes(&frames[pick % frames.len()], seed);
        if let Ok(decoded) = BinaryFrame::decode(&frame) {
            // Whatever decodes lies inside the frame.
            if let Some((_, image)) = decoded.image() {
                prop_assert!(image.len() <= frame.len());
            }
        }
    }

    #[test]
    fn frames_round_trip(
        png in any::<bool>(),
        image in proptest::collection::vec(any::<u8>(), 0..200),
        node in "[a-zA-Z0-9_ ]{0,40}",
        text in any::<String>(),
        prompt in "[a-f0-9-]{0,36}",
    ) {
        let format = if png { ImageFormat::Png } else { ImageFormat::Jpeg };
        let frame = encode_image(format, &image);
        prop_assert_eq!(
            BinaryFrame::decode(&frame).unwrap(),
            BinaryFrame::Image { format, image: &image }
        );
        let frame = encode_text(&node, &text);
        prop_assert_eq!(
            BinaryFrame::decode(&frame).unwrap(),
            BinaryFrame::Text { node_id: &node, text: &text }
        );
        let meta = json!({
            "node_id": node, "prompt_id": prompt, "display_node_id": node,
            "parent_node_id": null, "real_node_id": node,
            "image_type": if png { "image/png" } else { "image/jpeg" },
        });
        let frame = encode_image_with_metadata(&meta.to_string(), &image);
        let BinaryFrame::ImageWithMetadata { metadata, format: got, image: data } =
            BinaryFrame::decode(&frame).unwrap()
        else {
            panic!("a type 4 frame");
        };
        prop_assert_eq!(
            (metadata.node_id.as_str(), metadata.prompt_id.as_str(), got, data),
            (node.as_str(), prompt.as_str(), format, image.as_slice())
        );
    }

    #[test]
    fn message_decoder_never_panics_on_any_text(text in any::<String>()) {
        let _ = ServerMessage::decode(&text);
    }

    #[test]
    fn message_decoder_never_panics_on_mutated_messages(pick in any::<usize>(), seed in any::<u64>()) {
        let texts = &corpus().texts;
        let text = mutate_text(&texts[pick % texts.len()], seed);
        if let Ok(msg) = ServerMessage::decode(&text) {
            let _ = (msg.kind(), msg.prompt_id());
        }
    }

    #[test]
    fn transcript_parser_never_panics(text in any::<String>()) {
        let _ = Transcript::parse(&text);
    }

    #[test]
    fn transcript_parser_never_panics_on_mutated_files(
        pick in any::<usize>(),
        seeds in proptest::collection::vec(any::<u64>(), 1..4),
    ) {
        let files = &corpus().files;
        let file = &files[pick % files.len()];
        let mut lines: Vec<String> = file.lines().map(str::to_owned).collect();
        for seed in seeds {
            let mut rng = Rng::new(seed);
            let i = rng.index(lines.len());
            match rng.index(4) {
                0 => lines[i] = mutate_text(&lines[i], seed),
                1 => {
                    let line = lines[i].clone();
                    lines.insert(rng.index(lines.len()), line);
                }
                2 if lines.len() > 1 => {
                    lines.remove(i);
                }
                _ => {
                    let j = rng.index(lines.len());
                    lines.swap(i, j);
                }
            }
        }
        if let Err(e) = Transcript::parse(&lines.join("\n")) {
            prop_assert!(e.line >= 1 && e.line <= lines.len().max(1), "{}", e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The session, fed anything
// ---------------------------------------------------------------------------------------------

/// A binary frame to feed.
#[derive(Debug, Clone)]
enum Bin {
    /// A recorded frame, its prompt id made one of ours, maybe mutated.
    Recorded {
        pick: usize,
        prompt: usize,
        seed: Option<u64>,
    },
    /// A type 4 image of one of our prompts, for a node of the graph or not.
    Meta {
        prompt: usize,
        node: usize,
        png: bool,
    },
    Arbitrary(Vec<u8>),
}

/// A response body.
#[derive(Debug, Clone)]
enum Body {
    /// What a server would say to this request (see `comfy_proxy_testkit::session::plausible`).
    Plausible {
        prompt: usize,
        variant: u8,
    },
    Recorded {
        pick: usize,
        seed: Option<u64>,
    },
    Arbitrary(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Op {
    Submit {
        graph: usize,
        total: Option<u16>,
        accept: Option<u16>,
        idle: Option<u16>,
    },
    Text {
        pick: usize,
        prompt: usize,
        seed: Option<u64>,
    },
    AnyText(String),
    Binary(Bin),
    Respond {
        pick: usize,
        status: u16,
        body: Body,
    },
    HttpError(usize),
    Connected,
    Disconnect,
    Advance(u16),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let ms = proptest::option::of(1u16..5_000);
    let status = prop_oneof![
        4 => Just(200u16),
        1 => Just(400),
        1 => Just(404),
        1 => Just(500),
        1 => any::<u16>(),
    ];
    let bin =
        prop_oneof![
            (
                any::<usize>(),
                any::<usize>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(pick, prompt, seed)| Bin::Recorded { pick, prompt, seed }),
            (any::<usize>(), any::<usize>(), any::<bool>())
                .prop_map(|(prompt, node, png)| Bin::Meta { prompt, node, png }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bin::Arbitrary),
        ];
    let body = prop_oneof![
        3 => (any::<usize>(), any::<u8>()).prop_map(|(prompt, variant)| Body::Plausible { prompt, variant }),
        1 => (any::<usize>(), proptest::option::of(any::<u64>()))
            .prop_map(|(pick, seed)| Body::Recorded { pick, seed }),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Body::Arbitrary),
    ];
    prop_oneof![
        2 => (any::<usize>(), ms.clone(), ms.clone(), ms)
            .prop_map(|(graph, total, accept, idle)| Op::Submit { graph, total, accept, idle }),
        6 => (any::<usize>(), any::<usize>(), proptest::option::of(any::<u64>()))
            .prop_map(|(pick, prompt, seed)| Op::Text { pick, prompt, seed }),
        1 => any::<String>().prop_map(Op::AnyText),
        3 => bin.prop_map(Op::Binary),
        4 => (any::<usize>(), status, body).prop_map(|(pick, status, body)| Op::Respond { pick, status, body }),
        1 => any::<usize>().prop_map(Op::HttpError),
        2 => Just(Op::Connected),
        1 => Just(Op::Disconnect),
        2 => (0u16..3_000).prop_map(Op::Advance),
        1 => any::<usize>().prop_map(Op::Cancel),
    ]
}

/// Feeds `op` to the harness.
fn apply(h: &mut Harness, op: Op) -> Result<(), TestCaseError> {
    apply_op(h, op).map_err(|v| TestCaseError::fail(v.to_string()))
}

fn apply_op(h: &mut Harness, op: Op) -> Result<(), Violation> {
    let c = corpus();
    match op {
        Op::Submit {
            graph,
            total,
            accept,
            idle,
        } => h.submit(graph, total, accept, idle),
        Op::Text { pick, prompt, seed } => {
            let text = h.recorded_text(pick, prompt);
            let text = match seed {
                Some(seed) => mutate_text(&text, seed),
                None => text,
            };
            h.text(&text)
        }
        Op::AnyText(text) => h.text(&text),
        Op::Binary(bin) => {
            let frame = match bin {
                Bin::Recorded { pick, prompt, seed } => {
                    let frame = &c.frames[pick % c.frames.len()];
                    let frame = match BinaryFrame::decode(frame) {
                        Ok(BinaryFrame::ImageWithMetadata { image, .. }) => {
                            let len = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                            let meta = std::str::from_utf8(&frame[8..8 + len as usize]).unwrap();
                            let meta = with_prompt_id(meta, &h.prompt(prompt));
                            encode_image_with_metadata(&meta, image)
                        }
                        _ => frame.to_vec(),
                    };
                    match seed {
                        Some(seed) => mutate_bytes(&frame, seed),
                        None => frame,
                    }
                }
                Bin::Meta { prompt, node, png } => {
                    let nodes = ["9", "save_image_websocket_node", "1", "nope"];
                    let meta = json!({
                        "node_id": nodes[node % nodes.len()], "prompt_id": h.prompt(prompt),
                        "image_type": if png { "image/png" } else { "image/jpeg" },
                    });
                    encode_image_with_metadata(&meta.to_string(), PNG)
                }
                Bin::Arbitrary(bytes) => bytes,
            };
            h.binary(frame)
        }
        Op::Respond { pick, status, body } => {
            let Some(open) = h.take_open(pick) else {
                return Ok(());
            };
            let body = match body {
                // Mostly about the prompt asked about; now and then about another.
                Body::Plausible { prompt, variant } => h.plausible_answer(&open, prompt, variant),
                Body::Recorded { pick, seed } => {
                    let body = &c.bodies[pick % c.bodies.len()];
                    match seed {
                        Some(seed) => mutate_bytes(body, seed),
                        None => body.to_vec(),
                    }
                }
                Body::Arbitrary(bytes) => bytes,
            };
            h.respond(open, status, body)
        }
        Op::HttpError(pick) => h.http_error(pick),
        Op::Connected => h.connected(),
        Op::Disconnect => h.disconnect(),
        Op::Advance(ms) => h.advance(ms),
        Op::Cancel(pick) => h.cancel(pick),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn session_survives_anything(ops in proptest::collection::vec(op(), 1..80)) {
        let config = SessionConfig::default()
            .with_keepalive(Some(Duration::from_secs(20)))
            .with_max_frame_len(4096);
        let mut h = Harness::new("prop", config);
        for op in ops {
            apply(&mut h, op)?;
        }
        // Every event so far named a prompt of ours, and no prompt ended twice (see `drain`).
        h.settle().map_err(|v| TestCaseError::fail(v.to_string()))?;
        h.check_ends().map_err(|v| TestCaseError::fail(v.to_string()))?;
    }
}
