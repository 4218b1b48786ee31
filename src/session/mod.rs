//! The state machine of one websocket connection and every prompt submitted on it.
//!
//! # How it works
//!
//! A [`Session`] owns one client id. It asks the adapter to open the websocket
//! ([`Transmit::Connect`]), announces the feature flags as the first message, and only then
//! posts prompts: a prompt posted before the socket is open can finish before anyone listens.
//! From then on it attributes every message and binary frame to the prompt it belongs to:
//! type 4 frames by their metadata, type 1 frames by the running prompt's last `executing` node.
//! A frame without a prompt id is nobody's until a message names one of the session's prompts:
//! after a (re)connect (ComfyUI greets a client that reconnects mid-run with an `executing`
//! that names no prompt), and while the server runs a prompt that is not one of ours in flight.
//! An image is an output only when that node's `class_type` in the submitted graph is
//! `SaveImageWebsocket`; every other image is a preview.
//!
//! A prompt ends at the first of `execution_success`, `execution_error`,
//! `execution_interrupted` and `executing` with a null node; later signals for it are no-ops.
//! File outputs named by `executed` (SaveImage, video, audio) are fetched with `/view` before
//! the prompt completes, when [`SessionConfig::fetch_files`] is on. [`Outputs`] folds a prompt's
//! output events into typed [`Output`]s (image, animated image, video, audio, 3D, file, text).
//!
//! Every wait it hands to the adapter has a deadline from [`Timeouts`], kept as a timer of its
//! own: a connect that fails or does not finish in time fails every prompt not yet posted with
//! [`Failure::Unreachable`] at once (see [`Session::handle_connect_failed`]); an HTTP exchange
//! that does not end in time counts as failed in transport; an open websocket that stays
//! silent (no frame, no pong) is given up and replaced.
//!
//! When the websocket drops, prompts in flight are not failed: the session asks for a
//! reconnect (the first at once, then with backoff; see [`Backoff`]) and then asks `/history/{id}` (and `/queue`) what became of each.
//! A prompt that finished meanwhile completes from its history; one whose websocket-only
//! images were sent while nobody listened fails with [`Failure::LostOutputs`], so that a pool
//! can run it again (at once, and interrupted on the server, if its `SaveImageWebsocket` node
//! was running at the drop). A prompt that ran on through a drop, or met a text frame that did
//! not decode, reads `/history` before it completes, and fetches the files the socket missed.
//! It never reports success with outputs missing.
//!
//! `/view` downloads are capped per session ([`SessionConfig::max_views`]) and wait while their
//! prompt's reader lags ([`Session::handle_reader_lag`]); [`Outbox`] is the per-prompt queue
//! an adapter keeps between the session and a reader, and says when it lags.
//!
//! # Driving it
//!
//! Mutate once, then drain every output before the next mutation:
//!
//! ```
//! use std::time::Duration;
//! use comfy_proxy::session::{Session, SessionConfig, Submission, Transmit};
//! use comfy_proxy::{ClientId, PromptId, Workflow};
//!
//! let mut session = Session::new(ClientId::from_random(1), SessionConfig::default());
//! let now = Duration::ZERO;
//! let graph = Workflow::from_json(r#"{"1":{"class_type":"EmptyImage","inputs":{}}}"#).unwrap();
//! session.submit(now, Submission::new(PromptId::from_random(2), graph)).unwrap();
//! // The websocket comes first: no HTTP request until the adapter reports it open.
//! assert!(matches!(session.poll_transmit(), Some(Transmit::Connect { .. })));
//! assert_eq!(session.poll_transmit(), None);
//! session.handle_connected(now);
//! assert!(matches!(session.poll_transmit(), Some(Transmit::Text(_)))); // feature flags
//! assert!(matches!(session.poll_transmit(), Some(Transmit::Http { .. }))); // POST /prompt
//! while let Some(event) = session.poll_event() {
//!     println!("{event}");
//! }
//! ```

mod config;
mod event;
mod handle;
mod link;
pub use link::REFUSALS_GONE;
mod outbox;
mod output;
mod prompt;
mod views;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use foldhash::{HashMap, HashSet};
use serde_json::{Map, Value};

pub use config::{Backoff, SessionConfig, Timeouts};
pub use event::{Deadline, Deadlines, Event, Failure, Image, RequestId, Transmit};
pub use outbox::{Outbox, OutboxStats};
pub use output::{Output, OutputBody, OutputKind, Outputs, classify};
pub use prompt::SAVE_IMAGE_WEBSOCKET;

