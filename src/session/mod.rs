//! The state machine of one websocket connection and every prompt submitted on it.
//!
//! # How it works
//!
//! A [`Session`] owns one client id. It asks the adapter to open the websocket
//! ([`Transmit::Connect`]), announces the feature flags as the first message, and only then
//! posts prompts: a prompt posted before the socket is open can finish before anyone listens.
//! From then on it attributes every message and binary frame to the prompt it belongs to:
//! type 4 frames by their metadata, type 1 frames by the running prompt's last `executing` node.
//! An image is an output only when that node's `class_type` in the submitted graph is
//! `SaveImageWebsocket`; every other image is a preview.
//!
//! A prompt ends at the first of `execution_success`, `execution_error`,
//! `execution_interrupted` and `executing` with a null node; later signals for it are no-ops.
//! File outputs named by `executed` (SaveImage, video, audio) are fetched with `/view` before
//! the prompt completes, when [`SessionConfig::fetch_files`] is on.
//!
//! When the websocket drops, prompts in flight are not failed: the session asks for a
//! reconnect (with backoff) and then asks `/history/{id}` (and `/queue`) what became of each.
//! A prompt that finished meanwhile completes from its history; one whose websocket-only
//! images were sent while nobody listened fails with [`Failure::LostOutputs`], so that a pool
//! can run it again. It never reports success with images missing.
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

mod event;
mod handle;
mod prompt;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

pub use event::{Deadline, Deadlines, Event, Failure, Image, RequestId, Transmit};
pub use prompt::SAVE_IMAGE_WEBSOCKET;

use crate::error::{Misuse, ProtocolError, TransportError};
use crate::ids::{ClientId, NodeId, PromptId};
use crate::wire::http::{self, HttpRequest, HttpResponse};
use crate::wire::message::{FEATURE_FLAGS_HELLO, FileRef};
use crate::workflow::Workflow;

use prompt::{Phase, Prompt, Reconcile};

/// How many ended prompt ids a session remembers, to ignore their late messages quietly.
const ENDED_MEMORY: usize = 1024;

/// Reconnect backoff: `initial`, doubled per attempt up to `max`, at most `attempts` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay before the first reconnect attempt.
    pub initial: Duration,
    /// The longest delay between attempts.
    pub max: Duration,
    /// Attempts before prompts in flight fail with [`Failure::Disconnected`].
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
            attempts: 8,
        }
    }
}

impl Backoff {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Settings of a [`Session`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Send the `feature_flags` hello so that images arrive as type 4 frames with their prompt
    /// and node ids. Default: on.
    pub feature_flags: bool,
    /// Fetch file outputs named by `executed` messages with `/view` and deliver them as
    /// [`Event::Output`] or [`Event::File`] before the prompt completes. Default: on.
    pub fetch_files: bool,
    /// The largest binary frame accepted. Default: 64 MiB.
    pub max_frame_len: usize,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Interval of websocket pings; `None` for none. Default: 20 s.
    pub keepalive: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            feature_flags: true,
            fetch_files: true,
            max_frame_len: crate::wire::frame::DEFAULT_MAX_FRAME_LEN,
            backoff: Backoff::default(),
            keepalive: Some(Duration::from_secs(20)),
        }
    }
}

impl SessionConfig {
    /// Sets [`SessionConfig::feature_flags`].
    pub fn with_feature_flags(mut self, on: bool) -> Self {
        self.feature_flags = on;
        self
    }

    /// Sets [`SessionConfig::fetch_files`].
    pub fn with_fetch_files(mut self, on: bool) -> Self {
        self.fetch_files = on;
        self
    }

    /// Sets [`SessionConfig::max_frame_len`].
    pub fn with_max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// Sets [`SessionConfig::backoff`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets [`SessionConfig::keepalive`].
    pub fn with_keepalive(mut self, every: Option<Duration>) -> Self {
        self.keepalive = every;
        self
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, for at most `attempts` attempts.
    pub fn new(initial: Duration, max: Duration, attempts: u32) -> Self {
        Self {
            initial,
            max,
            attempts,
        }
    }
}

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
        }
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
    /// Asked the adapter to connect; waiting for the outcome.
    Connecting { attempt: u32 },
    /// Open and announced.
    Open,
    /// Down; the next attempt is due at `at`.
    Backoff { attempt: u32, at: Duration },
    /// Down for good (attempts exhausted); the next submission connects again.
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
        file: FileRef,
    },
    History(PromptId),
    Queue(PromptId),
    /// Interrupts and queue deletes: the answer changes nothing.
    FireAndForget,
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
    ended: VecDeque<PromptId>,
    running: Option<PromptId>,
    requests: HashMap<RequestId, Pending>,
    next_request: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    keepalive_at: Option<Duration>,
}

