//! The session fed an arbitrary sequence of inputs: recorded messages and frames (with our
//! prompt ids), arbitrary ones, HTTP answers to its open requests, disconnects, connects,
//! timeouts, cancels and submits. It never panics; every event names one of our prompts; no
//! prompt ends twice or reports after its end; and once the server answers everything and time
//! passes every deadline, each prompt with a total deadline has ended.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use comfy_proxy::session::{Deadlines, RequestId, Session, SessionConfig, Submission, Transmit};
use comfy_proxy::transcript::{RecordKind, Transcript};
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::wire::frame::encode_image_with_metadata;
use comfy_proxy::{ClientId, PromptId, TransportError, TransportErrorKind, Workflow};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const FIXTURES: &[&str] = &[
    include_str!("../../fixtures/feature_flags.jsonl"),
    include_str!("../../fixtures/ws_batch4.jsonl"),
    include_str!("../../fixtures/ws_two_outputs.jsonl"),
    include_str!("../../fixtures/saveimage_history.jsonl"),
    include_str!("../../fixtures/exec_error.jsonl"),
    include_str!("../../fixtures/interrupt.jsonl"),
    include_str!("../../fixtures/progress_text.jsonl"),
];

const RECORDED_ID: &str = "{{PROMPT}}";

struct Corpus {
    texts: Vec<String>,
    frames: Vec<Bytes>,
    graphs: Vec<Workflow>,
}

/// Every UUID in `text` replaced by [`RECORDED_ID`], to be filled with one of ours.
fn templated(text: &str) -> String {
    let b = text.as_bytes();
    let uuid = |s: &[u8]| {
        s.len() == 36
            && s.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b.get(i..i + 36).is_some_and(uuid) && text.is_char_boundary(i) {
            out.push_str(RECORDED_ID);
            i += 36;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut c = Corpus {
            texts: Vec::new(),
            frames: Vec::new(),
            graphs: Vec::new(),
        };
        for file in FIXTURES {
            for r in Transcript::parse(file).unwrap().records {
                match r.kind {
                    RecordKind::WsText { text } => c.texts.push(templated(&text)),
                    RecordKind::WsBinary { data } => c.frames.push(data),
                    RecordKind::HttpRequest {
                        path,
                        body: Some(body),
                        ..
                    } if path.ends_with("/prompt") => {
                        c.graphs
                            .push(Workflow::from_value(body["prompt"].clone()).unwrap());
                    }
                    _ => {}
                }
            }
        }
        c
    })
}

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

struct Harness {
    s: Session,
    now: Duration,
    prompts: Vec<PromptId>,
    total: Vec<PromptId>,
    open: Vec<(RequestId, String, Option<String>)>,
    ended: HashSet<PromptId>,
}

