//! Replays a recorded transcript through the same [`Session`] a live run uses.
//!
//! The replay stands in for the adapter: it reports the recorded socket events, frames and
//! responses to one session per recorded connection, with time taken from `t_ms`. What the
//! recorded client did by itself is reproduced where the session has an equivalent: posting a
//! prompt (with the id the server answered, so events carry the recorded ids), deleting it from
//! the queue (a cancel), fetching files with `/view` (only when the recording did). Other
//! recorded requests (`/queue`, `/history`, `/interrupt`) are the recorded client's own and are
//! not the session's to make; the server's answers to them reach the session only if it asked
//! the same question.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::ids::{ClientId, NodeId, PromptId};
use crate::session::{Event, Session, SessionConfig, Submission, Transmit};
use crate::transcript::{RecordKind, Transcript};
use crate::wire::HttpResponse;
use crate::wire::http::PromptRejected;
use crate::workflow::Workflow;

/// One replayed event, with when and on which connection it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayedEvent {
    /// Milliseconds since the recording started.
    pub t_ms: u64,
    /// The recorded connection.
    pub conn: u32,
    /// The session's event.
    pub event: Event,
}

/// How a prompt ended, as a summary says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Completed with every output.
    Success,
    /// Failed (a node raised, a timeout, a protocol fault).
    Error,
    /// Interrupted on the server.
    Interrupted,
    /// Refused by the server (HTTP 400).
    Rejected,
    /// Cancelled by the client.
    Cancelled,
    /// Still running when the recording ended.
    Unfinished,
}

/// One output in a [`PromptSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputSummary {
    /// The node.
    pub node: NodeId,
    /// `PNG`, `JPEG` or `WEBP`.
    pub format: &'static str,
    /// The image's length in bytes.
    pub bytes: usize,
}

/// The error of a failed prompt, as a summary names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorSummary {
    /// The node that raised, if a node did.
    pub node_id: Option<NodeId>,
    /// Its class.
    pub node_type: Option<String>,
    /// The exception type, or the kind of failure when no node raised.
    pub exception_type: String,
}

/// A rejection, as a summary names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionSummary {
    /// The error type (`prompt_outputs_failed_validation`, `invalid_prompt`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The nodes with errors.
    pub node_ids: Vec<NodeId>,
}

/// What became of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSummary {
    /// The prompt.
    pub prompt_id: PromptId,
    /// How it ended.
    pub outcome: Outcome,
    /// Its outputs, in the order they arrived.
    pub outputs: Vec<OutputSummary>,
    /// How many previews arrived.
    pub previews: usize,
    /// Progress texts (binary type 3 frames) that arrived while it ran.
    pub texts: Vec<String>,
    /// Its error, if it failed.
    pub error: Option<ErrorSummary>,
    /// Its rejection, if it was refused.
    pub rejected: Option<RejectionSummary>,
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Every event, in order.
    pub events: Vec<ReplayedEvent>,
    /// One summary per prompt, in the order the prompts were posted.
    pub prompts: Vec<PromptSummary>,
}

struct Conn {
    session: Session,
    /// The session's open HTTP requests by method and path, oldest first.
    open: HashMap<(String, String), VecDeque<crate::session::RequestId>>,
    /// The recorded request waiting for its recorded response.
    last_request: Option<(String, String)>,
}

impl Conn {
    fn drain_transmits(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            if let Transmit::Http { id, request } = t {
                let key = (request.method.as_str().to_owned(), request.path);
                self.open.entry(key).or_default().push_back(id);
            }
        }
    }
}

/// The prompt id a recorded `POST /prompt` ended up with: the one in the recorded 200, else
/// the one the request chose, else a made-up one.
fn recorded_prompt_id(
    transcript: &Transcript,
    from: usize,
    conn: u32,
    body: &Value,
    n: usize,
) -> PromptId {
    let answer = transcript.records[from + 1..]
        .iter()
        .filter(|r| r.conn == conn)
        .find_map(|r| match &r.kind {
            RecordKind::HttpResponse {
                status: 200, body, ..
            } => Some(serde_json::from_slice::<Value>(body).ok().and_then(|v| {
                v.get("prompt_id")
                    .and_then(Value::as_str)
                    .map(PromptId::from)
            })),
            RecordKind::HttpResponse { .. } => Some(None),
            _ => None,
        })
        .flatten();
    answer
        .or_else(|| {
            body.get("prompt_id")
                .and_then(Value::as_str)
                .map(PromptId::from)
        })
        .unwrap_or_else(|| PromptId::from(format!("replay-{n}")))
}

