//! The validator against the real server: every graph a recording posted to `/prompt` is
//! validated against the recorded `object_info`, and the report must say what the server said
//! (read from the recorded response, not written here). Then the built-in Flux and Qwen graphs,
//! and the routing helpers. (Each kind of error on tiny graphs: `src/workflow/validate/tests.rs`.)

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use comfy_proxy::NodeId;
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::wire::http::{PromptOutcome, decode_prompt};
use comfy_proxy::workflow::{
    FluxParams, Inputs, Lora, ObjectInfo, QwenParams, SAVE_NODE_ID, ValidationReport, Workflow,
    can_run, required_classes_and_models, validate, validate_partial,
};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn object_info() -> ObjectInfo {
    let text = fs::read_to_string(fixture("object_info.json")).unwrap();
    ObjectInfo::from_json(&text).unwrap()
}

/// One recorded `POST /prompt`: the file, the request body and the response (status, body).
struct Posted {
    file: String,
    request: Value,
    status: u16,
    response: Value,
}

fn posted_prompts() -> Vec<Posted> {
    let mut files: Vec<PathBuf> = fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let file = path.file_stem().unwrap().to_string_lossy().into_owned();
        // The open request of each connection (`two_clients` interleaves two).
        let mut open: BTreeMap<u64, Option<Value>> = BTreeMap::new();
        for line in fs::read_to_string(&path).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let conn = event["conn"].as_u64().unwrap_or(0);
            match event["kind"].as_str() {
                Some("http_request") => {
                    let prompt = event["path"] == "/prompt";
                    open.insert(conn, prompt.then(|| event["body"].clone()));
                }
                Some("http_response") => {
                    if let Some(request) = open.remove(&conn).flatten() {
                        out.push(Posted {
                            file: file.clone(),
                            request,
                            status: event["status"].as_u64().unwrap() as u16,
                            response: event["body"].clone(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// A node's errors as comparable text, sorted: the server checks a node's inputs in Python's
/// set order, so only the set of errors is meaningful.
fn error_set(errors: &Value) -> Vec<(String, String, String)> {
    let mut set: Vec<_> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap().to_owned();
            (text("type"), text("message"), text("details"))
        })
        .collect();
    set.sort();
    set
}

/// Every key of the server's `extra_info` (but Python's traceback) has the same value in ours.
fn assert_extra_info(file: &str, node: &str, server: &Value, ours: &Value) {
    for server_error in server.as_array().unwrap() {
        let ours = ours
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == server_error["type"] && e["details"] == server_error["details"])
            .unwrap_or_else(|| panic!("{file}: node {node}: no match for {server_error}"));
        for (key, value) in server_error["extra_info"].as_object().unwrap() {
            if key != "traceback" {
                assert_eq!(
                    &ours["extra_info"][key], value,
                    "{file}: node {node}: {key}"
                );
            }
        }
    }
}

fn check_agreement(posted: &Posted, info: &ObjectInfo) {
    let file = &posted.file;
    let wf = Workflow::from_value(posted.request["prompt"].clone()).unwrap();
    let report = match posted.request.get("partial_execution_targets") {
        Some(targets) => {
            let targets: Vec<NodeId> = serde_json::from_value(targets.clone()).unwrap();
            validate_partial(&wf, info, &targets)
        }
        None => validate(&wf, info),
    };
    let ours = report.to_server_json();
    let server = &posted.response;

    // The typed view agrees: the same outcome, top-level type and node ids.
    let body = serde_json::to_vec(server).unwrap();
    match decode_prompt(&HttpResponse::new(posted.status, body)).unwrap() {
        PromptOutcome::Accepted(accepted) => {
            assert!(
                report.is_accepted(),
                "{file}: the server accepted it: {report}"
            );
            assert_eq!(
                report.node_ids(),
                accepted.node_errors.ids(),
                "{file}: {report}"
            );
        }
        PromptOutcome::Rejected(rejected) => {
            assert_eq!(
                report.error_type(),
                Some(rejected.error_type()),
                "{file}: {report}"
            );
            let mut ids = report.node_ids();
            let mut server_ids = rejected.node_ids();
            ids.sort();
            server_ids.sort();
            assert_eq!(ids, server_ids, "{file}");
            assert_eq!(
                report.to_rejection().unwrap().error_type(),
                rejected.error_type()
            );
        }
        other => panic!("{file}: {other:?}"),
    }

    // And the text: the top-level error word for word, and per node the class, the dependent
    // outputs, each error's type, message and details, and the server's `extra_info`.
    if let Some(error) = server.get("error") {
        for key in ["type", "message", "details"] {
            assert_eq!(ours["error"][key], error[key], "{file}: error.{key}");
        }
    }
    let server_nodes = server["node_errors"].as_object().unwrap();
    let our_nodes = ours["node_errors"].as_object().unwrap();
    assert_eq!(server_nodes.len(), our_nodes.len(), "{file}: {report}");
    for (id, server_node) in server_nodes {
        let node = &our_nodes[id];
        assert_eq!(
            node["class_type"], server_node["class_type"],
            "{file}: node {id}"
        );
        assert_eq!(
            node["dependent_outputs"], server_node["dependent_outputs"],
            "{file}: node {id}"
        );
        assert_eq!(
            error_set(&node["errors"]),
            error_set(&server_node["errors"]),
            "{file}: node {id}"
        );
        assert_extra_info(file, id, &server_node["errors"], &node["errors"]);
    }
}

#[test]
fn agrees_with_the_server_on_every_recorded_prompt() {
    let info = object_info();
    let posted = posted_prompts();
    let mut checked = Vec::new();
    for p in &posted {
        // `validation_no_prompt` posted a body without "prompt": there is no graph to validate
        // (the server's `no_prompt` is about the request body, which the request builder
        // always fills).
        if p.request.get("prompt").is_none() {
            assert_eq!(p.file, "validation_no_prompt");
            continue;
        }
        check_agreement(p, &info);
        checked.push(p.file.as_str());
    }
    for required in [
        "validation_bad_link",
        "validation_bad_values",
        "validation_missing_model",
        "validation_no_outputs",
        "validation_unknown_node",
        "flux_two_loras",
    ] {
        assert!(checked.contains(&required), "{required} was not checked");
    }
    let rejected = posted.iter().filter(|p| p.status == 400).count();
    assert_eq!((checked.len(), rejected), (24, 7));
}

#[test]
fn recorded_rejections_read_as_the_server_wrote_them() {
    let info = object_info();
    let report = |file: &str| {
        let p = posted_prompts()
            .into_iter()
            .find(|p| p.file == file)
            .unwrap();
        validate(
            &Workflow::from_value(p.request["prompt"].clone()).unwrap(),
            &info,
        )
    };
    assert_eq!(
        report("flux_two_loras").to_string(),
        "prompt_outputs_failed_validation: node 6 (LoraLoader): return_type_mismatch clip, \
         received_type(MODEL) mismatch input_type(CLIP)"
    );
    assert_eq!(
        report("validation_missing_model").to_string(),
        "prompt_outputs_failed_validation: node 3 (UNETLoader): value_not_in_list unet_name: \
         'not_there.safetensors' not in ['flux1-dev.sft', 'qwen_image_fp8_e4m3fn.safetensors']"
    );
    assert_eq!(
        report("validation_bad_values").to_string(),
        "prompt_outputs_failed_validation: node 1 (EmptyImage): value_smaller_than_min width; \
         invalid_input_type color, red, invalid literal for int() with base 10: 'red'"
    );
    assert_eq!(
        report("validation_unknown_node").to_string(),
        "invalid_prompt: Cannot execute because node NoSuchNode does not exist. (Node ID '#1')"
    );
    let bad_link = report("validation_bad_link");
    assert_eq!(
        bad_link.to_json(),
        json!({
            "valid": false,
            "error": {"type": "prompt_outputs_failed_validation"},
            "node_errors": {"save_image_websocket_node": {
                "class_type": "SaveImageWebsocket",
                "errors": [{"type": "exception_during_validation", "input_name": "images"}],
            }},
        })
    );
}

// ---- the built-in graphs ----

const LORA_NAMES: [&str; 3] = [
    "lora_a.safetensors",
    "lora_b.safetensors",
    "lora_a.safetensors",
];

fn loras(n: usize) -> Vec<Lora> {
    LORA_NAMES[..n]
        .iter()
        .map(|name| Lora::new(*name).weight(0.7))
        .collect()
}

/// The one error of the report: (node class, error type, input name).
fn only_error(report: &ValidationReport) -> (String, String, String) {
    assert_eq!(
        report.error_type(),
        Some("prompt_outputs_failed_validation"),
        "{report}"
    );
    let all: Vec<_> = report
        .node_errors()
        .iter()
        .flat_map(|(_, node)| {
            node.errors.iter().map(|e| {
                (
                    node.class_type.clone(),
                    e.kind.clone(),
                    e.extra_info["input_name"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    assert_eq!(all.len(), 1, "{report}");
    all.into_iter().next().unwrap()
}

#[test]
fn builtin_graphs_are_valid_on_the_recorded_server() {
    let info = object_info();
    for n in 0..=3 {
        let flux = FluxParams::new("a fox", 1).loras(loras(n)).build().unwrap();
        let report = validate(&flux, &info);
        assert!(report.is_valid(), "flux with {n} LoRAs: {report}");
        assert_eq!(report.outputs(), [NodeId::from(SAVE_NODE_ID)]);
        assert_eq!(
            report.to_string(),
            "valid (outputs: save_image_websocket_node)"
        );

        let qwen = QwenParams::new("a fox", 1).loras(loras(n)).build().unwrap();
        let report = qwen.validate(&info);
        assert!(report.is_valid(), "qwen with {n} LoRAs: {report}");
        assert_eq!(
            report.to_json(),
            json!({"valid": true, "error": null, "node_errors": {}})
        );
    }
}

#[test]
fn builtin_graphs_with_missing_files_name_the_input() {
    let info = object_info();
    let missing = Lora::new("missing.safetensors");
    for n in 0..=2 {
        let mut with_missing = loras(n);
        with_missing.push(missing.clone());
        let flux = FluxParams::new("a fox", 1)
            .loras(with_missing.clone())
            .build()
            .unwrap();
        let want = (
            "LoraLoader".into(),
            "value_not_in_list".into(),
            "lora_name".into(),
        );
        assert_eq!(only_error(&validate(&flux, &info)), want);
        let qwen = QwenParams::new("a fox", 1)
            .loras(with_missing)
            .build()
            .unwrap();
        let want = (
            "LoraLoaderModelOnly".into(),
            "value_not_in_list".into(),
            "lora_name".into(),
        );
        assert_eq!(only_error(&validate(&qwen, &info)), want);
    }
    let flux = FluxParams::new("a fox", 1)
        .unet_name("not_there.safetensors")
        .build()
        .unwrap();
    let report = validate(&flux, &info);
    let want = (
        "UNETLoader".into(),
        "value_not_in_list".into(),
        "unet_name".into(),
    );
    assert_eq!(only_error(&report), want);
    let (_, node) = report.node_errors().iter().next().unwrap();
    assert_eq!(
        node.errors[0].details,
        "unet_name: 'not_there.safetensors' not in ['flux1-dev.sft', \
         'qwen_image_fp8_e4m3fn.safetensors']"
    );
    assert_eq!(node.dependent_outputs, [NodeId::from(SAVE_NODE_ID)]);

    let qwen = QwenParams::new("a fox", 1)
        .vae_name("nope.safetensors")
        .build()
        .unwrap();
    let want = (
        "VAELoader".into(),
        "value_not_in_list".into(),
        "vae_name".into(),
    );
    assert_eq!(only_error(&validate(&qwen, &info)), want);
}

// ---- routing helpers ----

#[test]
fn requirements_of_the_builtin_graphs() {
    let info = object_info();
    let flux = FluxParams::new("a fox", 1).loras(loras(2)).build().unwrap();
    let req = required_classes_and_models(&flux);
    assert!(req.classes.contains("LoraLoader") && req.classes.contains("SaveImageWebsocket"));
    let files: Vec<(&str, &str)> = req
        .models
        .iter()
        .map(|(_, input, file)| (input.as_str(), file.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("vae_name", "ae.sft"),
            ("clip_name1", "t5xxl_fp16.safetensors"),
            ("clip_name2", "clip_l.safetensors"),
            ("unet_name", "flux1-dev.sft"),
            ("lora_name", "lora_a.safetensors"),
            ("lora_name", "lora_b.safetensors"),
        ]
    );
    assert!(can_run(&req, &info));

    let qwen = QwenParams::new("a fox", 1)
        .lora(Lora::new("missing.safetensors"))
        .build()
        .unwrap();
    assert!(!can_run(&required_classes_and_models(&qwen), &info));
    assert!(can_run(
        &required_classes_and_models(&QwenParams::new("a fox", 1).build().unwrap()),
        &info
    ));
    let mut odd = Workflow::new();
    odd.add_node("NoSuchNode", Inputs::new());
    assert!(!can_run(&required_classes_and_models(&odd), &info));
    assert!(!can_run(&req, &ObjectInfo::default()));
}
