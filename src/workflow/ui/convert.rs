//! The conversion itself: scopes (the root graph, each subgraph instance, each group node),
//! link resolution through reroutes, primitives, bypassed nodes and subgraph boundaries, and
//! the API graph's nodes.
//!
//! It follows the frontend's `graphToPrompt` and its `ExecutableNodeDTO`: a node inside
//! subgraph instance `5` gets the id `5:<its id>` (nested: `5:3:7`), a group node's inner node
//! `<group id>:<index>`; an input resolves by walking back from its link until it reaches a
//! node the server runs (a link), a `PrimitiveNode` (its value), a muted node (the input is
//! left out), or nothing (the widget value stays).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use serde_json::Value;

use super::dynamic::{self, Choices};
use super::model::{
    GroupDef, MODE_BYPASS, MODE_MUTED, SUBGRAPH_INPUT, UiDoc, UiGraph, UiNode, WidgetValues,
};
use super::widgets::{
    ValueCursor, has_control, has_upload, is_widget, widget_specs, widget_values, wrap,
};
use super::{MAX_DEPTH, MAX_NODES, UiError};
use crate::workflow::{Input, Inputs, Link, NodeClass, ObjectInfo, Workflow};

/// Frontend-only node classes that the server never sees.
pub(crate) const VIRTUAL: &[&str] = &["Reroute", "PrimitiveNode", "Note", "MarkdownNote"];

/// How many links one input may be followed through before the conversion gives up.
const MAX_STEPS: usize = 512;

/// What an input resolved to.
enum Resolved {
    /// An output of a node the server runs: (API node id, output index).
    Link(String, usize),
    /// A value from a subgraph instance's widget.
    Value(Value),
    /// A `PrimitiveNode`'s value (which the frontend writes into its target widget first, so
    /// that the widget's dynamic prompt processing applies).
    Primitive(Value),
    /// A muted node: the frontend drops the input altogether.
    Muted,
    /// Nothing connected: the node's own widget value (if any) stays.
    Nothing,
}

/// How a group node's inner nodes meet the group node's own slots and widgets.
#[derive(Default)]
struct GroupMap {
    /// (inner index, inner input slot) -> the group node's input slot.
    inputs: HashMap<(usize, usize), usize>,
    /// The group node's outputs, as (inner index, inner output slot).
    outputs: Vec<(usize, usize)>,
    /// Inner index -> widget values the group node overrides.
    widgets: HashMap<usize, Vec<(String, Value)>>,
}

enum Kind<'a> {
    Graph(&'a UiGraph),
    Group(&'a GroupDef, GroupMap),
}

struct Scope<'a> {
    kind: Kind<'a>,
    /// `""` at the root, else the instance path and a colon (`"5:3:"`).
    prefix: String,
    /// The scope holding the instance node, and that node.
    parent: Option<(usize, &'a UiNode)>,
    /// A subgraph's input index -> the value of the instance's widget for it.
    promoted: HashMap<usize, Value>,
}

pub(crate) struct Converter<'a> {
    doc: &'a UiDoc,
    info: &'a ObjectInfo,
    scopes: Vec<Scope<'a>>,
    /// (scope, instance node id) -> the scope the instance opens.
    children: HashMap<(usize, String), usize>,
    steps: Cell<usize>,
    /// Nodes in the scopes opened so far.
    expanded: usize,
    /// Picks the options of dynamic prompts.
    choices: RefCell<Choices>,
}

fn is_valid_connection(a: &str, b: &str) -> bool {
    let any = |t: &str| t.is_empty() || t == "*";
    if any(a) || any(b) {
        return true;
    }
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a.split(',')
        .any(|x| b.split(',').any(|y| x.trim() == y.trim()))
}

/// The input a bypassed node passes on to output `slot`, for a target of type `want`: the
/// input at the same index if its type fits, else the first of exactly that type, else the
/// first that fits.
fn bypass_input(node: &UiNode, slot: usize, want: &str) -> Option<usize> {
    let inputs = &node.inputs;
    if want.is_empty() || want == "*" {
        return if inputs.len() > slot {
            Some(slot)
        } else if inputs.is_empty() {
            None
        } else {
            Some(0)
        };
    }
    let out_ty = node.outputs.get(slot).map_or("*", |o| o.ty.as_str());
    let fits = |ty: &str| is_valid_connection(ty, out_ty) && is_valid_connection(ty, want);
    if inputs.get(slot).is_some_and(|i| fits(&i.ty)) {
        return Some(slot);
    }
    inputs
        .iter()
        .position(|i| i.ty.eq_ignore_ascii_case(want))
        .or_else(|| inputs.iter().position(|i| fits(&i.ty)))
}

