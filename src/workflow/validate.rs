//! Validation of a graph against a server's `object_info`, the way the server validates it
//! before queueing, with the server's own error shapes and wording.
//!
//! [`validate`] answers what `POST /prompt` would answer, without sending anything: a
//! [`ValidationReport`] holding the same `error` ([`ErrorInfo`]) and `node_errors`
//! ([`NodeErrors`]) that a `400` decodes to ([`PromptRejected`]), so a program handles one kind
//! of error whether it came from us or from the server.
//!
//! # How it works
//!
//! It follows ComfyUI's `validate_prompt` (`execution.py`):
//! 1. Every node's class must exist, reachable or not; the first that does not refuses the whole
//!    prompt (`invalid_prompt`, no node errors).
//! 2. The output nodes (classes marked `output_node`) are the roots; none is `prompt_no_outputs`.
//! 3. From each output, each node's declared inputs are checked in turn (required, then
//!    optional, each in the server's `input_order`), and linked nodes are checked when first
//!    reached, once each. A link to a node the graph lacks, or to an output index its class lacks,
//!    is an exception in the server's Python: on an output node it is
//!    `exception_during_validation`, on a node reached through a link
//!    `exception_during_inner_validation` (the server reports the recorded case so; see
//!    `fixtures/validation_bad_link.jsonl`). A link whose type the input does not take is
//!    `return_type_mismatch`, and the linked node is not followed through it. Literals are
//!    converted as Python converts them (`int()`, `float()`, `str()`, `bool()`), then checked
//!    against `min`, `max` and the combo's options.
//! 4. Only nodes reached from an output are checked. A node with errors lists, in
//!    `dependent_outputs`, the failing outputs that reach it. If no output passes, the error is
//!    `prompt_outputs_failed_validation`; if some pass, the server queues the prompt and skips
//!    the others, so the report has node errors and no error ([`ValidationReport::is_accepted`]).
//!
//! Where the server's answer depends on Python's set order (which inputs of a node it checks
//! first, which failing output it reports first), the report takes the declared and the graph
//! order. Inputs a node validates with its own code (file pickers such as `LoadImage.image`,
//! and any input with an upload widget) are not checked against their option list: that list
//! in `object_info` may be older than the upload.

mod errors;
mod python;
mod report;
mod requirements;

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use self::errors::Raised;
use self::python::Converted;
use super::{Input, InputSpec, Node, NodeClass, ObjectInfo, SlotType, Workflow};
use crate::NodeId;
use crate::wire::http::{ErrorInfo, NodeErrors};

pub use self::report::ValidationReport;
pub use self::requirements::{Requirements, can_run, required_classes_and_models};

#[cfg(doc)]
use crate::wire::http::PromptRejected;

/// Validates `workflow` against the node classes of `info`, as the server would when it is
/// posted to `/prompt`. Nothing is sent; call it before submitting, with the `object_info` of the
/// server that will run the graph.
///
/// ```
/// use comfy_proxy::workflow::{ObjectInfo, Workflow, validate};
/// let info = ObjectInfo::from_json(r#"{
///     "EmptyImage": {"input": {"required": {"width": ["INT", {"min": 1, "max": 16384}]}},
///                    "output": ["IMAGE"], "output_node": false},
///     "SaveImageWebsocket": {"input": {"required": {"images": ["IMAGE"]}},
///                            "output": [], "output_node": true}
/// }"#)?;
/// let wf = Workflow::from_json(r#"{
///     "1": {"class_type": "EmptyImage", "inputs": {"width": 0}},
///     "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}
/// }"#)?;
/// let report = validate(&wf, &info);
/// assert_eq!(report.error_type(), Some("prompt_outputs_failed_validation"));
/// assert_eq!(
///     report.to_string(),
///     "prompt_outputs_failed_validation: node 1 (EmptyImage): value_smaller_than_min width"
/// );
/// # Ok::<(), comfy_proxy::WorkflowError>(())
/// ```
pub fn validate(workflow: &Workflow, info: &ObjectInfo) -> ValidationReport {
    run(workflow, info, None)
}

