//! `POST /prompt`: reading the body, validating the graph as the real server does, and queueing
//! the prompt in simulate or replay mode.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::graph::{self, Fault};
use super::http::json_response;
use super::replay::Answer;
use super::{Audience, MockResponse, MockServer, pyjson};
use comfy_proxy::ids::{NodeId, PromptId};
use comfy_proxy::workflow::Workflow;

/// How a queued prompt will run.
#[derive(Debug, Clone)]
pub(super) enum Mode {
    /// By the message grammar, its nodes in this order.
    Simulate { order: Vec<NodeId> },
    /// By playing the recording with this index.
    Replay(usize),
}

/// A queued prompt.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub id: String,
    /// The `number` as answered: an integer from the counter, or the float the client gave.
    pub number: Value,
    /// The queue position (lower runs first).
    pub sort: f64,
    /// Insertion order, among equal positions.
    pub seq: u64,
    /// The graph as posted.
    pub graph: Value,
    pub workflow: Workflow,
    pub extra_data: Map<String, Value>,
    pub outputs: Vec<NodeId>,
    pub audience: Audience,
    pub queued_at: Duration,
    pub mode: Mode,
}

impl Job {
    /// The 5-tuple of `/queue` and `/history`: `[number, id, graph, extra_data, outputs]`.
    pub fn item(&self) -> Value {
        let outputs: Vec<&str> = self.outputs.iter().map(NodeId::as_str).collect();
        json!([
            self.number,
            self.id,
            self.graph,
            Value::Object(self.extra_data.clone()),
            outputs
        ])
    }
}

/// A 400 of `/prompt`: `{"error": {type, message, details, extra_info}, "node_errors"}`.
fn rejection(kind: &str, message: &str, details: &str, node_errors: Value) -> MockResponse {
    json_response(
        400,
        &json!({
            "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
            "node_errors": node_errors,
        }),
    )
}

/// Python's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The `node_errors` of outputs that cannot run, keyed by the node at fault.
fn fault_errors(wf: &Workflow, failed: &[(NodeId, Fault)]) -> (Value, String) {
    let mut errors = Map::new();
    let mut details = String::new();
    for (output, fault) in failed {
        let (node, error) = match fault {
            Fault::MissingLink { node, missing } => {
                let quoted = format!("'{missing}'");
                if details.is_empty() {
                    details = format!("Exception when validating node: {quoted}");
                }
                let error = json!({
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": quoted,
                    "extra_info": {"exception_type": "KeyError", "traceback": []},
                });
                (node, error)
            }
            Fault::Cycle { node } => {
                let error = json!({
                    "type": "dependency_cycle",
                    "message": "Dependency cycle detected",
                    "details": format!("Node {node} depends on itself"),
                    "extra_info": {},
                });
                (node, error)
            }
        };
        let entry = errors.entry(node.as_str().to_owned()).or_insert_with(|| {
            json!({
                "errors": [],
                "dependent_outputs": [],
                "class_type": wf.class_of(node.as_str()).unwrap_or_default(),
            })
        });
        if let Some(list) = entry.get_mut("errors").and_then(Value::as_array_mut) {
            if !list.contains(&error) {
                list.push(error);
            }
        }
        if let Some(list) = entry
            .get_mut("dependent_outputs")
            .and_then(Value::as_array_mut)
        {
            list.push(json!(output.as_str()));
        }
    }
    (Value::Object(errors), details)
}

