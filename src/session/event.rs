//! What a [`Session`](super::Session) reports: events for the caller and transmits for the
//! adapter.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::error::ProtocolError;
use crate::ids::{NodeId, PromptId};
use crate::wire::ImageFormat;
use crate::wire::http::{HttpRequest, NodeErrors, PromptRejected};
use crate::wire::message::{ExecutionError, FileRef};

/// The handle of one HTTP request the session asked for; pass it back with the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The number behind the handle (unique within one session).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Something the adapter must do on the session's behalf.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Transmit {
    /// Open the websocket at this path and query (`/ws?clientId=ID`), below the server's base
    /// path, replacing any socket that is still open, within
    /// [`Timeouts::connect`](super::Timeouts::connect). Report the outcome with
    /// [`Session::handle_connected`](super::Session::handle_connected) or
    /// [`Session::handle_connect_failed`](super::Session::handle_connect_failed).
    Connect {
        /// Path and query of the websocket endpoint.
        path: String,
    },
    /// Send this text frame on the websocket.
    Text(String),
    /// Send a websocket ping (keepalive through proxies that cut idle sockets).
    Ping,
    /// Send this HTTP request within [`Timeouts::http`](super::Timeouts::http) and report its
    /// outcome with
    /// [`Session::handle_response`](super::Session::handle_response) or
    /// [`Session::handle_http_error`](super::Session::handle_http_error).
    Http {
        /// The handle to pass back.
        id: RequestId,
        /// The request.
        request: HttpRequest,
    },
    /// Close the websocket (the close handshake within
    /// [`Timeouts::close`](super::Timeouts::close)); the session wants no more frames from it.
    /// It follows [`Session::close`](super::Session::close), and a socket that stayed silent
    /// past [`Timeouts::silence`](super::Timeouts::silence) (a [`Transmit::Connect`] follows).
    Close,
}

/// An image received from the server: its format and its bytes, which share the buffer of the
/// frame or response they came in (no copy).
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    /// The encoding.
    pub format: ImageFormat,
    /// The encoded image.
    pub data: Bytes,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Image({} {} bytes)", self.format, self.data.len())
    }
}

/// Which deadline expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Deadline {
    /// The server did not accept the prompt in time (no answer to `POST /prompt`, or the
    /// websocket could not be opened to post it).
    Accept,
    /// The prompt ran without any message for too long.
    Idle,
    /// The prompt did not finish in time.
    Total,
}

/// Why a prompt failed. [`Failure::is_retryable`] tells whether running it again elsewhere may
/// succeed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Failure {
    /// A node raised while running (`execution_error`).
    Execution(Box<ExecutionError>),
    /// The server broke the protocol in a way that spoiled this prompt (a `POST /prompt` answered
    /// with a 500, a damaged output frame).
    Protocol(ProtocolError),
    /// An HTTP request for this prompt failed in transport (connection refused, reset).
    Transport {
        /// What was being done.
        context: &'static str,
        /// How it failed.
        error: crate::error::TransportError,
    },
    /// The server could not be reached before the prompt was posted (refused, unresolvable,
    /// TLS, no answer within the connect deadline). It never ran there, so it can run elsewhere
    /// at once with no risk of running twice.
    Unreachable(crate::error::TransportError),
    /// The websocket stayed down through every reconnect attempt.
    Disconnected {
        /// Attempts made.
        attempts: u32,
    },
    /// These `SaveImageWebsocket` nodes may have sent images to nobody: the websocket dropped
    /// while they ran, or an image came while the server said another prompt ran. Reporting
    /// success would lose them. A node cut while it runs fails its prompt at once (and the
    /// prompt is interrupted on the server); a node that ran whole while the socket was down
    /// fails it at its end.
    LostOutputs {
        /// The nodes whose images may be missing.
        nodes: Vec<NodeId>,
    },
    /// After a reconnect, the server knows nothing of the prompt (it restarted).
    NotOnServer,
    /// The server said the prompt ended, but messages about it may have been missed (a dropped
    /// socket, a damaged frame) and its `/history` entry, which names what they held, never
    /// appeared: `/queue` still listed it as running after this many reads of its history.
    NoHistory {
        /// Reads of its history that found nothing while `/queue` listed it as running.
        checks: u32,
    },
    /// The websocket dropped and every reconnect since was refused
    /// ([`REFUSALS_GONE`](super::REFUSALS_GONE) in a row): nothing listens at the
    /// server's address, so the process that held the prompt, and ComfyUI's queue kept in its
    /// memory, are gone. Retryable at once. (Behind a proxy whose own port refuses while the
    /// server behind it still runs, the prompt could run twice.)
    ServerGone {
        /// Connects refused in a row.
        refusals: u32,
        /// The last refusal.
        error: crate::error::TransportError,
    },
    /// A file output named by the server could not be fetched with `/view`.
    FileFetch {
        /// The file.
        file: FileRef,
        /// Why: the exchange failed in transport, or its answer was not an image.
        error: crate::error::ExchangeError,
    },
}