use crate::error::{Misuse, ProtocolError, TransportError};
use crate::ids::{ClientId, NodeId, PromptId};
use crate::wire::http::{self, HttpRequest, HttpResponse};
use crate::wire::message::{FEATURE_FLAGS_HELLO, FileRef};
use crate::workflow::Workflow;

use prompt::{Phase, Prompt, Reconcile};

/// How many ended prompt ids a session remembers, to ignore their late messages quietly.
const ENDED_MEMORY: usize = 1024;

/// One prompt to run: the graph, the id the caller chose for it, and how to post it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Submission {
    /// The id the prompt is posted with and reported under.
    pub prompt_id: PromptId,
    /// The graph.
    pub workflow: Workflow,
    /// `extra_data` for `POST /prompt`.
    pub extra_data: Option<Map<String, Value>>,
    /// Run before the rest of the server's queue.
    pub front: bool,
    /// Deadlines; none by default.
    pub deadlines: Deadlines,
    /// Report the prompt's progress: [`Event::Cached`], [`Event::NodeStarted`] and
    /// [`Event::Progress`]. On by default; off for a caller that wants only what the prompt
    /// made, which then costs one event per step less. Every other event is reported either way.
    pub progress: bool,
}

impl Submission {
    /// A submission with no extra data, not in front, without deadlines.
    pub fn new(prompt_id: PromptId, workflow: Workflow) -> Self {
        Self {
            prompt_id,
            workflow,
            extra_data: None,
            front: false,
            deadlines: Deadlines::none(),
            progress: true,
        }
    }

    /// Leaves out the prompt's progress events ([`Submission::progress`]).
    pub fn without_progress(mut self) -> Self {
        self.progress = false;
        self
    }

    /// Sets the deadlines.
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Sets `extra_data`.
    pub fn with_extra_data(mut self, extra: Map<String, Value>) -> Self {
        self.extra_data = Some(extra);
        self
    }

    /// Asks the server to run it before the rest of its queue.
    pub fn in_front(mut self) -> Self {
        self.front = true;
        self
    }
}

/// The state of the websocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Asked the adapter to connect; waiting for the outcome until `deadline` (unknown until
    /// the session first hears the clock, for the connect [`Session::new`] asks for).
    Connecting {
        attempt: u32,
        deadline: Option<Duration>,
    },
    /// Open and announced.
    Open,
    /// Down; the next attempt is due at `at`.
    Backoff { attempt: u32, at: Duration },
    /// Down for good (attempts exhausted, or nothing left to reconnect for); the next
    /// submission connects again.
    Down,
    /// Closed by the caller.
    Closed,
}

/// What an HTTP request the session made was for.
#[derive(Debug, Clone)]
enum Pending {
    Post(PromptId),
    View {
        prompt: PromptId,
        node: NodeId,
        index: u32,
        file: FileRef,
    },
    History(PromptId),
    Queue(PromptId),
    /// A queue delete for a prompt being stopped: once answered (or failed), the targeted
    /// interrupt follows, so a prompt that left the queue for the GPU meanwhile is stopped too.
    Dequeue(PromptId),
    /// Interrupts: the answer changes nothing.
    FireAndForget,
}

impl Pending {
    /// The exchange, for error messages.
    fn what(&self) -> String {
        match self {
            Self::Post(_) => "POST /prompt".to_owned(),
            Self::View { file, .. } => format!("GET /view {:?}", file.filename),
            Self::History(id) => format!("GET /history/{id}"),
            Self::Queue(_) => "GET /queue".to_owned(),
            Self::Dequeue(_) => "a queue delete".to_owned(),
            Self::FireAndForget => "an interrupt".to_owned(),
        }
    }
}

/// A `/view` download waiting for its turn (see [`SessionConfig::max_views`]).
#[derive(Debug, Clone)]
struct ViewJob {
    prompt: PromptId,
    node: NodeId,
    /// The output's index, given when it was asked for: files keep the order the server
    /// listed them in, however their downloads finish.
    index: u32,
    file: FileRef,
}

