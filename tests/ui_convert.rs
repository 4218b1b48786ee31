//! UI-format workflows (as the ComfyUI frontend saves them) converted to the API format against
//! a real server's `object_info`: each fixture in `fixtures/ui/` must convert to the API graph
//! beside it (`NAME.api.json`) and that graph must pass the validator.

use std::fs;
use std::path::{Path, PathBuf};

use comfy_proxy::workflow::{ObjectInfo, Workflow, ui, validate};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn object_info() -> ObjectInfo {
    let text = fs::read_to_string(fixture("object_info.json")).unwrap();
    ObjectInfo::from_json(&text).unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// Converts `ui/NAME.json`, checks it equals `ui/NAME.api.json` and validates.
fn check(name: &str) -> Workflow {
    let info = object_info();
    let wf = ui::to_api(&json(&format!("ui/{name}.json")), &info)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let expected = json(&format!("ui/{name}.api.json"));
    assert_eq!(
        wf.to_json(),
        expected,
        "{name}: got {}",
        serde_json::to_string_pretty(&wf.to_json()).unwrap()
    );
    let report = validate(&wf, &info);
    assert!(report.is_valid(), "{name}: {report}");
    wf
}

#[test]
fn widgets_links_reroutes_primitives_muted_bypassed_notes() {
    let wf = check("flux_features");
    // The note, the reroute, the primitive, the muted and the bypassed nodes are gone.
    for gone in ["5", "10", "12", "14", "15", "18", "19"] {
        assert!(!wf.contains(gone), "{gone}");
    }
}

#[test]
fn subgraphs_flatten_with_promoted_widgets_nesting_and_passthrough() {
    let wf = check("subgraphs");
    // The instances themselves are not nodes of the API graph.
    for gone in ["10", "12", "12:2"] {
        assert!(!wf.contains(gone), "{gone}");
    }
}

#[test]
fn group_nodes_flatten_with_their_widget_values() {
    check("group_node");
}

fn convert(doc: Value) -> Result<Workflow, ui::UiError> {
    ui::to_api(&doc, &object_info())
}

fn input(wf: &Workflow, node: &str, name: &str) -> Value {
    wf.node(node)
        .unwrap_or_else(|| panic!("no node {node}"))
        .input(name)
        .unwrap_or_else(|| panic!("no input {node}.{name}"))
        .to_json()
}

#[test]
fn an_upload_buttons_value_is_skipped_in_a_group_node() {
    // The group's values: LoadImage's image and its upload button, then EmptyImage's four.
    let wf = convert(serde_json::json!({
        "nodes": [
            {"id": 4, "type": "workflow>load_and_make", "mode": 0,
             "widgets_values": ["example.png", "image", 8, 16, 1, 0]},
        ],
        "extra": {"groupNodes": {"load_and_make": {
            "nodes": [
                {"type": "LoadImage", "index": 0, "widgets_values": ["other.png", "image"],
                 "outputs": [{"name": "IMAGE", "type": "IMAGE"}, {"name": "MASK", "type": "MASK"}]},
                {"type": "EmptyImage", "index": 1, "widgets_values": [512, 512, 1, 0],
                 "outputs": [{"name": "IMAGE", "type": "IMAGE"}]},
            ],
            "links": [], "external": [],
        }}},
    }))
    .unwrap();
    assert_eq!(input(&wf, "4:0", "image"), "example.png");
    assert_eq!(input(&wf, "4:1", "width"), 8);
    assert_eq!(input(&wf, "4:1", "height"), 16);
}

#[test]
fn dict_widget_values_and_object_links() {
    // Schema 1 writes links as objects; some nodes save widgets_values by name.
    let wf = convert(serde_json::json!({
        "version": 1,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0,
             "widgets_values": {"height": 16, "width": 8, "color": 255}},
            {"id": 2, "type": "SaveImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 5}],
             "widgets_values": {"filename_prefix": "dict"}},
        ],
        "links": [{"id": 5, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0,
                   "type": "IMAGE"}],
    }))
    .unwrap();
    assert_eq!(input(&wf, "1", "width"), 8);
    assert_eq!(input(&wf, "1", "height"), 16);
    // Missing from the object: the declared default, as the frontend's widget would hold.
    assert_eq!(input(&wf, "1", "batch_size"), 1);
    assert_eq!(input(&wf, "1", "color"), 255);
    assert_eq!(input(&wf, "2", "images"), serde_json::json!(["1", 0]));
    assert!(validate(&wf, &object_info()).is_valid());
}