impl Failure {
    /// Whether the same prompt may succeed if run again (on this server or another). Node errors
    /// are not retryable: the graph would raise again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Execution(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Execution(e) => write!(
                f,
                "node {} ({}) raised {}: {}",
                e.node_id,
                e.node_type,
                e.exception_type,
                e.exception_message.trim_end()
            ),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
            Self::Transport { context, error } => write!(f, "{context} failed: {error}"),
            Self::Unreachable(e) => write!(f, "cannot reach the server: {e}"),
            Self::Disconnected { attempts } => {
                write!(f, "websocket down after {attempts} reconnect attempts")
            }
            Self::LostOutputs { nodes } => {
                let names: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
                write!(
                    f,
                    "images of node(s) {} were lost (the websocket dropped, or a frame was \
                     damaged or came in another prompt's run)",
                    names.join(", ")
                )
            }
            Self::NotOnServer => f.write_str("the server has no record of the prompt (restarted?)"),
            Self::NoHistory { checks } => write!(
                f,
                "the prompt ended, but after {checks} reads its history was still missing and \
                 the server listed it as running: outputs the websocket missed cannot be found"
            ),
            Self::ServerGone { refusals, error } => write!(
                f,
                "the server went away: {refusals} reconnects in a row refused ({error})"
            ),
            Self::FileFetch { file, error } => {
                write!(
                    f,
                    "could not fetch output file {:?}: {error}",
                    file.filename
                )
            }
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Protocol(e) => Some(e),
            Self::Transport { error, .. }
            | Self::Unreachable(error)
            | Self::ServerGone { error, .. } => Some(error),
            Self::FileFetch { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What happened, in the order it happened. Events that name a prompt use the id the caller
/// submitted it with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The websocket is open and announced; prompts may be posted.
    Connected,
    /// The websocket dropped; the session will reconnect.
    Disconnected,
    /// The server queued the prompt. `warnings` lists output branches that failed validation
    /// and will be skipped (a 200 may carry them).
    Accepted {
        /// The prompt.
        prompt: PromptId,
        /// Its position number in the server's queue.
        number: f64,
        /// Node errors of skipped branches.
        warnings: NodeErrors,
    },
    /// The server refused the prompt (HTTP 400). Terminal.
    Rejected {
        /// The prompt.
        prompt: PromptId,
        /// The server's errors.
        rejection: Box<PromptRejected>,
    },
    /// The prompt started running.
    Started {
        /// The prompt.
        prompt: PromptId,
    },
    /// These nodes come from the cache and will not run.
    Cached {
        /// The prompt.
        prompt: PromptId,
        /// The cached nodes.
        nodes: Vec<NodeId>,
    },
    /// A node started running.
    NodeStarted {
        /// The prompt.
        prompt: PromptId,
        /// The node.
        node: NodeId,
    },
    /// A node's step count.
    Progress {
        /// The prompt.
        prompt: PromptId,
        /// The node, when the server named one.
        node: Option<NodeId>,
        /// Steps done.
        value: f64,
        /// Steps in all.
        max: f64,
    },
    /// A preview image (any image not from a `SaveImageWebsocket` node).
    Preview {
        /// The prompt.
        prompt: PromptId,
        /// The node that sent it, when known.
        node: Option<NodeId>,
        /// The image.
        image: Image,
    },
    /// An output image: from a `SaveImageWebsocket` node, or a file output fetched by `/view`.
    Output {
        /// The prompt.
        prompt: PromptId,
        /// The node.
        node: NodeId,
        /// The image's position among this node's outputs (0, 1, ... across a batch).
        index: u32,
        /// The image.
        image: Image,
        /// The server-side file, for outputs fetched by `/view`.
        file: Option<FileRef>,
    },
    /// A file output that is not an image (video, audio), fetched by `/view`.
    File {
        /// The prompt.
        prompt: PromptId,
        /// The node.
        node: NodeId,
        /// The file's position among this node's outputs.
        index: u32,
        /// The server-side file.
        file: FileRef,
        /// Its bytes.
        data: Bytes,
    },
    /// Progress text from a node (binary frame type 3).
    Text {
        /// The prompt running when it arrived, if any.
        prompt: Option<PromptId>,
        /// The node.
        node: NodeId,
        /// The text.
        text: String,
    },
    /// A node's UI output (`executed`, or the `/history` entry of a node whose `executed` the
    /// socket missed): file names, `animated` flags, texts (`{"text": [...]}`), anything else.
    /// Cached output nodes are announced again this way. Never dropped by an
    /// [`Outbox`](super::Outbox); [`Outputs`](super::Outputs) turns it into outputs.
    NodeOutput {
        /// The prompt.
        prompt: PromptId,
        /// The node.
        node: NodeId,
        /// The output object as sent.
        output: Map<String, Value>,
    },
    /// The prompt finished with every output delivered. Terminal.
    Completed {
        /// The prompt.
        prompt: PromptId,
    },
    /// The prompt failed. Terminal.
    Failed {
        /// The prompt.
        prompt: PromptId,
        /// Why.
        failure: Failure,
    },
    /// The prompt was interrupted on the server. Terminal.
    Interrupted {
        /// The prompt.
        prompt: PromptId,
        /// The node that was running.
        node: Option<NodeId>,
    },
    /// A deadline expired; the session asked the server to stop the prompt. Terminal.
    TimedOut {
        /// The prompt.
        prompt: PromptId,
        /// Which deadline.
        deadline: Deadline,
    },
    /// The caller cancelled the prompt. Terminal.
    Cancelled {
        /// The prompt.
        prompt: PromptId,
    },
    /// The server's whole queue (all clients) changed.
    QueueStatus {
        /// Prompts queued or running on the server.
        remaining: u64,
    },
    /// The server answered the feature-flags hello.
    ServerFeatures {
        /// Whether it sends type 4 frames.
        supports_preview_metadata: bool,
        /// Its upload limit in bytes.
        max_upload_size: Option<u64>,
    },
    /// A message type this client does not know, kept as sent.
    Unknown {
        /// The `type` field.
        kind: String,
        /// The `data` field.
        data: Value,
    },
}

