//! Fault switches: a hostile mock server, on purpose, at rates the test chooses. See
//! [`Faults`] for what each fault does and where it strikes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::{ConnId, Frame, MockOutput, MockResponse, MockServer, pyjson};
use comfy_proxy::wire::ImageFormat;
use comfy_proxy::wire::frame::{
    DEFAULT_MAX_FRAME_LEN, PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA, encode_image,
    encode_image_with_metadata,
};

/// One kind of misbehaviour. See [`Faults`] for what each does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Fault {
    /// `refuse`: connections refused.
    Refuse,
    /// `drop-ws`: the websocket closed in the middle of a job.
    DropWs,
    /// `stall`: connections accepted and never answered.
    Stall,
    /// `http500`: `POST /prompt` fails with a 500 and an HTML body.
    Http500,
    /// `restart`: the server restarts, forgetting its queue and history.
    Restart,
    /// `slow`: a run's delays multiplied.
    Slow,
    /// `oversize`: an image frame over the client's frame limit.
    Oversize,
    /// `bad-json`: a text frame that is not JSON.
    BadJson,
    /// `bad-utf8`: a type 3 frame whose text is not UTF-8.
    BadUtf8,
    /// `unknown-type`: a message of an unknown `type`.
    UnknownType,
    /// `truncated`: an image frame cut short inside its header.
    Truncated,
    /// `wrong-id`: messages for a prompt id that is not the client's.
    WrongId,
}

impl Fault {
    /// Every fault, in the order [`Faults`] prints them.
    pub const ALL: [Fault; 12] = [
        Fault::Refuse,
        Fault::DropWs,
        Fault::Stall,
        Fault::Http500,
        Fault::Restart,
        Fault::Slow,
        Fault::Oversize,
        Fault::BadJson,
        Fault::BadUtf8,
        Fault::UnknownType,
        Fault::Truncated,
        Fault::WrongId,
    ];

    /// The name used in fault strings (`drop-ws`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::DropWs => "drop-ws",
            Self::Stall => "stall",
            Self::Http500 => "http500",
            Self::Restart => "restart",
            Self::Slow => "slow",
            Self::Oversize => "oversize",
            Self::BadJson => "bad-json",
            Self::BadUtf8 => "bad-utf8",
            Self::UnknownType => "unknown-type",
            Self::Truncated => "truncated",
            Self::WrongId => "wrong-id",
        }
    }

    /// The fault with this name, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|f| *f == self).unwrap_or(0)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The faults a [`MockServer`] injects: a rate per [`Fault`], the seed of the generator that
