//! Property tests: the decoders and the session state machine never panic on what a server
//! (or a file) may hand them, frames round-trip, and the session ends each prompt at most once,
//! and exactly once by its total deadline.
//!
//! Inputs are arbitrary bytes and text, and mutations of everything recorded in `fixtures/`:
//! text messages, binary frames, HTTP bodies and whole transcripts.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use comfy_proxy::session::{Deadlines, RequestId, Session, SessionConfig, Submission, Transmit};
use comfy_proxy::transcript::{RecordKind, Transcript};
use comfy_proxy::wire::frame::{encode_image, encode_image_with_metadata, encode_text};
use comfy_proxy::wire::{BinaryFrame, HttpResponse, ImageFormat, ServerMessage};
use comfy_proxy::{ClientId, PromptId, TransportError, TransportErrorKind, Workflow};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The corpus: everything the recordings hold
// ---------------------------------------------------------------------------------------------

struct Corpus {
    /// Transcript files, as text.
    files: Vec<String>,
    /// Server text messages.
    texts: Vec<String>,
    /// Server binary frames.
    frames: Vec<Bytes>,
    /// HTTP response bodies.
    bodies: Vec<Bytes>,
    /// Posted graphs.
    graphs: Vec<Workflow>,
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        names.sort();
        let mut c = Corpus {
            files: Vec::new(),
            texts: Vec::new(),
            frames: Vec::new(),
            bodies: Vec::new(),
            graphs: vec![own_graph()],
        };
        for path in names {
            let text = std::fs::read_to_string(&path).unwrap();
            let t = Transcript::parse(&text).unwrap();
            c.files.push(text);
            for r in t.records {
                match r.kind {
                    RecordKind::WsText { text } => c.texts.push(text),
                    RecordKind::WsBinary { data } => c.frames.push(data),
                    RecordKind::HttpResponse { body, .. } => c.bodies.push(body),
                    RecordKind::HttpRequest {
                        path,
                        body: Some(body),
                        ..
                    } if path.ends_with("/prompt") => {
                        if let Ok(wf) = Workflow::from_value(body["prompt"].clone()) {
                            c.graphs.push(wf);
                        }
                    }
                    _ => {}
                }
            }
        }
        c
    })
}

/// Websocket outputs and a file output, with the node ids the recordings use.
fn own_graph() -> Workflow {
    Workflow::from_value(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
        "save_image_websocket_node": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }))
    .unwrap()
}

