//! The workflow module against the recordings: the builders' graphs (snapshots, and equality
//! with the graphs the original library sent), the structural check against the real server's
//! `object_info`, round trips of every recorded graph, and the limits' agreement with the server.

use std::fs;
use std::path::{Path, PathBuf};

use comfy_proxy::workflow::{
    FluxParams, Input, Link, Lora, ObjectInfo, QwenParams, SAVE_NODE_ID, Size, SlotType,
    StructuralError, Workflow, WorkflowError, check_structure, limits,
};
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

/// Every graph a recording posted to `/prompt`, as (file name, graph JSON).
fn recorded_graphs() -> Vec<(String, Value)> {
    let mut graphs = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for line in fs::read_to_string(&path).unwrap().lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            if event["kind"] == "http_request"
                && let Some(graph) = event["body"].get("prompt")
            {
                graphs.push((name.clone(), graph.clone()));
            }
        }
    }
    graphs
}

fn recorded_graph(file: &str) -> Value {
    let graphs: Vec<Value> = recorded_graphs()
        .into_iter()
        .filter(|(name, _)| name == file)
        .map(|(_, g)| g)
        .collect();
    assert_eq!(graphs.len(), 1, "{file}");
    graphs.into_iter().next().unwrap()
}

const LORAS: [(&str, f64); 3] = [
    ("lora_a.safetensors", 0.8),
    ("lora_b.safetensors", 0.5),
    ("lora_c.safetensors", 1.0),
];

fn loras(n: usize) -> Vec<Lora> {
    LORAS[..n]
        .iter()
        .map(|&(name, weight)| Lora::new(name).weight(weight))
        .collect()
}

fn flux(n_loras: usize) -> Workflow {
    FluxParams::new("a cat", 42)
        .loras(loras(n_loras))
        .build()
        .unwrap()
}

fn qwen(n_loras: usize) -> Workflow {
    QwenParams::new("a cat", 42)
        .loras(loras(n_loras))
        .build()
        .unwrap()
}

/// One line per node: easy to read the wiring in a snapshot, and still the exact JSON.
fn render(wf: &Workflow) -> String {
    wf.iter()
        .map(|(id, node)| {
            format!(
                "{:?}: {}\n",
                id.as_str(),
                serde_json::to_string(node).unwrap()
            )
        })
        .collect()
}

#[test]
fn snapshots_of_the_builders() {
    for n in 0..=3 {
        insta::assert_snapshot!(format!("flux_{n}_loras"), render(&flux(n)));
        insta::assert_snapshot!(format!("qwen_{n}_loras"), render(&qwen(n)));
    }
}

#[test]
fn built_graphs_pass_the_structural_check() {
    let info = object_info();
    for n in 0..=3 {
        for (name, wf) in [("flux", flux(n)), ("qwen", qwen(n))] {
            let faults = check_structure(&wf, &info);
            assert_eq!(faults, [], "{name} with {n} LoRAs");
            assert_eq!(wf.output_nodes(&info), [SAVE_NODE_ID], "{name}");
        }
    }
}

#[test]
fn the_original_two_lora_wiring_fails_the_structural_check() {
    let wf = Workflow::from_value(recorded_graph("flux_two_loras.jsonl")).unwrap();
    let faults = check_structure(&wf, &object_info());
    assert_eq!(
        faults,
        [StructuralError::TypeMismatch {
            node: "6".into(),
            input: "clip".into(),
            link: Link::new("5", 0),
            received: "MODEL".into(),
            expected: "CLIP".into(),
        }]
    );
    assert_eq!(
        faults[0].to_string(),
        "node \"6\" input \"clip\": received MODEL from [\"5\", 0], expected CLIP"
    );
}

#[test]
fn every_other_recorded_graph_checks_as_the_server_judged_it() {
    let info = object_info();
    for (file, graph) in recorded_graphs() {
        let faults = check_structure(&Workflow::from_value(graph).unwrap(), &info);
        let kinds: Vec<&str> = faults
            .iter()
            .map(|f| match f {
                StructuralError::UnknownClass { .. } => "unknown class",
                StructuralError::DanglingLink { .. } => "dangling link",
                StructuralError::TypeMismatch { .. } => "type mismatch",
                _ => "other",
            })
            .collect();
        let want: &[&str] = match file.as_str() {
            "validation_unknown_node.jsonl" => &["unknown class"],
            "validation_bad_link.jsonl" => &["dangling link"],
            "flux_two_loras.jsonl" => &["type mismatch"],
            _ => &[],
        };
        assert_eq!(kinds, want, "{file}");
    }
}