impl Event {
    /// The prompt the event is about, if any.
    pub fn prompt(&self) -> Option<&PromptId> {
        match self {
            Self::Accepted { prompt, .. }
            | Self::Rejected { prompt, .. }
            | Self::Started { prompt }
            | Self::Cached { prompt, .. }
            | Self::NodeStarted { prompt, .. }
            | Self::Progress { prompt, .. }
            | Self::Preview { prompt, .. }
            | Self::Output { prompt, .. }
            | Self::File { prompt, .. }
            | Self::NodeOutput { prompt, .. }
            | Self::Completed { prompt }
            | Self::Failed { prompt, .. }
            | Self::Interrupted { prompt, .. }
            | Self::TimedOut { prompt, .. }
            | Self::Cancelled { prompt } => Some(prompt),
            Self::Text { prompt, .. } => prompt.as_ref(),
            Self::Connected
            | Self::Disconnected
            | Self::QueueStatus { .. }
            | Self::ServerFeatures { .. }
            | Self::Unknown { .. } => None,
        }
    }

    /// Whether the event ends its prompt: nothing more is reported for it afterwards.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Rejected { .. }
                | Self::Completed { .. }
                | Self::Failed { .. }
                | Self::Interrupted { .. }
                | Self::TimedOut { .. }
                | Self::Cancelled { .. }
        )
    }
}

fn opt(node: &Option<NodeId>) -> &str {
    node.as_ref().map_or("-", NodeId::as_str)
}

