//! The parts of a UI-format workflow the conversion reads, parsed from JSON.
//!
//! A graph level (the root, or a subgraph definition) is a list of nodes and a table of links.
//! Links come as lists `[id, origin, origin_slot, target, target_slot, type]` (schema 0.4) or
//! as objects `{"id", "origin_id", "origin_slot", "target_id", "target_slot", "type"}` (schema 1
//! and subgraph definitions). Node ids are numbers (or strings): they are kept as text.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::UiError;

/// The node id a subgraph definition's links use for its input side.
pub(crate) const SUBGRAPH_INPUT: &str = "-10";

/// One input slot of a node.
#[derive(Debug, Clone)]
pub(crate) struct UiInput {
    pub name: String,
    pub ty: String,
    pub link: Option<i64>,
    /// The widget this input stands for (`{"widget": {"name"}}`), if any.
    pub widget: Option<String>,
}

/// One output slot of a node.
#[derive(Debug, Clone)]
pub(crate) struct UiOutput {
    pub ty: String,
}

/// A node's `widgets_values`: a list in widget order, or (newer saves, some custom nodes) an
/// object of widget name -> value.
#[derive(Debug, Clone)]
pub(crate) enum WidgetValues {
    List(Vec<Value>),
    Map(Map<String, Value>),
}

/// One node.
#[derive(Debug, Clone)]
pub(crate) struct UiNode {
    pub id: String,
    pub ty: String,
    pub mode: i64,
    pub title: Option<String>,
    pub order: i64,
    pub inputs: Vec<UiInput>,
    pub outputs: Vec<UiOutput>,
    pub widgets: Option<WidgetValues>,
}

/// Muted ("never"): left out, with everything that only it feeds.
pub(crate) const MODE_MUTED: i64 = 2;
/// Bypassed: left out, each output passed on from an input of the same type.
pub(crate) const MODE_BYPASS: i64 = 4;

/// One link.
#[derive(Debug, Clone)]
pub(crate) struct UiLink {
    pub origin: String,
    pub origin_slot: usize,
}

/// A subgraph definition's input or output: its name and the links that leave or reach it.
#[derive(Debug, Clone)]
pub(crate) struct SlotDef {
    pub name: String,
    pub link_ids: Vec<i64>,
}

/// A graph level: the root graph or a subgraph definition.
#[derive(Debug, Clone, Default)]
pub(crate) struct UiGraph {
    pub nodes: Vec<UiNode>,
    pub links: HashMap<i64, UiLink>,
    /// For a subgraph definition, its inputs and outputs.
    pub inputs: Vec<SlotDef>,
    pub outputs: Vec<SlotDef>,
}

impl UiGraph {
    pub fn node(&self, id: &str) -> Option<&UiNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// A legacy group node's definition (`extra.groupNodes[name]`): its nodes by index, and the
/// links between them as (origin index, origin slot, target index, target slot).
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupDef {
    pub nodes: Vec<UiNode>,
    pub links: Vec<(usize, usize, usize, usize)>,
    /// Outputs linked inside the group that the group node still shows.
    pub external: Vec<(usize, usize)>,
}

/// A whole document.
#[derive(Debug, Clone, Default)]
pub(crate) struct UiDoc {
    pub root: UiGraph,
    pub subgraphs: HashMap<String, UiGraph>,
    pub groups: HashMap<String, GroupDef>,
}

fn malformed(at: impl Into<String>, reason: impl Into<String>) -> UiError {
    UiError::Malformed {
        at: at.into(),
        reason: reason.into(),
    }
}

/// A node id (a number or a string) as text; `None` for anything else.
pub(crate) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.to_string(),
        }),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn slot_index(value: Option<&Value>) -> Option<usize> {
    let v = value?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| usize::try_from(n).ok())
}

fn link_id(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

fn text(obj: &Map<String, Value>, key: &str) -> String {
    match obj.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

impl UiDoc {
    /// Reads a document: the root graph, `definitions.subgraphs` and `extra.groupNodes`.
    pub fn parse(doc: &Value) -> Result<Self, UiError> {
        let Value::Object(obj) = doc else {
            return Err(UiError::NotUiWorkflow {
                reason: "the document is not a JSON object".into(),
            });
        };
        if !obj.get("nodes").is_some_and(Value::is_array) {
            return Err(UiError::NotUiWorkflow {
                reason: "it has no \"nodes\" list".into(),
            });
        }
        let root = parse_graph(obj, "")?;
        let mut subgraphs = HashMap::new();
        let defs = obj
            .get("definitions")
            .and_then(|d| d.get("subgraphs"))
            .and_then(Value::as_array);
        for def in defs.into_iter().flatten() {
            let Value::Object(def) = def else {
                return Err(malformed(
                    "definitions.subgraphs",
                    "an entry is not an object",
                ));
            };
            let Some(id) = def.get("id").and_then(id_text) else {
                return Err(malformed("definitions.subgraphs", "a subgraph has no id"));
            };
            let mut graph = parse_graph(def, &format!("subgraph {id}: "))?;
            graph.inputs = slot_defs(def.get("inputs"));
            graph.outputs = slot_defs(def.get("outputs"));
            subgraphs.insert(id, graph);
        }
        let mut groups = HashMap::new();
        let group_defs = obj
            .get("extra")
            .and_then(|e| e.get("groupNodes"))
            .and_then(Value::as_object);
        for (name, def) in group_defs.into_iter().flatten() {
            groups.insert(name.clone(), parse_group(name, def)?);
        }
        Ok(Self {
            root,
            subgraphs,
            groups,
        })
    }
}

fn slot_defs(value: Option<&Value>) -> Vec<SlotDef> {
    let list = value.and_then(Value::as_array).map(Vec::as_slice);
    list.unwrap_or_default()
        .iter()
        .filter_map(Value::as_object)
        .map(|slot| SlotDef {
            name: text(slot, "name"),
            link_ids: slot
                .get("linkIds")
                .and_then(Value::as_array)
                .map(|l| l.iter().filter_map(link_id).collect())
                .unwrap_or_default(),
        })
        .collect()
}

fn parse_graph(obj: &Map<String, Value>, at: &str) -> Result<UiGraph, UiError> {
    let mut graph = UiGraph::default();
    let nodes = obj.get("nodes").and_then(Value::as_array);
    for node in nodes.into_iter().flatten() {
        graph.nodes.push(parse_node(node, at)?);
    }
    let links = match obj.get("links") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(l)) => l.as_slice(),
        // Some writers store links as an object keyed by id.
        Some(Value::Object(_)) => &[][..],
        Some(_) => return Err(malformed(format!("{at}links"), "not a list")),
    };
    let keyed = obj.get("links").and_then(Value::as_object);
    for link in links
        .iter()
        .chain(keyed.into_iter().flat_map(|m| m.values()))
    {
        if link.is_null() {
            continue;
        }
        let (id, parsed) = parse_link(link).ok_or_else(|| {
            malformed(
                format!("{at}links"),
                format!("a link is not [id, origin, slot, target, slot, type]: {link}"),
            )
        })?;
        graph.links.insert(id, parsed);
    }
    Ok(graph)
}