impl Session {
    /// A session for `client_id`. Its first transmit asks the adapter to open the websocket.
    pub fn new(client_id: ClientId, config: SessionConfig) -> Self {
        let mut session = Self {
            client_id,
            config,
            link: Link::Connecting { attempt: 0 },
            prompts: HashMap::new(),
            order: Vec::new(),
            aliases: HashMap::new(),
            ended: VecDeque::new(),
            running: None,
            requests: HashMap::new(),
            next_request: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            keepalive_at: None,
        };
        session.transmits.push_back(session.connect_transmit());
        session
    }

    /// The client id this session announces.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
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
    /// then it waits (its accept deadline runs from now).
    pub fn submit(&mut self, now: Duration, submission: Submission) -> Result<(), Misuse> {
        if self.link == Link::Closed {
            return Err(Misuse::Closed);
        }
        let id = submission.prompt_id.clone();
        if self.prompts.contains_key(&id) || self.ended.contains(&id) {
            return Err(Misuse::DuplicatePrompt(id));
        }
        let mut prompt = Prompt::new(id.clone(), submission.workflow, submission.deadlines, now);
        if self.link == Link::Open {
            self.post(&mut prompt, submission.extra_data, submission.front);
        } else {
            prompt.pending_post = Some((submission.extra_data, submission.front));
            if self.link == Link::Down {
                self.link = Link::Connecting { attempt: 0 };
                self.transmits.push_back(self.connect_transmit());
            }
        }
        self.order.push(id.clone());
        self.prompts.insert(id, prompt);
        Ok(())
    }