/// decides when they strike, and the length of `oversize` frames. The default injects none.
///
/// # How it works
///
/// [`Faults`] names a rate (a probability from 0 to 1) per [`Fault`] and a seed; it is parsed
/// from a string such as `"seed=7,drop-ws=0.01,http500=0.05"`. Each chance a fault has to
/// strike draws one number from a splitmix64 generator seeded with [`Faults::seed`], so a run
/// with the same inputs in the same order strikes at the same places. With every rate at 0
/// (the default) the server behaves exactly as without faults and draws nothing.
///
/// | name | what happens | chance per |
/// | --- | --- | --- |
/// | `refuse` | the socket layer refuses the connection | call of [`MockServer::should_refuse`] |
/// | `stall` | the socket layer accepts and never answers | call of [`MockServer::should_stall`] |
/// | `http500` | `POST /prompt` answers 500 with an HTML body; nothing is queued | `POST /prompt` |
/// | `restart` | [`MockServer::restart`] after the current timers ran: queue and history gone | frame sent while running |
/// | `drop-ws` | the frame is not sent and its socket is closed ([`MockOutput::Close`]) | frame sent while running |
/// | `slow` | the run's remaining delays are multiplied by 2 to 8 | run |
/// | `oversize` | an image frame is replaced by one of [`Faults::oversize_len`] bytes | binary image frame |
/// | `truncated` | an image frame is cut inside its header (type, format or metadata) | binary image frame |
/// | `bad-json` | a text frame that is not JSON goes first | frame sent |
/// | `bad-utf8` | a type 3 (text) binary frame whose text is not UTF-8 goes first | frame sent |
/// | `unknown-type` | a message with a `type` no client knows goes first | frame sent |
/// | `wrong-id` | a message or type 4 frame for a prompt id the client never had goes first | frame sent |
///
/// "While running" means while [`MockServer::handle_timeout`] carries out prompts: the frames
/// of runs, and the `status` broadcasts at their starts and ends.
///
/// # The socket layer's part
///
/// Two faults are the socket layer's to carry out, since the core never sees a connection:
/// before it accepts a connection (HTTP or websocket) it asks [`MockServer::should_refuse`],
/// and then [`MockServer::should_stall`]. A stalled connection is held open and never
/// answered: the request may be handed to [`MockServer::handle_request`] first (the server
/// did the work, the answer is lost) or not at all (the request never got through); the
/// response is not sent either way. This keeps `handle_request` total: every call answers.
///
/// A cut image payload (as opposed to a cut header) is left out on purpose: a websocket
/// frame carries its length, and a shorter image inside a well-formed frame is a different
/// image, which no client can tell from the protocol.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Faults {
    /// Seeds the generator (splitmix64). Default: 0.
    pub seed: u64,
    /// The length of an `oversize` frame. Default: 64 MiB + 1, one byte over the default
    /// [`SessionConfig::max_frame_len`](comfy_proxy::session::SessionConfig::max_frame_len). The
    /// mock makes one such frame, the first time the fault strikes, and sends it again each
    /// time: zeroed memory the operating system maps lazily, so it costs little until read.
    /// Tests pick a small client limit and a length just over it.
    pub oversize_len: usize,
    rates: [f64; 12],
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self {
            seed: 0,
            oversize_len: DEFAULT_MAX_FRAME_LEN + 1,
            rates: [0.0; 12],
        }
    }

    /// Reads a comma-separated list of `name=rate` items (rates from 0 to 1), plus `seed=N`
    /// and `oversize-len=BYTES`. Blanks around items are ignored; an empty string means no
    /// faults. An unknown name, a rate out of range or a name given twice is an error that
    /// quotes the item.
    ///
    /// ```
    /// use comfy_proxy_mock::{Fault, Faults};
    /// let f = Faults::parse("seed=7, drop-ws=0.1,http500=0.05").unwrap();
    /// assert_eq!((f.seed, f.rate(Fault::DropWs), f.rate(Fault::Stall)), (7, 0.1, 0.0));
    /// assert_eq!(f.to_string(), "seed=7,drop-ws=0.1,http500=0.05");
    /// let e = Faults::parse("drop-ws=0.1,teleport=1").unwrap_err();
    /// assert_eq!(e.item, "teleport=1");
    /// ```
    pub fn parse(text: &str) -> Result<Self, FaultsError> {
        let mut faults = Self::none();
        let mut seen: Vec<&str> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let err = |reason: String| FaultsError {
                item: item.to_owned(),
                reason,
            };
            let Some((name, value)) = item.split_once('=') else {
                return Err(err("expected name=value".into()));
            };
            let (name, value) = (name.trim(), value.trim());
            if seen.contains(&name) {
                return Err(err(format!("{name} is given twice")));
            }
            seen.push(name);
            match name {
                "seed" => {
                    faults.seed = value
                        .parse()
                        .map_err(|_| err(format!("seed {value:?} is not a u64")))?;
                }
                "oversize-len" => {
                    faults.oversize_len = value
                        .parse()
                        .map_err(|_| err(format!("length {value:?} is not a byte count")))?;
                }
                _ => {
                    let Some(fault) = Fault::from_name(name) else {
                        let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                        return Err(err(format!(
                            "unknown fault {name:?} (known: {}, seed, oversize-len)",
                            known.join(", ")
                        )));
                    };
                    let rate: f64 = value
                        .parse()
                        .map_err(|_| err(format!("rate {value:?} is not a number")))?;
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(err(format!("rate {rate} is not between 0 and 1")));
                    }
                    faults.rates[fault.index()] = rate;
                }
            }
        }
        Ok(faults)
    }

    /// The rate of `fault`.
    pub fn rate(&self, fault: Fault) -> f64 {
        self.rates[fault.index()]
    }

    /// Sets the rate of `fault`, clamped to 0..=1 (not a number counts as 0).
    pub fn with(mut self, fault: Fault, rate: f64) -> Self {
        self.rates[fault.index()] = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// Sets [`Faults::seed`].
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`Faults::oversize_len`].
    pub fn with_oversize_len(mut self, len: usize) -> Self {
        self.oversize_len = len;
        self
    }

    /// Whether no fault can strike.
    pub fn is_none(&self) -> bool {
        self.rates.iter().all(|r| *r <= 0.0)
    }
}