/// [`validate`] for a prompt posted with `partial_execution_targets`: only the output nodes
/// among `targets` are roots (ids that are not output nodes are ignored, as the server ignores
/// them).
pub fn validate_partial(
    workflow: &Workflow,
    info: &ObjectInfo,
    targets: &[NodeId],
) -> ValidationReport {
    run(workflow, info, Some(targets))
}

impl Workflow {
    /// Validates this graph against `info`: see [`validate`].
    pub fn validate(&self, info: &ObjectInfo) -> ValidationReport {
        validate(self, info)
    }
}

/// Core classes that check these inputs with their own `VALIDATE_INPUTS` (a file must exist),
/// which makes the server skip the range and option checks for them.
const SELF_VALIDATED: &[(&str, &str)] = &[
    ("LoadImage", "image"),
    ("LoadImageMask", "image"),
    ("LoadImageOutput", "image"),
    ("LoadLatent", "latent"),
    ("LoadAudio", "audio"),
    ("LoadVideo", "file"),
];

/// Whether the option list of `spec` is not to be trusted as the set of accepted values.
fn options_unchecked(class: &str, spec: &InputSpec) -> bool {
    SELF_VALIDATED.contains(&(class, spec.name()))
        || spec.option("remote").is_some()
        || [
            "image_upload",
            "audio_upload",
            "video_upload",
            "file_upload",
        ]
        .iter()
        .any(|k| spec.option(k).and_then(Value::as_bool) == Some(true))
}

/// Whether an input of `spec` takes a link from an output of type `received`, by the server's
/// rule (`validate_node_input`): the same type; `*` on either side (the "any" type); a bare
/// combo list only the same list; a `COMBO` input any combo output; otherwise type names split
/// at commas that share a name.
fn link_accepted(spec: &InputSpec, received: &SlotType) -> bool {
    let want = spec.ty();
    if want.name() == "*" || received.name() == "*" {
        return true;
    }
    match (want, received) {
        (SlotType::Combo(mine), SlotType::Combo(theirs)) => {
            errors::is_named_combo(spec) || mine == theirs
        }
        (SlotType::Combo(_), _) => false,
        (_, SlotType::Combo(options)) if !options.is_empty() => false,
        _ => {
            let names = |t: &str| -> HashSet<String> {
                t.split(',').map(|s| s.trim().to_owned()).collect()
            };
            !names(want.name()).is_disjoint(&names(received.name()))
        }
    }
}

/// The result of checking one node: whether it passed, and its own errors (a node can fail with
/// none of its own, when a node it links to failed).
#[derive(Debug, Clone)]
struct Checked {
    ok: bool,
    reasons: Vec<ErrorInfo>,
}

/// A node being checked: which input is next, and what was found so far.
struct Frame<'a> {
    id: &'a NodeId,
    node: &'a Node,
    class: &'a NodeClass,
    /// The index in `class.inputs()` of the next input to check; the one before it is the input
    /// whose linked node is being checked while this frame waits.
    next: usize,
    errors: Vec<ErrorInfo>,
    /// False once a linked node failed.
    valid: bool,
}

impl<'a> Frame<'a> {
    /// The input checked last (the one being followed, or that raised), and its value.
    fn current(&self) -> (&'a InputSpec, Value) {
        let spec = &self.class.inputs()[self.next.saturating_sub(1)];
        let value = self
            .node
            .input(spec.name())
            .map_or(Value::Null, Input::to_json);
        (spec, value)
    }
}

enum Step<'a> {
    /// Check this linked node first, then come back.
    Follow(&'a NodeId),
    /// Every input is checked.
    Done,
    /// Following a link failed the way the server's Python raises.
    Raise(Raised),
}