#[test]
fn an_input_fed_by_a_muted_node_is_left_out() {
    let wf = convert(serde_json::json!({
        "nodes": [
            {"id": 1, "type": "PrimitiveString", "mode": 2, "widgets_values": ["x"]},
            {"id": 2, "type": "StringConcatenate", "mode": 0,
             "inputs": [{"name": "string_a", "type": "STRING", "link": 1,
                         "widget": {"name": "string_a"}}],
             "widgets_values": ["a", "b", "-"]},
        ],
        "links": [[1, 1, 0, 2, 0, "STRING"]],
    }))
    .unwrap();
    let node = wf.node("2").unwrap();
    assert!(node.input("string_a").is_none());
    assert_eq!(input(&wf, "2", "string_b"), "b");
    assert!(!wf.contains("1"));

    // Frontend-only nodes ignore their mode, as in the frontend: a muted primitive still sets
    // its target, a muted reroute still passes its input on.
    let wf = convert(serde_json::json!({
        "nodes": [
            {"id": 1, "type": "PrimitiveNode", "mode": 2, "widgets_values": ["p", "fixed"]},
            {"id": 2, "type": "PrimitiveString", "mode": 0, "widgets_values": ["r"]},
            {"id": 3, "type": "Reroute", "mode": 2,
             "inputs": [{"name": "", "type": "*", "link": 2}]},
            {"id": 4, "type": "StringConcatenate", "mode": 0,
             "inputs": [{"name": "string_a", "type": "STRING", "link": 1,
                         "widget": {"name": "string_a"}},
                        {"name": "string_b", "type": "STRING", "link": 3,
                         "widget": {"name": "string_b"}}],
             "widgets_values": ["a", "b", "-"]},
        ],
        "links": [[1, 1, 0, 4, 0, "STRING"], [2, 2, 0, 3, 0, "STRING"],
                  [3, 3, 0, 4, 1, "STRING"]],
    }))
    .unwrap();
    assert_eq!(input(&wf, "4", "string_a"), "p");
    assert_eq!(input(&wf, "4", "string_b"), serde_json::json!(["2", 0]));
}

