//! A typed, read-only view of a server's `GET /object_info` document, and a small structural
//! check of a graph against it ([`check_structure`]).
//!
//! `object_info` maps each node class to `{"input": {"required": {...}, "optional": {...},
//! "hidden": {...}}, "input_order", "output": [TYPE...], "output_name", "output_node", ...}`.
//! Each input is `[TYPE, {options}]` (`TYPE` = `INT`, `FLOAT`, `STRING`, `BOOLEAN`, or a custom
//! type such as `MODEL`, `*`, or `A,B`), or a combo: `[[option, ...], {options}]` or
//! `["COMBO", {"options": [...]}]`. Hidden inputs are filled by the server and left out here.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::error::json_kind;
use super::{Input, Link, Workflow, WorkflowError};
use crate::NodeId;

/// The type of an input or an output.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SlotType {
    /// `INT`.
    Int,
    /// `FLOAT`.
    Float,
    /// `STRING`.
    String,
    /// `BOOLEAN`.
    Boolean,
    /// A choice among these options (model file names, sampler names...).
    Combo(Vec<Value>),
    /// Any other type, as the server names it: `MODEL`, `*` (anything), `A,B` (either).
    Custom(String),
}

impl SlotType {
    fn from_name(name: &str) -> Self {
        match name {
            "INT" => Self::Int,
            "FLOAT" => Self::Float,
            "STRING" => Self::String,
            "BOOLEAN" => Self::Boolean,
            "COMBO" => Self::Combo(Vec::new()),
            other => Self::Custom(other.to_owned()),
        }
    }

    /// The type's name as the server writes it (`"INT"`, `"COMBO"`, `"MODEL"`).
    pub fn name(&self) -> &str {
        match self {
            Self::Int => "INT",
            Self::Float => "FLOAT",
            Self::String => "STRING",
            Self::Boolean => "BOOLEAN",
            Self::Combo(_) => "COMBO",
            Self::Custom(name) => name,
        }
    }

    /// Whether an input of this type accepts a link from an output of type `received`, by the
    /// server's rule: equal names, `*` on either side, or (for `A,B` unions) a shared name. A
    /// combo input accepts a combo output (`COMBO` or an option list).
    pub fn accepts(&self, received: &SlotType) -> bool {
        if let Self::Combo(_) = self {
            return matches!(received, Self::Combo(_)) || received.name() == "*";
        }
        let names = |t: &SlotType| -> Vec<String> {
            t.name().split(',').map(|s| s.trim().to_owned()).collect()
        };
        let (want, got) = (names(self), names(received));
        if want.iter().chain(&got).any(|n| n == "*") {
            return true;
        }
        want.iter().any(|n| got.contains(n))
    }
}

impl fmt::Display for SlotType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One declared input of a node class.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    name: String,
    required: bool,
    ty: SlotType,
    options: Map<String, Value>,
}

impl InputSpec {
    /// The input's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the input is required (else optional).
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// The input's type.
    pub fn ty(&self) -> &SlotType {
        &self.ty
    }

    /// One of the options (`"default"`, `"step"`, `"tooltip"`...) as the server gave it.
    pub fn option(&self, key: &str) -> Option<&Value> {
        self.options.get(key)
    }

    /// The smallest accepted value, for numbers. (Use [`InputSpec::option`] for an exact u64.)
    pub fn min(&self) -> Option<f64> {
        self.option("min")?.as_f64()
    }

    /// The largest accepted value, for numbers.
    pub fn max(&self) -> Option<f64> {
        self.option("max")?.as_f64()
    }

    /// The default value, if declared.
    pub fn default_value(&self) -> Option<&Value> {
        self.option("default")
    }

    fn parse(class: &str, name: &str, required: bool, spec: &Value) -> Result<Self, WorkflowError> {
        let bad = |reason: String| WorkflowError::BadObjectInfo {
            class: Some(class.to_owned()),
            reason: format!("input {name:?}: {reason}"),
        };
        let Value::Array(spec) = spec else {
            return Err(bad(format!(
                "expected [TYPE, {{...}}], found {}",
                json_kind(spec)
            )));
        };
        let options = match spec.get(1) {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(bad(format!("options are {}", json_kind(other)))),
        };
        let ty = match spec.first() {
            Some(Value::String(t)) if t == "COMBO" => {
                let list = options.get("options").and_then(Value::as_array);
                SlotType::Combo(list.cloned().unwrap_or_default())
            }
            Some(Value::String(t)) => SlotType::from_name(t),
            Some(Value::Array(list)) => SlotType::Combo(list.clone()),
            Some(other) => return Err(bad(format!("the type is {}", json_kind(other)))),
            None => return Err(bad("the spec is empty".into())),
        };
        Ok(Self {
            name: name.to_owned(),
            required,
            ty,
            options,
        })
    }
}