#[test]
fn every_recorded_graph_round_trips() {
    let graphs = recorded_graphs();
    assert!(graphs.len() >= 20, "{}", graphs.len());
    for (file, graph) in graphs {
        let text = serde_json::to_string(&graph).unwrap();
        let wf = Workflow::from_json(&text).unwrap();
        assert_eq!(wf.to_string(), text, "{file}");
        let via_serde: Workflow = serde_json::from_str(&text).unwrap();
        assert_eq!(via_serde, wf, "{file}");
        assert_eq!(
            serde_json::to_string(&wf.to_json()).unwrap(),
            text,
            "{file}"
        );
    }
}

#[test]
fn exported_graphs_keep_unknown_fields_and_key_order() {
    let text = r##"{"9":{"inputs":{"seed":18446744073709551615,"cfg":1.0,"model":["4",0]},"class_type":"KSampler","_meta":{"title":"Sampler","color":"#333"},"is_changed":["x"]},"4":{"class_type":"CheckpointLoaderSimple","_meta":{},"inputs":{"ckpt_name":"a.safetensors"}}}"##;
    let mut wf = Workflow::from_json(text).unwrap();
    assert_eq!(wf.to_string(), text);
    wf.set_input("Sampler", "cfg", 2.5).unwrap();
    assert_eq!(wf.to_string(), text.replace("\"cfg\":1.0", "\"cfg\":2.5"));
}

#[test]
fn flux_without_loras_is_the_recorded_graph() {
    let wf = FluxParams::new("a cat", 42)
        .size(Size::new(64, 64))
        .steps(2)
        .build()
        .unwrap();
    let recorded = recorded_graph("flux_dummy.jsonl");
    assert_eq!(wf.to_string(), serde_json::to_string(&recorded).unwrap());
}

#[test]
fn flux_with_two_loras_differs_from_the_original_only_in_the_clip_fix() {
    let mut wf = FluxParams::new("a cat", 42)
        .size(Size::new(64, 64))
        .steps(2)
        .loras(loras(2))
        .build()
        .unwrap();
    let recorded = serde_json::to_string(&recorded_graph("flux_two_loras.jsonl")).unwrap();
    assert_ne!(wf.to_string(), recorded);
    // Put back the original's mistake: the second LoRA's clip from output 0 of the first.
    assert_eq!(
        wf.node("6").unwrap().input("clip"),
        Some(&Input::Link(Link::new("5", 1)))
    );
    wf.set_input("6", "clip", Link::new("5", 0)).unwrap();
    assert_eq!(wf.to_string(), recorded);
}

#[test]
fn qwen_with_one_lora_is_the_recorded_graph_but_for_titles() {
    let wf = QwenParams::new("a cat", 42)
        .negative_prompt("ugly")
        .size(Size::new(64, 64))
        .steps(2)
        .lora(Lora::new("lora_a.safetensors").weight(0.8))
        .build()
        .unwrap();
    let mut built = wf.to_json();
    for node in built.as_object_mut().unwrap().values_mut() {
        node.as_object_mut().unwrap().remove("_meta");
    }
    let recorded = recorded_graph("qwen_dummy.jsonl");
    assert_eq!(
        serde_json::to_string(&built).unwrap(),
        serde_json::to_string(&recorded).unwrap()
    );
}

#[test]
fn set_input_by_id_title_and_class() {
    let mut wf = qwen(2);
    wf.set_input("10", "seed", 7).unwrap();
    wf.set_input("CLIP Text Encode (Negative Prompt)", "text", "blurry")
        .unwrap();
    wf.set("KSampler.cfg", 5.0).unwrap();
    wf.set("RandomNoise.x", 1).unwrap_err();
    let ks = wf.node("10").unwrap();
    assert_eq!(ks.input("seed"), Some(&Input::from(7)));
    assert_eq!(ks.input("cfg"), Some(&Input::from(5.0)));
    assert_eq!(
        wf.node("8").unwrap().input("text"),
        Some(&Input::from("blurry"))
    );

    let err = wf
        .set_input("LoraLoaderModelOnly", "strength_model", 1.0)
        .unwrap_err();
    assert_eq!(
        err,
        WorkflowError::AmbiguousTarget {
            target: "LoraLoaderModelOnly".into(),
            candidates: vec!["4".into(), "5".into()],
        }
    );
    assert!(err.to_string().contains("\"4\", \"5\""), "{err}");
    assert_eq!(
        wf.set_input("Nothing", "x", 1).unwrap_err().to_string(),
        "no node has the id, title or class type \"Nothing\""
    );

    let mut flux = flux(0);
    flux.set("RandomNoise.noise_seed", 123).unwrap();
    assert_eq!(
        flux.node("9").unwrap().input("noise_seed"),
        Some(&Input::from(123))
    );
    assert_eq!(flux.class_of(SAVE_NODE_ID), Some("SaveImageWebsocket"));
    assert_eq!(flux.class_of("99"), None);
}

