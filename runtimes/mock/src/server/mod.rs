//! The pure logic of a mock ComfyUI server: one server instance, without sockets or a clock.
//!
//! # How it works
//!
//! A [`MockServer`] answers the HTTP API ([`MockServer::handle_request`]) and speaks on the
//! websockets the socket layer reports open ([`MockServer::handle_ws_open`]). A posted prompt
//! joins one queue, ordered by its `number` (`front` puts it before the rest); one prompt runs
//! at a time. Messages of a run go only to the socket of the client that posted it, if that
//! client is connected at the moment they are sent: they are dropped otherwise, as the real
//! server drops them. `status` goes to every socket whenever the queue changes.
//!
//! A prompt runs in one of two modes:
//!
//! - **Replay**: the posted graph has the shape of a graph posted in one of
//!   [`MockConfig::recordings`] (the same node ids, classes and links; literal values are
//!   ignored, and a recording with equal values too is preferred). The mock plays that
//!   recording's answer: a recorded refusal as it was, or the recorded run's frames with their
//!   recorded timing scaled by [`MockConfig::speed`], the recorded prompt id replaced by the new
//!   one (in text messages and in type 4 metadata), and `status` messages made afresh. Frames
//!   play as recorded: a type 1 recording stays type 1 for a client that sent the feature flag.
//! - **Simulate**: any other graph runs by the message grammar of the recordings. Each node the
//!   outputs need runs in turn, in the order the real server picks (dependencies first; an
//!   output as soon as its inputs are done; outputs in graph order): `progress_state`,
//!   `executing`, then by class: samplers report `progress` per step with a JPEG preview each;
//!   `SaveImageWebsocket` sends one PNG per batch item; `SaveImage` and `PreviewImage` store
//!   their PNGs for `/view` and report them with `executed`. Images come from the
//!   [`Renderer`]. A run takes [`MockConfig::job`], plus [`MockConfig::step`] per sampling step.
//!
//! `POST /interrupt` stops the running prompt at its next step or node boundary, with
//! `execution_interrupted`. Every finished prompt gets a `/history` entry of the real shape.
//!
//! With [`MockConfig::faults`] the server misbehaves on purpose: refused and stalled
//! connections, 500s, restarts, dropped sockets, slow runs, damaged and hostile frames (see
//! [`Faults`]). Refusals and stalls are the socket layer's to carry out: it asks
//! [`MockServer::should_refuse`] for each connection and [`MockServer::should_stall_request`]
//! for each request, and carries out [`MockOutput::Silence`].
//!
//! # Driving it
//!
//! Mutate once, then drain every output before the next mutation; sleep until
//! [`MockServer::poll_timeout`] and then call [`MockServer::handle_timeout`]. Time is a
//! [`Duration`] since an epoch the driver chooses (the `timestamp` fields are its milliseconds).
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use comfy_proxy_mock::{ConnId, Frame, ImageSpec, MockConfig, MockOutput, MockServer, Renderer};
//!
//! struct Blank;
//! impl Renderer for Blank {
//!     fn png(&self, _: &ImageSpec) -> Bytes { Bytes::from_static(b"\x89PNG\r\n\x1a\n") }
//!     fn jpeg(&self, _: &ImageSpec) -> Bytes { Bytes::from_static(b"\xff\xd8\xff") }
//! }
//!
//! let mut server = MockServer::new(MockConfig::default(), Box::new(Blank));
//! let now = Duration::ZERO;
//! server.handle_ws_open(now, ConnId(1), "/ws?clientId=me").unwrap();
//! let body = br#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}},
//!     "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}},
//!     "client_id": "me"}"#;
//! assert_eq!(server.handle_request(now, "POST", "/prompt", body).status, 200);
//! let mut images = 0;
//! let mut now = now;
//! loop {
//!     while let Some(out) = server.poll_output(now) {
//!         if let MockOutput::Send { frame: Frame::Binary(_), .. } = out {
//!             images += 1;
//!         }
//!     }
//!     match server.poll_timeout() {
//!         Some(at) => { now = now.max(at); server.handle_timeout(now); }
//!         None => break,
//!     }
//! }
//! assert_eq!(images, 1);
//! ```