/// One node class of `object_info`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeClass {
    name: String,
    display_name: Option<String>,
    category: Option<String>,
    inputs: Vec<InputSpec>,
    outputs: Vec<SlotType>,
    output_names: Vec<String>,
    output_node: bool,
}

impl NodeClass {
    /// The class name (`"KSampler"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name the UI shows, if any.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// The UI category (`"sampling"`), if any.
    pub fn category(&self) -> Option<&str> {
        self.category.as_deref()
    }

    /// The required, then the optional inputs, each in the server's `input_order`.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// The types of the outputs, by index.
    pub fn outputs(&self) -> &[SlotType] {
        &self.outputs
    }

    /// The names of the outputs, by index.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// Whether the class is an output node (the server runs the graph to reach these).
    pub fn is_output_node(&self) -> bool {
        self.output_node
    }

    fn parse(name: &str, value: &Value) -> Result<Self, WorkflowError> {
        let bad = |reason: String| WorkflowError::BadObjectInfo {
            class: Some(name.to_owned()),
            reason,
        };
        let Value::Object(class) = value else {
            return Err(bad(format!(
                "expected an object, found {}",
                json_kind(value)
            )));
        };
        let text = |key: &str| class.get(key).and_then(Value::as_str).map(str::to_owned);
        let input = match class.get("input") {
            None => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(bad(format!("\"input\" is {}", json_kind(other)))),
        };
        let order = class.get("input_order").and_then(Value::as_object);
        let mut inputs = Vec::new();
        for (section, required) in [("required", true), ("optional", false)] {
            let specs = match input.get(section) {
                None | Some(Value::Null) => continue,
                Some(Value::Object(o)) => o,
                Some(other) => {
                    return Err(bad(format!("\"input.{section}\" is {}", json_kind(other))));
                }
            };
            let ordered = order
                .and_then(|o| o.get(section))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|n| specs.contains_key(*n));
            let mut names: Vec<&str> = ordered.collect();
            for n in specs.keys() {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
            for n in names {
                inputs.push(InputSpec::parse(name, n, required, &specs[n])?);
            }
        }
        let outputs = match class.get("output") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|o| match o {
                    Value::String(t) => Ok(SlotType::from_name(t)),
                    Value::Array(options) => Ok(SlotType::Combo(options.clone())),
                    other => Err(bad(format!("an output type is {}", json_kind(other)))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(bad(format!("\"output\" is {}", json_kind(other)))),
        };
        let output_names = class
            .get("output_name")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            name: name.to_owned(),
            display_name: text("display_name"),
            category: text("category"),
            inputs,
            outputs,
            output_names,
            output_node: class.get("output_node").and_then(Value::as_bool) == Some(true),
        })
    }
}

/// A server's node classes, read from `GET /object_info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectInfo {
    classes: BTreeMap<String, NodeClass>,
}

impl ObjectInfo {
    /// Reads an `object_info` document from JSON text.
    pub fn from_json(text: &str) -> Result<Self, WorkflowError> {
        let value: Value = serde_json::from_str(text).map_err(|e| WorkflowError::Json {
            context: "object_info",
            message: e.to_string(),
        })?;
        Self::from_value(&value)
    }

    /// Reads an `object_info` document (also the one-class answer of `/object_info/{class}`).
    /// Fails, naming the class, on a class or input spec that is not of the documented shape.
    pub fn from_value(value: &Value) -> Result<Self, WorkflowError> {
        let Value::Object(map) = value else {
            return Err(WorkflowError::BadObjectInfo {
                class: None,
                reason: format!("expected an object of classes, found {}", json_kind(value)),
            });
        };
        let classes = map
            .iter()
            .map(|(name, class)| Ok((name.clone(), NodeClass::parse(name, class)?)))
            .collect::<Result<_, WorkflowError>>()?;
        Ok(Self { classes })
    }

    /// Adds every class of `other` (a one-class answer of `/object_info/{class}`), replacing a
    /// class of the same name.
    pub fn extend(&mut self, other: ObjectInfo) {
        self.classes.extend(other.classes);
    }

    /// The class called `name`.
    pub fn class(&self, name: &str) -> Option<&NodeClass> {
        self.classes.get(name)
    }

    /// Every class, by name.
    pub fn classes(&self) -> impl Iterator<Item = &NodeClass> {
        self.classes.values()
    }

