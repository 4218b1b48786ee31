//! The server's websocket text messages, typed, and the client's `feature_flags` hello.
//!
//! Every message is `{"type": T, "data": {...}}`. [`ServerMessage::decode`] reads the envelope
//! once, borrowing `data` as raw JSON, and decodes only the variant that `type` names. Types this
//! client does not know are kept as [`ServerMessage::Unknown`], never an error: the server adds
//! message types as it evolves. Numbers are accepted as integers or floats wherever the server
//! mixes them (`1` and `1.0`).

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ProtocolError;
use crate::ids::{NodeId, PromptId};

mod progress;
pub use progress::{NodeProgress, ProgressNodes};

/// The client's first text message, announcing that it understands type 4 frames.
///
/// It must be the first message on the socket: the server ignores it later.
pub const FEATURE_FLAGS_HELLO: &str =
    r#"{"type":"feature_flags","data":{"supports_preview_metadata":true}}"#;

/// A file the server wrote, as `executed` outputs and `/history` name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// The file name, as the server chose it. Never use it as a local path unchecked.
    pub filename: String,
    /// The subfolder below the folder of `kind` (often empty).
    #[serde(default)]
    pub subfolder: String,
    /// `output`, `temp` or `input`.
    #[serde(rename = "type", default = "default_file_kind")]
    pub kind: String,
}

fn default_file_kind() -> String {
    "output".to_owned()
}

/// The `execution_error` message: a node raised while running.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ExecutionError {
    /// The prompt that failed.
    pub prompt_id: PromptId,
    /// The node that raised.
    pub node_id: NodeId,
    /// Its class.
    pub node_type: String,
    /// Nodes that had finished before it.
    #[serde(default)]
    pub executed: Vec<NodeId>,
    /// The exception's message.
    #[serde(default)]
    pub exception_message: String,
    /// The exception's type (`RuntimeError`, `torch.OutOfMemoryError`).
    #[serde(default)]
    pub exception_type: String,
    /// The Python traceback, one frame per item.
    #[serde(default)]
    pub traceback: Vec<String>,
    /// The node's inputs at the time, as the server summarised them (an object of input name
    /// to a list of printed values), kept as the JSON text it came in: it can be large (printed
    /// tensors) and is rarely read. [`ExecutionError::inputs`] parses it.
    #[serde(default = "raw_null")]
    pub current_inputs: Box<RawValue>,
    /// The nodes that had outputs at the time (a list of node ids), as JSON text.
    /// [`ExecutionError::outputs`] parses it.
    #[serde(default = "raw_null")]
    pub current_outputs: Box<RawValue>,
}

fn raw_null() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

impl ExecutionError {
    /// The node's inputs at the time, parsed from [`ExecutionError::current_inputs`] on each
    /// call (`null` when the server sent none).
    pub fn inputs(&self) -> Value {
        serde_json::from_str(self.current_inputs.get()).unwrap_or(Value::Null)
    }

    /// The node's outputs at the time, parsed from [`ExecutionError::current_outputs`] on each
    /// call (`null` when the server sent none).
    pub fn outputs(&self) -> Value {
        serde_json::from_str(self.current_outputs.get()).unwrap_or(Value::Null)
    }
}

/// Two errors are equal when their fields are; the raw inputs and outputs compare as the
/// values they hold, whatever their spacing.
impl PartialEq for ExecutionError {
    fn eq(&self, other: &Self) -> bool {
        self.prompt_id == other.prompt_id
            && self.node_id == other.node_id
            && self.node_type == other.node_type
            && self.executed == other.executed
            && self.exception_message == other.exception_message
            && self.exception_type == other.exception_type
            && self.traceback == other.traceback
            && raw_eq(&self.current_inputs, &other.current_inputs)
            && raw_eq(&self.current_outputs, &other.current_outputs)
    }
}

fn raw_eq(a: &RawValue, b: &RawValue) -> bool {
    a.get() == b.get()
        || serde_json::from_str::<Value>(a.get()).ok()
            == serde_json::from_str::<Value>(b.get()).ok()
}

/// The `execution_interrupted` message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct ExecutionInterrupted {
    /// The prompt that was interrupted.
    pub prompt_id: PromptId,
    /// The node that was running.
    #[serde(default)]
    pub node_id: Option<NodeId>,
    /// Its class.
    #[serde(default)]
    pub node_type: Option<String>,
    /// Nodes that had finished before it.
    #[serde(default)]
    pub executed: Vec<NodeId>,
}

