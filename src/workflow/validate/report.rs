//! [`ValidationReport`]: what [`validate`](super::validate) found, in the server's shapes.

use std::fmt;

use serde_json::{Map, Value, json};

use super::errors;
use crate::NodeId;
use crate::wire::http::{ErrorInfo, NodeErrors, PromptRejected};

/// What validating a graph found, in the shapes of the server's answer to `POST /prompt`.
///
/// - [`error`](Self::error) is the top-level error of the `400` the server would send
///   (`invalid_prompt`, `prompt_no_outputs`, `prompt_outputs_failed_validation`), or `None` when
///   it would queue the prompt.
/// - [`node_errors`](Self::node_errors) holds the nodes that fail, each with its errors (the
///   server's type names and wording) and the output nodes that depend on it. It can be
///   non-empty without an error: the server then queues the prompt and skips those outputs.
///
/// Its `Display` is one line, the same as that of the server's [`PromptRejected`] for the same
/// faults.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationReport {
    error: Option<ErrorInfo>,
    node_errors: NodeErrors,
    outputs: Vec<NodeId>,
}

impl ValidationReport {
    pub(super) fn new(
        error: Option<ErrorInfo>,
        node_errors: NodeErrors,
        outputs: Vec<NodeId>,
    ) -> Self {
        Self {
            error,
            node_errors,
            outputs,
        }
    }

    /// Whether nothing is wrong: no error, and no node with errors.
    pub fn is_valid(&self) -> bool {
        self.error.is_none() && self.node_errors.is_empty()
    }

    /// Whether the server would queue the prompt (no top-level error), even if some outputs
    /// fail and would be skipped.
    pub fn is_accepted(&self) -> bool {
        self.error.is_none()
    }

    /// The top-level error of the server's `400`, if it would send one.
    pub fn error(&self) -> Option<&ErrorInfo> {
        self.error.as_ref()
    }

    /// The top-level error's type (`prompt_outputs_failed_validation`...), if any.
    pub fn error_type(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.kind.as_str())
    }

    /// The nodes with errors, in the order they were checked.
    pub fn node_errors(&self) -> &NodeErrors {
        &self.node_errors
    }

    /// The ids of the nodes with errors.
    pub fn node_ids(&self) -> Vec<&NodeId> {
        self.node_errors.ids()
    }

    /// The output nodes that pass, and would run, in graph order.
    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    /// The rejection the server would answer with, if it would reject the prompt.
    pub fn to_rejection(&self) -> Option<PromptRejected> {
        Some(PromptRejected {
            error: self.error.clone()?,
            node_errors: self.node_errors.clone(),
        })
    }

    /// The summary the command line prints for `validate --json`:
    /// `{"valid", "error": {"type"} or null, "node_errors": {NODE_ID: {"class_type", "errors":
    /// [{"type", "input_name"}]}}}` (`input_name` is null for an error about no one input).
    pub fn to_json(&self) -> Value {
        let mut nodes = Map::new();
        for (id, node) in &self.node_errors {
            let errors: Vec<Value> = node
                .errors
                .iter()
                .map(|e| json!({"type": e.kind, "input_name": e.extra_info.get("input_name")}))
                .collect();
            nodes.insert(
                id.as_str().to_owned(),
                json!({"class_type": node.class_type, "errors": errors}),
            );
        }
        json!({
            "valid": self.is_valid(),
            "error": self.error_type().map(|t| json!({"type": t})),
            "node_errors": nodes,
        })
    }

    /// Everything, as the server writes the body of its answer: `{"error": {"type", "message",
    /// "details", "extra_info"} or null, "node_errors": {...}}`. With an error, this is the body
    /// of the `400` (Python tracebacks left empty).
    pub fn to_server_json(&self) -> Value {
        let mut nodes = Map::new();
        for (id, node) in &self.node_errors {
            let errors: Vec<Value> = node.errors.iter().map(errors::to_json).collect();
            nodes.insert(
                id.as_str().to_owned(),
                json!({
                    "errors": errors,
                    "dependent_outputs": node.dependent_outputs,
                    "class_type": node.class_type,
                }),
            );
        }
        json!({
            "error": self.error.as_ref().map(errors::to_json),
            "node_errors": nodes,
        })
    }
}

/// One line: `valid (outputs: 9)`; the server's own summary when it would reject
/// (`prompt_outputs_failed_validation: node 3 (UNETLoader): value_not_in_list unet_name: ...`);
/// and, when it would run only some outputs, `valid for outputs 9; skipped: node ...`.
impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rejection) = self.to_rejection() {
            return rejection.fmt(f);
        }
        let outputs: Vec<&str> = self.outputs.iter().map(NodeId::as_str).collect();
        if self.node_errors.is_empty() {
            return write!(f, "valid (outputs: {})", outputs.join(", "));
        }
        write!(f, "valid for outputs {}; skipped", outputs.join(", "))?;
        for (i, (id, node)) in self.node_errors.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "node {id} ({})", node.class_type)?;
            for (j, e) in node.errors.iter().enumerate() {
                f.write_str(if j == 0 { ": " } else { "; " })?;
                let what = if e.details.is_empty() {
                    &e.message
                } else {
                    &e.details
                };
                write!(f, "{} {what}", e.kind)?;
            }
        }
        Ok(())
    }
}