    /// How many classes there are.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether there are no classes.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

impl Workflow {
    /// The ids of the nodes whose class is an output node in `info`, in graph order.
    pub fn output_nodes(&self, info: &ObjectInfo) -> Vec<&NodeId> {
        self.iter()
            .filter(|(_, n)| {
                info.class(n.class_type())
                    .is_some_and(NodeClass::is_output_node)
            })
            .map(|(id, _)| id)
            .collect()
    }
}

/// A structural fault of a graph, found by [`check_structure`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StructuralError {
    /// The server has no such node class.
    UnknownClass {
        /// The node.
        node: NodeId,
        /// Its class type.
        class_type: String,
    },
    /// A required input is not set.
    MissingInput {
        /// The node.
        node: NodeId,
        /// The input.
        input: String,
    },
    /// A list input that is not a link `[node_id, output_index]`.
    MalformedLink {
        /// The node.
        node: NodeId,
        /// The input.
        input: String,
    },
    /// A link to a node the graph does not have.
    DanglingLink {
        /// The node holding the link.
        node: NodeId,
        /// The input.
        input: String,
        /// The link.
        link: Link,
    },
    /// A link to an output index the source node's class does not have.
    NoSuchOutput {
        /// The node holding the link.
        node: NodeId,
        /// The input.
        input: String,
        /// The link.
        link: Link,
        /// How many outputs the source class has.
        outputs: usize,
    },
    /// A link whose output type the input does not accept.
    TypeMismatch {
        /// The node holding the link.
        node: NodeId,
        /// The input.
        input: String,
        /// The link.
        link: Link,
        /// The type of the linked output.
        received: String,
        /// The type the input declares.
        expected: String,
    },
}

impl fmt::Display for StructuralError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownClass { node, class_type } => {
                write!(f, "node \"{node}\": the server has no class {class_type:?}")
            }
            Self::MissingInput { node, input } => {
                write!(f, "node \"{node}\": required input {input:?} is missing")
            }
            Self::MalformedLink { node, input } => write!(
                f,
                "node \"{node}\" input {input:?}: a list input must be [node_id, output_index]"
            ),
            Self::DanglingLink { node, input, link } => write!(
                f,
                "node \"{node}\" input {input:?}: links to node {:?}, which the graph does not have",
                link.node.as_str()
            ),
            Self::NoSuchOutput {
                node,
                input,
                link,
                outputs,
            } => write!(
                f,
                "node \"{node}\" input {input:?}: links to output {} of node {:?}, which has {outputs} outputs",
                link.output,
                link.node.as_str()
            ),
            Self::TypeMismatch {
                node,
                input,
                link,
                received,
                expected,
            } => write!(
                f,
                "node \"{node}\" input {input:?}: received {received} from [{:?}, {}], expected {expected}",
                link.node.as_str(),
                link.output
            ),
        }
    }
}

impl std::error::Error for StructuralError {}