/// A decoded websocket text message from the server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// `status`: the server's whole queue (every client's prompts), sent to every client.
    Status {
        /// Prompts queued or running on the server, for all clients.
        queue_remaining: u64,
        /// The client id the server assigned or confirmed (first message only).
        sid: Option<String>,
    },
    /// `execution_start`: a prompt began running.
    ExecutionStart {
        /// The prompt.
        prompt_id: PromptId,
    },
    /// `execution_cached`: nodes whose outputs come from the cache and will not execute.
    ExecutionCached {
        /// The prompt.
        prompt_id: PromptId,
        /// The cached nodes.
        nodes: Vec<NodeId>,
    },
    /// `executing`: a node started; `node: None` ends the prompt.
    Executing {
        /// The prompt; absent in the message a server sends after a reconnect.
        prompt_id: Option<PromptId>,
        /// The node, or `None` when the prompt is over.
        node: Option<NodeId>,
    },
    /// `progress`: a node's step count.
    Progress {
        /// The prompt.
        prompt_id: Option<PromptId>,
        /// The node.
        node: Option<NodeId>,
        /// Steps done.
        value: f64,
        /// Steps in all.
        max: f64,
    },
    /// `progress_state`: every active node's progress.
    ProgressState {
        /// The prompt.
        prompt_id: PromptId,
        /// Per node, in the server's order: kept as sent, decoded by [`ProgressNodes::decode`].
        nodes: ProgressNodes,
    },
    /// `executed`: a node's UI output (file names, text).
    Executed {
        /// The prompt.
        prompt_id: PromptId,
        /// The node.
        node: NodeId,
        /// The output object, as sent (`{"images": [...]}`, `{"text": [...]}`).
        output: Map<String, Value>,
    },
    /// `execution_success`: the prompt finished.
    ExecutionSuccess {
        /// The prompt.
        prompt_id: PromptId,
    },
    /// `execution_error`: a node raised; the prompt is over.
    ExecutionError(Box<ExecutionError>),
    /// `execution_interrupted`: the prompt was interrupted.
    ExecutionInterrupted(ExecutionInterrupted),
    /// `feature_flags`: the server's answer to the client's hello.
    FeatureFlags {
        /// Whether the server sends type 4 frames to clients that asked.
        supports_preview_metadata: bool,
        /// The largest upload the server accepts, in bytes.
        max_upload_size: Option<u64>,
    },
    /// A message type this client does not know, kept as sent.
    Unknown {
        /// The `type` field.
        kind: String,
        /// The `data` field (`null` if absent).
        data: Value,
    },
}

/// The envelope, read in one pass: when `type` comes before `data` (as the server writes it),
/// `data` is decoded straight into the variant `type` names; otherwise it is borrowed as raw
/// JSON and decoded once `type` is known.
struct Envelope<'a> {
    /// Set while `data` is being decoded, so that its errors name it.
    in_data: &'a std::cell::Cell<bool>,
}

impl<'de> de::Visitor<'de> for Envelope<'_> {
    type Value = ServerMessage;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with `type` and `data`")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<ServerMessage, A::Error> {
        let mut kind: Option<Str<'de>> = None;
        let mut decoded: Option<ServerMessage> = None;
        let mut raw: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match key.0.as_ref() {
                "type" if kind.is_some() => return Err(de::Error::duplicate_field("type")),
                "type" => kind = Some(map.next_value()?),
                "data" if decoded.is_some() || raw.is_some() => {
                    return Err(de::Error::duplicate_field("data"));
                }
                "data" => match &kind {
                    Some(Str(k)) => {
                        self.in_data.set(true);
                        decoded = Some(map.next_value_seed(Data(k))?);
                        self.in_data.set(false);
                    }
                    None => raw = Some(map.next_value()?),
                },
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let Str(kind) = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        match decoded {
            Some(msg) => Ok(msg),
            None => {
                self.in_data.set(true);
                let msg = Data(&kind)
                    .deserialize(raw.unwrap_or(RawValue::NULL))
                    .map_err(de::Error::custom)?;
                self.in_data.set(false);
                Ok(msg)
            }
        }
    }
}

/// A string, borrowed from the text unless it has escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decodes a `data` payload as the variant of type `.0`.
struct Data<'k>(&'k str);