/// The state of one validation: the server's `validated` table, in the order it was filled,
/// and which nodes each node followed links to.
struct Checker<'a> {
    nodes: HashMap<&'a str, (&'a NodeId, &'a Node, &'a NodeClass)>,
    checked: HashMap<&'a str, Checked>,
    order: Vec<&'a NodeId>,
    follows: HashMap<&'a str, Vec<&'a NodeId>>,
    in_progress: HashSet<&'a str>,
}

fn run(workflow: &Workflow, info: &ObjectInfo, targets: Option<&[NodeId]>) -> ValidationReport {
    let mut nodes = HashMap::new();
    let mut outputs = Vec::new();
    for (id, node) in workflow.iter() {
        let Some(class) = info.class(node.class_type()) else {
            let error = errors::invalid_prompt(id.as_str(), node.class_type());
            return ValidationReport::new(Some(error), NodeErrors::default(), Vec::new());
        };
        nodes.insert(id.as_str(), (id, node, class));
        if class.is_output_node() && targets.is_none_or(|t| t.contains(id)) {
            outputs.push(id);
        }
    }
    if outputs.is_empty() {
        let error = errors::prompt_no_outputs();
        return ValidationReport::new(Some(error), NodeErrors::default(), Vec::new());
    }
    let mut checker = Checker {
        nodes,
        checked: HashMap::new(),
        order: Vec::new(),
        follows: HashMap::new(),
        in_progress: HashSet::new(),
    };
    let (mut good, mut failed) = (Vec::new(), Vec::new());
    for &output in &outputs {
        checker.check(output);
        if checker.checked.get(output.as_str()).is_some_and(|c| c.ok) {
            good.push(output.clone());
        } else {
            failed.push(output);
        }
    }
    let node_errors = checker.node_errors(&failed);
    let error = good.is_empty().then(|| {
        let lines: Vec<String> = failed
            .iter()
            .filter_map(|o| checker.checked.get(o.as_str()))
            .flat_map(|c| &c.reasons)
            .map(|e| format!("{}: {}", e.message, e.details))
            .collect();
        errors::prompt_outputs_failed_validation(lines.join("\n"))
    });
    ValidationReport::new(error, node_errors, good)
}