fn plausible(path: &str, prompt: &str, variant: u8) -> Vec<u8> {
    let item = json!([1, prompt, {}, {}, ["9"]]);
    let body = if path.starts_with("/prompt") {
        json!({"prompt_id": prompt, "number": variant, "node_errors": {}})
    } else if path.starts_with("/history") {
        match variant % 3 {
            0 => json!({}),
            n => json!({ prompt: {
                "prompt": item,
                "outputs": {"2": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
                "status": {"status_str": if n == 1 { "success" } else { "error" },
                           "completed": n == 1, "messages": []},
                "meta": {},
            }}),
        }
    } else if path.starts_with("/queue") {
        match variant % 3 {
            0 => json!({"queue_running": [], "queue_pending": []}),
            1 => json!({"queue_running": [item], "queue_pending": []}),
            _ => json!({"queue_running": [], "queue_pending": [item]}),
        }
    } else if path.starts_with("/view") {
        return b"\x89PNG\r\n\x1a\nimage".to_vec();
    } else {
        return Vec::new();
    };
    body.to_string().into_bytes()
}

impl Harness {
    fn prompt(&self, pick: u8) -> String {
        match self.prompts.len() {
            0 => "stranger".into(),
            n => self.prompts[usize::from(pick) % n].to_string(),
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.s.poll_transmit() {
            if let Transmit::Http { id, request } = t {
                let about = match &request.body {
                    Some(b) => serde_json::from_slice::<Value>(&b.bytes)
                        .ok()
                        .and_then(|v| v["prompt_id"].as_str().map(str::to_owned)),
                    None => request.path.strip_prefix("/history/").map(str::to_owned),
                };
                self.open.push((id, request.path, about));
            }
        }
        while let Some(e) = self.s.poll_event() {
            let Some(p) = e.prompt() else { continue };
            assert!(self.prompts.contains(p), "an event for a stranger: {e}");
            assert!(!self.ended.contains(p), "an event after {p} ended: {e}");
            if e.is_terminal() {
                self.ended.insert(p.clone());
            }
        }
    }

    fn apply(&mut self, op: Op) {
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
                let wf = c.graphs[usize::from(graph) % c.graphs.len()].clone();
                self.s
                    .submit(now, Submission::new(id.clone(), wf).with_deadlines(d))
                    .unwrap();
                self.prompts.push(id);
            }
            Op::Recorded { pick, prompt } => {
                let text = &c.texts[usize::from(pick) % c.texts.len()];
                let _ = self
                    .s
                    .handle_text(now, &text.replace(RECORDED_ID, &self.prompt(prompt)));
            }
            Op::Text(text) => {
                let _ = self.s.handle_text(now, &text);
            }
            Op::RecordedFrame { pick, cut } => {
                let frame = c.frames[usize::from(pick) % c.frames.len()].clone();
                let frame = match cut {
                    Some(n) => frame.slice(..usize::from(n).min(frame.len())),
                    None => frame,
                };
                let _ = self.s.handle_binary(now, frame);
            }
            Op::Meta {
                prompt,
                node,
                image,
            } => {
                let nodes = ["9", "save_image_websocket_node", "save_a", "1", "x"];
                let meta = json!({
                    "node_id": nodes[usize::from(node) % nodes.len()],
                    "prompt_id": self.prompt(prompt), "image_type": "image/png",
                });
                let frame = encode_image_with_metadata(&meta.to_string(), &image);
                let _ = self.s.handle_binary(now, Bytes::from(frame));
            }
            Op::Binary(bytes) => {
                let _ = self.s.handle_binary(now, Bytes::from(bytes));
            }
            Op::Respond { pick, status, body } => {
                if !self.open.is_empty() {
                    let (id, path, about) = self.open.remove(usize::from(pick) % self.open.len());
                    let body = match body {
                        Body::Plausible { prompt, variant } => {
                            let prompt = match about {
                                Some(a) if variant % 4 != 3 => a,
                                _ => self.prompt(prompt),
                            };
                            plausible(&path, &prompt, variant)
                        }
                        Body::Raw(raw) => raw,
                    };
                    self.s
                        .handle_response(now, id, HttpResponse::new(status, body));
                }
            }
            Op::HttpError(pick) => {
                if !self.open.is_empty() {
                    let (id, _, _) = self.open.remove(usize::from(pick) % self.open.len());
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
                    let id = self.prompts[usize::from(pick) % self.prompts.len()].clone();
                    let _ = self.s.cancel(now, &id);
                }
            }
        }
        self.drain();
    }

    /// The server answers everything it is asked; time passes every deadline.
    fn settle(&mut self) {
        for round in 0..64u8 {
            self.s.handle_connected(self.now);
            self.drain();
            for (id, path, about) in std::mem::take(&mut self.open) {
                let prompt = about.unwrap_or_else(|| self.prompt(round));
                let body = plausible(&path, &prompt, round);
                self.s
                    .handle_response(self.now, id, HttpResponse::new(200, body));
                self.drain();
            }
            self.now += Duration::from_secs(70);
            self.s.handle_timeout(self.now);
            self.drain();
            if self.open.is_empty() {
                break;
            }
        }
        for id in &self.total {
            assert!(
                self.ended.contains(id),
                "{id} has a total deadline and never ended"
            );
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let config = SessionConfig::default().with_max_frame_len(4096);
    let mut h = Harness {
        s: Session::new(ClientId::new("fuzz"), config),
        now: Duration::ZERO,
        prompts: Vec::new(),
        total: Vec::new(),
        open: Vec::new(),
        ended: HashSet::new(),
    };
    for op in ops.into_iter().take(200) {
        h.apply(op);
    }
    h.settle();
});