impl MockServer {
    pub(super) fn post_prompt(&mut self, now: Duration, body: &[u8]) -> MockResponse {
        let request = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return rejection(
                    "invalid_prompt",
                    "Invalid request body",
                    "the body must be a JSON object",
                    json!({}),
                );
            }
            Err(e) => {
                return rejection(
                    "invalid_prompt",
                    "Invalid request body",
                    &e.to_string(),
                    json!({}),
                );
            }
        };
        let Some(prompt) = request.get("prompt") else {
            return rejection(
                "no_prompt",
                "No prompt provided",
                "No prompt provided",
                json!({}),
            );
        };
        // Options first: a bad one refuses the request before the graph is looked at.
        let number = match request.get("number") {
            None => None,
            Some(n) => match n
                .as_f64()
                .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(f) if f.is_finite() => Some(f),
                _ => {
                    return rejection(
                        "invalid_prompt",
                        "Invalid number",
                        "\"number\" must be a finite number",
                        json!({}),
                    );
                }
            },
        };
        let mut extra_data = match request.get("extra_data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(extra)) => extra.clone(),
            Some(_) => {
                return rejection(
                    "invalid_prompt",
                    "Invalid extra_data",
                    "\"extra_data\" must be an object",
                    json!({}),
                );
            }
        };
        let audience = match request.get("client_id") {
            None => Audience::Everyone,
            Some(Value::String(id)) => Audience::Client(id.clone()),
            Some(_) => Audience::Nobody,
        };
        if let Some(id) = request.get("client_id") {
            extra_data.insert("client_id".to_owned(), id.clone());
        }
        let targets: Option<Vec<&str>> = request
            .get("partial_execution_targets")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect());

        let workflow = match self.check_nodes(prompt) {
            Ok(wf) => wf,
            Err(response) => return response,
        };
        if let Some(errors) = self.missing_inputs(prompt) {
            return rejection(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                "",
                errors,
            );
        }
        let recording = self.find_recording(prompt, &workflow);
        let mut node_errors = json!({});
        let (outputs, mode) = match recording {
            Some(index) => match &self.recordings[index].answer {
                Answer::Rejected { status, body } => {
                    let body = serde_json::from_slice::<Value>(body)
                        .map(|v| bytes::Bytes::from(pyjson::dumps(&v)))
                        .unwrap_or_else(|_| body.clone());
                    return MockResponse {
                        status: *status,
                        content_type: "application/json; charset=utf-8",
                        body,
                    };
                }
                Answer::Accepted {
                    node_errors: recorded,
                    ..
                } => {
                    if recorded.is_object() {
                        node_errors = recorded.clone();
                    }
                    let outputs = self.outputs_of(&workflow, targets.as_deref());
                    (outputs, Mode::Replay(index))
                }
            },
            None => {
                let outputs = self.outputs_of(&workflow, targets.as_deref());
                if outputs.is_empty() {
                    return rejection("prompt_no_outputs", "Prompt has no outputs", "", json!({}));
                }
                let plan = graph::plan(&workflow, &outputs);
                if !plan.failed.is_empty() {
                    let (errors, details) = fault_errors(&workflow, &plan.failed);
                    if plan.outputs.is_empty() {
                        return rejection(
                            "prompt_outputs_failed_validation",
                            "Prompt outputs failed validation",
                            &details,
                            errors,
                        );
                    }
                    node_errors = errors;
                }
                (plan.outputs, Mode::Simulate { order: plan.order })
            }
        };

        let id = match request.get("prompt_id") {
            None | Some(Value::Null) => PromptId::from_random(self.made_up_bits(0x7))
                .as_str()
                .to_owned(),
            Some(Value::String(id)) => id.clone(),
            Some(other) => pyjson::dumps(other),
        };
        let counter = self.number;
        self.number += 1;
        let front = request.get("front").is_some_and(truthy);
        let (number, sort) = match number {
            Some(f) => (json!(f), f),
            None if front => (json!(-(counter as i64)), -(counter as f64)),
            None => (json!(counter), counter as f64),
        };
        self.seq += 1;
        let job = Job {
            id: id.clone(),
            number: number.clone(),
            sort,
            seq: self.seq,
            graph: prompt.clone(),
            workflow,
            extra_data,
            outputs,
            audience,
            queued_at: now,
            mode,
        };
        let at = self
            .pending
            .partition_point(|j| (j.sort, j.seq) <= (job.sort, job.seq));
        self.pending.insert(at, job);
        self.broadcast_status();
        json_response(
            200,
            &json!({"prompt_id": id, "number": number, "node_errors": node_errors}),
        )
    }

    /// Every node has a class (known to `object_info`, when the mock has it) and the graph
    /// parses; else the real server's `invalid_prompt`.
    fn check_nodes(&self, prompt: &Value) -> Result<Workflow, MockResponse> {
        let Value::Object(nodes) = prompt else {
            return Err(rejection(
                "invalid_prompt",
                "Invalid prompt",
                "the prompt must be an object of node id -> node",
                json!({}),
            ));
        };
        for (id, node) in nodes {
            let details = format!("Node ID '#{id}'");
            let Some(class) = node.get("class_type").and_then(Value::as_str) else {
                return Err(rejection(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    &details,
                    json!({}),
                ));
            };
            if let Some(info) = &self.object_info {
                if info.get(class).is_none() {
                    return Err(rejection(
                        "invalid_prompt",
                        &format!("Cannot execute because node {class} does not exist."),
                        &details,
                        json!({}),
                    ));
                }
            }
        }
        Workflow::from_value(prompt.clone()).map_err(|e| {
            rejection(
                "invalid_prompt",
                "Invalid prompt",
                &e.to_string(),
                json!({}),
            )
        })
    }

    /// The output nodes of `wf`, in graph order, limited to `targets` when given.
    fn outputs_of(&self, wf: &Workflow, targets: Option<&[&str]>) -> Vec<NodeId> {
        wf.iter()
            .filter(|(id, n)| {
                graph::is_output(n.class_type(), self.object_info.as_ref())
                    && targets.is_none_or(|t| t.contains(&id.as_str()))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The recording whose graph equals `prompt`, else the first whose shape equals its shape.
    fn find_recording(&self, prompt: &Value, wf: &Workflow) -> Option<usize> {
        if self.recordings.is_empty() {
            return None;
        }
        if let Some(i) = self.recordings.iter().position(|r| r.graph == *prompt) {
            return Some(i);
        }
        let shape = graph::shape(wf);
        self.recordings.iter().position(|r| r.shape == shape)
    }
}
