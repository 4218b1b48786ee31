//! [`WorkflowError`]: what was wrong with a graph, a parameter or an `object_info` document.

use std::fmt;

use serde_json::Value;

use crate::NodeId;

/// A graph, a builder parameter or an `object_info` document that the workflow module refuses.
///
/// Every variant names the part that was wrong (the node id, the input, the text), so the message
/// can be shown to a user as it is. Nothing is sent to a server when one of these is returned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The text was not JSON at all.
    Json {
        /// What was being read (`"workflow"`, `"object_info"`).
        context: &'static str,
        /// serde_json's account of what was wrong.
        message: String,
    },
    /// The graph is not a JSON object of node id -> node.
    GraphNotObject {
        /// The kind of JSON value found instead (`"a list"`, `"null"`, ...).
        found: &'static str,
    },
    /// A node is not a JSON object.
    NodeNotObject {
        /// The node's id.
        node: NodeId,
        /// The kind of JSON value found instead.
        found: &'static str,
    },
    /// A node has no `class_type`, or one that is not a string.
    BadClassType {
        /// The node's id.
        node: NodeId,
        /// `"missing"`, or the kind of JSON value found instead of a string.
        found: &'static str,
    },
    /// A node's `inputs` is missing or not a JSON object.
    BadInputs {
        /// The node's id.
        node: NodeId,
        /// `"missing"`, or the kind of JSON value found instead of an object.
        found: &'static str,
    },
    /// A list input that is not a well-formed link `[node_id, output_index]`. (ComfyUI reads every
    /// list input as a link.)
    BadLink {
        /// The id of the node holding the input.
        node: NodeId,
        /// The input's name.
        input: String,
        /// What was wrong with it.
        reason: LinkError,
    },
    /// A node was added with an id that the graph already has.
    DuplicateNodeId {
        /// The id.
        node: NodeId,
    },
    /// No node has this id, title or class type.
    UnknownTarget {
        /// The target as given.
        target: String,
    },
    /// More than one node has this title (or, with no title matching, this class type).
    AmbiguousTarget {
        /// The target as given.
        target: String,
        /// The ids of the nodes it could mean, in graph order.
        candidates: Vec<NodeId>,
    },
    /// A `TARGET.INPUT` path without a dot, or with an empty part.
    BadPath {
        /// The path as given.
        path: String,
    },
    /// A number outside the range the server accepts for that input.
    OutOfRange {
        /// The parameter (`"width"`, `"steps"`, `"loras[1].weight"`).
        input: String,
        /// The value given.
        value: String,
        /// The smallest value the server accepts.
        min: String,
        /// The largest value the server accepts.
        max: String,
    },
    /// A float parameter that is NaN or infinite (JSON cannot carry it).
    NotFinite {
        /// The parameter.
        input: String,
    },
    /// A model, sampler or other name that must not be empty, is.
    EmptyName {
        /// The parameter (`"unet_name"`, `"loras[0].name"`).
        input: String,
    },
    /// Text that is neither `WIDTHxHEIGHT` nor a size preset name.
    BadSize {
        /// The text as given.
        text: String,
    },
    /// An `object_info` document that does not have the shape the server sends.
    BadObjectInfo {
        /// The node class at fault, if the fault is inside one.
        class: Option<String>,
        /// What was wrong.
        reason: String,
    },
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json { context, message } => write!(f, "{context} is not valid JSON: {message}"),
            Self::GraphNotObject { found } => write!(
                f,
                "a workflow must be a JSON object of node id -> node, found {found}"
            ),
            Self::NodeNotObject { node, found } => {
                write!(f, "node \"{node}\" must be a JSON object, found {found}")
            }
            Self::BadClassType { node, found } => write!(
                f,
                "node \"{node}\" needs a string \"class_type\", found {found}"
            ),
            Self::BadInputs { node, found } => {
                write!(
                    f,
                    "node \"{node}\" needs an \"inputs\" object, found {found}"
                )
            }
            Self::BadLink {
                node,
                input,
                reason,
            } => write!(f, "node \"{node}\" input {input:?} is a bad link: {reason}"),
            Self::DuplicateNodeId { node } => {
                write!(f, "the workflow already has a node with id \"{node}\"")
            }
            Self::UnknownTarget { target } => {
                write!(f, "no node has the id, title or class type {target:?}")
            }
            Self::AmbiguousTarget { target, candidates } => {
                write!(f, "{target:?} could mean any of the nodes ")?;
                for (i, id) in candidates.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{:?}", id.as_str())?;
                }
                f.write_str(": use a node id")
            }
            Self::BadPath { path } => write!(
                f,
                "{path:?} is not a TARGET.INPUT path (for example \"KSampler.seed\")"
            ),
            Self::OutOfRange {
                input,
                value,
                min,
                max,
            } => write!(
                f,
                "{input} = {value} is out of range: the server accepts {min} to {max}"
            ),
            Self::NotFinite { input } => write!(f, "{input} must be a finite number"),
            Self::EmptyName { input } => write!(f, "{input} must not be empty"),
            Self::BadSize { text } => {
                write!(
                    f,
                    "{text:?} is not a size: give WIDTHxHEIGHT (\"1024x768\") or one of "
                )?;
                for (i, (name, _)) in super::Size::PRESETS.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(name)?;
                }
                Ok(())
            }
            Self::BadObjectInfo {
                class: Some(class),
                reason,
            } => write!(f, "object_info class {class:?}: {reason}"),
            Self::BadObjectInfo {
                class: None,
                reason,
            } => write!(f, "object_info: {reason}"),
        }
    }
}

impl std::error::Error for WorkflowError {}

/// Why a JSON list input is not a well-formed link `[node_id, output_index]` (carried by
/// [`WorkflowError::BadLink`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkError {
    /// The list does not have exactly two items.
    WrongLength {
        /// How many items it has.
        items: usize,
    },
    /// The first item is not a string.
    NodeNotString {
        /// The kind of JSON value found instead (`"a number"`, ...).
        found: &'static str,
    },
    /// The second item is not a number.
    OutputNotNumber {
        /// The kind of JSON value found instead.
        found: &'static str,
    },
    /// The output index does not fit in a `u32`.
    OutputTooLarge {
        /// The index given.
        index: u64,
    },
    /// The output index is negative.
    OutputNegative {
        /// The index given.
        index: i64,
    },
    /// The output index is a number but not an integer (`0.5`).
    OutputNotInteger {
        /// The number given.
        index: serde_json::Number,
    },
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongLength { items } => write!(
                f,
                "a list input must be [node_id, output_index], this one has {items} items"
            ),
            Self::NodeNotString { found } => {
                write!(f, "the node id must be a string, found {found}")
            }
            Self::OutputNotNumber { found } => {
                write!(f, "the output index must be a number, found {found}")
            }
            Self::OutputTooLarge { index } => write!(f, "output index {index} is too large"),
            Self::OutputNegative { index } => write!(f, "output index {index} is negative"),
            Self::OutputNotInteger { index } => {
                write!(f, "output index {index} is not an integer")
            }
        }
    }
}

impl std::error::Error for LinkError {}

/// How to name the kind of a JSON value in an error message.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