impl FromStr for Faults {
    type Err = FaultsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The form [`Faults::parse`] reads: the seed if not 0, the rates that are not 0, the oversize
/// length if not the default.
impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if self.seed != 0 {
            items.push(format!("seed={}", self.seed));
        }
        for fault in Fault::ALL {
            let rate = self.rate(fault);
            if rate > 0.0 {
                items.push(format!("{fault}={rate}"));
            }
        }
        if self.oversize_len != DEFAULT_MAX_FRAME_LEN + 1 {
            items.push(format!("oversize-len={}", self.oversize_len));
        }
        f.write_str(&items.join(","))
    }
}

/// A fault string that could not be read: the item at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultsError {
    /// The item as written (`teleport=1`).
    pub item: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FaultsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault item {:?}: {}", self.item, self.reason)
    }
}

impl std::error::Error for FaultsError {}

/// splitmix64: tiny, seeded, good enough to decide where faults strike.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A run slowed down: from `from` on, its time passes `factor` times slower.
#[derive(Debug, Clone)]
struct Slow {
    prompt: String,
    from: Duration,
    factor: u32,
}

impl Slow {
    /// The run's time at the driver's time `now`.
    fn inner(&self, now: Duration) -> Duration {
        self.from + now.saturating_sub(self.from) / self.factor
    }

    /// The driver's time at the run's time `at`.
    fn outer(&self, at: Duration) -> Duration {
        self.from + at.saturating_sub(self.from).saturating_mul(self.factor)
    }
}

/// The server's fault state: the switches, the generator, what struck so far.
#[derive(Debug)]
pub(super) struct Injector {
    faults: Faults,
    active: bool,
    rng: SplitMix64,
    counts: [u64; 12],
    oversize: Option<Bytes>,
    /// Inside `handle_timeout`: frames sent now belong to runs.
    running: bool,
    restart_due: bool,
    slow: Option<Slow>,
    /// The last run the injector saw start, so each run is considered for `slow` once.
    seen_run: Option<String>,
}

impl Injector {
    pub(super) fn new(faults: Faults) -> Self {
        Self {
            active: !faults.is_none(),
            rng: SplitMix64(faults.seed),
            faults,
            counts: [0; 12],
            oversize: None,
            running: false,
            restart_due: false,
            slow: None,
            seen_run: None,
        }
    }

    /// Whether any fault can strike; when not, the server takes none of the paths below.
    pub(super) fn active(&self) -> bool {
        self.active
    }

    /// One chance for `fault`: true (and counted) when it strikes. A rate of 0 draws nothing.
    fn roll(&mut self, fault: Fault) -> bool {
        let rate = self.faults.rate(fault);
        if rate <= 0.0 || self.rng.unit() >= rate {
            return false;
        }
        self.counts[fault.index()] += 1;
        true
    }
}

/// Text frames that are not JSON: cut messages, an error page, nothing.
const NOT_JSON: &[&str] = &[
    "{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\": {\"queue_rem",
    "<html><body>502 Bad Gateway</body></html>",
    "",
    "{\"type\": \"executing\", \"data\": {\"node\": \"9\", \"prompt_id\": ",
    "\u{feff}not json",
];

/// The body aiohttp sends with an unhandled exception.
const HTML_500: &str = "<html><head><title>500 Internal Server Error</title></head><body>\
    <h1>500 Internal Server Error</h1>Server got itself in trouble</body></html>";

impl MockServer {
    /// Asks whether to refuse the connection about to be accepted (`refuse`). The socket layer
    /// calls this once per connection, HTTP or websocket, and on `true` closes it unanswered.
    #[must_use]
    pub fn should_refuse(&mut self, _now: Duration) -> bool {
        self.faults.active && self.faults.roll(Fault::Refuse)
    }

    /// Asks whether to stall the connection just accepted (`stall`): on `true` the socket
    /// layer never answers it (see [`Faults`] for the request's fate).
    #[must_use]
    pub fn should_stall(&mut self, _now: Duration) -> bool {
        self.faults.active && self.faults.roll(Fault::Stall)
    }

