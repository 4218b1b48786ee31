//! Each kind of error on tiny graphs, against a tiny `object_info`. (The agreement with the real
//! server, on the recorded graphs, is in `tests/validate.rs`.)

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::NodeId;
use crate::wire::HttpResponse;
use crate::wire::http::{PromptOutcome, decode_prompt};
use crate::workflow::{
    Inputs, Link, ObjectInfo, ValidationReport, Workflow, validate, validate_partial,
};

fn tiny_info() -> ObjectInfo {
    ObjectInfo::from_value(&json!({
        "Loader": {"input": {"required": {"name": [["a.safetensors", "b.safetensors"]]}},
                   "output": ["MODEL", "CLIP"], "output_node": false},
        "Pass": {"input": {"required": {"model": ["MODEL"]}}, "output": ["MODEL"], "output_node": false},
        "Number": {
            "input": {
                "required": {"n": ["INT", {"default": 1, "min": 1, "max": 9}],
                             "x": ["FLOAT", {"min": 0.0, "max": 1.0}]},
                "optional": {"label": ["STRING", {}], "on": ["BOOLEAN", {}]},
            },
            "input_order": {"required": ["n", "x"], "optional": ["label", "on"]},
            "output": ["NUMBER"], "output_node": false,
        },
        "ListOut": {"input": {}, "output": [["x", "y"]], "output_node": false},
        "ComboOut": {"input": {}, "output": ["COMBO"], "output_node": false},
        "AnyOut": {"input": {}, "output": ["*"], "output_node": false},
        "Any": {"input": {"required": {"value": ["*"]}}, "output": [], "output_node": true},
        "Sink": {"input": {"required": {"model": ["MODEL"]}, "optional": {"clip": ["CLIP"]}},
                 "output": [], "output_node": true},
        "Union": {"input": {"required": {"v": ["MODEL,CLIP"]}}, "output": [], "output_node": true},
        "Choose": {
            "input": {"optional": {"legacy": [["x", "y"]], "named": ["COMBO", {"options": ["x", "y"]}]}},
            "output": [], "output_node": true,
        },
        "LoadImage": {"input": {"required": {"image": [["example.png"], {"image_upload": true}]}},
                      "output": ["IMAGE"], "output_node": false},
    }))
    .unwrap()
}

fn graph(nodes: Value) -> Workflow {
    Workflow::from_value(nodes).unwrap()
}

/// Per node with errors: (id, [(type, details)]).
fn errors_of(report: &ValidationReport) -> Vec<(String, Vec<(String, String)>)> {
    report
        .node_errors()
        .iter()
        .map(|(id, node)| {
            let errors = node
                .errors
                .iter()
                .map(|e| (e.kind.clone(), e.details.clone()))
                .collect();
            (id.to_string(), errors)
        })
        .collect()
}

fn one_error(report: &ValidationReport) -> (String, String, String) {
    let errors = errors_of(report);
    assert_eq!(errors.len(), 1, "{report}");
    let (id, errors) = errors.into_iter().next().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    let (kind, details) = errors.into_iter().next().unwrap();
    (id, kind, details)
}

fn number(n: Value, x: Value) -> Workflow {
    graph(json!({
        "1": {"class_type": "Number", "inputs": {"n": n, "x": x}},
        "2": {"class_type": "Any", "inputs": {"value": ["1", 0]}},
    }))
}