/// The state machine of one websocket connection. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    client_id: ClientId,
    config: SessionConfig,
    link: Link,
    prompts: HashMap<PromptId, Prompt>,
    /// Submission order of the prompts in `prompts`.
    order: Vec<PromptId>,
    /// Server-assigned ids of prompts whose server ignored the client's id.
    aliases: HashMap<PromptId, PromptId>,
    /// The last [`ENDED_MEMORY`] prompts that ended here, oldest first; `ended_ids` holds the
    /// same ids, so that a submission is checked against them without a scan.
    ended: VecDeque<PromptId>,
    ended_ids: HashSet<PromptId>,
    /// The last of this session's prompts the server said it runs, while it is in flight.
    running: Option<PromptId>,
    /// The server's last word is that it runs a prompt that is not one of ours in flight
    /// (another client's, or one of ours that ended here, such as a prompt past its deadline
    /// that the server still runs), or the socket was just (re)opened and it has said nothing
    /// yet: a frame without a prompt id is then nobody's.
    elsewhere: bool,
    /// Requests in flight: what each is for, and when it counts as failed.
    requests: HashMap<RequestId, (Pending, Option<Duration>, Duration)>,
    next_request: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// When the open socket was opened or last pinged; `None` while it is not open.
    pinged_at: Option<Duration>,
    /// When the open websocket last delivered a frame or a pong.
    heard_at: Duration,
    /// Since when, and how many times, dropped sockets were reconnected at once.
    quick_reconnects: (Duration, u32),
    /// `/view` downloads not yet started, in the order they were asked for.
    views: VecDeque<ViewJob>,
    /// `/view` downloads started and not yet answered.
    views_in_flight: usize,
    /// Prompts whose reader lags: their downloads wait until it catches up.
    lagging: HashSet<PromptId>,
    /// Connect attempts refused in a row since the websocket was last open.
    refused: u32,
}

impl Session {
    /// A session for `client_id`. Its first transmit asks the adapter to open the websocket.
    pub fn new(client_id: ClientId, config: SessionConfig) -> Self {
        let mut session = Self {
            client_id,
            config,
            link: Link::Connecting {
                attempt: 0,
                deadline: None,
            },
            prompts: HashMap::default(),
            order: Vec::new(),
            aliases: HashMap::default(),
            ended: VecDeque::new(),
            ended_ids: HashSet::default(),
            running: None,
            elsewhere: true,
            requests: HashMap::default(),
            next_request: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            pinged_at: None,
            refused: 0,
            heard_at: Duration::ZERO,
            quick_reconnects: (Duration::ZERO, 0),
            views: VecDeque::new(),
            views_in_flight: 0,
            lagging: HashSet::default(),
        };
        session.transmits.push_back(session.connect_transmit());
        session
    }

    /// The client id this session announces.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// The deadlines of the waits this session hands to the adapter. The adapter bounds its own
    /// connects, exchanges and closes by them; the session's timers decide what an expiry means.
    pub fn timeouts(&self) -> &Timeouts {
        &self.config.timeouts
    }

