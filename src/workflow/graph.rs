//! [`Workflow`]: an API-format graph, node id -> node, in insertion order.

use std::fmt;
use std::sync::Arc;

use foldhash::HashMap;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::error::json_kind;
use super::{Input, Inputs, Node, WorkflowError};
use crate::NodeId;

/// An API-format graph: an ordered map of node id -> [`Node`], as `POST /prompt` takes it.
///
/// Build one with [`Workflow::add_node`] (ids `"1"`, `"2"`, ... in order), or load any exported
/// graph with [`Workflow::from_json`]; `to_string()` (its `Display`, compact JSON) and
/// [`Workflow::to_json`] write it back with the same keys in the same order, unknown fields
/// included. Two workflows are equal when they hold the same
/// nodes in the same order.
///
/// ```
/// use comfy_proxy::workflow::{Inputs, Link, Workflow};
/// let mut wf = Workflow::new();
/// let image = wf.add_node("EmptyImage", Inputs::new().with("width", 64).with("height", 64));
/// wf.add_node_with(
///     "SaveImageWebsocket",
///     Inputs::new().with("images", Link::new(&image, 0)),
///     Some("save"),
///     Some("Output"),
/// )?;
/// wf.set("EmptyImage.width", 128)?;
/// assert_eq!(wf.class_of("save"), Some("SaveImageWebsocket"));
/// assert_eq!(
///     wf.to_string(),
///     r#"{"1":{"class_type":"EmptyImage","inputs":{"width":128,"height":64}},"save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]},"_meta":{"title":"Output"}}}"#
/// );
/// # Ok::<(), comfy_proxy::WorkflowError>(())
/// ```
#[derive(Clone, Default)]
pub struct Workflow {
    /// Shared between clones until one of them changes (a pool hands each attempt a clone of
    /// its job's graph: a reference count, not a copy).
    nodes: Arc<Vec<(NodeId, Node)>>,
    /// Node id -> position in `nodes`. (Keyed by `String`, which can be looked up by `&str`.)
    index: Arc<HashMap<String, usize>>,
    /// The next number to try for an automatic id.
    next_auto: u64,
}

impl Workflow {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads an API-format graph from JSON text.
    ///
    /// Fails, naming the node, when the graph is not an object, a node has no string
    /// `class_type` or no `inputs` object, or a list input is not a link `[node_id, index]` with
    /// a string id and a non-negative integer index.
    pub fn from_json(text: &str) -> Result<Self, WorkflowError> {
        let value: Value = serde_json::from_str(text).map_err(|e| WorkflowError::Json {
            context: "workflow",
            message: e.to_string(),
        })?;
        Self::from_value(value)
    }

    /// Reads an API-format graph from a JSON value (see [`Workflow::from_json`]).
    pub fn from_value(value: Value) -> Result<Self, WorkflowError> {
        let Value::Object(map) = value else {
            return Err(WorkflowError::GraphNotObject {
                found: json_kind(&value),
            });
        };
        let mut wf = Self::new();
        for (id, node) in map {
            let id = NodeId::from(id);
            let node = Node::parse(&id, node)?;
            wf.push(id, node);
        }
        Ok(wf)
    }

    /// The graph as a JSON value, nodes in order.
    pub fn to_json(&self) -> Value {
        let nodes = self
            .nodes
            .iter()
            .map(|(id, node)| (id.as_str().to_owned(), node.to_json()));
        Value::Object(nodes.collect())
    }

    /// Adds a node with the next free automatic id (`"1"`, `"2"`, ..., skipping ids already
    /// taken) and no title, and returns its id.
    pub fn add_node(&mut self, class_type: impl Into<String>, inputs: Inputs) -> NodeId {
        let id = self.next_free_id();
        self.push(id.clone(), Node::new(class_type, inputs));
        id
    }

    /// Adds a node with the id `id` (or the next automatic one) and, if given, the title `title`
    /// (`_meta.title`), and returns its id. Fails if `id` is taken.
    pub fn add_node_with(
        &mut self,
        class_type: impl Into<String>,
        inputs: Inputs,
        id: Option<&str>,
        title: Option<&str>,
    ) -> Result<NodeId, WorkflowError> {
        let id = match id {
            Some(id) if self.index.contains_key(id) => {
                return Err(WorkflowError::DuplicateNodeId {
                    node: NodeId::from(id),
                });
            }
            Some(id) => NodeId::from(id),
            None => self.next_free_id(),
        };
        let mut node = Node::new(class_type, inputs);
        if let Some(title) = title {
            node.set_title(title);
        }
        self.push(id.clone(), node);
        Ok(id)
    }

    fn next_free_id(&mut self) -> NodeId {
        loop {
            self.next_auto += 1;
            let id = NodeId::from(self.next_auto.to_string());
            if !self.index.contains_key(id.as_str()) {
                return id;
            }
        }
    }