mod faults;
mod graph;
mod http;
mod pyjson;
mod replay;
mod run;
mod submit;
#[cfg(test)]
mod tests;
mod upload;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use comfy_proxy::transcript::Transcript;

pub use faults::{Fault, Faults, FaultsError};

use faults::Injector;
use replay::{FileKey, Recording};
use run::Run;
use submit::Job;

/// The `max_upload_size` the mock announces, as the recorded server did.
pub const MAX_UPLOAD_SIZE: u64 = 104_857_600;

/// Settings of a [`MockServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MockConfig {
    /// How long one simulated sampling step takes. Default: 10 ms.
    pub step: Duration,
    /// How long a simulated prompt takes besides its sampling steps, spread over its nodes.
    /// Default: 20 ms.
    pub job: Duration,
    /// The factor applied to recorded timing in replay mode: 1 plays in recorded time, 0 (or
    /// less) without any delay. Default: 1.
    pub speed: f64,
    /// The `GET /object_info` document. With it, a graph with a class it does not list is
    /// refused (`invalid_prompt`), and output nodes are the classes it marks `output_node`;
    /// without it, every class runs and the recorded server's output classes are outputs.
    pub object_info: Option<Value>,
    /// Recorded sessions whose prompts are played again when a posted graph has their shape.
    pub recordings: Vec<Transcript>,
    /// The `GET /system_stats` document.
    pub system_stats: Value,
    /// Send a JPEG preview per sampling step. Default: on.
    pub previews: bool,
    /// Mixed into the ids the server makes up (prompt ids, socket ids), so that several
    /// instances make up different ones. Default: 0.
    pub seed: u64,
    /// Faults to inject (see [`Faults`]). Default: none.
    pub faults: Faults,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            step: Duration::from_millis(10),
            job: Duration::from_millis(20),
            speed: 1.0,
            object_info: None,
            recordings: Vec::new(),
            system_stats: json!({
                "system": {
                    "os": "posix",
                    "ram_total": 17179869184u64,
                    "ram_free": 17179869184u64,
                    "comfyui_version": "0.3.64",
                    "python_version": "mock",
                    "pytorch_version": "mock",
                    "embedded_python": false,
                    "argv": ["main.py", "--cpu"]
                },
                "devices": [{
                    "name": "cpu", "type": "cpu", "index": null,
                    "vram_total": 17179869184u64, "vram_free": 17179869184u64,
                    "torch_vram_total": 17179869184u64, "torch_vram_free": 17179869184u64
                }]
            }),
            previews: true,
            seed: 0,
            faults: Faults::none(),
        }
    }
}

/// A websocket connection, numbered by the socket layer. Numbers must not be reused while the
/// connection is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What an image the mock sends should show.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ImageSpec {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The graph's seed for the image (`seed` or `noise_seed`; 0 without one).
    pub seed: u64,
    /// The image's position in its batch.
    pub index: u32,
    /// For previews: the step done and the steps in all.
    pub step: Option<(u32, u32)>,
}

/// Encodes the images the mock sends. Image encoding lives outside the core: the socket layer
/// implements this (tests use fixed bytes).
pub trait Renderer {
    /// A PNG image (outputs).
    fn png(&self, spec: &ImageSpec) -> Bytes;
    /// A JPEG image (previews).
    fn jpeg(&self, spec: &ImageSpec) -> Bytes;
}

/// An HTTP response of the mock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header; empty for none (the real server sends none with an empty 200).
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

/// A websocket frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

/// Something the socket layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MockOutput {
    /// Send this frame on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Frame,
    },
    /// Close the connection (replaced by a newer one of the same client, or the server
    /// restarted). The mock has already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// Keep the connection open but mute from now on: send nothing (not even pongs) and read
    /// nothing, until the client closes it (the `stall-ws` fault). The mock has already
    /// forgotten it.
    Silence {
        /// The connection.
        conn: ConnId,
    },
}