#[test]
fn values_below_min_and_above_max() {
    let info = tiny_info();
    let message = |n, x| {
        let report = validate(&number(n, x), &info);
        let (_, node) = report.node_errors().iter().next().unwrap();
        let e = &node.errors[0];
        (
            e.kind.clone(),
            e.message.clone(),
            e.details.clone(),
            e.extra_info["received_value"].clone(),
        )
    };
    let row = |k: &str, m: &str, d: &str, v: Value| (k.to_owned(), m.to_owned(), d.to_owned(), v);
    assert_eq!(
        message(json!(0), json!(0.5)),
        row(
            "value_smaller_than_min",
            "Value 0 smaller than min of 1",
            "n",
            json!(0)
        )
    );
    assert_eq!(
        message(json!(10), json!(0.5)),
        row(
            "value_bigger_than_max",
            "Value 10 bigger than max of 9",
            "n",
            json!(10)
        )
    );
    assert_eq!(
        message(json!(5), json!(1.5)),
        row(
            "value_bigger_than_max",
            "Value 1.5 bigger than max of 1.0",
            "x",
            json!(1.5)
        )
    );
    // The server converts first: the integer -1 is the float -1.0 for a FLOAT input.
    assert_eq!(
        message(json!(5), json!(-1)),
        row(
            "value_smaller_than_min",
            "Value -1.0 smaller than min of 0.0",
            "x",
            json!(-1.0)
        )
    );
    // `int(9.9)` is 9: in range.
    assert!(validate(&number(json!(9.9), json!(1)), &info).is_valid());
}

#[test]
fn literals_of_the_wrong_type() {
    let info = tiny_info();
    let report = validate(&number(json!("red"), json!(0.5)), &info);
    assert_eq!(
        one_error(&report),
        (
            "1".into(),
            "invalid_input_type".into(),
            "n, red, invalid literal for int() with base 10: 'red'".into()
        )
    );
    let (_, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(
        node.errors[0].message,
        "Failed to convert an input value to a INT value"
    );
    assert_eq!(
        node.errors[0].extra_info["input_config"],
        json!(["INT", {"default": 1, "min": 1, "max": 9}])
    );

    let report = validate(&number(json!(3), json!(null)), &info);
    assert_eq!(
        one_error(&report).2,
        "x, None, float() argument must be a string or a real number, not 'NoneType'"
    );
    // What Python converts is fine: numeric strings, bools, `{"__value__": v}`; and anything
    // becomes a STRING or a BOOLEAN.
    for (n, x) in [
        (json!("7"), json!(" 0.25 ")),
        (json!(true), json!(false)),
        (json!({"__value__": 2}), json!(1)),
    ] {
        assert!(validate(&number(n, x), &info).is_valid());
    }
    let wf = graph(json!({
        "1": {"class_type": "Number", "inputs": {"n": 1, "x": 0, "label": 5, "on": "yes"}},
        "2": {"class_type": "Any", "inputs": {"value": ["1", 0]}},
    }));
    assert!(validate(&wf, &info).is_valid());
}

#[test]
fn links_of_the_wrong_type() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "Sink", "inputs": {"model": ["1", 1], "clip": ["1", 1]}},
    }));
    let report = validate(&wf, &info);
    assert_eq!(
        one_error(&report),
        (
            "2".into(),
            "return_type_mismatch".into(),
            "model, received_type(CLIP) mismatch input_type(MODEL)".into()
        )
    );
    let (_, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(node.errors[0].extra_info["received_type"], "CLIP");
    assert_eq!(node.errors[0].extra_info["linked_node"], json!(["1", 1]));

    // A union input takes any of its types.
    let union = |link: Value| {
        graph(json!({
            "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
            "3": {"class_type": "Number", "inputs": {"n": 1, "x": 0}},
            "2": {"class_type": "Union", "inputs": {"v": link}},
        }))
    };
    assert!(validate(&union(json!(["1", 0])), &info).is_valid());
    assert!(validate(&union(json!(["1", 1])), &info).is_valid());
    assert_eq!(
        one_error(&validate(&union(json!(["3", 0])), &info)).2,
        "v, received_type(NUMBER) mismatch input_type(MODEL,CLIP)"
    );
}

#[test]
fn the_wildcard_matches_anything() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "Any", "inputs": {"value": ["1", 1]}},
        "3": {"class_type": "AnyOut", "inputs": {}},
        "4": {"class_type": "Sink", "inputs": {"model": ["3", 0], "clip": ["3", 0]}},
        "5": {"class_type": "Choose", "inputs": {"legacy": ["3", 0], "named": ["3", 0]}},
    }));
    let report = validate(&wf, &info);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.outputs().len(), 3);
}