impl<'de> de::DeserializeSeed<'de> for Data<'_> {
    type Value = ServerMessage;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ServerMessage, D::Error> {
        use ServerMessage as M;
        Ok(match self.0 {
            "status" => {
                let d = data::Status::deserialize(d)?;
                M::Status {
                    queue_remaining: d.status.exec_info.queue_remaining,
                    sid: d.sid,
                }
            }
            "execution_start" => M::ExecutionStart {
                prompt_id: data::PromptOnly::deserialize(d)?.prompt_id,
            },
            "execution_cached" => {
                let d = data::Cached::deserialize(d)?;
                M::ExecutionCached {
                    prompt_id: d.prompt_id,
                    nodes: d.nodes,
                }
            }
            "executing" => {
                let d = data::Executing::deserialize(d)?;
                M::Executing {
                    prompt_id: d.prompt_id,
                    node: d.node,
                }
            }
            "progress" => {
                let d = data::Progress::deserialize(d)?;
                M::Progress {
                    prompt_id: d.prompt_id,
                    node: d.node,
                    value: d.value,
                    max: d.max,
                }
            }
            "progress_state" => {
                let d = data::ProgressState::deserialize(d)?;
                M::ProgressState {
                    prompt_id: d.prompt_id,
                    nodes: ProgressNodes(d.nodes),
                }
            }
            "executed" => {
                let d = data::Executed::deserialize(d)?;
                M::Executed {
                    prompt_id: d.prompt_id,
                    node: d.node,
                    output: d.output.unwrap_or_default(),
                }
            }
            "execution_success" => M::ExecutionSuccess {
                prompt_id: data::PromptOnly::deserialize(d)?.prompt_id,
            },
            "execution_error" => M::ExecutionError(Box::new(ExecutionError::deserialize(d)?)),
            "execution_interrupted" => {
                M::ExecutionInterrupted(ExecutionInterrupted::deserialize(d)?)
            }
            "feature_flags" => {
                let d = data::FeatureFlags::deserialize(d)?;
                M::FeatureFlags {
                    supports_preview_metadata: d.supports_preview_metadata,
                    max_upload_size: d.max_upload_size,
                }
            }
            other => M::Unknown {
                kind: other.to_owned(),
                data: Value::deserialize(d)?,
            },
        })
    }
}

/// Accepts a JSON number written as an integer or a float.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    f64::deserialize(d)
}

/// Accepts a count written as `3` or `3.0`; refuses negatives and fractions.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = f64::deserialize(d)?;
    if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 {
        Ok(v as u64)
    } else {
        Err(de::Error::custom(format!("expected a count, got {v}")))
    }
}

mod data {
    //! The `data` payloads, one struct per message type.
    use super::*;

    #[derive(Deserialize)]
    pub struct ExecInfo {
        #[serde(deserialize_with = "count")]
        pub queue_remaining: u64,
    }
    #[derive(Deserialize)]
    pub struct StatusInner {
        pub exec_info: ExecInfo,
    }
    #[derive(Deserialize)]
    pub struct Status {
        pub status: StatusInner,
        #[serde(default)]
        pub sid: Option<String>,
    }
    #[derive(Deserialize)]
    pub struct PromptOnly {
        pub prompt_id: PromptId,
    }
    #[derive(Deserialize)]
    pub struct Cached {
        pub prompt_id: PromptId,
        #[serde(default)]
        pub nodes: Vec<NodeId>,
    }
    #[derive(Deserialize)]
    pub struct Executing {
        #[serde(default)]
        pub prompt_id: Option<PromptId>,
        pub node: Option<NodeId>,
    }
    #[derive(Deserialize)]
    pub struct Progress {
        #[serde(default)]
        pub prompt_id: Option<PromptId>,
        #[serde(default)]
        pub node: Option<NodeId>,
        #[serde(deserialize_with = "number")]
        pub value: f64,
        #[serde(deserialize_with = "number")]
        pub max: f64,
    }
    #[derive(Deserialize)]
    pub struct ProgressState {
        pub prompt_id: PromptId,
        pub nodes: Box<RawValue>,
    }
    #[derive(Deserialize)]
    pub struct Executed {
        pub prompt_id: PromptId,
        pub node: NodeId,
        #[serde(default)]
        pub output: Option<Map<String, Value>>,
    }
    #[derive(Deserialize)]
    pub struct FeatureFlags {
        #[serde(default)]
        pub supports_preview_metadata: bool,
        #[serde(default, deserialize_with = "opt_count")]
        pub max_upload_size: Option<u64>,
    }

    fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|v| {
                if v >= 0.0 && v.fract() == 0.0 {
                    Ok(v as u64)
                } else {
                    Err(de::Error::custom(format!("expected a size, got {v}")))
                }
            })
            .transpose()
    }
}