    /// Whether the websocket is open and announced.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Open
    }

    /// Prompts submitted and not yet ended, in submission order.
    pub fn in_flight(&self) -> impl Iterator<Item = &PromptId> {
        self.order.iter()
    }

    /// Submits a prompt. It is posted as soon as the websocket is open and announced; until
    /// then it waits (its accept deadline runs from now). If the websocket cannot be opened,
    /// it fails with [`Failure::Unreachable`] at once.
    pub fn submit(&mut self, now: Duration, submission: Submission) -> Result<(), Misuse> {
        if self.link == Link::Closed {
            return Err(Misuse::Closed);
        }
        self.clock(now);
        let id = submission.prompt_id.clone();
        if self.prompts.contains_key(&id) || self.ended_ids.contains(&id) {
            return Err(Misuse::DuplicatePrompt(id));
        }
        let mut prompt = Prompt::new(id.clone(), submission.workflow, submission.deadlines, now);
        prompt.progress = submission.progress;
        if self.link == Link::Open {
            self.post(now, &mut prompt, submission.extra_data, submission.front);
        } else {
            prompt.pending_post = Some((submission.extra_data, submission.front));
            if self.link == Link::Down {
                self.connect(now, 0);
            }
        }
        self.order.push(id.clone());
        self.prompts.insert(id, prompt);
        Ok(())
    }

    /// Cancels a prompt: removes it from the server's queue, or interrupts it if it runs.
    /// [`Event::Cancelled`] follows at once; nothing more is reported for it.
    pub fn cancel(&mut self, now: Duration, prompt: &PromptId) -> Result<(), Misuse> {
        let Some(p) = self.prompts.get(prompt) else {
            return Err(Misuse::UnknownPrompt(prompt.clone()));
        };
        let phase = p.phase;
        self.stop_on_server(now, prompt, phase);
        self.end(
            prompt,
            Event::Cancelled {
                prompt: prompt.clone(),
            },
        );
        Ok(())
    }

    /// Closes the session: the websocket is closed and no new prompt is taken. Prompts still in
    /// flight stay unfinished; no event is reported for them.
    pub fn close(&mut self, _now: Duration) {
        if self.link != Link::Closed {
            self.link = Link::Closed;
            self.pinged_at = None;
            self.transmits.push_back(Transmit::Close);
        }
    }

    /// The websocket is open and announced to the adapter asked for by [`Transmit::Connect`].
    pub fn handle_connected(&mut self, now: Duration) {
        if self.link == Link::Closed {
            return;
        }
        self.link = Link::Open;
        self.refused = 0;
        // Frames without a prompt id wait for a message that says whose run it is.
        self.elsewhere = true;
        self.heard_at = now;
        if self.config.feature_flags {
            self.transmits
                .push_back(Transmit::Text(FEATURE_FLAGS_HELLO.to_owned()));
        }
        self.pinged_at = Some(now);
        self.events.push_back(Event::Connected);
        for id in self.order.clone() {
            let Some(mut p) = self.prompts.remove(&id) else {
                continue;
            };
            let reconcile = p.gap && matches!(p.phase, Phase::Accepted | Phase::Running);
            match p.pending_post.take() {
                Some((extra, front)) => self.post(now, &mut p, extra, front),
                None if reconcile => {
                    self.prompts.insert(id.clone(), p);
                    self.ask_history(now, &id);
                    continue;
                }
                None => {}
            }
            self.prompts.insert(id, p);
        }
    }

    /// A text frame from the server. A frame that does not decode is returned as the error;
    /// the prompt it may have been about (the one its `prompt_id` names, else the running one)
    /// reads `/history` before it completes, in case the frame was one of its messages.
    ///
    /// A `progress_state` written as ComfyUI writes it is read for its prompt id alone: the
    /// session uses nothing else of it, and its nodes are most of the JSON a sampler sends, so
    /// they are not decoded (nor checked). Every other frame is decoded in full.
    pub fn handle_text(&mut self, now: Duration, text: &str) -> Result<(), ProtocolError> {
        self.heard(now);
        // Most of a job's JSON, of which only the prompt id is read: not decoded further.
        if let Some(prompt) = crate::wire::message::progress_state_prompt(text) {
            self.on_progress_state(now, prompt);
            return Ok(());
        }
        match crate::wire::ServerMessage::decode(text) {
            Ok(msg) => {
                self.on_message(now, msg);
                Ok(())
            }
            Err(e) => {
                self.damaged_text(text);
                Err(e)
            }
        }
    }

    /// A binary frame from the server. Images are handed on as slices of `frame`, not copies.
    /// A frame that does not decode is returned as the error; if it arrived while a
    /// `SaveImageWebsocket` node ran, its prompt fails, since an output was damaged.
    pub fn handle_binary(&mut self, now: Duration, frame: Bytes) -> Result<(), ProtocolError> {
        self.heard(now);
        self.on_binary(now, frame)
    }

    /// The response to the request `id`.
    pub fn handle_response(&mut self, now: Duration, id: RequestId, response: HttpResponse) {
        self.clock(now);
        if let Some((pending, _, _)) = self.requests.remove(&id) {
            self.on_response(now, pending, Ok(response));
        }
    }

    /// The request `id` failed in transport (refused, reset, timed out in the adapter).
    pub fn handle_http_error(&mut self, now: Duration, id: RequestId, error: TransportError) {
        self.clock(now);
        if let Some((pending, _, _)) = self.requests.remove(&id) {
            self.on_response(now, pending, Err(error));
        }
    }

    /// The next thing for the adapter to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the caller, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn connect_transmit(&self) -> Transmit {
        Transmit::Connect {
            path: http::websocket_path(&self.client_id),
        }
    }

    fn request(&mut self, now: Duration, request: HttpRequest, pending: Pending) -> RequestId {
        self.request_within(now, request, pending, None)
    }

    /// A request about a prompt whose own deadlines are `deadlines`: `POST /prompt` and the
    /// lookups after a reconnect (`/history`, `/queue`) are small, and one the server never
    /// answers counts as failed after half the prompt's shortest deadline (not below 2 s) if
    /// that is sooner than [`Timeouts::http`]. The prompt can then still learn its fate (a
    /// failed post is looked up) or fail with a cause, instead of running into its deadline.
    fn request_about(
        &mut self,
        now: Duration,
        request: HttpRequest,
        pending: Pending,
        deadlines: &Deadlines,
    ) -> RequestId {
        let shortest = [deadlines.accept, deadlines.idle, deadlines.total]
            .into_iter()
            .flatten()
            .min();
        let within = shortest.map(|d| (d / 2).max(link::LOOKUP_FLOOR));
        self.request_within(now, request, pending, within)
    }

    /// A `/history` or `/queue` lookup about a prompt in flight, bounded as [`Self::request_about`].
    fn lookup(&mut self, now: Duration, request: HttpRequest, pending: Pending) -> RequestId {
        let deadlines = match &pending {
            Pending::History(id) | Pending::Queue(id) => self.prompts.get(id).map(|p| p.deadlines),
            _ => None,
        };
        match deadlines {
            Some(d) => self.request_about(now, request, pending, &d),
            None => self.request(now, request, pending),
        }
    }

    fn request_within(
        &mut self,
        now: Duration,
        request: HttpRequest,
        pending: Pending,
        within: Option<Duration>,
    ) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        // The adapter bounds the exchange by `Timeouts::http` and reports first; the session's
        // timer is the backstop, unless the exchange is small (`Timeouts::exchange`) or the
        // prompt needs an answer sooner.
        let http = self.config.timeouts.http;
        let small = !matches!(pending, Pending::View { .. });
        let within = match (within, self.config.timeouts.exchange) {
            (w, Some(e)) if small => Some(w.map_or(e, |w| w.min(e))),
            (w, _) => w,
        };
        let (deadline, after) = match (http, within) {
            (Some(h), Some(w)) if w < h => (Some(now + w), w),
            (Some(h), _) => (Some(now + h + link::GRACE), h),
            (None, Some(w)) => (Some(now + w), w),
            (None, None) => (None, Duration::ZERO),
        };
        self.requests.insert(id, (pending, deadline, after));
        self.transmits.push_back(Transmit::Http { id, request });
        id
    }

    fn post(
        &mut self,
        now: Duration,
        p: &mut Prompt,
        extra_data: Option<Map<String, Value>>,
        front: bool,
    ) {
        let request = http::post_prompt(
            &p.workflow,
            &self.client_id,
            &p.id,
            extra_data.as_ref(),
            front,
        );
        let pending = Pending::Post(p.id.clone());
        self.request_about(now, request, pending, &p.deadlines);
        p.phase = Phase::Posted;
    }

    /// Asks `/history/{id}` what became of prompt `id` (the first step of a reconciliation).
    fn ask_history(&mut self, now: Duration, id: &PromptId) {
        let Some(p) = self.prompts.get_mut(id) else {
            return;
        };
        p.reconcile = Some(Reconcile::History);
        let deadlines = p.deadlines;
        let pending = Pending::History(id.clone());
        self.request_about(now, http::history(id), pending, &deadlines);
    }

    /// Asks the server to drop the prompt: from the queue if it may still wait there, then an
    /// interrupt (which only acts if that very prompt runs). The two are sent one after the
    /// other, never together: sent together, the interrupt may reach the server while the
    /// prompt still waits (ComfyUI skips it) and the delete after it started (it misses), and
    /// the prompt runs to its end.
    fn stop_on_server(&mut self, now: Duration, id: &PromptId, phase: Phase) {
        if phase == Phase::Waiting {
            return;
        }
        if phase == Phase::Running {
            self.request(now, http::interrupt(Some(id)), Pending::FireAndForget);
        } else {
            let delete = http::queue_delete(std::slice::from_ref(id));
            self.request(now, delete, Pending::Dequeue(id.clone()));
        }
    }

    /// Whether a queue delete or an interrupt this session sent is still unanswered: an adapter
    /// that stops should wait for them (each is bounded by [`Timeouts::http`]), or a cancelled
    /// prompt may run on.
    pub fn is_stopping(&self) -> bool {
        self.requests
            .values()
            .any(|(p, ..)| matches!(p, Pending::Dequeue(_) | Pending::FireAndForget))
    }

    /// Ends a prompt with its terminal event: it is forgotten, and later signals are no-ops.
    fn end(&mut self, id: &PromptId, event: Event) {
        if self.prompts.remove(id).is_none() {
            return;
        }
        self.order.retain(|o| o != id);
        self.aliases.retain(|_, ours| ours != id);
        self.views.retain(|v| &v.prompt != id);
        self.lagging.remove(id);
        if self.running.as_ref() == Some(id) {
            self.running = None;
        }
        if self.ended.len() == ENDED_MEMORY
            && let Some(oldest) = self.ended.pop_front()
        {
            self.ended_ids.remove(&oldest);
        }
        if self.ended_ids.insert(id.clone()) {
            self.ended.push_back(id.clone());
        }
        self.events.push_back(event);
    }
}
