//! `POST /prompt`: accepted, or rejected with typed validation errors.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde_json::Value;

use super::HttpResponse;
use super::decode::{parse, text};
use crate::error::ProtocolError;
use crate::ids::{NodeId, PromptId};

/// One validation error, as `/prompt` reports it (`{"type", "message", "details", "extra_info"}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ErrorInfo {
    /// The error's type: `invalid_prompt`, `prompt_outputs_failed_validation`,
    /// `value_not_in_list`, `return_type_mismatch`, ...; `error` when an older server sent only
    /// a string.
    #[serde(rename = "type", default, deserialize_with = "text")]
    pub kind: String,
    /// A human-readable summary.
    #[serde(default, deserialize_with = "text")]
    pub message: String,
    /// What exactly was wrong (`clip, received_type(MODEL) mismatch input_type(CLIP)`); may be
    /// empty.
    #[serde(default, deserialize_with = "text")]
    pub details: String,
    /// Machine-readable details (`input_name`, `received_value`, ...); `null` when absent.
    #[serde(default)]
    pub extra_info: Value,
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.details.is_empty() && self.details != self.message {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

/// The validation errors of one node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct NodeError {
    /// What is wrong with the node, one entry per problem.
    #[serde(default)]
    pub errors: Vec<ErrorInfo>,
    /// The output nodes that depend on this node and so will not run.
    #[serde(default)]
    pub dependent_outputs: Vec<NodeId>,
    /// The node's class.
    #[serde(default, deserialize_with = "text")]
    pub class_type: String,
}

/// The `node_errors` of a `/prompt` response: node id -> its errors, in the server's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeErrors(Vec<(NodeId, NodeError)>);

impl NodeErrors {
    /// Whether no node has errors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of nodes with errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The errors of one node.
    pub fn get(&self, node: &str) -> Option<&NodeError> {
        self.0.iter().find(|(id, _)| id == node).map(|(_, e)| e)
    }

    /// The nodes and their errors, in the server's order.
    pub fn iter(&self) -> std::slice::Iter<'_, (NodeId, NodeError)> {
        self.0.iter()
    }

    /// The ids of the nodes with errors, in the server's order.
    pub fn ids(&self) -> Vec<&NodeId> {
        self.0.iter().map(|(id, _)| id).collect()
    }
}