    /// The faults this server injects.
    pub fn faults(&self) -> &Faults {
        &self.faults.faults
    }

    /// How many times `fault` struck so far (for `refuse` and `stall`: how many times the
    /// socket layer was told to).
    pub fn faults_injected(&self, fault: Fault) -> u64 {
        self.faults.counts[fault.index()]
    }

    /// `http500`: a 500 instead of the answer to `POST /prompt`, before anything is queued.
    pub(super) fn fault_response(
        &mut self,
        method: &str,
        path_and_query: &str,
    ) -> Option<MockResponse> {
        let path = path_and_query.split(['?', '#']).next().unwrap_or_default();
        let path = path.strip_prefix("/api").unwrap_or(path);
        if method != "POST" || path != "/prompt" || !self.faults.roll(Fault::Http500) {
            return None;
        }
        Some(MockResponse {
            status: 500,
            content_type: "text/html; charset=utf-8",
            body: Bytes::from_static(HTML_500.as_bytes()),
        })
    }

    /// Sends `frame` on `conn` through the frame faults: hostile frames before it, a dropped
    /// socket instead of it, a damaged image in its place.
    pub(super) fn send_with_faults(&mut self, conn: ConnId, frame: Frame) {
        if !self.conns.contains_key(&conn) {
            return; // closed by `drop-ws` while a run was sending to it
        }
        for fault in [
            Fault::BadJson,
            Fault::BadUtf8,
            Fault::UnknownType,
            Fault::WrongId,
        ] {
            if self.faults.roll(fault) {
                let hostile = self.hostile(fault, conn);
                self.outputs.push_back(MockOutput::Send {
                    conn,
                    frame: hostile,
                });
            }
        }
        if self.faults.running {
            if self.faults.roll(Fault::Restart) {
                self.faults.restart_due = true;
            }
            if self.faults.roll(Fault::DropWs) {
                self.forget_conn(conn);
                self.outputs.push_back(MockOutput::Close { conn });
                return;
            }
        }
        let frame = match frame {
            Frame::Binary(data) if is_image(&data) => self.damage(data),
            other => other,
        };
        self.outputs.push_back(MockOutput::Send { conn, frame });
    }

    /// An image frame, `truncated` or `oversize` or as it was.
    fn damage(&mut self, data: Bytes) -> Frame {
        if self.faults.roll(Fault::Truncated) {
            let header = match read_u32(&data, 0) {
                Some(PREVIEW_IMAGE_WITH_METADATA) => {
                    8usize.saturating_add(read_u32(&data, 4).unwrap_or(0) as usize)
                }
                _ => 8,
            };
            let cut = self.faults.rng.below(header.min(data.len()) as u64) as usize;
            return Frame::Binary(data.slice(..cut));
        }
        if self.faults.roll(Fault::Oversize) {
            let len = self.faults.faults.oversize_len.max(8);
            let frame = self.faults.oversize.get_or_insert_with(|| {
                // Zeroed memory is mapped lazily: only the header's page is touched.
                let mut bytes = vec![0u8; len];
                bytes[..8].copy_from_slice(&encode_image(ImageFormat::Png, b""));
                Bytes::from(bytes)
            });
            return Frame::Binary(frame.clone());
        }
        Frame::Binary(data)
    }

    /// A hostile frame for `fault`.
    fn hostile(&mut self, fault: Fault, conn: ConnId) -> Frame {
        let n = self.faults.rng.next_u64();
        match fault {
            Fault::BadJson => Frame::Text(NOT_JSON[(n % NOT_JSON.len() as u64) as usize].into()),
            Fault::BadUtf8 => {
                let mut frame = comfy_proxy::wire::frame::encode_text("9", "");
                frame.extend_from_slice(&[b'o', b'k', 0xC3, 0x28, 0xFF, 0xFE]);
                Frame::Binary(Bytes::from(frame))
            }
            Fault::UnknownType => Frame::Text(pyjson::message(
                "mock_fault_unknown",
                json!({"n": n % 1000, "nested": {"list": [1, 2.5, null]}}),
            )),
            _ => self.wrong_id(n, conn),
        }
    }