    fn push(&mut self, id: NodeId, node: Node) {
        match self.index.get(id.as_str()) {
            // Only reachable from JSON with a repeated key, which serde_json already merged.
            Some(&at) => Arc::make_mut(&mut self.nodes)[at].1 = node,
            None => {
                let at = self.nodes.len();
                Arc::make_mut(&mut self.index).insert(id.as_str().to_owned(), at);
                Arc::make_mut(&mut self.nodes).push((id, node));
            }
        }
    }

    /// The node with id `id`.
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.index.get(id).map(|&at| &self.nodes[at].1)
    }

    /// The node with id `id`, to change it.
    pub fn node_mut(&mut self, id: &str) -> Option<&mut Node> {
        let at = *self.index.get(id)?;
        Some(&mut Arc::make_mut(&mut self.nodes)[at].1)
    }

    /// The class type of node `node_id`, or `None` if the graph has no such node.
    pub fn class_of(&self, node_id: &str) -> Option<&str> {
        self.node(node_id).map(Node::class_type)
    }

    /// Whether the graph has a node with id `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The ids of the nodes of class `class_type`, in order.
    pub fn nodes_of_class(&self, class_type: &str) -> Vec<&NodeId> {
        self.iter()
            .filter(|(_, n)| n.class_type() == class_type)
            .map(|(id, _)| id)
            .collect()
    }

    /// The nodes as (id, node), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Node)> {
        self.nodes.iter().map(|(id, n)| (id, n))
    }

    /// How many nodes the graph has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of the node that `target` names: a node id; else the one node whose title
    /// (`_meta.title`) is `target`; else the one node whose class type is `target`.
    ///
    /// Fails when nothing matches, or when several titles (or, with no title matching, several
    /// class types) do; the error lists the candidates.
    pub fn resolve(&self, target: &str) -> Result<&NodeId, WorkflowError> {
        self.position(target).map(|at| &self.nodes[at].0)
    }

    /// The position in `nodes` of the node that `target` names (see [`Workflow::resolve`]).
    fn position(&self, target: &str) -> Result<usize, WorkflowError> {
        if let Some(&at) = self.index.get(target) {
            return Ok(at);
        }
        let matching = |by: &dyn Fn(&Node) -> bool| -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&at| by(&self.nodes[at].1))
                .collect()
        };
        let mut found = matching(&|n| n.title() == Some(target));
        if found.is_empty() {
            found = matching(&|n| n.class_type() == target);
        }
        match found.as_slice() {
            [] => Err(WorkflowError::UnknownTarget {
                target: target.to_owned(),
            }),
            &[one] => Ok(one),
            many => Err(WorkflowError::AmbiguousTarget {
                target: target.to_owned(),
                candidates: many.iter().map(|&at| self.nodes[at].0.clone()).collect(),
            }),
        }
    }

    /// Sets input `input` of the node that `target` names (see [`Workflow::resolve`]) to
    /// `value`: in place if the input exists, else added at the end.
    ///
    /// ```
    /// # use comfy_proxy::workflow::{FluxParams, Link};
    /// let mut wf = FluxParams::new("a cat", 1).build()?;
    /// wf.set_input("RandomNoise", "noise_seed", 7)?;
    /// wf.set_input("13", "vae", Link::new("1", 0))?;
    /// # Ok::<(), comfy_proxy::WorkflowError>(())
    /// ```
    pub fn set_input(
        &mut self,
        target: &str,
        input: &str,
        value: impl Into<Input>,
    ) -> Result<(), WorkflowError> {
        let at = self.position(target)?;
        Arc::make_mut(&mut self.nodes)[at].1.set_input(input, value);
        Ok(())
    }

    /// Sets an input by path `TARGET.INPUT` (`"KSampler.seed"`, `"3.steps"`), where TARGET is
    /// resolved as in [`Workflow::resolve`].
    ///
    /// The path is split at its LAST dot: a title may contain dots (`"SD1.5 Loader.ckpt_name"`),
    /// an input name may not.
    pub fn set(&mut self, path: &str, value: impl Into<Input>) -> Result<(), WorkflowError> {
        match path.rsplit_once('.') {
            Some((target, input)) if !target.is_empty() && !input.is_empty() => {
                self.set_input(target, input, value)
            }
            _ => Err(WorkflowError::BadPath {
                path: path.to_owned(),
            }),
        }
    }

    /// Sets the title (`_meta.title`) of the node that `target` names.
    pub fn set_title(&mut self, target: &str, title: &str) -> Result<(), WorkflowError> {
        let at = self.position(target)?;
        Arc::make_mut(&mut self.nodes)[at].1.set_title(title);
        Ok(())
    }
}

impl PartialEq for Workflow {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.nodes.iter().map(|(id, n)| (id.as_str(), n)))
            .finish()
    }
}