impl<'a> IntoIterator for &'a NodeErrors {
    type Item = &'a (NodeId, NodeError);
    type IntoIter = std::slice::Iter<'a, (NodeId, NodeError)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for NodeErrors {
    /// An object of node id -> [`NodeError`]; `null` and `[]` (what older servers sent for
    /// "none") are read as empty.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeErrors;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of node errors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeErrors, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(NodeErrors(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeErrors, A::Error> {
                match seq.next_element::<IgnoredAny>()? {
                    None => Ok(NodeErrors::default()),
                    Some(_) => Err(de::Error::invalid_type(Unexpected::Seq, &self)),
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<NodeErrors, E> {
                Ok(NodeErrors::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A `200` from `/prompt`: the prompt is queued.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PromptAccepted {
    /// The prompt's id (the one the client sent, if it sent one).
    pub prompt_id: PromptId,
    /// Its queue number.
    pub number: f64,
    /// Usually empty. When not, these output branches failed validation and will be skipped;
    /// the rest of the graph runs.
    #[serde(default)]
    pub node_errors: NodeErrors,
}

/// A `400` from `/prompt`: the server refused the prompt; nothing was queued and no websocket
/// message will follow for it.
///
/// Its [`Display`](fmt::Display) is one line for a human:
/// `prompt_outputs_failed_validation: node 6 (LoraLoader): return_type_mismatch clip,
/// received_type(MODEL) mismatch input_type(CLIP)`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PromptRejected {
    /// The overall error (`invalid_prompt`, `prompt_no_outputs`,
    /// `prompt_outputs_failed_validation`, ...).
    pub error: ErrorInfo,
    /// The nodes that failed validation, if that is why.
    pub node_errors: NodeErrors,
}

impl PromptRejected {
    /// The overall error's type, such as `prompt_outputs_failed_validation`.
    pub fn error_type(&self) -> &str {
        &self.error.kind
    }

    /// The ids of the nodes that failed validation, in the server's order.
    pub fn node_ids(&self) -> Vec<&NodeId> {
        self.node_errors.ids()
    }
}

impl fmt::Display for PromptRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.node_errors.is_empty() {
            return self.error.fmt(f);
        }
        f.write_str(&self.error.kind)?;
        for (i, (id, node)) in self.node_errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "node {id}")?;
            if !node.class_type.is_empty() {
                write!(f, " ({})", node.class_type)?;
            }
            for (j, e) in node.errors.iter().enumerate() {
                f.write_str(if j == 0 { ": " } else { "; " })?;
                f.write_str(&e.kind)?;
                let what = if e.details.is_empty() {
                    &e.message
                } else {
                    &e.details
                };
                if !what.is_empty() {
                    write!(f, " {what}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for PromptRejected {}

/// The server's answer to `POST /prompt`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PromptOutcome {
    /// `200`: queued.
    Accepted(PromptAccepted),
    /// `400`: refused by validation (boxed: it is much larger than an acceptance).
    Rejected(Box<PromptRejected>),
}

impl PromptOutcome {
    /// `Ok` when accepted, `Err` with the reasons when rejected.
    pub fn into_result(self) -> Result<PromptAccepted, Box<PromptRejected>> {
        match self {
            Self::Accepted(a) => Ok(a),
            Self::Rejected(r) => Err(r),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Text(String),
    Info(ErrorInfo),
}

#[derive(Deserialize)]
struct RejectedWire {
    error: ErrorField,
    #[serde(default)]
    node_errors: NodeErrors,
}

/// Decodes the response to [`PromptRequest::to_request`](super::PromptRequest::to_request).
///
/// `200` is [`PromptOutcome::Accepted`]; `400` with the documented JSON is
/// [`PromptOutcome::Rejected`] (an `error` that is a plain string, as older servers send, becomes
/// an [`ErrorInfo`] of kind `error`). Any other status, or a body of another shape (such as a
/// proxy's HTML error page), is a [`ProtocolError`].
///
/// ```
/// use comfy_proxy::wire::HttpResponse;
/// use comfy_proxy::wire::http::{PromptOutcome, decode_prompt};
///
/// let ok = HttpResponse::new(200, r#"{"prompt_id":"p","number":3,"node_errors":{}}"#);
/// assert!(matches!(decode_prompt(&ok), Ok(PromptOutcome::Accepted(a)) if a.prompt_id == "p"));
///
/// let bad = HttpResponse::new(400, r#"{"error":{"type":"prompt_no_outputs","message":"Prompt has no outputs","details":"","extra_info":{}},"node_errors":{}}"#);
/// let rejected = decode_prompt(&bad).unwrap().into_result().unwrap_err();
/// assert_eq!(rejected.to_string(), "prompt_no_outputs: Prompt has no outputs");
///
/// assert!(decode_prompt(&HttpResponse::new(502, "<html>Bad Gateway</html>")).is_err());
/// ```
pub fn decode_prompt(resp: &HttpResponse) -> Result<PromptOutcome, ProtocolError> {
    const CONTEXT: &str = "/prompt response";
    match resp.status {
        200 => parse(resp, CONTEXT).map(PromptOutcome::Accepted),
        400 => {
            let wire: RejectedWire = parse(resp, CONTEXT)?;
            let error = match wire.error {
                ErrorField::Info(info) => info,
                ErrorField::Text(message) => ErrorInfo {
                    kind: "error".to_owned(),
                    message,
                    details: String::new(),
                    extra_info: Value::Null,
                },
            };
            Ok(PromptOutcome::Rejected(Box::new(PromptRejected {
                error,
                node_errors: wire.node_errors,
            })))
        }
        status => Err(ProtocolError::status(CONTEXT, status, &resp.body)),
    }
}