#[test]
fn a_bypassed_node_passes_on_the_input_of_the_wanted_type() {
    // ImageBlend bypassed: IMAGE out <- its first IMAGE input; a LATENT consumer of a bypassed
    // LatentUpscale gets the latent, not the first input.
    let wf = convert(serde_json::json!({
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [8, 8, 1, 0]},
            {"id": 2, "type": "EmptyImage", "mode": 0, "widgets_values": [4, 4, 1, 0]},
            {"id": 3, "type": "ImageBlend", "mode": 4,
             "inputs": [{"name": "image1", "type": "IMAGE", "link": 1},
                        {"name": "image2", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
             "widgets_values": [0.5, "normal"]},
            {"id": 4, "type": "PreviewImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]},
            {"id": 5, "type": "EmptyLatentImage", "mode": 0, "widgets_values": [64, 64, 1]},
            {"id": 6, "type": "ImageBlend", "mode": 4,
             "inputs": [{"name": "image1", "type": "IMAGE", "link": null},
                        {"name": "other", "type": "LATENT", "link": 5}],
             "outputs": [{"name": "LATENT", "type": "LATENT", "links": [6]}]},
            {"id": 7, "type": "RepeatLatentBatch", "mode": 0,
             "inputs": [{"name": "samples", "type": "LATENT", "link": 6}],
             "widgets_values": [2]},
        ],
        "links": [[1, 1, 0, 3, 0, "IMAGE"], [2, 2, 0, 3, 1, "IMAGE"], [3, 3, 0, 4, 0, "IMAGE"],
                  [5, 5, 0, 6, 1, "LATENT"], [6, 6, 0, 7, 0, "LATENT"]],
    }))
    .unwrap();
    assert_eq!(input(&wf, "4", "images"), serde_json::json!(["1", 0]));
    assert_eq!(input(&wf, "7", "samples"), serde_json::json!(["5", 0]));
    assert!(!wf.contains("3") && !wf.contains("6"));
}

#[test]
fn typed_errors_name_the_node() {
    let err = convert(serde_json::json!({
        "nodes": [{"id": 4, "type": "NoSuchNode", "mode": 0}], "links": []
    }))
    .unwrap_err();
    assert!(
        matches!(&err, ui::UiError::UnknownClass { node, class } if node == "4" && class == "NoSuchNode"),
        "{err}"
    );
    // Unknown but muted or bypassed: left out, as the frontend does.
    assert!(
        convert(serde_json::json!({"nodes": [{"id": 4, "type": "NoSuchNode", "mode": 2}]}))
            .unwrap()
            .is_empty()
    );

    let err = convert(serde_json::json!({
        "nodes": [{"id": 2, "type": "PreviewImage", "mode": 0,
                   "inputs": [{"name": "images", "type": "IMAGE", "link": 9}]}],
        "links": [],
    }))
    .unwrap_err();
    assert!(
        matches!(&err, ui::UiError::MissingLink { node, input, link: 9, .. } if node == "2" && input == "images"),
        "{err}"
    );

    let err = convert(serde_json::json!({
        "nodes": [{"id": 2, "type": "PreviewImage", "mode": 0,
                   "inputs": [{"name": "images", "type": "IMAGE", "link": 9}]}],
        "links": [[9, 77, 0, 2, 0, "IMAGE"]],
    }))
    .unwrap_err();
    assert!(err.to_string().contains("origin node 77"), "{err}");

    // PrimitiveString's value has no default: a node saved with no values cannot be converted.
    let err = convert(serde_json::json!({
        "nodes": [{"id": 3, "type": "PrimitiveString", "mode": 0, "widgets_values": []}],
    }))
    .unwrap_err();
    assert!(
        matches!(&err, ui::UiError::BadWidgetCount { node, found: 0, .. } if node == "3"),
        "{err}"
    );

    // A subgraph that contains an instance of itself.
    let err = convert(serde_json::json!({
        "nodes": [{"id": 1, "type": "loop", "mode": 0}],
        "definitions": {"subgraphs": [{"id": "loop", "inputs": [], "outputs": [],
            "nodes": [{"id": 1, "type": "loop", "mode": 0}], "links": []}]},
    }))
    .unwrap_err();
    assert!(matches!(err, ui::UiError::TooDeep { .. }), "{err}");

    // Reroutes in a loop.
    let err = convert(serde_json::json!({
        "nodes": [
            {"id": 1, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}]},
            {"id": 2, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}]},
            {"id": 3, "type": "PreviewImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 3}]},
        ],
        "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 1, 0, "*"], [3, 1, 0, 3, 0, "IMAGE"]],
    }))
    .unwrap_err();
    assert!(matches!(err, ui::UiError::TooDeep { .. }), "{err}");

    // Subgraphs of 20 instances of subgraphs of 20 instances...: refused, not expanded.
    let level = |i: usize| {
        let nodes: Vec<Value> = (1..=20)
            .map(|n| serde_json::json!({"id": n, "type": format!("s{}", i + 1), "mode": 0}))
            .collect();
        serde_json::json!({"id": format!("s{i}"), "inputs": [], "outputs": [], "nodes": nodes,
                           "links": []})
    };
    let err = convert(serde_json::json!({
        "nodes": [{"id": 1, "type": "s0", "mode": 0}],
        "definitions": {"subgraphs": (0..8).map(level).collect::<Vec<_>>()},
    }))
    .unwrap_err();
    assert_eq!(
        err,
        ui::UiError::TooLarge {
            limit: ui::MAX_NODES
        }
    );

    for bad in [serde_json::json!([1, 2]), serde_json::json!({"links": []})] {
        assert!(matches!(
            convert(bad),
            Err(ui::UiError::NotUiWorkflow { .. })
        ));
    }
}