/// Every UUID in `text` (the recorded prompt ids) replaced by `id`.
fn with_prompt_id(text: &str, id: &str) -> String {
    let b = text.as_bytes();
    let is_uuid = |s: &[u8]| {
        s.len() == 36
            && s.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b.get(i..i + 36).is_some_and(is_uuid) && text.is_char_boundary(i) {
            out.push_str(id);
            i += 36;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------------------------

/// splitmix64, so that a mutation is a function of one `u64` drawn by proptest.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break decoders: wrong types, edge numbers, odd strings.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(14) {
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
        _ => json!("x".repeat(rng.below(300))),
    }
}

/// A random change somewhere in a JSON value: a leaf replaced, a key removed or added.
fn mutate_value(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Object(map) if !map.is_empty() && rng.below(4) != 0 => {
            let key = map.keys().nth(rng.below(map.len())).unwrap().clone();
            match rng.below(4) {
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
        Value::Array(items) if !items.is_empty() && rng.below(4) != 0 => {
            let i = rng.below(items.len());
            if rng.below(3) == 0 {
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
    let mut rng = Rng(seed);
    let rounds = 1 + rng.below(3);
    let mut out = text.to_owned();
    for _ in 0..rounds {
        if rng.below(3) != 0 {
            if let Ok(mut v) = serde_json::from_str::<Value>(&out) {
                mutate_value(&mut v, &mut rng);
                out = v.to_string();
                continue;
            }
        }
        let mut chars: Vec<char> = out.chars().collect();
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 => chars.truncate(at),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            2 => chars.insert(at, ['{', '"', '}', ']', '\\', '\u{7f}', '0'][rng.below(7)]),
            _ => {
                let len = chars.len();
                if len > 0 {
                    chars[at.min(len - 1)] = char::from(b' ' + (rng.below(95)) as u8);
                }
            }
        }
        out = chars.into_iter().collect();
    }
    out
}

/// `bytes` changed by `seed`: flipped, cut, grown, or its header lengths rewritten.
fn mutate_bytes(bytes: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 => out.truncate(at),
            1 if at < out.len() => out[at] ^= 1 << rng.below(8),
            2 => out.insert(at, rng.next() as u8),
            3 if out.len() >= 8 => {
                let len = [0u32, 1, 7, 64 << 10, u32::MAX][rng.below(5)];
                out[4..8].copy_from_slice(&len.to_be_bytes());
            }
            _ => out.extend((0..rng.below(16)).map(|_| rng.next() as u8)),
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
            let mut rng = Rng(seed);
            let i = rng.below(lines.len());
            match rng.below(4) {
                0 => lines[i] = mutate_text(&lines[i], seed),
                1 => {
                    let line = lines[i].clone();
                    lines.insert(rng.below(lines.len()), line);
                }
                2 if lines.len() > 1 => {
                    lines.remove(i);
                }
                _ => {
                    let j = rng.below(lines.len());
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
    /// What a server would say to this request (see [`plausible`]).
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

/// A PNG the session recognises.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\nimage";

/// A body a server could answer `path` with, about `prompt`.
fn plausible(path: &str, prompt: &str, variant: u8) -> Vec<u8> {
    let history = |status: &str, ok: bool| {
        json!({ prompt: {
            "prompt": [1, prompt, {}, {}, ["9"]],
            "outputs": {"2": {"images": [{"filename": "x_00001_.png", "subfolder": "", "type": "output"}]}},
            "status": {"status_str": status, "completed": ok, "messages": []},
            "meta": {},
        }})
        .to_string()
        .into_bytes()
    };
    let item = json!([1, prompt, {}, {}, ["9"]]);
    if path.starts_with("/prompt") {
        json!({"prompt_id": prompt, "number": variant, "node_errors": {}})
            .to_string()
            .into_bytes()
    } else if path.starts_with("/history") {
        match variant % 3 {
            0 => b"{}".to_vec(),
            1 => history("success", true),
            _ => history("error", false),
        }
    } else if path.starts_with("/queue") {
        let (running, pending) = match variant % 3 {
            0 => (json!([]), json!([])),
            1 => (json!([item]), json!([])),
            _ => (json!([]), json!([item])),
        };
        json!({"queue_running": running, "queue_pending": pending})
            .to_string()
            .into_bytes()
    } else if path.starts_with("/view") {
        PNG.to_vec()
    } else {
        Vec::new()
    }
}

/// The session and what it asked for and reported.
struct Harness {
    s: Session,
    now: Duration,
    prompts: Vec<PromptId>,
    /// Prompts with a total deadline.
    total: Vec<PromptId>,
    /// Requests not answered yet: handle, path, and the prompt they are about when they say.
    open: Vec<(RequestId, String, Option<String>)>,
    terminals: HashMap<PromptId, u32>,
}

impl Harness {
    fn new() -> Self {
        let config = SessionConfig::default()
            .with_keepalive(Some(Duration::from_secs(20)))
            .with_max_frame_len(4096);
        Self {
            s: Session::new(ClientId::new("prop"), config),
            now: Duration::ZERO,
            prompts: Vec::new(),
            total: Vec::new(),
            open: Vec::new(),
            terminals: HashMap::new(),
        }
    }

    /// One of our prompts (or a stranger's when there are none).
    fn prompt(&self, pick: usize) -> String {
        match self.prompts.len() {
            0 => "stranger".into(),
            n => self.prompts[pick % n].to_string(),
        }
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(t) = self.s.poll_transmit() {
            if let Transmit::Http { id, request } = t {
                let about = match &request.body {
                    Some(body) => serde_json::from_slice::<Value>(&body.bytes)
                        .ok()
                        .and_then(|v| v["prompt_id"].as_str().map(str::to_owned)),
                    None => request.path.strip_prefix("/history/").map(str::to_owned),
                };
                self.open.push((id, request.path, about));
            }
        }
        while let Some(e) = self.s.poll_event() {
            let Some(p) = e.prompt() else { continue };
            prop_assert!(self.prompts.contains(p), "an event for a stranger: {}", e);
            let ended = self.terminals.get(p).copied().unwrap_or(0);
            prop_assert_eq!(ended, 0, "an event after the end of {}: {}", p, e);
            if e.is_terminal() {
                self.terminals.insert(p.clone(), 1);
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        let c = corpus();
        let now = self.now;
        match op {
            Op::Submit {
                graph,
                total,
                accept,
                idle,
            } => {
                let id = PromptId::new(format!("p{}", self.prompts.len()));
                let ms = |v: u16| Duration::from_millis(u64::from(v));
                let mut d = Deadlines::none();
                if let Some(v) = total {
                    d = d.total(ms(v));
                    self.total.push(id.clone());
                }
                if let Some(v) = accept {
                    d = d.accept(ms(v));
                }
                if let Some(v) = idle {
                    d = d.idle(ms(v));
                }
                let wf = c.graphs[graph % c.graphs.len()].clone();
                self.s
                    .submit(now, Submission::new(id.clone(), wf).with_deadlines(d))
                    .unwrap();
                self.prompts.push(id);
            }
            Op::Text { pick, prompt, seed } => {
                let text = with_prompt_id(&c.texts[pick % c.texts.len()], &self.prompt(prompt));
                let text = match seed {
                    Some(seed) => mutate_text(&text, seed),
                    None => text,
                };
                let _ = self.s.handle_text(now, &text);
            }
            Op::AnyText(text) => {
                let _ = self.s.handle_text(now, &text);
            }
            Op::Binary(bin) => {
                let frame = match bin {
                    Bin::Recorded { pick, prompt, seed } => {
                        let frame = &c.frames[pick % c.frames.len()];
                        let frame = match BinaryFrame::decode(frame) {
                            Ok(BinaryFrame::ImageWithMetadata { image, .. }) => {
                                let len =
                                    u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                                let meta =
                                    std::str::from_utf8(&frame[8..8 + len as usize]).unwrap();
                                let meta = with_prompt_id(meta, &self.prompt(prompt));
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
                            "node_id": nodes[node % nodes.len()], "prompt_id": self.prompt(prompt),
                            "image_type": if png { "image/png" } else { "image/jpeg" },
                        });
                        encode_image_with_metadata(&meta.to_string(), PNG)
                    }
                    Bin::Arbitrary(bytes) => bytes,
                };
                let _ = self.s.handle_binary(now, Bytes::from(frame));
            }
            Op::Respond { pick, status, body } => {
                if !self.open.is_empty() {
                    let (id, path, about) = self.open.remove(pick % self.open.len());
                    let body = match body {
                        // Mostly about the prompt asked about; now and then about another.
                        Body::Plausible { prompt, variant } => {
                            let prompt = match about {
                                Some(about) if variant % 4 != 3 => about,
                                _ => self.prompt(prompt),
                            };
                            plausible(&path, &prompt, variant)
                        }
                        Body::Recorded { pick, seed } => {
                            let body = &c.bodies[pick % c.bodies.len()];
                            match seed {
                                Some(seed) => mutate_bytes(body, seed),
                                None => body.to_vec(),
                            }
                        }
                        Body::Arbitrary(bytes) => bytes,
                    };
                    self.s
                        .handle_response(now, id, HttpResponse::new(status, body));
                }
            }
            Op::HttpError(pick) => {
                if !self.open.is_empty() {
                    let (id, _, _) = self.open.remove(pick % self.open.len());
                    self.s.handle_http_error(
                        now,
                        id,
                        TransportError::new(TransportErrorKind::Reset, "request"),
                    );
                }
            }
            Op::Connected => self.s.handle_connected(now),
            Op::Disconnect => self.s.handle_disconnect(now),
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(ms));
                self.s.handle_timeout(self.now);
            }
            Op::Cancel(pick) => {
                if !self.prompts.is_empty() {
                    let id = self.prompts[pick % self.prompts.len()].clone();
                    // A prompt that ended already is misuse, reported as an error.
                    let _ = self.s.cancel(now, &id);
                }
            }
        }
        self.drain()
    }

    /// The server answers everything it was asked (sensibly), then time passes every deadline.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for round in 0..64u8 {
            self.s.handle_connected(self.now);
            self.drain()?;
            for (id, path, about) in std::mem::take(&mut self.open) {
                let prompt = about.unwrap_or_else(|| self.prompt(usize::from(round)));
                let body = plausible(&path, &prompt, round);
                self.s
                    .handle_response(self.now, id, HttpResponse::new(200, body));
                self.drain()?;
            }
            self.now += Duration::from_secs(10);
            self.s.handle_timeout(self.now);
            self.drain()?;
            if self.open.is_empty() && self.s.poll_timeout().is_none_or(|t| t > self.now) {
                break;
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn session_survives_anything(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        for op in ops {
            h.apply(op)?;
        }
        // Every event so far named a prompt of ours, and no prompt ended twice (see `drain`).
        h.settle()?;
        for id in &h.total {
            let ended = h.terminals.get(id).copied().unwrap_or(0);
            prop_assert_eq!(ended, 1, "{} has a total deadline and did not end", id);
        }
        for (id, n) in &h.terminals {
            prop_assert!(*n <= 1, "{} ended {} times", id, n);
        }
    }
}