/// One line per event, images shown as format and length: the form the snapshot tests use.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connected => f.write_str("connected"),
            Self::Disconnected => f.write_str("disconnected"),
            Self::Accepted {
                prompt,
                number,
                warnings,
            } => {
                write!(
                    f,
                    "accepted {prompt} number={number} warnings={}",
                    warnings.len()
                )
            }
            Self::Rejected { prompt, rejection } => write!(f, "rejected {prompt}: {rejection}"),
            Self::Started { prompt } => write!(f, "started {prompt}"),
            Self::Cached { prompt, nodes } => {
                let nodes: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
                write!(f, "cached {prompt} [{}]", nodes.join(","))
            }
            Self::NodeStarted { prompt, node } => write!(f, "node {prompt} {node}"),
            Self::Progress {
                prompt,
                node,
                value,
                max,
            } => {
                write!(f, "progress {prompt} {} {value}/{max}", opt(node))
            }
            Self::Preview {
                prompt,
                node,
                image,
            } => {
                write!(
                    f,
                    "preview {prompt} {} {} {}B",
                    opt(node),
                    image.format,
                    image.data.len()
                )
            }
            Self::Output {
                prompt,
                node,
                index,
                image,
                file,
            } => {
                write!(
                    f,
                    "output {prompt} {node}#{index} {} {}B",
                    image.format,
                    image.data.len()
                )?;
                match file {
                    Some(file) => write!(f, " file={:?}", file.filename),
                    None => Ok(()),
                }
            }
            Self::File {
                prompt,
                node,
                index,
                file,
                data,
            } => {
                write!(
                    f,
                    "file {prompt} {node}#{index} {:?} {}B",
                    file.filename,
                    data.len()
                )
            }
            Self::Text { prompt, node, text } => {
                write!(
                    f,
                    "text {} {node} {text:?}",
                    prompt.as_ref().map_or("-", PromptId::as_str)
                )
            }
            Self::NodeOutput {
                prompt,
                node,
                output,
            } => {
                write!(
                    f,
                    "node_output {prompt} {node} {}",
                    Value::Object(output.clone())
                )
            }
            Self::Completed { prompt } => write!(f, "completed {prompt}"),
            Self::Failed { prompt, failure } => write!(f, "failed {prompt}: {failure}"),
            Self::Interrupted { prompt, node } => {
                write!(f, "interrupted {prompt} at {}", opt(node))
            }
            Self::TimedOut { prompt, deadline } => write!(f, "timed_out {prompt} {deadline:?}"),
            Self::Cancelled { prompt } => write!(f, "cancelled {prompt}"),
            Self::QueueStatus { remaining } => write!(f, "queue {remaining}"),
            Self::ServerFeatures {
                supports_preview_metadata,
                max_upload_size,
            } => write!(
                f,
                "server_features preview_metadata={supports_preview_metadata} max_upload={max_upload_size:?}"
            ),
            Self::Unknown { kind, data } => write!(f, "unknown {kind} {data}"),
        }
    }
}

/// Deadlines for one prompt, measured on the session's clock. `None` means no deadline.
///
/// The default bounds what a server can leave unanswered (accept: 120 s; idle: 600 s of
/// silence about a running prompt) and sets no total, since a long job is no fault;
/// [`Deadlines::none`] turns them all off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deadlines {
    /// From submission until the server accepts the prompt.
    pub accept: Option<Duration>,
    /// Once the prompt runs, the longest silence (no message for it) allowed.
    pub idle: Option<Duration>,
    /// From submission until the prompt ends.
    pub total: Option<Duration>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            accept: Some(Duration::from_secs(120)),
            idle: Some(Duration::from_secs(600)),
            total: None,
        }
    }
}

impl Deadlines {
    /// No deadlines.
    pub fn none() -> Self {
        Self {
            accept: None,
            idle: None,
            total: None,
        }
    }

    /// Sets the accept deadline.
    pub fn accept(mut self, d: Duration) -> Self {
        self.accept = Some(d);
        self
    }

    /// Sets the idle deadline.
    pub fn idle(mut self, d: Duration) -> Self {
        self.idle = Some(d);
        self
    }

    /// Sets the total deadline.
    pub fn total(mut self, d: Duration) -> Self {
        self.total = Some(d);
        self
    }
}