/// One open websocket.
#[derive(Debug, Clone)]
struct Conn {
    client: String,
    /// The client announced `supports_preview_metadata`: images go as type 4 frames.
    metadata: bool,
    /// A text message came already: a later feature-flags hello is ignored.
    spoke: bool,
}

/// Who receives a prompt's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Audience {
    /// No `client_id` was posted: the real server broadcasts.
    Everyone,
    /// The socket of this client id, when connected.
    Client(String),
    /// A `client_id` that is not a string: no socket can have it.
    Nobody,
}

/// The state machine of one mock ComfyUI server. See the [module docs](self).
pub struct MockServer {
    step: Duration,
    job_time: Duration,
    speed: f64,
    previews: bool,
    seed: u64,
    object_info: Option<Value>,
    object_info_body: Bytes,
    system_stats_body: Bytes,
    recordings: Vec<Recording>,
    renderer: Box<dyn Renderer + Send>,
    conns: BTreeMap<ConnId, Conn>,
    clients: HashMap<String, ConnId>,
    /// Waiting prompts, in run order.
    pending: Vec<Job>,
    running: Option<Run>,
    /// When the last run ended: the next one starts then, or when it was queued if later.
    idle_since: Duration,
    /// Finished prompts, oldest first.
    history: Vec<(String, Value)>,
    /// The output and temp folders.
    files: BTreeMap<FileKey, Bytes>,
    /// The last counter used per (type, subfolder, prefix).
    counters: HashMap<FileKey, u32>,
    outputs: VecDeque<MockOutput>,
    /// The real server's prompt counter (`number`).
    number: u64,
    /// Insertion order of queued prompts.
    seq: u64,
    /// Ids made up so far.
    made_up: u64,
    faults: Injector,
    /// Runs stopped by `POST /interrupt`.
    interrupts: u64,
    /// Waiting prompts removed by `POST /queue` (`delete` or `clear`).
    deletes: u64,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("conns", &self.conns.len())
            .field("pending", &self.pending.len())
            .field("running", &self.running.as_ref().map(Run::prompt_id))
            .field("history", &self.history.len())
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// A server with an empty queue, history and output folder, and no sockets.
    pub fn new(config: MockConfig, renderer: Box<dyn Renderer + Send>) -> Self {
        let object_info_body = Bytes::from(pyjson::dumps(
            config.object_info.as_ref().unwrap_or(&json!({})),
        ));
        let recordings = config.recordings.iter().flat_map(replay::extract).collect();
        Self {
            step: config.step,
            job_time: config.job,
            speed: config.speed,
            previews: config.previews,
            seed: config.seed,
            object_info: config.object_info,
            object_info_body,
            system_stats_body: Bytes::from(pyjson::dumps(&config.system_stats)),
            recordings,
            renderer,
            conns: BTreeMap::new(),
            clients: HashMap::new(),
            pending: Vec::new(),
            running: None,
            idle_since: Duration::ZERO,
            history: Vec::new(),
            files: BTreeMap::new(),
            counters: HashMap::new(),
            outputs: VecDeque::new(),
            number: 0,
            seq: 0,
            made_up: 0,
            faults: Injector::new(config.faults),
            interrupts: 0,
            deletes: 0,
        }
    }