#[test]
fn seed_control_values_and_upload_values_are_skipped() {
    let wf = convert(serde_json::json!({
        "nodes": [
            // PrimitiveInt's value has control_after_generate; then nothing else.
            {"id": 1, "type": "PrimitiveInt", "mode": 0, "widgets_values": [5, "increment"]},
            {"id": 2, "type": "LoadImage", "mode": 0, "widgets_values": ["example.png", "image"]},
            {"id": 3, "type": "PreviewAny", "mode": 0,
             "inputs": [{"name": "source", "type": "*", "link": 1}]},
        ],
        "links": [[1, 1, 0, 3, 0, "INT"]],
    }))
    .unwrap();
    assert_eq!(wf.node("1").unwrap().inputs().len(), 1);
    assert_eq!(input(&wf, "1", "value"), 5);
    assert_eq!(wf.node("2").unwrap().inputs().len(), 1);
    assert!(validate(&wf, &object_info()).is_valid());

    // Old saves kept `true` in a seed's control slot.
    let wf = convert(
        serde_json::json!({"nodes": [{"id": 9, "type": "KSampler", "mode": 0,
        "widgets_values": [156, true, 20, 8, "euler", "normal", 1]}]}),
    )
    .unwrap();
    assert_eq!(input(&wf, "9", "seed"), 156);
    assert_eq!(input(&wf, "9", "steps"), 20);
    assert_eq!(input(&wf, "9", "scheduler"), "normal");
}

/// Opt-in: with `COMFY_UI_ASSETS=DIR`, converts every UI-format `.json` under DIR against
/// `fixtures/object_info.json` and prints, per file, "ok", the validator's complaints, or the
/// conversion error. With `COMFY_UI_EXPECTED=DIR2` too, each result is compared with
/// `DIR2/NAME.api.json` (what the frontend's own `graphToPrompt` made of it), and any
/// difference fails the test. Unset, it says it was skipped.
#[test]
fn ui_assets_from_a_directory() {
    let Ok(dir) = std::env::var("COMFY_UI_ASSETS") else {
        eprintln!("skipped: set COMFY_UI_ASSETS=DIR to convert the UI workflows in DIR");
        return;
    };
    let info = object_info();
    let expected_dir = std::env::var("COMFY_UI_EXPECTED").ok().map(PathBuf::from);
    let (mut compared, mut differ) = (0, 0);
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from(dir)];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    let (mut ui_files, mut converted, mut valid) = (0, 0, 0);
    for path in &files {
        let Ok(doc) = serde_json::from_str::<Value>(&fs::read_to_string(path).unwrap()) else {
            continue;
        };
        if !ui::is_ui_workflow(&doc) {
            continue;
        }
        ui_files += 1;
        match ui::to_api(&doc, &info) {
            Ok(wf) => {
                converted += 1;
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                let want = expected_dir
                    .as_ref()
                    .and_then(|d| fs::read_to_string(d.join(format!("{stem}.api.json"))).ok());
                if let Some(want) = want {
                    compared += 1;
                    let want = frontend_inputs_only(serde_json::from_str(&want).unwrap(), &info);
                    if want != wf.to_json() {
                        differ += 1;
                        eprintln!(
                            "DIFFERS   {}\n  frontend: {want}\n  ours:     {}",
                            path.display(),
                            wf.to_json()
                        );
                    }
                }
                let report = validate(&wf, &info);
                if report.is_valid() {
                    valid += 1;
                    eprintln!("ok        {}", path.display());
                } else {
                    eprintln!("invalid   {}: {report}", path.display());
                }
            }
            Err(e) => eprintln!("error     {}: {e}", path.display()),
        }
    }
    eprintln!(
        "{ui_files} UI workflows, {converted} converted, {valid} valid; \
         {compared} compared with the frontend's conversion, {differ} differ"
    );
    assert!(ui_files > 0, "no UI-format workflow under the directory");
    assert_eq!(converted, ui_files, "workflows that did not convert");
}

/// The frontend also sends values of its own widgets that the server does not declare (such
/// as `PreviewAny`'s `preview`); the server ignores them, and so does the comparison.
fn frontend_inputs_only(mut graph: Value, info: &ObjectInfo) -> Value {
    for node in graph
        .as_object_mut()
        .into_iter()
        .flat_map(|g| g.values_mut())
    {
        let Some(class) = node["class_type"]
            .as_str()
            .and_then(|c| info.class(c))
            .cloned()
        else {
            continue;
        };
        if let Some(inputs) = node["inputs"].as_object_mut() {
            inputs.retain(|name, _| class.input(name).is_some());
        }
    }
    graph
}

