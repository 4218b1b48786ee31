//! `GET /history` and `GET /queue`, which share the `[number, id, graph, extra_data, outputs]`
//! tuple.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::HttpResponse;
use super::decode::{Entries, parse_ok, text};
use crate::error::ProtocolError;
use crate::ids::{ClientId, NodeId, PromptId};
use crate::wire::message::{ExecutionError, FileRef, files_in_output};

/// The `[number, id, graph, extra_data, output_ids]` tuple of `/history` and `/queue`. Only the
/// first two are required; later ones default, and any beyond the fifth are ignored.
struct PromptTuple<G> {
    number: f64,
    id: PromptId,
    graph: Option<G>,
    extra_data: Value,
    outputs: Vec<NodeId>,
}

impl<'de, G: Deserialize<'de>> Deserialize<'de> for PromptTuple<G> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Vis<G>(PhantomData<G>);
        impl<'de, G: Deserialize<'de>> Visitor<'de> for Vis<G> {
            type Value = PromptTuple<G>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [number, prompt_id, graph, extra_data, output_ids] list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let number = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let id = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let graph = seq.next_element()?;
                let extra_data = seq.next_element()?.unwrap_or(Value::Null);
                let outputs = seq.next_element::<Option<_>>()?.flatten();
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(PromptTuple {
                    number,
                    id,
                    graph,
                    extra_data,
                    outputs: outputs.unwrap_or_default(),
                })
            }
        }
        d.deserialize_seq(Vis(PhantomData))
    }
}

/// The `status` of a finished prompt in `/history`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct HistoryStatus {
    /// `success` or `error` (an interrupted prompt is `error` too).
    #[serde(default, deserialize_with = "text")]
    pub status_str: String,
    /// Whether every node ran.
    #[serde(default)]
    pub completed: bool,
    /// The run's websocket messages as `(type, data)`: `execution_start`, `execution_cached`,
    /// `execution_success`, `execution_error`, `execution_interrupted`.
    #[serde(default)]
    pub messages: Vec<(String, Value)>,
}

/// One finished prompt, from `/history`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The prompt.
    pub prompt_id: PromptId,
    /// Its queue number.
    pub number: f64,
    /// The graph that ran.
    pub graph: Value,
    /// Its `extra_data` (with `client_id`).
    pub extra_data: Value,
    /// The output nodes that were to run.
    pub output_node_ids: Vec<NodeId>,
    /// The UI outputs, node id -> `{"images": [...], "text": [...]}`, in the server's order.
    pub outputs: Vec<(NodeId, Map<String, Value>)>,
    /// How the run ended; `None` from servers that do not say.
    pub status: Option<HistoryStatus>,
    /// Per-node metadata; `null` when absent.
    pub meta: Value,
}

#[derive(Deserialize)]
struct HistoryWire {
    prompt: PromptTuple<Value>,
    #[serde(default)]
    outputs: Option<Entries<NodeId, Map<String, Value>>>,
    #[serde(default)]
    status: Option<HistoryStatus>,
    #[serde(default)]
    meta: Value,
}

impl From<HistoryWire> for HistoryEntry {
    fn from(w: HistoryWire) -> Self {
        Self {
            prompt_id: w.prompt.id,
            number: w.prompt.number,
            graph: w.prompt.graph.unwrap_or(Value::Null),
            extra_data: w.prompt.extra_data,
            output_node_ids: w.prompt.outputs,
            outputs: w.outputs.map(|e| e.0).unwrap_or_default(),
            status: w.status,
            meta: w.meta,
        }
    }
}

impl HistoryEntry {
    fn message(&self, kind: &str) -> Option<&Value> {
        let status = self.status.as_ref()?;
        status
            .messages
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v)
    }

    /// Every file the outputs name, with the node that wrote it, in output order.
    pub fn files(&self) -> Vec<(NodeId, FileRef)> {
        self.outputs
            .iter()
            .flat_map(|(node, out)| {
                files_in_output(out)
                    .into_iter()
                    .map(move |f| (node.clone(), f))
            })
            .collect()
    }

    /// The `execution_error` the run ended with, if it did (and its data has the known shape).
    pub fn execution_error(&self) -> Option<ExecutionError> {
        ExecutionError::deserialize(self.message("execution_error")?).ok()
    }

    /// Whether the run was interrupted.
    pub fn interrupted(&self) -> bool {
        self.message("execution_interrupted").is_some()
    }

    /// Whether the run finished with `status_str` `success` and every node completed.
    pub fn succeeded(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.completed && s.status_str == "success")
    }
}