    /// Answers one HTTP request. `path_and_query` is below the server's root (`/prompt`,
    /// `/view?filename=a.png`); an `/api` prefix is accepted as the real server accepts it.
    /// Any input gives a response: garbage is a 4xx, never a panic.
    pub fn handle_request(
        &mut self,
        now: Duration,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> MockResponse {
        if self.faults.active()
            && let Some(response) = self.fault_response(method, path_and_query)
        {
            return response;
        }
        http::route(self, now, method, path_and_query, body)
    }

    /// A websocket handshake for `path_and_query` (`/ws?clientId=ID`) arrived on `conn`. On
    /// success the socket is open: the server greets it with `status`. A missing client id is
    /// made up, as the real server does. An older socket of the same client is replaced (a
    /// [`MockOutput::Close`] for it follows). Any other path is refused with a 404.
    pub fn handle_ws_open(
        &mut self,
        _now: Duration,
        conn: ConnId,
        path_and_query: &str,
    ) -> Result<(), MockResponse> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        if path != "/ws" && path != "/api/ws" {
            return Err(http::not_found());
        }
        let client = match http::Query::parse(query).get("clientId") {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => format!("{:032x}", self.made_up_bits(0x5)),
        };
        self.forget_conn(conn);
        if let Some(old) = self.clients.insert(client.clone(), conn) {
            self.conns.remove(&old);
            self.outputs.push_back(MockOutput::Close { conn: old });
        }
        self.conns.insert(
            conn,
            Conn {
                client: client.clone(),
                metadata: false,
                spoke: false,
            },
        );
        let status = json!({
            "status": {"exec_info": {"queue_remaining": self.queue_remaining()}},
            "sid": client,
        });
        self.send(conn, Frame::Text(pyjson::message("status", status)));
        // A client that reconnects while its prompt runs learns the node running now.
        let current = self
            .running
            .as_ref()
            .filter(|r| r.audience() == &Audience::Client(client.clone()))
            .and_then(Run::current_node);
        if let Some(node) = current {
            let text = pyjson::message("executing", json!({ "node": node }));
            self.send(conn, Frame::Text(text));
        }
        Ok(())
    }