#[test]
fn combo_inputs_and_links() {
    let info = tiny_info();
    let choose = |inputs: Value| {
        let mut nodes = json!({
            "l": {"class_type": "ListOut", "inputs": {}},
            "c": {"class_type": "ComboOut", "inputs": {}},
            "m": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        });
        nodes["9"] = json!({"class_type": "Choose", "inputs": inputs});
        validate(&graph(nodes), &info)
    };
    // Literals must be options; a bare list and a "COMBO" input alike.
    assert!(choose(json!({"legacy": "x", "named": "y"})).is_valid());
    assert_eq!(
        one_error(&choose(json!({"legacy": "z"}))),
        (
            "9".into(),
            "value_not_in_list".into(),
            "legacy: 'z' not in ['x', 'y']".into()
        )
    );
    assert_eq!(
        one_error(&choose(json!({"named": 1}))),
        (
            "9".into(),
            "value_not_in_list".into(),
            "named: '1' not in ['x', 'y']".into()
        )
    );
    // A "COMBO" input takes any combo output; a bare list only the same list.
    assert!(choose(json!({"named": ["c", 0]})).is_valid());
    assert!(choose(json!({"named": ["l", 0]})).is_valid());
    assert!(choose(json!({"legacy": ["l", 0]})).is_valid());
    assert_eq!(
        one_error(&choose(json!({"legacy": ["c", 0]}))).2,
        "legacy, received_type(COMBO) mismatch input_type(['x', 'y'])"
    );
    assert_eq!(
        one_error(&choose(json!({"named": ["m", 0]}))).2,
        "named, received_type(MODEL) mismatch input_type(COMBO)"
    );
    // Long lists are summarised, and their config left out, as the server does.
    let many: Vec<String> = (0..21).map(|i| format!("m{i}.safetensors")).collect();
    let info = ObjectInfo::from_value(&json!({
        "Big": {"input": {"required": {"name": [many]}}, "output": [], "output_node": true},
    }))
    .unwrap();
    let wf = graph(json!({"1": {"class_type": "Big", "inputs": {"name": "zz"}}}));
    let report = validate(&wf, &info);
    let (_, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(
        node.errors[0].details,
        "name: 'zz' not in (list of length 21)"
    );
    assert_eq!(node.errors[0].extra_info["input_config"], Value::Null);
}

#[test]
fn upload_inputs_are_not_checked_against_their_list() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": "uploaded_just_now.png [input]"}},
        "2": {"class_type": "Any", "inputs": {"value": ["1", 0]}},
    }));
    assert!(validate(&wf, &info).is_valid());
}