impl ServerMessage {
    /// Decodes one text frame.
    ///
    /// ```
    /// use comfy_proxy::wire::ServerMessage;
    /// let msg = ServerMessage::decode(r#"{"type":"progress","data":{"value":3,"max":10.0,"node":"7"}}"#)
    ///     .unwrap();
    /// assert!(matches!(msg, ServerMessage::Progress { value: 3.0, max: 10.0, .. }));
    /// let new = ServerMessage::decode(r#"{"type":"shiny_new","data":{"x":1}}"#).unwrap();
    /// assert!(matches!(new, ServerMessage::Unknown { ref kind, .. } if kind == "shiny_new"));
    /// ```
    pub fn decode(text: &str) -> Result<Self, ProtocolError> {
        let in_data = std::cell::Cell::new(false);
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Envelope { in_data: &in_data })
            .and_then(|msg| de.end().map(|()| msg))
            .map_err(|e| {
                let context = if in_data.get() {
                    "websocket message data"
                } else {
                    "websocket message"
                };
                ProtocolError::json(context, &e)
            })
    }

    /// The message's `type` name.
    pub fn kind(&self) -> &str {
        match self {
            Self::Status { .. } => "status",
            Self::ExecutionStart { .. } => "execution_start",
            Self::ExecutionCached { .. } => "execution_cached",
            Self::Executing { .. } => "executing",
            Self::Progress { .. } => "progress",
            Self::ProgressState { .. } => "progress_state",
            Self::Executed { .. } => "executed",
            Self::ExecutionSuccess { .. } => "execution_success",
            Self::ExecutionError(_) => "execution_error",
            Self::ExecutionInterrupted(_) => "execution_interrupted",
            Self::FeatureFlags { .. } => "feature_flags",
            Self::Unknown { kind, .. } => kind,
        }
    }

    /// The prompt the message names, if it names one.
    pub fn prompt_id(&self) -> Option<&PromptId> {
        match self {
            Self::ExecutionStart { prompt_id }
            | Self::ExecutionCached { prompt_id, .. }
            | Self::ProgressState { prompt_id, .. }
            | Self::Executed { prompt_id, .. }
            | Self::ExecutionSuccess { prompt_id } => Some(prompt_id),
            Self::Executing { prompt_id, .. } | Self::Progress { prompt_id, .. } => {
                prompt_id.as_ref()
            }
            Self::ExecutionError(e) => Some(&e.prompt_id),
            Self::ExecutionInterrupted(e) => Some(&e.prompt_id),
            Self::Status { .. } | Self::FeatureFlags { .. } | Self::Unknown { .. } => None,
        }
    }
}

/// The prompt id of a `progress_state` message written as ComfyUI writes it
/// (`{"type": "progress_state", "data": {"prompt_id": "ID", "nodes": {...}}}`), read without
/// decoding the rest.
///
/// The session uses nothing of a `progress_state` but its prompt id, and the rest lists every
/// node of the graph again with each change: on the recorded sampler runs, 60-80% of the JSON a
/// job sends. The rest is not read, so not checked either: a frame damaged after the id still
/// says which prompt runs, and it carried no output to lose. `None` for any other text and for
/// an id with an escape, a control character or no end: those are decoded in full.
pub(crate) fn progress_state_prompt(text: &str) -> Option<&str> {
    const PREFIX: &str = r#"{"type": "progress_state", "data": {"prompt_id": ""#;
    let rest = text.strip_prefix(PREFIX)?;
    let id = &rest[..rest.find('"')?];
    let plain = id.bytes().all(|b| b != b'\\' && b >= 0x20);
    plain.then_some(id)
}