fn parse_link(link: &Value) -> Option<(i64, UiLink)> {
    match link {
        Value::Array(l) => Some((
            link_id(l.first()?)?,
            UiLink {
                origin: id_text(l.get(1)?)?,
                origin_slot: slot_index(l.get(2))?,
            },
        )),
        Value::Object(o) => Some((
            link_id(o.get("id")?)?,
            UiLink {
                origin: id_text(o.get("origin_id")?)?,
                origin_slot: slot_index(o.get("origin_slot"))?,
            },
        )),
        _ => None,
    }
}

pub(crate) fn parse_node(node: &Value, at: &str) -> Result<UiNode, UiError> {
    let Value::Object(n) = node else {
        return Err(malformed(format!("{at}nodes"), "a node is not an object"));
    };
    let id = n.get("id").and_then(id_text).unwrap_or_default();
    let here = || format!("{at}node {id}");
    let ty = match n.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => return Err(malformed(here(), "no string \"type\"")),
    };
    let list = |key: &str| -> Result<Vec<Map<String, Value>>, UiError> {
        match n.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(l)) => l
                .iter()
                .map(|s| match s {
                    Value::Object(o) => Ok(o.clone()),
                    _ => Err(malformed(
                        here(),
                        format!("an entry of \"{key}\" is not an object"),
                    )),
                })
                .collect(),
            Some(_) => Err(malformed(here(), format!("\"{key}\" is not a list"))),
        }
    };
    let inputs = list("inputs")?
        .iter()
        .map(|i| UiInput {
            name: text(i, "name"),
            ty: text(i, "type"),
            link: i.get("link").and_then(link_id),
            widget: i
                .get("widget")
                .and_then(|w| w.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
        .collect();
    let outputs = list("outputs")?
        .iter()
        .map(|o| UiOutput {
            ty: text(o, "type"),
        })
        .collect();
    let widgets = match n.get("widgets_values") {
        Some(Value::Array(l)) => Some(WidgetValues::List(l.clone())),
        Some(Value::Object(m)) => Some(WidgetValues::Map(m.clone())),
        _ => None,
    };
    Ok(UiNode {
        id,
        ty,
        mode: n.get("mode").and_then(Value::as_i64).unwrap_or(0),
        title: n.get("title").and_then(Value::as_str).map(str::to_owned),
        order: n.get("order").and_then(Value::as_i64).unwrap_or(0),
        inputs,
        outputs,
        widgets,
    })
}

fn parse_group(name: &str, def: &Value) -> Result<GroupDef, UiError> {
    let at = format!("group node {name:?}: ");
    let mut group = GroupDef::default();
    let nodes = def.get("nodes").and_then(Value::as_array);
    for (index, node) in nodes.into_iter().flatten().enumerate() {
        let mut node = parse_node(node, &at)?;
        let index = node_index(node_field(def, index, "index")).unwrap_or(index);
        node.id = index.to_string();
        group.nodes.push(node);
    }
    group
        .nodes
        .sort_by_key(|n| n.id.parse::<usize>().unwrap_or(usize::MAX));
    let links = def.get("links").and_then(Value::as_array);
    for link in links.into_iter().flatten() {
        let l = link.as_array().map(Vec::as_slice).unwrap_or_default();
        let get = |i: usize| slot_index(l.get(i));
        match (get(0), get(1), get(2), get(3)) {
            (Some(a), Some(b), Some(c), Some(d)) => group.links.push((a, b, c, d)),
            _ => return Err(malformed(format!("{at}links"), format!("bad link {link}"))),
        }
    }
    let external = def.get("external").and_then(Value::as_array);
    for ext in external.into_iter().flatten() {
        let l = ext.as_array().map(Vec::as_slice).unwrap_or_default();
        if let (Some(a), Some(b)) = (slot_index(l.first()), slot_index(l.get(1))) {
            group.external.push((a, b));
        }
    }
    Ok(group)
}

fn node_field<'a>(def: &'a Value, index: usize, key: &str) -> Option<&'a Value> {
    def.get("nodes")?.get(index)?.get(key)
}

fn node_index(value: Option<&Value>) -> Option<usize> {
    slot_index(value)
}