    /// Cancels a prompt: removes it from the server's queue, or interrupts it if it runs.
    /// [`Event::Cancelled`] follows at once; nothing more is reported for it.
    pub fn cancel(&mut self, _now: Duration, prompt: &PromptId) -> Result<(), Misuse> {
        let Some(p) = self.prompts.get(prompt) else {
            return Err(Misuse::UnknownPrompt(prompt.clone()));
        };
        let phase = p.phase;
        self.stop_on_server(prompt, phase);
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
            self.transmits.push_back(Transmit::Close);
        }
    }

    /// The adapter opened the websocket asked for by [`Transmit::Connect`].
    pub fn handle_connected(&mut self, now: Duration) {
        if self.link == Link::Closed {
            return;
        }
        self.link = Link::Open;
        if self.config.feature_flags {
            self.transmits
                .push_back(Transmit::Text(FEATURE_FLAGS_HELLO.to_owned()));
        }
        self.keepalive_at = self.config.keepalive.map(|k| now + k);
        self.events.push_back(Event::Connected);
        for id in self.order.clone() {
            let Some(mut p) = self.prompts.remove(&id) else {
                continue;
            };
            if let Some((extra, front)) = p.pending_post.take() {
                self.post(&mut p, extra, front);
            } else if p.gap && matches!(p.phase, Phase::Accepted | Phase::Running) {
                self.ask_history(&mut p);
            }
            self.prompts.insert(id, p);
        }
    }

    /// The websocket closed, or a connect attempt failed. Prompts in flight wait for the
    /// reconnect; after [`Backoff::attempts`] failures they fail.
    pub fn handle_disconnect(&mut self, now: Duration) {
        let attempt = match self.link {
            Link::Closed | Link::Down => return,
            Link::Open => {
                self.events.push_back(Event::Disconnected);
                1
            }
            Link::Connecting { attempt } | Link::Backoff { attempt, .. } => attempt + 1,
        };
        self.keepalive_at = None;
        for p in self.prompts.values_mut() {
            if p.phase != Phase::Waiting {
                p.mark_gap();
            }
        }
        if attempt > self.config.backoff.attempts {
            self.link = Link::Down;
            let failure = Failure::Disconnected {
                attempts: attempt - 1,
            };
            for id in self.order.clone() {
                self.end(
                    &id,
                    Event::Failed {
                        prompt: id.clone(),
                        failure: failure.clone(),
                    },
                );
            }
        } else {
            self.link = Link::Backoff {
                attempt,
                at: now + self.config.backoff.delay(attempt),
            };
        }
    }

    /// A text frame from the server. A frame that does not decode changes nothing and is
    /// returned as the error.
    pub fn handle_text(&mut self, now: Duration, text: &str) -> Result<(), ProtocolError> {
        let msg = crate::wire::ServerMessage::decode(text)?;
        self.on_message(now, msg);
        Ok(())
    }

    /// A binary frame from the server. Images are handed on as slices of `frame`, not copies.
    /// A frame that does not decode is returned as the error; if it arrived while a
    /// `SaveImageWebsocket` node ran, its prompt fails, since an output was damaged.
    pub fn handle_binary(&mut self, now: Duration, frame: Bytes) -> Result<(), ProtocolError> {
        self.on_binary(now, frame)
    }

    /// The response to the request `id`.
    pub fn handle_response(&mut self, now: Duration, id: RequestId, response: HttpResponse) {
        if let Some(pending) = self.requests.remove(&id) {
            self.on_response(now, pending, Ok(response));
        }
    }

    /// The request `id` failed in transport (refused, reset, timed out in the adapter).
    pub fn handle_http_error(&mut self, now: Duration, id: RequestId, error: TransportError) {
        if let Some(pending) = self.requests.remove(&id) {
            self.on_response(now, pending, Err(error));
        }
    }

    /// When [`Session::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let link = match self.link {
            Link::Backoff { at, .. } => Some(at),
            _ => None,
        };
        let prompts = self
            .prompts
            .values()
            .filter_map(|p| p.next_deadline().map(|(at, _)| at));
        link.into_iter()
            .chain(self.keepalive_at)
            .chain(prompts)
            .min()
    }

    /// Fires every timer due at `now`. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Link::Backoff { attempt, at } = self.link {
            if at <= now {
                self.link = Link::Connecting { attempt };
                self.transmits.push_back(self.connect_transmit());
            }
        }
        if let Some(at) = self.keepalive_at {
            if at <= now {
                self.transmits.push_back(Transmit::Ping);
                self.keepalive_at = self.config.keepalive.map(|k| now + k);
            }
        }
        let expired: Vec<(PromptId, Deadline, Phase)> = self
            .order
            .iter()
            .filter_map(|id| self.prompts.get(id))
            .filter_map(|p| match p.next_deadline() {
                Some((at, which)) if at <= now => Some((p.id.clone(), which, p.phase)),
                _ => None,
            })
            .collect();
        for (id, deadline, phase) in expired {
            self.stop_on_server(&id, phase);
            self.end(
                &id,
                Event::TimedOut {
                    prompt: id.clone(),
                    deadline,
                },
            );
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

    fn request(&mut self, request: HttpRequest, pending: Pending) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.requests.insert(id, pending);
        self.transmits.push_back(Transmit::Http { id, request });
        id
    }

    fn post(&mut self, p: &mut Prompt, extra_data: Option<Map<String, Value>>, front: bool) {
        let request = http::PromptRequest {
            prompt: serde_json::to_value(&p.workflow).unwrap_or(Value::Null),
            client_id: self.client_id.clone(),
            prompt_id: Some(p.id.clone()),
            extra_data,
            front,
            number: None,
            partial_execution_targets: None,
        };
        self.request(request.to_request(), Pending::Post(p.id.clone()));
        p.phase = Phase::Posted;
    }

    fn ask_history(&mut self, p: &mut Prompt) {
        p.reconcile = Some(Reconcile::History);
        self.request(http::history(&p.id), Pending::History(p.id.clone()));
    }

    /// Asks the server to drop the prompt: from the queue if it may still wait there, and an
    /// interrupt (which only acts if that very prompt runs).
    fn stop_on_server(&mut self, id: &PromptId, phase: Phase) {
        if phase == Phase::Waiting {
            return;
        }
        if phase != Phase::Running {
            self.request(
                http::queue_delete(std::slice::from_ref(id)),
                Pending::FireAndForget,
            );
        }
        self.request(http::interrupt(Some(id)), Pending::FireAndForget);
    }

    /// Ends a prompt with its terminal event: it is forgotten, and later signals are no-ops.
    fn end(&mut self, id: &PromptId, event: Event) {
        if self.prompts.remove(id).is_none() {
            return;
        }
        self.order.retain(|o| o != id);
        self.aliases.retain(|_, ours| ours != id);
        if self.running.as_ref() == Some(id) {
            self.running = None;
        }
        if self.ended.len() == ENDED_MEMORY {
            self.ended.pop_front();
        }
        self.ended.push_back(id.clone());
        self.events.push_back(event);
    }
}