    /// A text frame from the client on `conn`. Only a `feature_flags` hello sent as the first
    /// message counts: the server answers with its own flags, and from then on sends images to
    /// this socket as type 4 frames if the client asked for `supports_preview_metadata`.
    /// Anything else is ignored.
    pub fn handle_ws_text(&mut self, _now: Duration, conn: ConnId, text: &str) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if std::mem::replace(&mut c.spoke, true) {
            return;
        }
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if msg.get("type").and_then(Value::as_str) != Some("feature_flags") {
            return;
        }
        c.metadata = msg
            .get("data")
            .and_then(|d| d.get("supports_preview_metadata"))
            .and_then(Value::as_bool)
            == Some(true);
        let flags = json!({
            "supports_preview_metadata": true,
            "max_upload_size": MAX_UPLOAD_SIZE,
        });
        self.send(conn, Frame::Text(pyjson::message("feature_flags", flags)));
    }

    /// The connection `conn` closed. Messages for its client are dropped until it reconnects.
    pub fn handle_ws_close(&mut self, _now: Duration, conn: ConnId) {
        self.forget_conn(conn);
    }

    /// The next thing for the socket layer to do, if any. Timers due at `now` fire first when
    /// nothing else is waiting (as [`MockServer::handle_timeout`] would).
    #[must_use]
    pub fn poll_output(&mut self, now: Duration) -> Option<MockOutput> {
        if self.outputs.is_empty() {
            self.handle_timeout(now);
        }
        self.outputs.pop_front()
    }

    /// When [`MockServer::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.faults.active() {
            return self.timeout_with_faults();
        }
        self.next_timeout()
    }

    fn next_timeout(&self) -> Option<Duration> {
        match &self.running {
            Some(run) => Some(run.next_at()),
            None => self
                .pending
                .first()
                .map(|job| job.queued_at.max(self.idle_since)),
        }
    }

    /// Runs everything due at `now`: the running prompt's next messages, its end, the start of
    /// the next prompt. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.faults.active() {
            return self.advance_with_faults(now);
        }
        self.advance(now);
    }

    /// Forgets the queue, the running prompt, the history and every socket, as a restarted
    /// server does: each open socket gets a [`MockOutput::Close`], and messages not yet polled
    /// are dropped. Files in the output folder stay, as they stay on disk.
    pub fn restart(&mut self, now: Duration) {
        // Frames not yet sent die with the server; a `Close` or `Silence` already decided for
        // a socket the server forgot must still reach the socket layer, or that socket stays
        // open, answering pings while nothing is ever sent on it again (a client that never
        // notices, and waits forever).
        self.outputs
            .retain(|o| !matches!(o, MockOutput::Send { .. }));
        for conn in std::mem::take(&mut self.conns).into_keys() {
            self.outputs.push_back(MockOutput::Close { conn });
        }
        self.clients.clear();
        self.pending.clear();
        self.running = None;
        self.history.clear();
        self.number = 0;
        self.idle_since = now;
    }

    /// How many runs `POST /interrupt` stopped so far.
    pub fn interrupts(&self) -> u64 {
        self.interrupts
    }

    /// How many waiting prompts `POST /queue` removed so far (`delete` or `clear`).
    pub fn deletes(&self) -> u64 {
        self.deletes
    }

    /// What `GET /mock/faults` answers: `{"faults": {NAME: COUNT, ..}, "interrupts": N,
    /// "deletes": N}`, every fault by name (0 when it never struck), so that a test over real
    /// sockets can check the faults struck and the cancels arrived.
    pub fn counters(&self) -> Value {
        let faults: serde_json::Map<String, Value> = self
            .faults_injected_all()
            .into_iter()
            .map(|(f, n)| (f.name().to_owned(), Value::from(n)))
            .collect();
        json!({"faults": faults, "interrupts": self.interrupts, "deletes": self.deletes})
    }

    /// Whether no prompt runs or waits.
    pub fn is_idle(&self) -> bool {
        self.running.is_none() && self.pending.is_empty()
    }

    /// The bytes of a file in the server's folders (`kind` is `output`, `temp` or `input`), as
    /// `/view` serves it.
    pub fn file(&self, kind: &str, subfolder: &str, filename: &str) -> Option<Bytes> {
        let key = (kind.to_owned(), subfolder.to_owned(), filename.to_owned());
        self.files.get(&key).cloned()
    }

    fn forget_conn(&mut self, conn: ConnId) {
        if let Some(old) = self.conns.remove(&conn)
            && self.clients.get(&old.client) == Some(&conn)
        {
            self.clients.remove(&old.client);
        }
    }

    /// 128 bits made up from the instance seed and a counter, tagged by purpose.
    fn made_up_bits(&mut self, tag: u8) -> u128 {
        self.made_up += 1;
        (u128::from(tag) << 120) | (u128::from(self.seed) << 56) | u128::from(self.made_up)
    }

    /// Prompts queued or running, as `status` reports them.
    fn queue_remaining(&self) -> usize {
        self.pending.len() + usize::from(self.running.is_some())
    }

    fn send(&mut self, conn: ConnId, frame: Frame) {
        if self.faults.active() {
            return self.send_with_faults(conn, frame);
        }
        self.outputs.push_back(MockOutput::Send { conn, frame });
    }

    /// `status` to every socket.
    fn broadcast_status(&mut self) {
        let status = json!({"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}});
        let text = pyjson::message("status", status);
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.send(conn, Frame::Text(text.clone()));
        }
    }

    /// The sockets that receive messages for `audience` now, and whether each takes type 4.
    fn recipients(&self, audience: &Audience) -> Vec<(ConnId, bool)> {
        match audience {
            Audience::Everyone => self.conns.iter().map(|(id, c)| (*id, c.metadata)).collect(),
            Audience::Client(client) => self
                .clients
                .get(client)
                .and_then(|id| self.conns.get(id).map(|c| (*id, c.metadata)))
                .into_iter()
                .collect(),
            Audience::Nobody => Vec::new(),
        }
    }

    /// Sends `frame` to every socket of `audience` connected now.
    fn send_to(&mut self, audience: &Audience, frame: Frame) {
        for (conn, _) in self.recipients(audience) {
            self.send(conn, frame.clone());
        }
    }
}
