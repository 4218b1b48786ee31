//! The session harness: one [`Session`] fed whatever a property test or a fuzz target picks
//! (recorded and arbitrary messages, answers to its open requests, disconnects, time), with the
//! invariants checked after every input. `tests/properties.rs` and `fuzz/fuzz_targets/session.rs`
//! both drive it, each with its own way of choosing the inputs.
//!
//! Invariants: every event names one of our prompts; no prompt reports after its end; once the
//! server answers everything and time passes every deadline ([`Harness::settle`]), each prompt
//! with a total deadline has ended exactly once ([`Harness::check_ends`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use comfy_proxy::session::{Deadlines, RequestId, Session, SessionConfig, Submission, Transmit};
use comfy_proxy::transcript::{RecordKind, Transcript};
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{ClientId, PromptId, TransportError, TransportErrorKind, Workflow};
use serde_json::{Value, json};

/// Everything the recordings in `fixtures/` hold.
#[derive(Debug)]
pub struct Corpus {
    /// Transcript files, as text.
    pub files: Vec<String>,
    /// Server text messages (with the recorded prompt ids; see [`with_prompt_id`]).
    pub texts: Vec<String>,
    /// Server binary frames.
    pub frames: Vec<Bytes>,
    /// HTTP response bodies.
    pub bodies: Vec<Bytes>,
    /// Posted graphs, and [`own_graph`] first.
    pub graphs: Vec<Workflow>,
}

/// The recordings' corpus, read once from the repository's `fixtures/`.
pub fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
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
pub fn own_graph() -> Workflow {
    Workflow::from_value(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0}},
        "save_image_websocket_node": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }))
    .expect("the harness's own graph is valid")
}