fn group_name(ty: &str) -> Option<&str> {
    ty.strip_prefix("workflow>")
        .or_else(|| ty.strip_prefix("workflow/"))
}

fn by_order(nodes: &[UiNode]) -> Vec<&UiNode> {
    let mut sorted: Vec<&UiNode> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.order);
    sorted
}

impl<'a> Converter<'a> {
    pub fn new(doc: &'a UiDoc, info: &'a ObjectInfo, seed: u64) -> Self {
        Self {
            doc,
            info,
            scopes: Vec::new(),
            children: HashMap::new(),
            steps: Cell::new(0),
            expanded: doc.root.nodes.len(),
            choices: RefCell::new(Choices::new(seed)),
        }
    }

    /// Converts the whole document.
    pub fn run(mut self) -> Result<Workflow, UiError> {
        let root = Scope {
            kind: Kind::Graph(&self.doc.root),
            prefix: String::new(),
            parent: None,
            promoted: HashMap::new(),
        };
        self.scopes.push(root);
        self.open(0, 0)?;
        let mut wf = Workflow::new();
        self.emit(0, &mut wf)?;
        Ok(wf)
    }

    fn nodes(&self, scope: usize) -> &'a [UiNode] {
        match &self.scopes[scope].kind {
            Kind::Graph(g) => {
                let g: &'a UiGraph = g;
                &g.nodes
            }
            Kind::Group(g, _) => {
                let g: &'a GroupDef = g;
                &g.nodes
            }
        }
    }

    /// Opens a scope for every active subgraph instance and group node under `scope`.
    fn open(&mut self, scope: usize, depth: usize) -> Result<(), UiError> {
        for node in self.nodes(scope) {
            if node.mode == MODE_MUTED || node.mode == MODE_BYPASS {
                continue;
            }
            let prefix = format!("{}{}:", self.scopes[scope].prefix, node.id);
            let kind = if let Some(def) = self.doc.subgraphs.get(&node.ty) {
                Kind::Graph(def)
            } else if let Some(def) = group_name(&node.ty).and_then(|n| self.doc.groups.get(n)) {
                Kind::Group(def, self.group_map(def, node))
            } else {
                continue;
            };
            if depth >= MAX_DEPTH {
                return Err(UiError::TooDeep {
                    node: prefix.trim_end_matches(':').to_owned(),
                });
            }
            let promoted = match &kind {
                Kind::Graph(def) => self.promoted(def, node),
                Kind::Group(..) => HashMap::new(),
            };
            self.expanded += match &kind {
                Kind::Graph(def) => def.nodes.len(),
                Kind::Group(def, _) => def.nodes.len(),
            };
            if self.expanded > MAX_NODES {
                return Err(UiError::TooLarge { limit: MAX_NODES });
            }
            let child = self.scopes.len();
            self.scopes.push(Scope {
                kind,
                prefix,
                parent: Some((scope, node)),
                promoted,
            });
            self.children.insert((scope, node.id.clone()), child);
            self.open(child, depth + 1)?;
        }
        Ok(())
    }

    /// The values of a subgraph instance's widgets, by the subgraph input they stand for: one
    /// per input that feeds an inner widget, in input order (older saves also keep a seed's
    /// control value).
    fn promoted(&self, def: &UiGraph, instance: &UiNode) -> HashMap<usize, Value> {
        let mut widgets = Vec::new();
        for (i, input) in def.inputs.iter().enumerate() {
            let target = input.link_ids.iter().find_map(|id| {
                def.nodes.iter().find_map(|n| {
                    let slot = n.inputs.iter().find(|s| s.link == Some(*id))?;
                    let name = slot.widget.as_deref()?;
                    Some(self.info.class(&n.ty).and_then(|c| c.input(name)))
                })
            });
            if let Some(spec) = target {
                widgets.push((i, input.name.as_str(), spec));
            }
        }
        let mut out = HashMap::new();
        match &instance.widgets {
            Some(WidgetValues::List(values)) => {
                let extra = values.len() > widgets.len();
                let mut at = 0;
                for (i, _, spec) in &widgets {
                    if let Some(v) = values.get(at).filter(|v| !v.is_null()) {
                        out.insert(*i, v.clone());
                    }
                    at += 1;
                    if extra && spec.is_some_and(has_control) {
                        at += 1;
                    }
                }
            }
            Some(WidgetValues::Map(values)) => {
                for (i, name, _) in &widgets {
                    if let Some(v) = values.get(*name).filter(|v| !v.is_null()) {
                        out.insert(*i, v.clone());
                    }
                }
            }
            None => {}
        }
        out
    }

    /// Lines a group node's slots and widget values up with its inner nodes, as the frontend's
    /// group node does: every input not linked inside the group is the group's, in order; every
    /// output not linked inside (or marked external) is the group's.
    fn group_map(&self, def: &GroupDef, instance: &UiNode) -> GroupMap {
        let mut map = GroupMap::default();
        let linked_in = |c: usize, j: usize| def.links.iter().any(|l| l.2 == c && l.3 == j);
        let slots: Vec<usize> = (0..instance.inputs.len())
            .filter(|&k| instance.inputs[k].widget.is_none())
            .collect();
        let mut next_slot = slots.iter();
        let values: &[Value] = match &instance.widgets {
            Some(WidgetValues::List(l)) => l,
            _ => &[],
        };
        let mut cursor = ValueCursor::new(values);
        for child in &def.nodes {
            let Ok(c) = child.id.parse::<usize>() else {
                continue;
            };
            let class = self.info.class(&child.ty);
            for (j, input) in child.inputs.iter().enumerate() {
                if linked_in(c, j) {
                    continue;
                }
                let widget = input.widget.is_some()
                    || class
                        .and_then(|cl| cl.input(&input.name))
                        .is_some_and(is_widget);
                let k = if widget {
                    instance
                        .inputs
                        .iter()
                        .position(|i| i.widget.as_deref() == Some(input.name.as_str()))
                } else {
                    next_slot.next().copied()
                };
                if let Some(k) = k {
                    map.inputs.insert((c, j), k);
                }
            }
            for k in 0..child.outputs.len() {
                let inside = def.links.iter().any(|l| l.0 == c && l.1 == k);
                if !inside || def.external.contains(&(c, k)) {
                    map.outputs.push((c, k));
                }
            }
            let Some(class) = class else { continue };
            // An upload button's value follows the child's required widgets.
            let mut upload = has_upload(class);
            for spec in widget_specs(class) {
                if upload && !spec.is_required() {
                    cursor.skip();
                    upload = false;
                }
                let slot = child.inputs.iter().position(|i| i.name == spec.name());
                if slot.is_some_and(|j| linked_in(c, j)) {
                    continue;
                }
                if let Some(v) = cursor.take(spec) {
                    let entry = map.widgets.entry(c).or_default();
                    entry.push((spec.name().to_owned(), wrap(v.clone())));
                }
            }
            if upload {
                cursor.skip();
            }
        }
        map
    }

    /// Adds the API nodes of `scope` (and the scopes under it) to `wf`, in execution order.
    fn emit(&self, scope: usize, wf: &mut Workflow) -> Result<(), UiError> {
        for node in by_order(self.nodes(scope)) {
            if node.mode == MODE_MUTED || node.mode == MODE_BYPASS {
                continue;
            }
            if let Some(&child) = self.children.get(&(scope, node.id.clone())) {
                self.emit(child, wf)?;
                continue;
            }
            if VIRTUAL.contains(&node.ty.as_str()) {
                continue;
            }
            let id = format!("{}{}", self.scopes[scope].prefix, node.id);
            let Some(class) = self.info.class(&node.ty) else {
                return Err(UiError::UnknownClass {
                    node: id,
                    class: node.ty.clone(),
                });
            };
            let mut inputs = Inputs::new();
            for (name, value) in widget_values(&id, node, class)? {
                inputs.insert(
                    name.clone(),
                    Input::Value(self.dynamic(class, &name, value)),
                );
            }
            if let Kind::Group(_, map) = &self.scopes[scope].kind {
                let own = node.id.parse().ok().and_then(|c| map.widgets.get(&c));
                for (name, value) in own.into_iter().flatten() {
                    let value = self.dynamic(class, name, value.clone());
                    inputs.insert(name.clone(), Input::Value(value));
                }
            }
            for (j, input) in node.inputs.iter().enumerate() {
                self.steps.set(0);
                match self.resolve_input(scope, node, j, &input.ty, (&id, &input.name))? {
                    Resolved::Link(from, slot) => {
                        let slot = u32::try_from(slot).unwrap_or(u32::MAX);
                        inputs.insert(input.name.clone(), Input::Link(Link::new(from, slot)));
                    }
                    Resolved::Value(v) => {
                        inputs.insert(input.name.clone(), Input::Value(wrap(v)));
                    }
                    Resolved::Primitive(v) => {
                        let v = self.dynamic(class, &input.name, wrap(v));
                        inputs.insert(input.name.clone(), Input::Value(v));
                    }
                    Resolved::Muted => {
                        inputs.remove(&input.name);
                    }
                    Resolved::Nothing => {}
                }
            }
            let title = node
                .title
                .as_deref()
                .or(class.display_name())
                .unwrap_or(&node.ty);
            wf.add_node_with(node.ty.clone(), inputs, Some(&id), Some(title))
                .map_err(|_| UiError::Malformed {
                    at: format!("node {id}"),
                    reason: "two nodes have this id".into(),
                })?;
        }
        Ok(())
    }

    /// The value the frontend sends for widget `name`: a `dynamicPrompts` text processed.
    fn dynamic(&self, class: &NodeClass, name: &str, value: Value) -> Value {
        let marked = class
            .input(name)
            .and_then(|s| s.option("dynamicPrompts"))
            .and_then(Value::as_bool)
            == Some(true);
        match value {
            Value::String(text) if marked => {
                Value::String(dynamic::process(&text, &mut self.choices.borrow_mut()))
            }
            other => other,
        }
    }

    fn step(&self, at: (&str, &str)) -> Result<(), UiError> {
        self.steps.set(self.steps.get() + 1);
        if self.steps.get() > MAX_STEPS {
            return Err(UiError::TooDeep {
                node: at.0.to_owned(),
            });
        }
        Ok(())
    }

    /// What input `slot` of `node` (in `scope`) is fed by. `at` names the input being
    /// converted, for errors.
    fn resolve_input(
        &self,
        scope: usize,
        node: &'a UiNode,
        slot: usize,
        want: &str,
        at: (&str, &str),
    ) -> Result<Resolved, UiError> {
        self.step(at)?;
        let s = &self.scopes[scope];
        let graph = match &s.kind {
            Kind::Graph(g) => *g,
            Kind::Group(def, map) => {
                let def: &'a GroupDef = def;
                let Ok(c) = node.id.parse::<usize>() else {
                    return Ok(Resolved::Nothing);
                };
                if let Some(&(a, b, ..)) = def.links.iter().find(|l| l.2 == c && l.3 == slot) {
                    let Some(origin) = def.nodes.iter().find(|n| n.id == a.to_string()) else {
                        return Ok(Resolved::Nothing);
                    };
                    return self.resolve_output(scope, origin, b, want, at);
                }
                let (Some(&k), Some((parent, inst))) = (map.inputs.get(&(c, slot)), s.parent)
                else {
                    return Ok(Resolved::Nothing);
                };
                return self.resolve_input(parent, inst, k, want, at);
            }
        };
        let Some(link_id) = node.inputs.get(slot).and_then(|i| i.link) else {
            return Ok(Resolved::Nothing);
        };
        let missing = |reason: String| UiError::MissingLink {
            node: at.0.to_owned(),
            input: at.1.to_owned(),
            link: link_id,
            reason,
        };
        let Some(link) = graph.links.get(&link_id) else {
            return Err(missing("the workflow has no such link".into()));
        };
        if link.origin == SUBGRAPH_INPUT && s.parent.is_some() {
            return self.resolve_subgraph_input(scope, link.origin_slot, want, at);
        }
        let Some(origin) = graph.node(&link.origin) else {
            return Err(missing(format!(
                "its origin node {} is missing",
                link.origin
            )));
        };
        self.resolve_output(scope, origin, link.origin_slot, want, at)
    }

    /// What feeds input `index` of the subgraph that `scope` is an instance of: the instance's
    /// link, else the instance's widget value.
    fn resolve_subgraph_input(
        &self,
        scope: usize,
        index: usize,
        want: &str,
        at: (&str, &str),
    ) -> Result<Resolved, UiError> {
        let s = &self.scopes[scope];
        let (Kind::Graph(def), Some((parent, inst))) = (&s.kind, s.parent) else {
            return Ok(Resolved::Nothing);
        };
        let Some(input) = def.inputs.get(index) else {
            return Ok(Resolved::Nothing);
        };
        let linked = inst
            .inputs
            .iter()
            .position(|i| i.name == input.name && i.link.is_some());
        if let Some(k) = linked {
            return self.resolve_input(parent, inst, k, want, at);
        }
        Ok(match s.promoted.get(&index) {
            Some(v) => Resolved::Value(v.clone()),
            None => Resolved::Nothing,
        })
    }

    /// What output `slot` of `node` (in `scope`) stands for.
    fn resolve_output(
        &self,
        scope: usize,
        node: &'a UiNode,
        slot: usize,
        want: &str,
        at: (&str, &str),
    ) -> Result<Resolved, UiError> {
        self.step(at)?;
        // Frontend-only nodes act whatever their mode: a reroute passes its input on, a
        // primitive its value (the frontend writes it into its targets before anything else).
        match node.ty.as_str() {
            "Reroute" if !node.inputs.is_empty() => {
                return self.resolve_input(scope, node, 0, want, at);
            }
            "PrimitiveNode" => {
                return Ok(match &node.widgets {
                    Some(WidgetValues::List(l)) if !l.is_empty() => {
                        Resolved::Primitive(l[0].clone())
                    }
                    Some(WidgetValues::Map(m)) => match m.values().next() {
                        Some(v) => Resolved::Primitive(v.clone()),
                        None => Resolved::Nothing,
                    },
                    _ => Resolved::Nothing,
                });
            }
            ty if VIRTUAL.contains(&ty) => return Ok(Resolved::Nothing),
            _ => {}
        }
        if node.mode == MODE_MUTED {
            return Ok(Resolved::Muted);
        }
        if node.mode == MODE_BYPASS {
            let Some(j) = bypass_input(node, slot, want) else {
                return Ok(Resolved::Nothing);
            };
            let ty = match node.inputs[j].ty.as_str() {
                "" | "*" => want.to_owned(),
                ty => ty.to_owned(),
            };
            return self.resolve_input(scope, node, j, &ty, at);
        }
        if let Some(&child) = self.children.get(&(scope, node.id.clone())) {
            return match &self.scopes[child].kind {
                Kind::Graph(def) => {
                    let def: &'a UiGraph = def;
                    let link = def
                        .outputs
                        .get(slot)
                        .and_then(|o| o.link_ids.first())
                        .and_then(|id| def.links.get(id));
                    let Some(link) = link else {
                        return Ok(Resolved::Nothing);
                    };
                    if link.origin == SUBGRAPH_INPUT {
                        return self.resolve_subgraph_input(child, link.origin_slot, want, at);
                    }
                    match def.node(&link.origin) {
                        Some(origin) => {
                            self.resolve_output(child, origin, link.origin_slot, want, at)
                        }
                        None => Ok(Resolved::Nothing),
                    }
                }
                Kind::Group(def, map) => {
                    let def: &'a GroupDef = def;
                    let Some(&(c, k)) = map.outputs.get(slot) else {
                        return Ok(Resolved::Nothing);
                    };
                    match def.nodes.iter().find(|n| n.id == c.to_string()) {
                        Some(origin) => self.resolve_output(child, origin, k, want, at),
                        None => Ok(Resolved::Nothing),
                    }
                }
            };
        }
        Ok(Resolved::Link(
            format!("{}{}", self.scopes[scope].prefix, node.id),
            slot,
        ))
    }
}
