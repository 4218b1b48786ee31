//! One node of a graph: [`Node`], its [`Inputs`], and the two kinds of [`Input`] (a literal or a
//! [`Link`]).
//!
//! A node read from JSON remembers the order of its keys and keeps every key it does not know
//! (and every `_meta` field besides `title`), so that writing it back gives the same JSON.

use serde::ser::{SerializeMap, SerializeTuple};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::error::json_kind;
use super::{LinkError, WorkflowError};
use crate::NodeId;

/// A link from output `output` of node `node` to an input: `["3", 0]` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    /// The id of the node whose output is linked.
    pub node: NodeId,
    /// The index of that output (0 for the first).
    pub output: u32,
}

impl Link {
    /// A link to output `output` of `node` (a [`NodeId`], `&NodeId` or `&str`).
    ///
    /// ```
    /// use comfy_proxy::workflow::Link;
    /// let link = Link::new("3", 1);
    /// assert_eq!(serde_json::to_string(&link).unwrap(), r#"["3",1]"#);
    /// ```
    pub fn new(node: impl AsRef<str>, output: u32) -> Self {
        Self {
            node: NodeId::from(node.as_ref()),
            output,
        }
    }

    /// Reads a link from a JSON list input, as ComfyUI does: every list input is a link, and must
    /// be `[string node id, non-negative integer output index]`.
    fn parse(list: &[Value]) -> Result<Self, LinkError> {
        let [node, output] = list else {
            return Err(LinkError::WrongLength { items: list.len() });
        };
        let Value::String(node) = node else {
            return Err(LinkError::NodeNotString {
                found: json_kind(node),
            });
        };
        let Value::Number(n) = output else {
            return Err(LinkError::OutputNotNumber {
                found: json_kind(output),
            });
        };
        if let Some(index) = n.as_u64() {
            return u32::try_from(index)
                .map(|output| Self::new(node, output))
                .map_err(|_| LinkError::OutputTooLarge { index });
        }
        if let Some(index) = n.as_i64() {
            return Err(LinkError::OutputNegative { index });
        }
        Err(LinkError::OutputNotInteger { index: n.clone() })
    }
}

impl Serialize for Link {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(self.node.as_str())?;
        t.serialize_element(&self.output)?;
        t.end()
    }
}

/// The value of one input: a literal, or a link to another node's output.
///
/// Build one with `From`: `Input::from(42)`, `Input::from("euler")`, `Input::from(Link::new("3",
/// 0))`, `Input::from(json!(...))`. A JSON list of the form `["3", 0]` becomes a [`Link`], as the
/// server reads it; any other list stays a literal (which the server will refuse:
/// [`super::check_structure`] reports it). As in serde_json, a NaN or infinite float becomes
/// `null`: the builders refuse those before they get here.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A literal value: a number, string, boolean, object or null.
    Value(Value),
    /// A link to another node's output.
    Link(Link),
}

impl Input {
    /// The link, if this input is one.
    pub fn as_link(&self) -> Option<&Link> {
        match self {
            Self::Link(link) => Some(link),
            Self::Value(_) => None,
        }
    }

    /// The literal value, if this input is not a link.
    pub fn as_value(&self) -> Option<&Value> {
        match self {
            Self::Value(v) => Some(v),
            Self::Link(_) => None,
        }
    }

    /// The input as a JSON value (a link becomes `["3", 0]`).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Value(v) => v.clone(),
            Self::Link(l) => Value::Array(vec![
                Value::String(l.node.as_str().to_owned()),
                Value::from(l.output),
            ]),
        }
    }

    /// Reads an input of a graph being loaded: a list must be a well-formed link.
    fn parse(node: &NodeId, input: &str, value: Value) -> Result<Self, WorkflowError> {
        match value {
            Value::Array(list) => {
                Link::parse(&list)
                    .map(Self::Link)
                    .map_err(|reason| WorkflowError::BadLink {
                        node: node.clone(),
                        input: input.to_owned(),
                        reason,
                    })
            }
            other => Ok(Self::Value(other)),
        }
    }
}

impl Serialize for Input {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(s),
            Self::Link(l) => l.serialize(s),
        }
    }
}

impl From<Link> for Input {
    fn from(link: Link) -> Self {
        Self::Link(link)
    }
}

impl From<Value> for Input {
    /// A well-formed link list becomes [`Input::Link`]; anything else stays a literal.
    fn from(value: Value) -> Self {
        match &value {
            Value::Array(list) => match Link::parse(list) {
                Ok(link) => Self::Link(link),
                Err(_) => Self::Value(value),
            },
            _ => Self::Value(value),
        }
    }
}

macro_rules! input_from_literal {
    ($($t:ty),*) => {$(
        impl From<$t> for Input {
            fn from(v: $t) -> Self {
                Self::Value(Value::from(v))
            }
        }
    )*};
}

input_from_literal!(&str, String, bool, i32, i64, u32, u64, f32, f64);