/// Every UUID in `text` (the recorded prompt ids) replaced by `id`.
pub fn with_prompt_id(text: &str, id: &str) -> String {
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
            let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// A PNG the session recognises.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\nimage";

/// A body a server could answer `path` with, about `prompt`; `variant` picks among the
/// plausible answers (unknown, succeeded, failed; queued, running, gone).
pub fn plausible(path: &str, prompt: &str, variant: u8) -> Vec<u8> {
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

/// An invariant the session broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// A request the session sent and nobody answered yet.
#[derive(Debug, Clone)]
pub struct Open {
    /// Its handle.
    pub id: RequestId,
    /// Its path.
    pub path: String,
    /// The prompt it is about, when it says (a posted prompt, a `/history/{id}` lookup).
    pub about: Option<String>,
}

/// The session and what it asked for and reported.
#[derive(Debug)]
pub struct Harness {
    /// The session under test.
    pub s: Session,
    /// The simulated clock.
    pub now: Duration,
    /// The prompts submitted, in order.
    pub prompts: Vec<PromptId>,
    /// Prompts with a total deadline.
    pub total: Vec<PromptId>,
    /// Requests not answered yet.
    pub open: Vec<Open>,
    /// Terminal events per prompt.
    pub terminals: HashMap<PromptId, u32>,
}

impl Harness {
    /// A fresh session named `client` with `config`.
    pub fn new(client: &str, config: SessionConfig) -> Self {
        Self {
            s: Session::new(ClientId::new(client), config),
            now: Duration::ZERO,
            prompts: Vec::new(),
            total: Vec::new(),
            open: Vec::new(),
            terminals: HashMap::new(),
        }
    }

    /// One of our prompts (or a stranger's when there are none).
    pub fn prompt(&self, pick: usize) -> String {
        match self.prompts.len() {
            0 => "stranger".into(),
            n => self.prompts[pick % n].to_string(),
        }
    }

    /// Takes what the session sent and reported, and checks its events.
    pub fn drain(&mut self) -> Result<(), Violation> {
        while let Some(t) = self.s.poll_transmit() {
            if let Transmit::Http { id, request } = t {
                let about = match &request.body {
                    Some(body) => serde_json::from_slice::<Value>(&body.bytes)
                        .ok()
                        .and_then(|v| v["prompt_id"].as_str().map(str::to_owned)),
                    None => request.path.strip_prefix("/history/").map(str::to_owned),
                };
                self.open.push(Open {
                    id,
                    path: request.path,
                    about,
                });
            }
        }
        while let Some(e) = self.s.poll_event() {
            let Some(p) = e.prompt() else { continue };
            if !self.prompts.contains(p) {
                return Err(Violation(format!("an event for a stranger: {e}")));
            }
            if self.terminals.get(p).copied().unwrap_or(0) > 0 {
                return Err(Violation(format!("an event after the end of {p}: {e}")));
            }
            if e.is_terminal() {
                self.terminals.insert(p.clone(), 1);
            }
        }
        Ok(())
    }

    /// Submits corpus graph number `graph` with the given deadlines (milliseconds).
    pub fn submit(
        &mut self,
        graph: usize,
        total: Option<u16>,
        accept: Option<u16>,
        idle: Option<u16>,
    ) -> Result<(), Violation> {
        let c = corpus();
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
            .submit(self.now, Submission::new(id.clone(), wf).with_deadlines(d))
            .map_err(|e| Violation(format!("a fresh prompt refused: {e}")))?;
        self.prompts.push(id);
        self.drain()
    }

    /// Recorded text message number `pick`, about our prompt number `prompt`.
    pub fn recorded_text(&self, pick: usize, prompt: usize) -> String {
        let c = corpus();
        with_prompt_id(&c.texts[pick % c.texts.len()], &self.prompt(prompt))
    }

    /// Feeds a text message (refusals are the session's business, not a violation).
    pub fn text(&mut self, text: &str) -> Result<(), Violation> {
        let _ = self.s.handle_text(self.now, text);
        self.drain()
    }

    /// Feeds a binary frame.
    pub fn binary(&mut self, frame: impl Into<Bytes>) -> Result<(), Violation> {
        let _ = self.s.handle_binary(self.now, frame.into());
        self.drain()
    }

    /// Removes open request number `pick` (modulo their count), if any is open.
    pub fn take_open(&mut self, pick: usize) -> Option<Open> {
        if self.open.is_empty() {
            return None;
        }
        let n = self.open.len();
        Some(self.open.remove(pick % n))
    }

    /// A plausible answer to `open`: mostly about the prompt it asked about, and when `variant`
    /// says so (or it names none) about our prompt number `prompt`.
    pub fn plausible_answer(&self, open: &Open, prompt: usize, variant: u8) -> Vec<u8> {
        let prompt = match &open.about {
            Some(about) if variant % 4 != 3 => about.clone(),
            _ => self.prompt(prompt),
        };
        plausible(&open.path, &prompt, variant)
    }

    /// Answers `open` with `status` and `body`.
    pub fn respond(&mut self, open: Open, status: u16, body: Vec<u8>) -> Result<(), Violation> {
        self.s
            .handle_response(self.now, open.id, HttpResponse::new(status, body));
        self.drain()
    }

    /// Fails open request number `pick` as a transport error, if any is open.
    pub fn http_error(&mut self, pick: usize) -> Result<(), Violation> {
        if let Some(open) = self.take_open(pick) {
            let error = TransportError::new(TransportErrorKind::Reset, "request");
            self.s.handle_http_error(self.now, open.id, error);
        }
        self.drain()
    }

    /// The websocket opened.
    pub fn connected(&mut self) -> Result<(), Violation> {
        self.s.handle_connected(self.now);
        self.drain()
    }

    /// The websocket closed.
    pub fn disconnect(&mut self) -> Result<(), Violation> {
        self.s.handle_disconnect(self.now);
        self.drain()
    }

    /// Time passes.
    pub fn advance(&mut self, ms: u16) -> Result<(), Violation> {
        self.now += Duration::from_millis(u64::from(ms));
        self.s.handle_timeout(self.now);
        self.drain()
    }

    /// Cancels our prompt number `pick` (one that ended already is misuse, an error, ignored).
    pub fn cancel(&mut self, pick: usize) -> Result<(), Violation> {
        if !self.prompts.is_empty() {
            let id = self.prompts[pick % self.prompts.len()].clone();
            let _ = self.s.cancel(self.now, &id);
        }
        self.drain()
    }

    /// The server answers everything it was asked (sensibly), then time passes every deadline.
    pub fn settle(&mut self) -> Result<(), Violation> {
        for round in 0..64u8 {
            self.connected()?;
            for open in std::mem::take(&mut self.open) {
                let prompt =
                    (open.about.clone()).unwrap_or_else(|| self.prompt(usize::from(round)));
                let body = plausible(&open.path, &prompt, round);
                self.respond(open, 200, body)?;
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

    /// After [`settle`](Self::settle): every prompt with a total deadline ended, none twice.
    pub fn check_ends(&self) -> Result<(), Violation> {
        for id in &self.total {
            if self.terminals.get(id).copied().unwrap_or(0) != 1 {
                return Err(Violation(format!(
                    "{id} has a total deadline and did not end"
                )));
            }
        }
        match self.terminals.iter().find(|(_, n)| **n > 1) {
            Some((id, n)) => Err(Violation(format!("{id} ended {n} times"))),
            None => Ok(()),
        }
    }
}