/// Submits the prompt of the recorded `POST /prompt` at `post` to `conn`'s session.
fn submit_post(
    transcript: &Transcript,
    post: usize,
    now: Duration,
    conn: &mut Conn,
    posted: &mut Vec<PromptId>,
) {
    let record = &transcript.records[post];
    let RecordKind::HttpRequest { body, .. } = &record.kind else {
        return;
    };
    let body = body.clone().unwrap_or(Value::Null);
    let id = recorded_prompt_id(transcript, post, record.conn, &body, posted.len());
    let graph = body
        .get("prompt")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let workflow = Workflow::from_value(graph).unwrap_or_default();
    if conn
        .session
        .submit(now, Submission::new(id.clone(), workflow))
        .is_ok()
    {
        posted.push(id);
    }
}

/// Where to submit a prompt whose messages were recorded before its post: the index of the
/// first record that names it, and the post's. A client records a request with its answer,
/// once the answer came; a server may have started the prompt by then, and the socket's
/// messages about it come first in the transcript. The live session had the prompt from its
/// submission on, so replay submits it before the first message that names it.
fn early_submissions(transcript: &Transcript) -> HashMap<usize, usize> {
    // One pass: the first record that names each prompt on each connection comes before any
    // post recorded after it.
    let mut first: HashMap<(u32, PromptId), usize> = HashMap::new();
    let mut early = HashMap::new();
    for (i, record) in transcript.records.iter().enumerate() {
        match &record.kind {
            RecordKind::WsText { text } if text.contains("prompt_id") => {
                let named = serde_json::from_str::<Value>(text).ok().and_then(|v| {
                    let id = v.get("data")?.get("prompt_id")?.as_str()?;
                    Some(PromptId::from(id))
                });
                if let Some(id) = named {
                    first.entry((record.conn, id)).or_insert(i);
                }
            }
            RecordKind::HttpRequest { method, path, body }
                if method == "POST" && path == "/prompt" =>
            {
                let body = body.clone().unwrap_or(Value::Null);
                let id = recorded_prompt_id(transcript, i, record.conn, &body, usize::MAX);
                if let Some(&at) = first.get(&(record.conn, id)) {
                    early.insert(at, i);
                }
            }
            _ => {}
        }
    }
    early
}