/// The inputs of a node, in order: name -> [`Input`].
///
/// ```
/// use comfy_proxy::workflow::{Inputs, Link};
/// let inputs = Inputs::new().with("seed", 42).with("model", Link::new("4", 0));
/// assert_eq!(inputs.get("seed").and_then(|i| i.as_value()), Some(&42.into()));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inputs(Vec<(String, Input)>);

impl Inputs {
    /// No inputs.
    pub fn new() -> Self {
        Self::default()
    }

    /// These inputs with `name` set to `value` (see [`Inputs::insert`]).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Input>) -> Self {
        self.insert(name, value);
        self
    }

    /// Sets `name` to `value`: in place if the input exists (it keeps its position), else at the
    /// end. Returns the old value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Input>) -> Option<Input> {
        let name = name.into();
        let value = value.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((name, value));
                None
            }
        }
    }

    /// The input called `name`.
    pub fn get(&self, name: &str) -> Option<&Input> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Removes the input called `name` and returns it.
    pub fn remove(&mut self, name: &str) -> Option<Input> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    /// The inputs as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Input)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The links among the inputs, as (input name, link), in order.
    pub fn links(&self) -> impl Iterator<Item = (&str, &Link)> {
        self.iter().filter_map(|(n, v)| v.as_link().map(|l| (n, l)))
    }

    /// How many inputs there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no inputs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<Input>> FromIterator<(K, V)> for Inputs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut inputs = Self::new();
        for (k, v) in iter {
            inputs.insert(k, v);
        }
        inputs
    }
}

impl Serialize for Inputs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Where each key of a node's JSON object goes when it is written back.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    ClassType,
    Inputs,
    Meta,
    /// A key this module does not know, with its value.
    Other(String, Value),
}

/// One node of a graph: `{"class_type", "inputs", "_meta"?}`, plus any other keys it was loaded
/// with (kept as they were).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    class_type: String,
    inputs: Inputs,
    /// The `_meta` value as given; normally an object with a `title`.
    meta: Option<Value>,
    /// The order of the keys when written: `class_type`, `inputs`, `_meta` for built nodes.
    keys: Vec<Key>,
}

impl Node {
    /// A node of class `class_type` with these inputs and no title.
    pub fn new(class_type: impl Into<String>, inputs: Inputs) -> Self {
        Self {
            class_type: class_type.into(),
            inputs,
            meta: None,
            keys: vec![Key::ClassType, Key::Inputs],
        }
    }

    /// The node's class (`"KSampler"`).
    pub fn class_type(&self) -> &str {
        &self.class_type
    }

    /// The node's title (`_meta.title`), if it has one.
    pub fn title(&self) -> Option<&str> {
        self.meta.as_ref()?.get("title")?.as_str()
    }

    /// The node's whole `_meta` value, with any fields besides `title`.
    pub fn meta(&self) -> Option<&Value> {
        self.meta.as_ref()
    }

    /// Sets the title (`_meta.title`), keeping any other `_meta` fields.
    pub fn set_title(&mut self, title: impl Into<String>) {
        let title = Value::String(title.into());
        match &mut self.meta {
            Some(Value::Object(meta)) => {
                meta.insert("title".to_owned(), title);
            }
            other => {
                let mut meta = Map::new();
                meta.insert("title".to_owned(), title);
                *other = Some(Value::Object(meta));
            }
        }
        if !self.keys.contains(&Key::Meta) {
            self.keys.push(Key::Meta);
        }
    }

    /// The node's inputs, in order.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// The node's inputs, to change them.
    pub fn inputs_mut(&mut self) -> &mut Inputs {
        &mut self.inputs
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.get(name)
    }

    /// Sets input `name` (in place if it exists, else at the end) and returns the old value.
    pub fn set_input(&mut self, name: impl Into<String>, value: impl Into<Input>) -> Option<Input> {
        self.inputs.insert(name, value)
    }

    /// Reads node `id` of a graph being loaded.
    pub(crate) fn parse(id: &NodeId, value: Value) -> Result<Self, WorkflowError> {
        let Value::Object(map) = value else {
            return Err(WorkflowError::NodeNotObject {
                node: id.clone(),
                found: json_kind(&value),
            });
        };
        let mut class_type = None;
        let mut inputs = None;
        let mut meta = None;
        let mut keys = Vec::with_capacity(map.len());
        for (key, value) in map {
            match key.as_str() {
                "class_type" => match value {
                    Value::String(s) => {
                        class_type = Some(s);
                        keys.push(Key::ClassType);
                    }
                    other => {
                        return Err(WorkflowError::BadClassType {
                            node: id.clone(),
                            found: json_kind(&other),
                        });
                    }
                },
                "inputs" => match value {
                    Value::Object(fields) => {
                        let mut list = Vec::with_capacity(fields.len());
                        for (name, v) in fields {
                            let input = Input::parse(id, &name, v)?;
                            list.push((name, input));
                        }
                        inputs = Some(Inputs(list));
                        keys.push(Key::Inputs);
                    }
                    other => {
                        return Err(WorkflowError::BadInputs {
                            node: id.clone(),
                            found: json_kind(&other),
                        });
                    }
                },
                "_meta" => {
                    meta = Some(value);
                    keys.push(Key::Meta);
                }
                _ => keys.push(Key::Other(key, value)),
            }
        }
        let class_type = class_type.ok_or_else(|| WorkflowError::BadClassType {
            node: id.clone(),
            found: "missing",
        })?;
        let inputs = inputs.ok_or_else(|| WorkflowError::BadInputs {
            node: id.clone(),
            found: "missing",
        })?;
        Ok(Self {
            class_type,
            inputs,
            meta,
            keys,
        })
    }