#[test]
fn out_of_range_values_are_refused_naming_the_input() {
    let flux = |p: FluxParams| p.build().unwrap_err().to_string();
    let qwen = |p: QwenParams| p.build().unwrap_err().to_string();
    let f = || FluxParams::new("a cat", 1);
    let q = || QwenParams::new("a cat", 1);
    let cases = [
        (flux(f().size(Size::new(8, 1024))), "width = 8"),
        (flux(f().steps(0)), "steps = 0"),
        (flux(f().batch_size(0)), "batch_size = 0"),
        (qwen(q().size(Size::new(8, 1024))), "width = 8"),
        (qwen(q().steps(0)), "steps = 0"),
        (qwen(q().batch_size(0)), "batch_size = 0"),
    ];
    for (err, want) in cases {
        assert!(err.starts_with(want), "{want}: {err}");
        assert!(err.contains("the server accepts"), "{err}");
    }
}

#[test]
fn limits_equal_the_servers_numbers() {
    let info = object_info();
    let spec = |class: &str, input: &str| {
        info.class(class)
            .and_then(|c| c.input(input))
            .unwrap_or_else(|| panic!("{class}.{input} is not in object_info"))
            .clone()
    };
    for l in limits::INT_LIMITS {
        let s = spec(l.class, l.input);
        assert_eq!(s.ty(), &SlotType::Int, "{l:?}");
        let num = |k| s.option(k).and_then(Value::as_u64);
        assert_eq!(num("min"), Some(l.min), "{l:?}");
        assert_eq!(num("max"), Some(l.max), "{l:?}");
        assert_eq!(num("step"), l.step, "{l:?}");
    }
    for l in limits::FLOAT_LIMITS {
        let s = spec(l.class, l.input);
        assert_eq!(s.ty(), &SlotType::Float, "{l:?}");
        assert_eq!((s.min(), s.max()), (Some(l.min), Some(l.max)), "{l:?}");
    }
}

#[test]
fn object_info_view_of_the_real_server() {
    let info = object_info();
    assert_eq!(info.len(), 498);
    let lora = info.class("LoraLoader").unwrap();
    let outputs: Vec<&str> = lora.outputs().iter().map(SlotType::name).collect();
    assert_eq!(outputs, ["MODEL", "CLIP"]);
    let inputs: Vec<&str> = lora.inputs().iter().map(|i| i.name()).collect();
    assert_eq!(
        inputs,
        [
            "model",
            "clip",
            "lora_name",
            "strength_model",
            "strength_clip"
        ]
    );
    match lora.input("lora_name").unwrap().ty() {
        SlotType::Combo(options) => assert_eq!(options.len(), 2),
        other => panic!("{other:?}"),
    }
    let ays = info.class("AlignYourStepsScheduler").unwrap();
    assert_eq!(
        ays.input("model_type").unwrap().ty(),
        &SlotType::Combo(vec!["SD1".into(), "SDXL".into(), "SVD".into()])
    );
    let device = info.class("CLIPLoader").unwrap().input("device").unwrap();
    assert!(!device.is_required());
    assert!(info.class("SaveImageWebsocket").unwrap().is_output_node());
    assert!(!lora.is_output_node());
    assert_eq!(
        info.class("PreviewAny")
            .unwrap()
            .input("source")
            .unwrap()
            .ty(),
        &SlotType::Custom("*".into())
    );
}

#[test]
fn builder_defaults_are_the_originals() {
    let f = FluxParams::new("p", 0);
    assert_eq!((f.size, f.steps, f.guidance), (Size::SQUARE_1K, 20, 3.5));
    let q = QwenParams::new("p", 0);
    assert_eq!(q.size, Size::parse("portrait-3-4").unwrap());
    assert_eq!(q.size, Size::new(896, 1152));
    assert_eq!(q.negative_prompt, "ugly, cartoon, 3d, video game, cg");
    assert_eq!((q.cfg, q.shift, q.denoise, q.steps), (3.5, 3.1, 1.0, 20));
}