#[test]
fn dynamic_prompts_as_the_frontend_sends_them() {
    let doc = serde_json::json!({
        "nodes": [
            {"id": 1, "type": "CLIPTextEncode", "mode": 0,
             "widgets_values": ["a {red|blue} fox /* sly */// in the snow\nat dusk"]},
            {"id": 2, "type": "PrimitiveNode", "mode": 0, "widgets_values": ["{one|two}"]},
            {"id": 3, "type": "CLIPTextEncode", "mode": 0,
             "inputs": [{"name": "text", "type": "STRING", "link": 1, "widget": {"name": "text"}}],
             "widgets_values": [""]},
            // Not marked dynamicPrompts: kept as it is.
            {"id": 4, "type": "PrimitiveString", "mode": 0, "widgets_values": ["{x|y} // z"]},
        ],
        "links": [[1, 2, 0, 3, 0, "STRING"]],
    });
    let info = object_info();
    let mut seen = std::collections::HashSet::new();
    for seed in 0..32 {
        let wf = ui::to_api_seeded(&doc, &info, seed).unwrap();
        let first = input(&wf, "1", "text");
        assert!(
            first == "a red fox \nat dusk" || first == "a blue fox \nat dusk",
            "{first}"
        );
        let second = input(&wf, "3", "text");
        assert!(second == "one" || second == "two", "{second}");
        assert_eq!(input(&wf, "4", "value"), "{x|y} // z");
        seen.insert((first, second));
        assert_eq!(wf, ui::to_api_seeded(&doc, &info, seed).unwrap());
    }
    assert_eq!(seen.len(), 4, "every combination is reachable: {seen:?}");
}

#[test]
fn subgraph_links_are_followed_by_id_and_promoted_values_may_be_by_name() {
    // The definition's link records name the wrong target slots (older saves did): the inner
    // inputs' link ids are what counts. The instance's widget values come as an object.
    let def = serde_json::json!({
        "id": "sg", "name": "Sized image",
        "inputs": [{"name": "width", "type": "INT", "linkIds": [1]},
                   {"name": "height", "type": "INT", "linkIds": [2]}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "linkIds": [3]}],
        "nodes": [{"id": 7, "type": "EmptyImage", "mode": 0,
                   "inputs": [{"name": "width", "type": "INT", "link": 1, "widget": {"name": "width"}},
                              {"name": "height", "type": "INT", "link": 2, "widget": {"name": "height"}}],
                   "widgets_values": [512, 512, 1, 0]}],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 7, "target_slot": 3, "type": "INT"},
            {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 7, "target_slot": 0, "type": "INT"},
            {"id": 3, "origin_id": 7, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "IMAGE"},
        ],
    });
    let wf = convert(serde_json::json!({
        "nodes": [
            {"id": 1, "type": "sg", "mode": 0,
             "inputs": [{"name": "width", "type": "INT", "link": null, "widget": {"name": "width"}},
                        {"name": "height", "type": "INT", "link": 9, "widget": {"name": "height"}}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}],
             "widgets_values": {"width": 24, "height": 99}},
            {"id": 2, "type": "PrimitiveInt", "mode": 0, "widgets_values": [40, "fixed"]},
            {"id": 3, "type": "PreviewImage", "mode": 0,
             "inputs": [{"name": "images", "type": "IMAGE", "link": 4}]},
        ],
        "links": [[4, 1, 0, 3, 0, "IMAGE"], [9, 2, 0, 1, 1, "INT"]],
        "definitions": {"subgraphs": [def]},
    }))
    .unwrap();
    assert_eq!(input(&wf, "1:7", "width"), 24);
    // Linked on the instance: the link wins over the instance's value.
    assert_eq!(input(&wf, "1:7", "height"), serde_json::json!(["2", 0]));
    assert_eq!(input(&wf, "3", "images"), serde_json::json!(["1:7", 0]));
    assert!(validate(&wf, &object_info()).is_valid());
}
