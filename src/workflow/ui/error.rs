//! [`UiError`]: why a UI-format workflow could not be converted to the API format.

use std::fmt;

/// A UI-format workflow (as the ComfyUI frontend saves it) that cannot be converted.
///
/// Every variant names the node at fault by the id the API graph would give it (`"12"`, or
/// `"5:3"` inside subgraph instance `5`), so the message can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum UiError {
    /// The document is not a UI-format workflow: not an object, or no `nodes` list.
    NotUiWorkflow {
        /// What was wrong.
        reason: String,
    },
    /// A node, link or subgraph definition does not have the shape the frontend writes.
    Malformed {
        /// Where (`"node 12"`, `"link 7"`, `"subgraph 1f2e..."`).
        at: String,
        /// What was wrong.
        reason: String,
    },
    /// A node's class is neither one of the server's (`object_info`), a subgraph, a group node,
    /// nor a frontend-only node (`Reroute`, `PrimitiveNode`, `Note`, ...).
    UnknownClass {
        /// The node's id.
        node: String,
        /// Its class (`type`).
        class: String,
    },
    /// An input names a link that the graph does not have, or whose origin node is missing.
    MissingLink {
        /// The id of the node holding the input.
        node: String,
        /// The input's name.
        input: String,
        /// The link id.
        link: i64,
        /// What is missing (`"no such link"`, `"origin node 9 is missing"`).
        reason: String,
    },
    /// The node has fewer widget values than its class has widgets (the workflow was saved for
    /// another version of the node).
    BadWidgetCount {
        /// The node's id.
        node: String,
        /// Its class.
        class: String,
        /// The widgets the class has, in order (a `+control` marks a seed's extra value).
        expected: Vec<String>,
        /// How many values the node has.
        found: usize,
    },
    /// Subgraphs nested in a cycle, deeper than [`MAX_DEPTH`](super::MAX_DEPTH), or links that
    /// loop through reroutes and bypassed nodes.
    TooDeep {
        /// The node where the conversion gave up.
        node: String,
    },
    /// Subgraph instances inside subgraph instances expand to more than
    /// [`MAX_NODES`](super::MAX_NODES) nodes.
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for UiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUiWorkflow { reason } => write!(f, "not a UI-format workflow: {reason}"),
            Self::Malformed { at, reason } => write!(f, "{at}: {reason}"),
            Self::UnknownClass { node, class } => write!(
                f,
                "node {node}: the server has no node class {class:?} (a custom node that is not \
                 installed?)"
            ),
            Self::MissingLink {
                node,
                input,
                link,
                reason,
            } => write!(f, "node {node} input {input:?}: link {link}: {reason}"),
            Self::BadWidgetCount {
                node,
                class,
                expected,
                found,
            } => write!(
                f,
                "node {node} ({class}): {found} widget values for {} widgets ({}); was it saved \
                 for another version of the node?",
                expected.len(),
                expected.join(", ")
            ),
            Self::TooDeep { node } => write!(
                f,
                "node {node}: subgraphs or links nest too deeply (or in a cycle)"
            ),
            Self::TooLarge { limit } => {
                write!(f, "the subgraphs expand to more than {limit} nodes")
            }
        }
    }
}

impl std::error::Error for UiError {}