/// The files named in an `executed` output or a `/history` output: every item of every list in
/// `output` that has a `filename` (SaveImage's `images`, SaveVideo's, SaveAudio's `audio`).
pub fn files_in_output(output: &Map<String, Value>) -> Vec<FileRef> {
    output
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter(|item| item.get("filename").is_some_and(Value::is_string))
        .filter_map(|item| FileRef::deserialize(item).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_state_as_comfyui_writes_it_gives_its_prompt_id_and_nothing_else_does() {
        let id = "c73938d9-7951-41a5-86bc-cb008534f3cb";
        let comfy = format!(
            r#"{{"type": "progress_state", "data": {{"prompt_id": "{id}", "nodes": {{}}}}}}"#
        );
        assert_eq!(progress_state_prompt(&comfy), Some(id));
        let others = [
            // Other spacing or order: decoded in full.
            format!(r#"{{"type":"progress_state","data":{{"prompt_id":"{id}","nodes":{{}}}}}}"#),
            format!(r#"{{"data": {{"prompt_id": "{id}"}}, "type": "progress_state"}}"#),
            // Another kind with the same opening.
            format!(r#"{{"type": "progress", "data": {{"prompt_id": "{id}"}}}}"#),
            // An escape or a control character in the id.
            r#"{"type": "progress_state", "data": {"prompt_id": "p\"1", "nodes": {}}}"#.into(),
            "{\"type\": \"progress_state\", \"data\": {\"prompt_id\": \"p\t1\"}}".into(),
            // Cut short before the id ends: left to the full decoder.
            format!(r#"{{"type": "progress_state", "data": {{"prompt_id": "{id}"#),
        ];
        for text in &others {
            assert_eq!(progress_state_prompt(text), None, "{text}");
        }
        // Cut short after the id: the rest is not read.
        assert_eq!(progress_state_prompt(&comfy[..comfy.len() - 5]), Some(id));
    }

    /// Every `progress_state` in the recordings of a real server: the shortcut names the prompt
    /// the full decoder does.
    #[test]
    fn the_progress_state_shortcut_agrees_with_the_decoder_on_every_recording() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "jsonl") {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let Ok(record) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let Some(text) = record.get("text").and_then(Value::as_str) else {
                    continue;
                };
                let Ok(ServerMessage::ProgressState { prompt_id, .. }) =
                    ServerMessage::decode(text)
                else {
                    continue;
                };
                assert_eq!(
                    progress_state_prompt(text),
                    Some(prompt_id.as_str()),
                    "{}: {text}",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(
            seen >= 100,
            "only {seen} progress_state messages in the recordings"
        );
    }

    fn d(s: &str) -> ServerMessage {
        ServerMessage::decode(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":2}},"sid":"c"}}"#,
                "status",
            ),
            (
                r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":2.0}}}}"#,
                "status",
            ),
            (
                r#"{"type":"execution_start","data":{"prompt_id":"p","timestamp":1}}"#,
                "execution_start",
            ),
            (
                r#"{"type":"execution_cached","data":{"nodes":["1"],"prompt_id":"p"}}"#,
                "execution_cached",
            ),
            (
                r#"{"type":"executing","data":{"node":"1","display_node":"1","prompt_id":"p"}}"#,
                "executing",
            ),
            (
                r#"{"type":"executing","data":{"node":null,"prompt_id":"p"}}"#,
                "executing",
            ),
            (r#"{"type":"executing","data":{"node":"4"}}"#, "executing"),
            (
                r#"{"type":"progress","data":{"value":1.0,"max":4,"prompt_id":"p","node":"2"}}"#,
                "progress",
            ),
            (
                r#"{"type":"progress_state","data":{"prompt_id":"p","nodes":{"1":{"value":0.0,"max":1,"state":"running","node_id":"1","prompt_id":"p","display_node_id":"1","parent_node_id":null,"real_node_id":"1"}}}}"#,
                "progress_state",
            ),
            (
                r#"{"type":"executed","data":{"node":"3","output":{"text":["40"]},"prompt_id":"p"}}"#,
                "executed",
            ),
            (
                r#"{"type":"execution_success","data":{"prompt_id":"p","timestamp":1}}"#,
                "execution_success",
            ),
            (
                r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"2","node_type":"T","executed":["1"],"exception_message":"boom","exception_type":"RuntimeError","traceback":[],"current_inputs":{},"current_outputs":{}}}"#,
                "execution_error",
            ),
            (
                r#"{"type":"execution_interrupted","data":{"prompt_id":"p","node_id":"2","node_type":"T","executed":[]}}"#,
                "execution_interrupted",
            ),
            (
                r#"{"type":"feature_flags","data":{"supports_preview_metadata":true,"max_upload_size":104857600}}"#,
                "feature_flags",
            ),
            (
                r#"{"type":"crystools.monitor","data":{"cpu":3}}"#,
                "crystools.monitor",
            ),
            (r#"{"type":"no_data"}"#, "no_data"),
        ];
        for (text, kind) in cases {
            assert_eq!(d(text).kind(), *kind, "{text}");
        }
    }

    #[test]
    fn fields_are_decoded() {
        assert_eq!(
            d(r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":3.0}}}}"#),
            ServerMessage::Status {
                queue_remaining: 3,
                sid: None
            }
        );
        assert_eq!(
            d(r#"{"type":"executing","data":{"node":null,"prompt_id":"p"}}"#),
            ServerMessage::Executing {
                prompt_id: Some("p".into()),
                node: None
            }
        );
        let ServerMessage::ProgressState { nodes, .. } = d(
            r#"{"type":"progress_state","data":{"prompt_id":"p","nodes":{"2":{"value":3,"max":10.0,"state":"running","node_id":"2"},"1":{"value":1,"max":1,"state":"finished","node_id":"1"}}}}"#,
        ) else {
            panic!()
        };
        let nodes = nodes.decode().unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.node_id.as_str()).collect::<Vec<_>>(),
            ["2", "1"]
        );
        assert_eq!(nodes[0].value, 3.0);
    }

    #[test]
    fn malformed_messages_are_errors() {
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"data":{}}"#,
            r#"{"type":"status","data":{"status":{}}}"#,
            r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":-1}}}}"#,
            r#"{"type":"progress","data":{"value":"x","max":1}}"#,
            r#"{"type":"execution_start","data":null}"#,
            r#"{"type":"unknown","data":{"#,
        ] {
            assert!(
                ServerMessage::decode(bad).is_err(),
                "{bad:?} should not decode"
            );
        }
    }

    #[test]
    fn data_before_type_decodes_the_same() {
        let first = d(r#"{"type":"progress","data":{"value":1,"max":4,"node":"2"}}"#);
        let last = d(r#"{"data":{"value":1,"max":4,"node":"2"},"type":"progress","x":[1]}"#);
        assert_eq!(first, last);
        assert!(matches!(first, ServerMessage::Progress { value: 1.0, .. }));
        for bad in [
            r#"{"type":"status","type":"status","data":{}}"#,
            r#"{"type":"x","data":1,"data":2}"#,
            r#"{"data":{"value":1,"max":4},"data":{},"type":"progress"}"#,
            r#"{"data":{"value":"x","max":4},"type":"progress"}"#,
            r#"{"type":"progress","data":{"value":1,"max":4}} x"#,
        ] {
            assert!(ServerMessage::decode(bad).is_err(), "{bad}");
        }
        let e = ServerMessage::decode(r#"{"type":"progress","data":{"value":"x","max":4}}"#);
        assert!(
            matches!(&e, Err(ProtocolError::BadJson { context, .. }) if *context == "websocket message data"),
            "{e:?}"
        );
    }

    #[test]
    fn execution_error_keeps_inputs_raw() {
        let text = r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"2","node_type":"T","exception_message":"boom","exception_type":"E","traceback":["a\n","b"],"current_inputs":{"images":["tensor(\n[1])"]},"current_outputs":["1", "2"]}}"#;
        let ServerMessage::ExecutionError(e) = d(text) else {
            panic!()
        };
        assert_eq!(e.traceback, ["a\n", "b"]);
        assert_eq!(e.current_outputs.get(), r#"["1", "2"]"#);
        assert_eq!(e.outputs(), serde_json::json!(["1", "2"]));
        assert_eq!(e.inputs()["images"][0], "tensor(\n[1])");
        // From a parsed value (as /history holds it), with other spacing: equal.
        let value: Value = serde_json::from_str(text).unwrap();
        let again = ExecutionError::deserialize(&value["data"]).unwrap();
        assert_eq!(again.current_outputs.get(), r#"["1","2"]"#);
        assert_eq!(*e, again);
        let mut other = again.clone();
        other.current_inputs = RawValue::from_string("{}".into()).unwrap();
        assert_ne!(*e, other);
        // Absent: null.
        let bare =
            r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"2","node_type":"T"}}"#;
        let ServerMessage::ExecutionError(e) = d(bare) else {
            panic!()
        };
        assert_eq!((e.inputs(), e.outputs()), (Value::Null, Value::Null));
        assert!(e.traceback.is_empty());
    }

    #[test]
    fn files_are_found_in_any_list() {
        let out: Map<String, Value> = serde_json::from_str(
            r#"{"images":[{"filename":"a.png","subfolder":"","type":"output"}],"audio":[{"filename":"b.flac","subfolder":"x","type":"output"}],"text":["hi"],"animated":[false]}"#,
        )
        .unwrap();
        let names: Vec<_> = files_in_output(&out)
            .into_iter()
            .map(|f| f.filename)
            .collect();
        assert_eq!(names, ["a.png", "b.flac"]);
    }
}