/// Replays `transcript`. The session's feature flags and file fetching follow what the recorded
/// client did.
///
/// ```
/// use comfy_proxy::replay::{replay, Outcome};
/// use comfy_proxy::transcript::Transcript;
/// let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/ws_single.jsonl")).unwrap();
/// let result = replay(&Transcript::parse(&text).unwrap());
/// assert_eq!(result.prompts[0].outcome, Outcome::Success);
/// assert_eq!(result.prompts[0].outputs.len(), 1);
/// ```
pub fn replay(transcript: &Transcript) -> Replay {
    let sent_flags = |conn: u32| {
        transcript.records.iter().any(|r| {
            r.conn == conn && matches!(&r.kind, RecordKind::WsSendText { text } if text.contains("feature_flags"))
        })
    };
    let fetched_files = transcript.records.iter().any(
        |r| matches!(&r.kind, RecordKind::HttpRequest { path, .. } if path.starts_with("/view")),
    );
    let mut conns: HashMap<u32, Conn> = HashMap::new();
    let mut events = Vec::new();
    let mut posted: Vec<PromptId> = Vec::new();

    let early = early_submissions(transcript);
    let posted_early: HashSet<usize> = early.values().copied().collect();

    for (i, record) in transcript.records.iter().enumerate() {
        let now = Duration::from_millis(record.t_ms);
        let conn = conns.entry(record.conn).or_insert_with(|| {
            let config = SessionConfig {
                feature_flags: sent_flags(record.conn),
                fetch_files: fetched_files,
                keepalive: None,
                ..SessionConfig::default()
            };
            let client = ClientId::from(transcript.header.client_id_of(record.conn));
            Conn {
                session: Session::new(client, config),
                open: HashMap::new(),
                last_request: None,
            }
        });
        while conn.session.poll_timeout().is_some_and(|t| t <= now) {
            conn.session.handle_timeout(now);
        }
        if let Some(&post) = early.get(&i) {
            submit_post(transcript, post, now, conn, &mut posted);
        }
        match &record.kind {
            RecordKind::WsOpen { .. } => conn.session.handle_connected(now),
            RecordKind::WsSendText { .. } => {}
            RecordKind::WsText { text } => {
                // A frame the core cannot decode is skipped, as a live adapter would.
                let _ = conn.session.handle_text(now, text);
            }
            RecordKind::WsBinary { data } => {
                let _ = conn.session.handle_binary(now, data.clone());
            }
            RecordKind::WsClose { initiator, .. } => {
                if initiator == "client" {
                    conn.session.close(now);
                } else {
                    conn.session.handle_disconnect(now);
                }
            }
            RecordKind::HttpRequest { method, path, body } => {
                conn.last_request = Some((method.clone(), path.clone()));
                let body = body.clone().unwrap_or(Value::Null);
                if method == "POST" && path == "/prompt" {
                    if !posted_early.contains(&i) {
                        submit_post(transcript, i, now, conn, &mut posted);
                    }
                } else if method == "POST" && path == "/queue" {
                    let deleted = body
                        .get("delete")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for id in deleted.iter().filter_map(Value::as_str) {
                        let _ = conn.session.cancel(now, &PromptId::from(id));
                    }
                }
            }
            RecordKind::HttpResponse { status, body, .. } => {
                if let Some(key) = conn.last_request.take() {
                    let id = conn.open.get_mut(&key).and_then(VecDeque::pop_front);
                    if let Some(id) = id {
                        conn.session.handle_response(
                            now,
                            id,
                            HttpResponse::new(*status, body.clone()),
                        );
                    }
                }
            }
        }
        conn.drain_transmits();
        while let Some(event) = conn.session.poll_event() {
            events.push(ReplayedEvent {
                t_ms: record.t_ms,
                conn: record.conn,
                event,
            });
        }
    }
    let prompts = posted.iter().map(|id| summarize(id, &events)).collect();
    Replay { events, prompts }
}

fn rejection_summary(r: &PromptRejected) -> RejectionSummary {
    RejectionSummary {
        kind: r.error_type().to_owned(),
        node_ids: r.node_ids().into_iter().cloned().collect(),
    }
}

/// Folds one prompt's events into its summary.
pub fn summarize<'a>(
    id: &PromptId,
    events: impl IntoIterator<Item = &'a ReplayedEvent>,
) -> PromptSummary {
    let mut s = PromptSummary {
        prompt_id: id.clone(),
        outcome: Outcome::Unfinished,
        outputs: Vec::new(),
        previews: 0,
        texts: Vec::new(),
        error: None,
        rejected: None,
    };
    for e in events
        .into_iter()
        .map(|e| &e.event)
        .filter(|e| e.prompt() == Some(id))
    {
        match e {
            Event::Output { node, image, .. } => s.outputs.push(OutputSummary {
                node: node.clone(),
                format: image.format.name(),
                bytes: image.data.len(),
            }),
            Event::Preview { .. } => s.previews += 1,
            Event::Text { text, .. } => s.texts.push(text.clone()),
            Event::Completed { .. } => s.outcome = Outcome::Success,
            Event::Interrupted { .. } => s.outcome = Outcome::Interrupted,
            Event::Cancelled { .. } => s.outcome = Outcome::Cancelled,
            Event::Rejected { rejection, .. } => {
                s.outcome = Outcome::Rejected;
                s.rejected = Some(rejection_summary(rejection));
            }
            Event::TimedOut { deadline, .. } => {
                s.outcome = Outcome::Error;
                s.error = Some(ErrorSummary {
                    node_id: None,
                    node_type: None,
                    exception_type: format!("timeout ({deadline:?})"),
                });
            }
            Event::Failed { failure, .. } => {
                s.outcome = Outcome::Error;
                s.error = Some(match failure {
                    crate::session::Failure::Execution(x) => ErrorSummary {
                        node_id: Some(x.node_id.clone()),
                        node_type: Some(x.node_type.clone()),
                        exception_type: x.exception_type.clone(),
                    },
                    other => ErrorSummary {
                        node_id: None,
                        node_type: None,
                        exception_type: other.to_string(),
                    },
                });
            }
            _ => {}
        }
    }
    s
}