const HISTORY: &str = "/history response";

/// Decodes `GET /history/{id}` ([`history`](super::history)): `None` while the prompt has not
/// finished (the server answers `{}`, as it does for ids it does not know), else its entry.
/// Entries for other ids, if any, are ignored.
pub fn decode_history(
    resp: &HttpResponse,
    id: &PromptId,
) -> Result<Option<HistoryEntry>, ProtocolError> {
    let all: Entries<String, &RawValue> = parse_ok(resp, HISTORY)?;
    let Some((_, raw)) = all.0.into_iter().find(|(k, _)| k == id.as_str()) else {
        return Ok(None);
    };
    let wire: HistoryWire =
        serde_json::from_str(raw.get()).map_err(|e| ProtocolError::json(HISTORY, &e))?;
    Ok(Some(wire.into()))
}

/// Decodes `GET /history?max_items=N` ([`history_recent`](super::history_recent)): the entries
/// in the server's order (oldest first).
pub fn decode_history_all(resp: &HttpResponse) -> Result<Vec<HistoryEntry>, ProtocolError> {
    let all: Entries<IgnoredAny, HistoryWire> = parse_ok(resp, HISTORY)?;
    Ok(all.0.into_iter().map(|(_, w)| w.into()).collect())
}

/// A prompt in the server's queue.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct QueueItem {
    /// Its queue number: lower runs first.
    pub number: f64,
    /// The prompt.
    pub prompt_id: PromptId,
    /// The client that posted it (from its `extra_data`), if recorded.
    pub client_id: Option<ClientId>,
}

/// Where a prompt is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueuePosition {
    /// Running now.
    Running,
    /// Waiting.
    Pending {
        /// Pending prompts with a lower number, which run before it.
        ahead: usize,
    },
}

/// The server's queue (`GET /queue`): every client's prompts, not only this client's.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct QueueState {
    /// The running prompts (one on a stock server).
    pub running: Vec<QueueItem>,
    /// The waiting prompts, in the server's order (not necessarily the order they will run in).
    pub pending: Vec<QueueItem>,
}

impl QueueState {
    /// Where `id` is in the queue, or `None` when it is in neither list (finished, deleted or
    /// never queued: ask `/history`).
    pub fn contains(&self, id: &PromptId) -> Option<QueuePosition> {
        if self.running.iter().any(|i| &i.prompt_id == id) {
            return Some(QueuePosition::Running);
        }
        let item = self.pending.iter().find(|i| &i.prompt_id == id)?;
        let ahead = self
            .pending
            .iter()
            .filter(|i| i.number < item.number)
            .count();
        Some(QueuePosition::Pending { ahead })
    }

    /// Running and pending prompts together.
    pub fn len(&self) -> usize {
        self.running.len() + self.pending.len()
    }

    /// Whether nothing runs or waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Deserialize)]
struct QueueWire {
    #[serde(default)]
    queue_running: Vec<PromptTuple<IgnoredAny>>,
    #[serde(default)]
    queue_pending: Vec<PromptTuple<IgnoredAny>>,
}

fn queue_item(t: PromptTuple<IgnoredAny>) -> QueueItem {
    let client_id = t
        .extra_data
        .get("client_id")
        .and_then(Value::as_str)
        .map(ClientId::from);
    QueueItem {
        number: t.number,
        prompt_id: t.id,
        client_id,
    }
}

/// Decodes `GET /queue` ([`queue`](super::queue)).
pub fn decode_queue(resp: &HttpResponse) -> Result<QueueState, ProtocolError> {
    let wire: QueueWire = parse_ok(resp, "/queue response")?;
    Ok(QueueState {
        running: wire.queue_running.into_iter().map(queue_item).collect(),
        pending: wire.queue_pending.into_iter().map(queue_item).collect(),
    })
}