#[test]
fn missing_required_inputs() {
    let info = tiny_info();
    let wf = graph(json!({"1": {"class_type": "Sink", "inputs": {}}}));
    let report = validate(&wf, &info);
    assert_eq!(
        one_error(&report),
        ("1".into(), "required_input_missing".into(), "model".into())
    );
    let (_, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(node.errors[0].message, "Required input is missing");
    assert_eq!(node.errors[0].extra_info, json!({"input_name": "model"}));
    // The output's own errors make the top-level details.
    assert_eq!(
        report.error().unwrap().details,
        "Required input is missing: model"
    );
}

#[test]
fn dangling_links_are_the_servers_exceptions() {
    let info = tiny_info();
    // On an output node: the server's KeyError, caught for the whole output.
    let wf = graph(json!({"1": {"class_type": "Sink", "inputs": {"model": ["99", 0]}}}));
    let report = validate(&wf, &info);
    assert_eq!(
        one_error(&report),
        (
            "1".into(),
            "exception_during_validation".into(),
            "'99'".into()
        )
    );
    assert_eq!(
        report.error().unwrap().details,
        "Exception when validating node: '99'"
    );
    // On a node further up: the node that asked for it catches it and puts it on that node,
    // naming its own input and link.
    let wf = graph(json!({
        "1": {"class_type": "Pass", "inputs": {"model": ["99", 0]}},
        "2": {"class_type": "Sink", "inputs": {"model": ["1", 0]}},
    }));
    let report = validate(&wf, &info);
    assert_eq!(
        one_error(&report),
        (
            "1".into(),
            "exception_during_inner_validation".into(),
            "'99'".into()
        )
    );
    let (_, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(node.errors[0].extra_info["exception_type"], "KeyError");
    assert_eq!(node.errors[0].extra_info["linked_node"], json!(["1", 0]));
    assert_eq!(node.dependent_outputs, [NodeId::from("2")]);
    assert_eq!(report.error().unwrap().details, "");
}

#[test]
fn links_to_outputs_a_class_does_not_have() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "Sink", "inputs": {"model": ["1", 2]}},
    }));
    assert_eq!(
        one_error(&validate(&wf, &info)),
        (
            "2".into(),
            "exception_during_validation".into(),
            "tuple index out of range".into()
        )
    );
    // A list that is not [node_id, output_index] at all.
    let mut wf = graph(json!({"1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}}}));
    wf.add_node_with(
        "Sink",
        Inputs::new().with("model", json!(["1", 0, 0])),
        Some("2"),
        None,
    )
    .unwrap();
    assert_eq!(
        one_error(&validate(&wf, &info)),
        ("2".into(), "bad_linked_input".into(), "model".into())
    );
    // Two-item lists that are not well-formed links go where the server's Python takes them.
    let with_list = |list: Value| {
        let mut wf =
            graph(json!({"1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}}}));
        let inputs = Inputs::new().with("model", list);
        wf.add_node_with("Sink", inputs, Some("2"), None).unwrap();
        validate(&wf, &info)
    };
    assert_eq!(
        one_error(&with_list(json!([1, 0]))),
        ("2".into(), "exception_during_validation".into(), "1".into())
    );
    assert_eq!(
        one_error(&with_list(json!(["1", "0"]))).2,
        "tuple indices must be integers or slices, not str"
    );
    assert!(with_list(json!(["1", -2])).is_valid());
    assert_eq!(
        one_error(&with_list(json!(["1", -1]))).2,
        "model, received_type(CLIP) mismatch input_type(MODEL)"
    );
}

#[test]
fn graphs_without_outputs_and_unknown_classes() {
    let info = tiny_info();
    let wf = graph(json!({"1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}}}));
    let report = validate(&wf, &info);
    assert_eq!(report.error_type(), Some("prompt_no_outputs"));
    assert_eq!(
        report.to_string(),
        "prompt_no_outputs: Prompt has no outputs"
    );
    assert!(report.node_ids().is_empty());

    // Any unknown class refuses the whole prompt, even one no output reaches.
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "Sink", "inputs": {"model": ["1", 0]}},
        "x": {"class_type": "Nope", "inputs": {}},
    }));
    let report = validate(&wf, &info);
    assert_eq!(report.error_type(), Some("invalid_prompt"));
    let error = report.error().unwrap();
    assert_eq!(
        error.message,
        "Cannot execute because node Nope does not exist."
    );
    assert_eq!(error.details, "Node ID '#x'");
    assert!(report.node_errors().is_empty());
}

#[test]
fn only_nodes_an_output_reaches_are_checked() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "a.safetensors"}},
        "2": {"class_type": "Sink", "inputs": {"model": ["1", 0]}},
        "3": {"class_type": "Number", "inputs": {"n": 0, "x": "bad"}},
        "4": {"class_type": "Pass", "inputs": {}},
    }));
    assert!(validate(&wf, &info).is_valid());
}