    /// The node as a JSON object, keys in their order.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for key in &self.keys {
            match key {
                Key::ClassType => {
                    map.insert("class_type".into(), self.class_type.clone().into());
                }
                Key::Inputs => {
                    let inputs = self.inputs.iter().map(|(k, v)| (k.to_owned(), v.to_json()));
                    map.insert("inputs".into(), Value::Object(inputs.collect()));
                }
                Key::Meta => {
                    let meta = self.meta.clone().unwrap_or(Value::Null);
                    map.insert("_meta".into(), meta);
                }
                Key::Other(k, v) => {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        Value::Object(map)
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.keys.len()))?;
        for key in &self.keys {
            match key {
                Key::ClassType => m.serialize_entry("class_type", &self.class_type)?,
                Key::Inputs => m.serialize_entry("inputs", &self.inputs)?,
                Key::Meta => m.serialize_entry("_meta", &self.meta)?,
                Key::Other(k, v) => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bad_link(value: Value) -> LinkError {
        match Node::parse(
            &NodeId::from("7"),
            json!({"class_type": "X", "inputs": {"a": value}}),
        ) {
            Err(WorkflowError::BadLink {
                node,
                input,
                reason,
            }) => {
                assert_eq!((node.as_str(), input.as_str()), ("7", "a"));
                reason
            }
            other => panic!("expected a bad link, got {other:?}"),
        }
    }

    #[test]
    fn malformed_links_name_the_fault() {
        let cases = [
            (json!([3, 0]), "node id must be a string, found a number"),
            (json!(["3", -1]), "output index -1 is negative"),
            (json!(["3", 0.5]), "output index 0.5 is not an integer"),
            (json!(["3", "0"]), "must be a number, found a string"),
            (json!(["3"]), "has 1 items"),
            (json!(["3", 4294967296u64]), "too large"),
        ];
        for (value, want) in cases {
            let reason = bad_link(value.clone()).to_string();
            assert!(reason.contains(want), "{value}: {reason}");
        }
    }

    #[test]
    fn malformed_links_are_typed() {
        assert_eq!(
            bad_link(json!([3, 0])),
            LinkError::NodeNotString { found: "a number" }
        );
        assert_eq!(
            bad_link(json!(["3", -1])),
            LinkError::OutputNegative { index: -1 }
        );
        assert_eq!(
            bad_link(json!(["3", 4294967296u64])),
            LinkError::OutputTooLarge { index: 4294967296 }
        );
        assert_eq!(
            bad_link(json!(["3", 0, 1])),
            LinkError::WrongLength { items: 3 }
        );
    }

    #[test]
    fn node_shape_errors() {
        let id = NodeId::from("n");
        let err = |v: Value| Node::parse(&id, v).unwrap_err().to_string();
        assert_eq!(
            err(json!([])),
            "node \"n\" must be a JSON object, found a list"
        );
        assert!(err(json!({"inputs": {}})).contains("\"class_type\", found missing"));
        assert!(err(json!({"class_type": 1, "inputs": {}})).contains("found a number"));
        assert!(err(json!({"class_type": "X"})).contains("\"inputs\" object, found missing"));
        assert!(err(json!({"class_type": "X", "inputs": []})).contains("found a list"));
    }

    #[test]
    fn value_lists_become_links_only_when_well_formed() {
        assert_eq!(Input::from(json!(["3", 1])), Input::Link(Link::new("3", 1)));
        assert_eq!(Input::from(json!([1, 2])), Input::Value(json!([1, 2])));
    }

    #[test]
    fn set_title_keeps_other_meta_fields_and_key_order() {
        let json =
            json!({"_meta": {"x": 1, "title": "a"}, "inputs": {}, "class_type": "X", "z": 2});
        let mut node = Node::parse(&NodeId::from("1"), json).unwrap();
        node.set_title("b");
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            r#"{"_meta":{"x":1,"title":"b"},"inputs":{},"class_type":"X","z":2}"#
        );
        let mut built = Node::new("Y", Inputs::new().with("a", 1));
        built.set_title("T");
        assert_eq!(
            serde_json::to_string(&built).unwrap(),
            r#"{"class_type":"Y","inputs":{"a":1},"_meta":{"title":"T"}}"#
        );
        assert_eq!(built.to_json(), serde_json::to_value(&built).unwrap());
    }
}