/// Checks the structure of `workflow` against the classes of `info`, and returns every fault
/// found, in graph order (empty when there is none): classes that do not exist, required inputs
/// that are missing, links to missing nodes or output indices, and links whose output type the
/// input does not accept (`*` matches anything; a combo input takes a combo output).
///
/// It does not check literal values (ranges, combo choices): the server does that.
pub fn check_structure(workflow: &Workflow, info: &ObjectInfo) -> Vec<StructuralError> {
    let mut faults = Vec::new();
    for (id, node) in workflow.iter() {
        let class = info.class(node.class_type());
        if class.is_none() {
            faults.push(StructuralError::UnknownClass {
                node: id.clone(),
                class_type: node.class_type().to_owned(),
            });
        }
        for spec in class.into_iter().flat_map(NodeClass::inputs) {
            if spec.is_required() && node.input(spec.name()).is_none() {
                faults.push(StructuralError::MissingInput {
                    node: id.clone(),
                    input: spec.name().to_owned(),
                });
            }
        }
        for (name, input) in node.inputs().iter() {
            let link = match input {
                Input::Link(link) => link,
                Input::Value(Value::Array(_)) => {
                    faults.push(StructuralError::MalformedLink {
                        node: id.clone(),
                        input: name.to_owned(),
                    });
                    continue;
                }
                Input::Value(_) => continue,
            };
            let Some(source) = workflow.node(link.node.as_str()) else {
                faults.push(StructuralError::DanglingLink {
                    node: id.clone(),
                    input: name.to_owned(),
                    link: link.clone(),
                });
                continue;
            };
            // A source of unknown class was reported above; its outputs cannot be checked.
            let Some(source_class) = info.class(source.class_type()) else {
                continue;
            };
            let Some(received) = source_class.outputs().get(link.output as usize) else {
                faults.push(StructuralError::NoSuchOutput {
                    node: id.clone(),
                    input: name.to_owned(),
                    link: link.clone(),
                    outputs: source_class.outputs().len(),
                });
                continue;
            };
            let Some(expected) = class.and_then(|c| c.input(name)) else {
                continue;
            };
            if !expected.ty().accepts(received) {
                faults.push(StructuralError::TypeMismatch {
                    node: id.clone(),
                    input: name.to_owned(),
                    link: link.clone(),
                    received: received.name().to_owned(),
                    expected: expected.ty().name().to_owned(),
                });
            }
        }
    }
    faults
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn info() -> ObjectInfo {
        ObjectInfo::from_value(&json!({
            "Src": {"input": {"required": {}}, "output": ["MODEL", "CLIP", ["a", "b"]], "output_node": false},
            "Any": {"input": {"required": {"x": ["*"]}}, "output": ["*"], "output_node": true},
            "Dst": {
                "input": {
                    "required": {"model": ["MODEL", {}], "n": ["INT", {"min": 1, "max": 9}]},
                    "optional": {"c": [["a", "b"]], "d": ["COMBO", {"options": ["x"]}], "u": ["MODEL,CLIP"]},
                },
                "input_order": {"required": ["n", "model"], "optional": ["u", "c", "d"]},
                "output": ["IMAGE"],
                "output_node": false,
            },
        }))
        .unwrap()
    }

    #[test]
    fn input_specs_in_server_order() {
        let info = info();
        let dst = info.class("Dst").unwrap();
        let names: Vec<&str> = dst.inputs().iter().map(InputSpec::name).collect();
        assert_eq!(names, ["n", "model", "u", "c", "d"]);
        let n = dst.input("n").unwrap();
        assert_eq!(
            (n.ty(), n.is_required(), n.min(), n.max()),
            (&SlotType::Int, true, Some(1.0), Some(9.0))
        );
        assert_eq!(
            dst.input("c").unwrap().ty(),
            &SlotType::Combo(vec![json!("a"), json!("b")])
        );
        assert_eq!(
            dst.input("d").unwrap().ty(),
            &SlotType::Combo(vec![json!("x")])
        );
        assert!(!dst.input("d").unwrap().is_required());
        assert!(info.class("Any").unwrap().is_output_node());
    }

    #[test]
    fn type_rules() {
        let t = SlotType::from_name;
        assert!(t("MODEL").accepts(&t("MODEL")));
        assert!(!t("CLIP").accepts(&t("MODEL")));
        assert!(t("*").accepts(&t("MODEL")));
        assert!(t("IMAGE").accepts(&t("*")));
        assert!(t("MODEL,CLIP").accepts(&t("CLIP")));
        assert!(SlotType::Combo(vec![]).accepts(&t("COMBO")));
        assert!(!SlotType::Combo(vec![]).accepts(&t("STRING")));
        assert!(!t("STRING").accepts(&SlotType::Combo(vec![])));
    }

    #[test]
    fn finds_each_kind_of_fault() {
        let wf = Workflow::from_value(json!({
            "1": {"class_type": "Src", "inputs": {}},
            "2": {"class_type": "Dst", "inputs": {"model": ["1", 1], "c": ["1", 2], "u": ["1", 1]}},
            "3": {"class_type": "Dst", "inputs": {"model": ["9", 0], "n": 1, "d": ["1", 7]}},
            "4": {"class_type": "Nope", "inputs": {"a": ["1", 0]}},
            "5": {"class_type": "Any", "inputs": {"x": ["4", 0]}},
        }))
        .unwrap();
        let faults: Vec<String> = check_structure(&wf, &info())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            faults,
            [
                "node \"2\": required input \"n\" is missing",
                "node \"2\" input \"model\": received CLIP from [\"1\", 1], expected MODEL",
                "node \"3\" input \"model\": links to node \"9\", which the graph does not have",
                "node \"3\" input \"d\": links to output 7 of node \"1\", which has 3 outputs",
                "node \"4\": the server has no class \"Nope\"",
            ]
        );
    }

    #[test]
    fn bad_documents_name_the_class() {
        let err =
            ObjectInfo::from_value(&json!({"K": {"input": {"required": {"x": 3}}}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "object_info class \"K\": input \"x\": expected [TYPE, {...}], found a number"
        );
        assert!(ObjectInfo::from_value(&json!([])).is_err());
    }
}