/// Compact JSON, as it is sent in `POST /prompt`.
impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Workflow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.nodes.len()))?;
        for (id, node) in self.nodes.iter() {
            m.serialize_entry(id.as_str(), node)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Workflow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::workflow::Link;

    fn titled() -> Workflow {
        Workflow::from_value(json!({
            "1": {"class_type": "CLIPTextEncode", "inputs": {"text": "a"}, "_meta": {"title": "Positive"}},
            "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "b"}, "_meta": {"title": "Negative"}},
            "3": {"class_type": "KSampler", "inputs": {"seed": 1}, "_meta": {"title": "Pass v1.5"}},
            "4": {"class_type": "Note", "inputs": {}, "_meta": {"title": "Same"}},
            "5": {"class_type": "Note", "inputs": {}, "_meta": {"title": "Same"}},
        }))
        .unwrap()
    }

    /// A clone shares the graph until one side changes it; the change stays on that side.
    #[test]
    fn clones_share_until_changed() {
        let wf = titled();
        let mut copy = wf.clone();
        assert!(
            Arc::ptr_eq(&wf.nodes, &copy.nodes),
            "a clone copies nothing"
        );
        copy.set("3.seed", 2).unwrap();
        copy.add_node("Note", Inputs::new());
        copy.node_mut("1").unwrap().set_title("Changed");
        assert!(!Arc::ptr_eq(&wf.nodes, &copy.nodes));
        assert_eq!(wf, titled(), "the original is untouched");
        assert_eq!(copy.len(), 6);
        assert_eq!(
            copy.node("3")
                .unwrap()
                .input("seed")
                .and_then(|i| i.as_value()),
            Some(&json!(2))
        );
    }

    #[test]
    fn resolve_by_id_title_then_class() {
        let wf = titled();
        assert_eq!(wf.resolve("2").unwrap(), "2");
        assert_eq!(wf.resolve("Negative").unwrap(), "2");
        assert_eq!(wf.resolve("KSampler").unwrap(), "3");
        match wf.resolve("CLIPTextEncode").unwrap_err() {
            WorkflowError::AmbiguousTarget { candidates, .. } => {
                assert_eq!(candidates, [NodeId::from("1"), NodeId::from("2")]);
            }
            other => panic!("{other:?}"),
        }
        let err = wf.resolve("Same").unwrap_err().to_string();
        assert_eq!(
            err,
            "\"Same\" could mean any of the nodes \"4\", \"5\": use a node id"
        );
        assert_eq!(
            wf.resolve("Nope").unwrap_err(),
            WorkflowError::UnknownTarget {
                target: "Nope".into()
            }
        );
    }

    #[test]
    fn set_splits_at_the_last_dot() {
        let mut wf = titled();
        wf.set("Pass v1.5.seed", 9).unwrap();
        assert_eq!(
            wf.node("3").unwrap().input("seed"),
            Some(&Input::Value(json!(9)))
        );
        for bad in ["seed", ".seed", "KSampler."] {
            assert!(matches!(wf.set(bad, 1), Err(WorkflowError::BadPath { .. })));
        }
    }

    #[test]
    fn auto_ids_skip_taken_ones() {
        let mut wf = Workflow::new();
        wf.add_node_with("A", Inputs::new(), Some("2"), None)
            .unwrap();
        assert_eq!(wf.add_node("B", Inputs::new()), "1");
        assert_eq!(wf.add_node("C", Inputs::new()), "3");
        assert_eq!(
            wf.add_node_with("D", Inputs::new(), Some("3"), None),
            Err(WorkflowError::DuplicateNodeId { node: "3".into() })
        );
        let ids: Vec<&str> = wf.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["2", "1", "3"]);
    }

    #[test]
    fn not_an_object() {
        assert_eq!(
            Workflow::from_value(json!([1])).unwrap_err().to_string(),
            "a workflow must be a JSON object of node id -> node, found a list"
        );
        assert!(matches!(
            Workflow::from_json("{"),
            Err(WorkflowError::Json { .. })
        ));
    }

    #[test]
    fn serde_round_trip_keeps_order() {
        let text = r#"{"b":{"inputs":{"x":["a",2]},"class_type":"Y","extra":[1]},"a":{"class_type":"X","inputs":{}}}"#;
        let wf: Workflow = serde_json::from_str(text).unwrap();
        assert_eq!(wf.to_string(), text);
        assert_eq!(serde_json::to_string(&wf.to_json()).unwrap(), text);
        assert_eq!(
            wf.node("b").unwrap().input("x"),
            Some(&Input::Link(Link::new("a", 2)))
        );
        let err = serde_json::from_str::<Workflow>(r#"{"1":{"class_type":"X"}}"#).unwrap_err();
        assert!(err.to_string().contains("node \"1\""), "{err}");
    }
}