    /// A message of a prompt that is not the client's: an id it never had, with real shapes.
    fn wrong_id(&mut self, n: u64, conn: ConnId) -> Frame {
        let id = format!("foreign-{:016x}", self.faults.rng.next_u64());
        let metadata = self.conns.get(&conn).is_some_and(|c| c.metadata);
        let text = |kind: &str, data| Frame::Text(pyjson::message(kind, data));
        match n % 7 {
            0 => text("execution_start", json!({"prompt_id": id, "timestamp": 0})),
            1 => text(
                "executing",
                json!({"node": "9", "display_node": "9", "prompt_id": id}),
            ),
            2 => text("executing", json!({"node": null, "prompt_id": id})),
            3 => text(
                "execution_success",
                json!({"prompt_id": id, "timestamp": 0}),
            ),
            4 => text(
                "execution_error",
                json!({
                    "prompt_id": id, "node_id": "9", "node_type": "SaveImageWebsocket",
                    "executed": [], "exception_message": "not yours", "exception_type": "Foreign",
                    "traceback": [], "current_inputs": {}, "current_outputs": {}, "timestamp": 0,
                }),
            ),
            5 => text(
                "progress",
                json!({"value": 1, "max": 1, "prompt_id": id, "node": "9"}),
            ),
            _ if metadata => {
                let meta = json!({
                    "node_id": "9", "prompt_id": id, "display_node_id": "9",
                    "parent_node_id": null, "real_node_id": "9", "image_type": "image/png",
                });
                let image = b"\x89PNG\r\n\x1a\nforeign";
                let frame = encode_image_with_metadata(&pyjson::dumps(&meta), image);
                Frame::Binary(Bytes::from(frame))
            }
            _ => text(
                "executed",
                json!({"node": "9", "display_node": "9", "prompt_id": id,
                    "output": {"images": [{"filename": "foreign.png", "subfolder": "", "type": "output"}]}}),
            ),
        }
    }

    /// When `handle_timeout` is due, with a slowed run's delays stretched.
    pub(super) fn timeout_with_faults(&self) -> Option<Duration> {
        match (&self.running, &self.faults.slow) {
            (Some(run), Some(slow)) if run.prompt_id() == slow.prompt => {
                Some(slow.outer(run.next_at()))
            }
            _ => self.next_timeout(),
        }
    }

    /// `handle_timeout` with faults: a slowed run advances on its own stretched clock (and no
    /// other prompt starts meanwhile), a new run may be slowed, and a restart that struck
    /// during the run happens once its due actions were carried out.
    pub(super) fn advance_with_faults(&mut self, now: Duration) {
        self.faults.running = true;
        loop {
            let slow = self.faults.slow.clone().filter(|s| {
                self.running
                    .as_ref()
                    .is_some_and(|r| r.prompt_id() == s.prompt)
            });
            if let Some(slow) = slow {
                // The queue waits outside, so that the slowed run's end starts nothing early.
                let pending = std::mem::take(&mut self.pending);
                self.advance(slow.inner(now));
                let mut later = std::mem::replace(&mut self.pending, pending);
                self.pending.append(&mut later);
                if self
                    .running
                    .as_ref()
                    .is_some_and(|r| r.prompt_id() == slow.prompt)
                {
                    break;
                }
                // It ended on its own clock: the next prompt starts at that moment, ours.
                self.idle_since = slow.outer(self.idle_since).min(now);
                self.faults.slow = None;
                continue;
            }
            self.advance(now);
            let started = self
                .running
                .as_ref()
                .map(|r| r.prompt_id().to_owned())
                .filter(|id| self.faults.seen_run.as_ref() != Some(id));
            if let Some(id) = started {
                self.faults.seen_run = Some(id.clone());
                if self.faults.roll(Fault::Slow) {
                    let factor = 2 + self.faults.rng.below(7) as u32;
                    self.faults.slow = Some(Slow {
                        prompt: id,
                        from: now,
                        factor,
                    });
                }
            }
            break;
        }
        self.faults.running = false;
        if std::mem::take(&mut self.faults.restart_due) {
            self.faults.slow = None;
            self.restart(now);
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether a binary frame carries an image (type 1 or 4).
fn is_image(data: &[u8]) -> bool {
    matches!(
        read_u32(data, 0),
        Some(PREVIEW_IMAGE | PREVIEW_IMAGE_WITH_METADATA)
    )
}

#[cfg(test)]
mod tests;