#[test]
fn some_outputs_fail_and_the_rest_run() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "missing.safetensors"}},
        "2": {"class_type": "Pass", "inputs": {"model": ["1", 0]}},
        "a": {"class_type": "Sink", "inputs": {"model": ["2", 0]}},
        "b": {"class_type": "Sink", "inputs": {"model": ["1", 0]}},
        "ok": {"class_type": "Any", "inputs": {"value": 1}},
    }));
    let report = validate(&wf, &info);
    assert!(report.is_accepted() && !report.is_valid());
    assert_eq!(report.error_type(), None);
    assert_eq!(report.outputs(), [NodeId::from("ok")]);
    let (id, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(id, "1");
    assert_eq!(
        node.dependent_outputs,
        [NodeId::from("a"), NodeId::from("b")]
    );
    assert_eq!(
        report.to_string(),
        "valid for outputs ok; skipped: node 1 (Loader): value_not_in_list name: \
         'missing.safetensors' not in ['a.safetensors', 'b.safetensors']"
    );
    assert_eq!(report.to_json()["valid"], false);
    assert_eq!(report.to_json()["error"], Value::Null);

    // Without the good output, the server refuses the prompt.
    let report = validate_partial(&wf, &info, &[NodeId::from("a"), NodeId::from("b")]);
    assert_eq!(
        report.error_type(),
        Some("prompt_outputs_failed_validation")
    );
    // Targets that are not output nodes are ignored, as the server ignores them.
    let report = validate_partial(&wf, &info, &[NodeId::from("ok"), NodeId::from("1")]);
    assert!(report.is_valid());
    let report = validate_partial(&wf, &info, &[NodeId::from("1")]);
    assert_eq!(report.error_type(), Some("prompt_no_outputs"));
}

#[test]
fn dependent_outputs_are_the_outputs_that_reach_the_node() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Loader", "inputs": {"name": "missing.safetensors"}},
        "a": {"class_type": "Sink", "inputs": {"model": ["1", 0]}},
        "b": {"class_type": "Sink", "inputs": {}},
    }));
    let report = validate(&wf, &info);
    let deps: BTreeMap<String, Vec<NodeId>> = report
        .node_errors()
        .iter()
        .map(|(id, n)| (id.to_string(), n.dependent_outputs.clone()))
        .collect();
    assert_eq!(deps["1"], [NodeId::from("a")]);
    assert_eq!(deps["b"], [NodeId::from("b")]);
    // Only the outputs' own errors make the top-level details.
    assert_eq!(
        report.error().unwrap().details,
        "Required input is missing: model"
    );
}

#[test]
fn cycles_are_reported_not_followed_forever() {
    let info = tiny_info();
    let wf = graph(json!({
        "1": {"class_type": "Pass", "inputs": {"model": ["2", 0]}},
        "2": {"class_type": "Pass", "inputs": {"model": ["1", 0]}},
        "3": {"class_type": "Sink", "inputs": {"model": ["1", 0]}},
    }));
    let report = validate(&wf, &info);
    let (id, kind, details) = one_error(&report);
    assert_eq!(
        (id.as_str(), kind.as_str()),
        ("2", "exception_during_inner_validation")
    );
    assert!(details.contains("cycle through node '1'"), "{details}");

    // A long chain is checked without deep recursion.
    let mut wf = Workflow::new();
    let mut last = wf.add_node("Loader", Inputs::new().with("name", "a.safetensors"));
    for _ in 0..50_000 {
        last = wf.add_node("Pass", Inputs::new().with("model", Link::new(&last, 0)));
    }
    wf.add_node("Sink", Inputs::new().with("model", Link::new(&last, 0)));
    assert!(validate(&wf, &info).is_valid());
}

#[test]
fn the_server_json_is_a_rejection_body() {
    let info = tiny_info();
    let wf = number(json!(0), json!(0.5));
    let body = validate(&wf, &info).to_server_json();
    let resp = HttpResponse::new(400, serde_json::to_vec(&body).unwrap());
    let PromptOutcome::Rejected(rejected) = decode_prompt(&resp).unwrap() else {
        panic!("not a rejection");
    };
    assert_eq!(rejected.node_ids(), [&NodeId::from("1")]);
    assert_eq!(Some(*rejected), validate(&wf, &info).to_rejection());
}
