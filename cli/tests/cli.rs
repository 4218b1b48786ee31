//! The `comfy-proxy` binary, run as a user runs it. Every child process is killed on every
//! path, and every wait is bounded.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

fn quick(args: &[&str]) -> Finished {
    let mut cmd = bin();
    cmd.args(args);
    run(cmd, Duration::from_secs(30))
}

#[test]
fn workflow_flux_chains_loras() {
    let out = quick(&[
        "workflow",
        "flux",
        "--seed",
        "1",
        "--lora",
        "a.safetensors",
        "--lora",
        "b:0.5",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let graph: Value = serde_json::from_str(&out.stdout).expect("the graph is JSON");
    let nodes = graph.as_object().expect("an object of nodes");
    let of_class = |class: &str| -> Vec<&String> {
        nodes
            .iter()
            .filter(|(_, n)| n["class_type"] == class)
            .map(|(id, _)| id)
            .collect()
    };
    let loras = of_class("LoraLoader");
    assert_eq!(loras.len(), 2);
    let (first, second) = (&nodes[loras[0]]["inputs"], &nodes[loras[1]]["inputs"]);
    let clip_loader = of_class("DualCLIPLoader")[0];
    let unet = of_class("UNETLoader")[0];
    assert_eq!(first["lora_name"], "a.safetensors");
    assert_eq!(first["strength_model"], 1.0);
    assert_eq!(first["clip"], serde_json::json!([clip_loader, 0]));
    assert_eq!(first["model"], serde_json::json!([unet, 0]));
    assert_eq!(second["lora_name"], "b");
    assert_eq!(second["strength_clip"], 0.5);
    assert_eq!(second["clip"], serde_json::json!([loras[0], 1]));
    assert_eq!(second["model"], serde_json::json!([loras[0], 0]));
    let encode = of_class("CLIPTextEncode")[0];
    assert_eq!(
        nodes[encode]["inputs"]["clip"],
        serde_json::json!([loras[1], 1])
    );
    let noise = of_class("RandomNoise")[0];
    assert_eq!(nodes[noise]["inputs"]["noise_seed"], 1);
}

#[test]
fn a_flag_of_the_other_model_is_a_usage_error() {
    let out = quick(&["workflow", "qwen-image", "--guidance", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("--guidance"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

fn replay_summary(fixture_name: &str) -> Value {
    let out = quick(&["replay", "--json", &fixture(fixture_name)]);
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(lines.len() > 1, "events, then the summary");
    assert!(
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l["event"].is_string())
    );
    lines.last().cloned().unwrap()
}

#[test]
fn replay_json_of_a_batch() {
    let summary = replay_summary("ws_batch4.jsonl");
    let prompt = &summary["summary"]["prompts"][0];
    assert_eq!(prompt["outcome"], "success");
    assert_eq!(prompt["previews"], 0);
    let outputs = prompt["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 4);
    for o in outputs {
        assert_eq!(o["format"], "PNG");
        assert_eq!(o["sha256"].as_str().unwrap().len(), 64);
    }
}

#[test]
fn replay_json_of_an_execution_error() {
    let summary = replay_summary("exec_error.jsonl");
    let prompt = &summary["summary"]["prompts"][0];
    assert_eq!(prompt["outcome"], "error");
    assert_eq!(prompt["error"]["node_id"], "2");
    assert_eq!(prompt["error"]["node_type"], "TestRaiseError");
    assert_eq!(prompt["rejected"], Value::Null);
}

#[test]
fn replay_strips_escape_sequences_a_server_sent() {
    let dir = TempDir::new("escapes");
    let text = std::fs::read_to_string(fixture("exec_error.jsonl"))
        .unwrap()
        // Inside the recorded frames' JSON: ESC, BEL, CR and a C1 CSI, as a server could send.
        .replace("RuntimeError", r"Runtime\\u001b[31mError\\u0007")
        .replace(
            "boom: intentional test failure",
            r"boom\\u001b]0;pwned\\u0007\\u001b[2J\\r\\u009b31m!",
        );
    let hostile = dir.path().join("hostile.jsonl");
    std::fs::write(&hostile, text).unwrap();
    let hostile = hostile.to_str().unwrap();
    let unsafe_char = |c: char| c.is_control() && c != '\n';
    let plain = quick(&["replay", hostile]);
    assert!(plain.status.success(), "{}", plain.stderr);
    assert!(!plain.stdout.chars().any(unsafe_char), "{:?}", plain.stdout);
    assert!(plain.stdout.contains("RuntimeError"), "{}", plain.stdout);
    let json = quick(&["replay", "--json", hostile]);
    assert!(json.status.success(), "{}", json.stderr);
    assert!(!json.stdout.chars().any(unsafe_char), "{:?}", json.stdout);
    // JSON keeps the data, escaped: the summary still says what the server sent.
    let summary: Value = serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    let error = &summary["summary"]["prompts"][0]["error"];
    assert_eq!(
        error["exception_type"], "Runtime\u{1b}[31mError\u{7}",
        "{error}"
    );
}

#[test]
fn demo_writes_sixteen_pngs() {
    let dir = TempDir::new("demo");
    let mut cmd = bin();
    cmd.arg("demo").current_dir(dir.path());
    let out = run(cmd, Duration::from_secs(180));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let images: Vec<PathBuf> = std::fs::read_dir(dir.path().join("comfy-proxy-demo"))
        .expect("the demo's folder")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(images.len(), 16, "{images:?}");
    for image in images {
        assert_eq!(image.extension().unwrap(), "png");
        let bytes = std::fs::read(&image).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{image:?}");
    }
    assert!(
        out.stdout.contains("16 succeeded, 0 failed"),
        "{}",
        out.stdout
    );
}

/// Starts `comfy-proxy mock` on a free port and returns it with its address.
fn start_mock() -> (Guard, String) {
    start_mock_with(&[])
}

#[test]
fn generate_against_a_mock_process() {
    let (_mock, address) = start_mock();
    let dir = TempDir::new("generate");
    let out_dir = dir.path().join("out");
    let mut cmd = bin();
    cmd.args([
        "generate",
        "flux",
        "--server",
        &address,
        "--count",
        "3",
        "--json",
        "--steps",
        "2",
        "--size",
        "64x64",
        "--timeout",
        "60",
        "--record",
    ])
    .arg(dir.path().join("rec"))
    .arg("--out")
    .arg(&out_dir);
    let out = run(cmd, Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let mut digests = Vec::new();
    for line in &lines {
        assert_eq!(line["outcome"], "success", "{line}");
        assert_eq!(line["error"], Value::Null);
        let output = &line["outputs"][0];
        assert_eq!(output["format"], "PNG");
        let path = PathBuf::from(output["path"].as_str().unwrap());
        assert!(path.starts_with(&out_dir) && path.exists(), "{path:?}");
        digests.push(output["sha256"].as_str().unwrap().to_owned());
    }
    let mut sorted = digests.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "three distinct images");
    // The recording replays to the same images.
    let mut replayed = Vec::new();
    for file in std::fs::read_dir(dir.path().join("rec")).unwrap() {
        let mut cmd = bin();
        cmd.arg("replay").arg(file.unwrap().path()).arg("--json");
        let out = run(cmd, Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
        let summary: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
        for prompt in summary["summary"]["prompts"].as_array().unwrap() {
            assert_eq!(prompt["outcome"], "success", "{prompt}");
            replayed.push(prompt["outputs"][0]["sha256"].as_str().unwrap().to_owned());
        }
    }
    replayed.sort();
    assert_eq!(
        replayed, sorted,
        "the recordings hold the same three images"
    );
}

#[test]
fn a_bad_server_is_a_usage_error_with_the_parsers_message() {
    let out = quick(&["generate", "flux", "--server", "host:99999"]);
    assert_eq!(out.status.code(), Some(2));
    let message = comfy_proxy::address::parse_addresses("host:99999")
        .unwrap_err()
        .to_string();
    assert!(out.stderr.contains(&message), "{}", out.stderr);
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let dir = TempDir::new("inputs");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let graph = dir.path().join("graph.json");
    std::fs::write(
        &graph,
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":8,"height":8}}}"#,
    )
    .unwrap();
    let (bad, graph) = (bad.to_str().unwrap(), graph.to_str().unwrap());
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["run", bad, "--server", "h:1"], "not an API-format graph"),
        (&["run", missing, "--server", "h:1"], "cannot read"),
        (
            &["run", graph, "--server", "h:1", "--set", "seed"],
            "TARGET.INPUT=VALUE",
        ),
        (
            &["run", graph, "--server", "h:1", "--set", "9.x=1"],
            "\"9\"",
        ),
        (
            &[
                "run",
                graph,
                "--server",
                "a:1,b:1",
                "--upload",
                "1.image=/no/such/file.png",
            ],
            "cannot read",
        ),
        (&["run", graph], "no server given"),
        (
            &[
                "generate",
                "flux",
                "--server",
                "h:1",
                "--record",
                "/proc/no-such-dir/r",
            ],
            "--record directory",
        ),
        (&["workflow", "flux", "--lora", "b:x"], "weight"),
        (&["workflow", "flux", "--steps", "0"], "--steps"),
        (&["workflow", "flux", "--size", "huge"], "square-1k"),
        (&["replay", missing], "cannot read"),
        (&["replay", bad], "comfy-transcript/1"),
        (
            &[
                "run",
                graph,
                "--server",
                "https://h:1",
                "--ca-cert",
                missing,
            ],
            "missing.json",
        ),
        (
            &[
                "generate",
                "flux",
                "--server",
                "https://h:1",
                "--ca-cert",
                bad,
            ],
            "no CERTIFICATE",
        ),
        (
            &[
                "validate",
                graph,
                "--server",
                "https://h:1",
                "--ca-cert",
                bad,
            ],
            "bad.json",
        ),
        (
            &[
                "run",
                graph,
                "--server",
                "h:1",
                "--ca-cert",
                bad,
                "--insecure",
            ],
            "--insecure",
        ),
    ];
    for (args, needle) in cases {
        let out = quick(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    }
}

/// The graph a recorded `POST /prompt` carried.
fn recorded_graph(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("{name}.jsonl")))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["kind"] == "http_request")
        .map(|l| l["body"]["prompt"].to_string())
        .expect("a recorded graph")
}

#[test]
fn validate_agrees_with_the_server() {
    let dir = TempDir::new("validate");
    let info = fixture("object_info.json");
    for (name, valid, error) in [
        ("flux_dummy", true, ""),
        ("validation_missing_model", false, "value_not_in_list"),
        ("flux_two_loras", false, "return_type_mismatch"),
    ] {
        let graph = dir.path().join(format!("{name}.json"));
        std::fs::write(&graph, recorded_graph(name)).unwrap();
        let out = quick(&[
            "validate",
            graph.to_str().unwrap(),
            "--object-info",
            &info,
            "--json",
        ]);
        assert_eq!(
            out.status.code(),
            Some(if valid { 0 } else { 1 }),
            "{name}: {}",
            out.stderr
        );
        let report: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON line");
        assert_eq!(report["valid"], valid, "{name}");
        assert!(out.stdout.contains(error), "{name}: {}", out.stdout);
    }
}

#[test]
fn run_refuses_a_graph_no_server_can_run_without_sending_it() {
    let fixtures = fixture("");
    let (_mock, address) = start_mock_with(&["--fixtures", &fixtures]);
    let dir = TempDir::new("route");
    let graph = dir.path().join("bad.json");
    std::fs::write(&graph, recorded_graph("validation_missing_model")).unwrap();
    let mut cmd = bin();
    cmd.args([
        "run",
        graph.to_str().unwrap(),
        "--server",
        &address,
        "--json",
        "--timeout",
        "30",
        "--out",
    ])
    .arg(dir.path().join("out"));
    let out = run(cmd, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let line: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["outcome"], "error");
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains("no server can run") && error.contains("not_there.safetensors"),
        "{error}"
    );
}

/// Four mock servers injecting every fault; every job ends exactly once, within its deadline:
/// a success with both images of its batch, or an error that names the cause.
#[test]
fn faulty_servers_every_job_ends_once() {
    let faults = "refuse=0.01,drop-ws=0.01,stall=0.005,http500=0.02,restart=0.002,slow=0.02,\
                  oversize=0.002,bad-json=0.02,bad-utf8=0.01,unknown-type=0.02,truncated=0.01,wrong-id=0.05";
    let mut mocks = Vec::new();
    let mut addresses = Vec::new();
    for seed in ["1", "2", "3", "4"] {
        let (guard, address) = start_mock_with(&["--seed", seed, "--faults", faults]);
        mocks.push(guard);
        addresses.push(address);
    }
    let servers = addresses.join(",");
    let dir = TempDir::new("faults");
    let graph = dir.path().join("g.json");
    std::fs::write(
        &graph,
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":2,"color":0}},"save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args([
        "run",
        graph.to_str().unwrap(),
        "--server",
        &servers,
        "--count",
        "300",
        "--json",
        "--timeout",
        "10",
        "--quiet",
        "--out",
    ])
    .arg(dir.path().join("out"));
    let out = run(cmd, Duration::from_secs(240));
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", out.stderr);
    let mut jobs = Vec::new();
    for line in out.stdout.lines() {
        let line: Value = serde_json::from_str(line).expect("one JSON line per job");
        jobs.push(line["job"].as_u64().unwrap());
        match line["outcome"].as_str().unwrap() {
            "success" => assert_eq!(line["outputs"].as_array().unwrap().len(), 2, "{line}"),
            _ => assert!(
                line["error"].as_str().is_some_and(|e| e.len() > 10),
                "{line}"
            ),
        }
    }
    jobs.sort_unstable();
    assert_eq!(
        jobs,
        (0..300).collect::<Vec<u64>>(),
        "every job exactly once"
    );
}

#[test]
fn run_writes_and_lists_every_output_kind_against_a_mock_process() {
    let (_mock, address) = start_mock();
    let dir = TempDir::new("kinds");
    let out_dir = dir.path().join("out");
    // The real mixed graph, its text made hostile: an escape sequence must not reach a terminal.
    let mut graph: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("outputs/mixed_graph.json")).unwrap(),
    )
    .unwrap();
    graph["6"]["inputs"]["value"] = "hello \u{1b}[31mred".into();
    let file = dir.file("mixed.json", graph.to_string().as_bytes());
    let mut cmd = bin();
    cmd.args([
        "run",
        &file,
        "--server",
        &address,
        "--json",
        "--timeout",
        "60",
    ])
    .arg("--out")
    .arg(&out_dir);
    let out = run(cmd, Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    let line: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON line");
    assert_eq!(line["outcome"], "success", "{line}");
    let outputs = line["outputs"].as_array().unwrap();
    let count = |kind: &str, ext: &str| {
        (outputs.iter())
            .filter(|o| o["kind"] == kind && o["path"].as_str().is_some_and(|p| p.ends_with(ext)))
            .count()
    };
    // The mock makes what ComfyUI makes, but for the animated WebP.
    assert_eq!(count("image", ".png"), 6, "{line}");
    assert_eq!(count("video", ".mp4"), 1, "{line}");
    let texts: Vec<&Value> = outputs.iter().filter(|o| o["kind"] == "text").collect();
    assert_eq!(texts.len(), 1, "{line}");
    assert_eq!(
        texts[0]["text"], "hello \u{1b}[31mred",
        "the JSON keeps it, escaped"
    );
    assert_eq!(texts[0]["node"], "7");
    for o in outputs {
        assert_eq!(o["sha256"].as_str().map(str::len), Some(64), "{o}");
        if let Some(path) = o["path"].as_str() {
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(Some(bytes.len() as u64), o["bytes"].as_u64(), "{o}");
            assert!(PathBuf::from(path).starts_with(&out_dir));
        }
    }
    let video = outputs.iter().find(|o| o["kind"] == "video").unwrap();
    assert_eq!(video["name"], "cp_mixed_00001_.mp4");
    assert_eq!(video["format"], "MP4");
    // Without --json the text is printed on a line of its own, the escape removed.
    let mut cmd = bin();
    cmd.args(["run", &file, "--server", &address, "-q", "--timeout", "60"])
        .arg("--out")
        .arg(&out_dir);
    let out = run(cmd, Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains('\u{1b}'), "{:?}", out.stdout);
    assert!(
        out.stdout.contains("job 0 node 7 text: hello red"),
        "{}",
        out.stdout
    );
}