impl<'a> Checker<'a> {
    fn frame(&self, id: &str) -> Option<Frame<'a>> {
        let &(id, node, class) = self.nodes.get(id)?;
        Some(Frame {
            id,
            node,
            class,
            next: 0,
            errors: Vec::new(),
            valid: true,
        })
    }

    fn record(&mut self, id: &'a NodeId, ok: bool, reasons: Vec<ErrorInfo>) {
        if self
            .checked
            .insert(id.as_str(), Checked { ok, reasons })
            .is_none()
        {
            self.order.push(id);
        }
    }

    /// Checks `output` and every node it reaches that is not checked yet. The server recurses;
    /// this keeps its own stack, so a deep graph cannot overflow the thread's.
    fn check(&mut self, output: &'a NodeId) {
        if self.checked.contains_key(output.as_str()) {
            return;
        }
        let Some(first) = self.frame(output.as_str()) else {
            return;
        };
        self.in_progress.insert(output.as_str());
        let mut stack = vec![first];
        let mut linked_ok = None;
        while let Some(top) = stack.last_mut() {
            if linked_ok.take() == Some(false) {
                top.valid = false;
            }
            match self.advance(top) {
                Step::Follow(id) => {
                    if let Some(frame) = self.frame(id.as_str()) {
                        self.in_progress.insert(id.as_str());
                        stack.push(frame);
                    }
                }
                Step::Done => {
                    if let Some(done) = stack.pop() {
                        self.in_progress.remove(done.id.as_str());
                        let ok = done.valid && done.errors.is_empty();
                        self.record(done.id, ok, done.errors);
                        linked_ok = Some(ok);
                    }
                }
                Step::Raise(raised) => {
                    let Some(failed) = stack.pop() else { break };
                    self.in_progress.remove(failed.id.as_str());
                    // The node that asked for this one catches the exception and puts it on
                    // this node; an output node's own exception is caught by the prompt.
                    let reason = match stack.last_mut() {
                        None => {
                            let (spec, link) = failed.current();
                            errors::exception_during_validation(raised, spec, link)
                        }
                        Some(parent) => {
                            parent.valid = false;
                            let (spec, link) = parent.current();
                            errors::exception_during_inner_validation(
                                spec,
                                link,
                                raised.exception_type,
                                raised.message,
                            )
                        }
                    };
                    self.record(failed.id, false, vec![reason]);
                }
            }
        }
    }

    /// Checks the inputs of `f` from `f.next` on, until one links to a node not checked yet.
    fn advance(&mut self, f: &mut Frame<'a>) -> Step<'a> {
        let specs = f.class.inputs();
        while let Some(spec) = specs.get(f.next) {
            f.next += 1;
            let Some(input) = f.node.input(spec.name()) else {
                if spec.is_required() {
                    f.errors.push(errors::required_input_missing(spec.name()));
                }
                continue;
            };
            // The server takes every list for a link `[node_id, output_index]`.
            let (id, index) = match input {
                Input::Link(link) => (Value::from(link.node.as_str()), Value::from(link.output)),
                Input::Value(Value::Array(list)) if list.len() == 2 => {
                    (list[0].clone(), list[1].clone())
                }
                Input::Value(Value::Array(_)) => {
                    f.errors
                        .push(errors::bad_linked_input(spec, &input.to_json()));
                    continue;
                }
                Input::Value(value) => {
                    f.errors.extend(check_literal(f.class.name(), spec, value));
                    continue;
                }
            };
            let (source, received) = match self.resolve(&id, &index) {
                Ok(found) => found,
                Err(raised) => return Step::Raise(raised),
            };
            if !link_accepted(spec, received) {
                let error = errors::return_type_mismatch(spec, received, input.to_json());
                f.errors.push(error);
                continue;
            }
            self.follows.entry(f.id.as_str()).or_default().push(source);
            if let Some(done) = self.checked.get(source.as_str()) {
                if !done.ok {
                    f.valid = false;
                }
            } else if self.in_progress.contains(source.as_str()) {
                // The server would recurse around the cycle until Python's recursion limit.
                f.valid = false;
                f.errors.push(errors::exception_during_inner_validation(
                    spec,
                    input.to_json(),
                    "RecursionError",
                    format!(
                        "maximum recursion depth exceeded: the links form a cycle through node '{source}'"
                    ),
                ));
            } else {
                return Step::Follow(source);
            }
        }
        Step::Done
    }

    /// The node and output type a link `[id, index]` names, or what the server's Python raises
    /// looking them up: `prompt[id]` (a `KeyError` for a missing node), then
    /// `RETURN_TYPES[index]` (an `IndexError` past the end; negative indices count from the end).
    fn resolve(&self, id: &Value, index: &Value) -> Result<(&'a NodeId, &'a SlotType), Raised> {
        let raise = |exception_type, message| Raised {
            exception_type,
            message,
        };
        let found = match id {
            Value::String(id) => self.nodes.get(id.as_str()),
            Value::Array(_) | Value::Object(_) => {
                let message = format!("unhashable type: '{}'", python::type_name(id));
                return Err(raise("TypeError", message));
            }
            _ => None,
        };
        let Some(&(source, _, class)) = found else {
            return Err(raise("KeyError", python::py_repr(id)));
        };
        let outputs = class.outputs();
        let at = match index {
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
            _ => None,
        };
        let Some(at) = at else {
            let message = format!(
                "tuple indices must be integers or slices, not {}",
                python::type_name(index)
            );
            return Err(raise("TypeError", message));
        };
        let len = i64::try_from(outputs.len()).unwrap_or(i64::MAX);
        let at = if at < 0 { at.saturating_add(len) } else { at };
        usize::try_from(at)
            .ok()
            .and_then(|at| outputs.get(at))
            .map(|received| (source, received))
            .ok_or_else(|| raise("IndexError", "tuple index out of range".into()))
    }

    /// The server's `node_errors`: every node with errors of its own that a failing output
    /// reaches, in the order the nodes were checked, with the failing outputs that reach it.
    fn node_errors(&self, failed: &[&'a NodeId]) -> NodeErrors {
        let mut entries: Vec<(&NodeId, Vec<&NodeId>)> = Vec::new();
        for &output in failed {
            let reached = self.reached_from(output);
            for &id in &self.order {
                let has_errors = self
                    .checked
                    .get(id.as_str())
                    .is_some_and(|c| !c.reasons.is_empty());
                if !has_errors || !reached.contains(id.as_str()) {
                    continue;
                }
                match entries.iter_mut().find(|(n, _)| *n == id) {
                    Some((_, outputs)) => outputs.push(output),
                    None => entries.push((id, vec![output])),
                }
            }
        }
        let mut map = Map::new();
        for (id, outputs) in entries {
            let reasons = self
                .checked
                .get(id.as_str())
                .map_or(&[][..], |c| &c.reasons);
            let class_type = self.nodes.get(id.as_str()).map(|n| n.1.class_type());
            map.insert(
                id.as_str().to_owned(),
                serde_json::json!({
                    "errors": reasons.iter().map(errors::to_json).collect::<Vec<_>>(),
                    "dependent_outputs": outputs,
                    "class_type": class_type,
                }),
            );
        }
        // `NodeErrors` is built by decoding, the one way it is made outside its module.
        serde_json::from_value(Value::Object(map)).unwrap_or_default()
    }

    /// The nodes whose links `from` followed, directly or not, and `from` itself.
    fn reached_from(&self, from: &'a NodeId) -> HashSet<&'a str> {
        let mut seen = HashSet::from([from.as_str()]);
        let mut todo = vec![from];
        while let Some(id) = todo.pop() {
            for &next in self.follows.get(id.as_str()).into_iter().flatten() {
                if seen.insert(next.as_str()) {
                    todo.push(next);
                }
            }
        }
        seen
    }
}

/// Checks a literal input as the server does: unwraps `{"__value__": v}`, converts to the
/// input's type, then checks `min`, `max` and the combo's options (unless the class validates
/// that input itself).
fn check_literal(class: &str, spec: &InputSpec, raw: &Value) -> Option<ErrorInfo> {
    let value = match raw {
        Value::Object(map) => map.get("__value__").unwrap_or(raw),
        _ => raw,
    };
    let converted = match spec.ty() {
        SlotType::Int => python::to_int(value),
        SlotType::Float => python::to_float(value),
        SlotType::String => Ok(python::to_str(value)),
        SlotType::Boolean => Ok(python::to_bool(value)),
        _ => Ok(Converted::Json(value.clone())),
    };
    let converted = match converted {
        Ok(c) => c,
        Err(exception) => return Some(errors::invalid_input_type(spec, value, &exception)),
    };
    if options_unchecked(class, spec) {
        return None;
    }
    let beyond = |key: &str, side: Ordering| {
        let bound = spec.option(key)?;
        (converted.cmp_number(bound) == Some(side)).then_some(bound)
    };
    if let Some(min) = beyond("min", Ordering::Less) {
        return Some(errors::out_of_range(spec, &converted, min, false));
    }
    if let Some(max) = beyond("max", Ordering::Greater) {
        return Some(errors::out_of_range(spec, &converted, max, true));
    }
    match spec.ty() {
        SlotType::Combo(options) if !options.iter().any(|o| converted.py_eq(o)) => {
            Some(errors::value_not_in_list(spec, &converted, options))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
