//! `workflow convert`, `validate` and `run` with every kind of workflow file: API-format JSON,
//! UI-format JSON, and a PNG carrying ComfyUI's metadata (built here as PIL writes it). Every
//! child process is killed on every path, and every wait is bounded.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to the end, killed after `limit`.
fn run(mut cmd: Command, limit: Duration) -> Finished {
    let mut guard = Guard(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start comfy-proxy"),
    );
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(guard.0.stdout.take().unwrap()));
    let err = drain(Box::new(guard.0.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "comfy-proxy ran past {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn quick(args: &[&str]) -> Finished {
    let mut cmd = bin();
    cmd.args(args);
    run(cmd, Duration::from_secs(60))
}

/// A PNG with `tEXt` chunks, as ComfyUI's SaveImage writes its metadata (CRCs left zero: the
/// reader does not check them).
fn png(texts: &[(&str, &str)]) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0; 4]);
        c
    };
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
    for (key, text) in texts {
        out.extend(chunk(
            b"tEXt",
            &[key.as_bytes(), b"\0", text.as_bytes()].concat(),
        ));
    }
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A UI-format workflow the mock server can run.
const UI: &str = r#"{"nodes": [
  {"id": 1, "type": "EmptyImage", "mode": 0, "widgets_values": [64, 48, 1, 0],
   "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]},
  {"id": 2, "type": "PreviewImage", "mode": 0,
   "inputs": [{"name": "images", "type": "IMAGE", "link": 1}]},
  {"id": 3, "type": "Note", "mode": 0, "widgets_values": ["dropped"]}
], "links": [[1, 1, 0, 2, 0, "IMAGE"]]}"#;

#[test]
fn convert_prints_the_api_graph_of_a_ui_workflow_or_an_image() {
    let out = quick(&[
        "workflow",
        "convert",
        &fixture("ui/flux_features.json"),
        "--object-info",
        &fixture("object_info.json"),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("ui/flux_features.api.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(printed, expected);

    // Without node classes a UI workflow cannot be converted: a usage error that says what to give.
    let out = quick(&["workflow", "convert", &fixture("ui/flux_features.json")]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--object-info"), "{}", out.stderr);

    // An image's prompt needs no node classes.
    let dir = TempDir::new("convert");
    let api = r#"{"7": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}"#;
    let image = dir.file("saved.png", &png(&[("prompt", api), ("workflow", UI)]));
    let out = quick(&["workflow", "convert", &image]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::from_str::<Value>(api).unwrap());

    let junk = dir.file("junk.png", b"\x89PNG\r\n\x1a\n\0\0\0\x40IHDR");
    let out = quick(&["workflow", "convert", &junk]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("cut short"), "{}", out.stderr);
}

#[test]
fn validate_takes_ui_workflows_and_images() {
    let dir = TempDir::new("validate");
    let image = dir.file("ui.png", &png(&[("workflow", UI)]));
    for file in [
        fixture("ui/subgraphs.json"),
        fixture("ui/group_node.json"),
        image,
    ] {
        let out = quick(&[
            "validate",
            &file,
            "--object-info",
            &fixture("object_info.json"),
        ]);
        assert_eq!(out.code, Some(0), "{file}: {}{}", out.stdout, out.stderr);
        assert_eq!(out.stdout.trim(), "valid");
    }
}

fn start_mock() -> (Guard, String) {
    start_mock_with(&["--fixtures", &fixture("")])
}

/// `run` converts a UI workflow (from JSON or a PNG) with the server's own object_info.
#[test]
fn run_converts_with_the_servers_object_info() {
    let (_mock, address) = start_mock();
    let dir = TempDir::new("run");
    let json = dir.file("ui.json", UI.as_bytes());
    let image = dir.file("ui.png", &png(&[("workflow", UI)]));
    for file in [json, image] {
        let mut cmd = bin();
        cmd.args(["run", &file, "--server", &address, "--json", "--quiet"])
            .args(["--timeout", "30", "--out"])
            .arg(dir.path().join("out"));
        let out = run(cmd, Duration::from_secs(60));
        assert_eq!(out.code, Some(0), "{file}: {}{}", out.stdout, out.stderr);
        let line: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
        assert_eq!(line["outcome"], "success", "{line}");
    }

    // `workflow convert --server` fetches the node classes from the server.
    let out = quick(&[
        "workflow",
        "convert",
        &dir.file("c.json", UI.as_bytes()),
        "--server",
        &address,
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        printed["2"]["inputs"]["images"],
        serde_json::json!(["1", 0])
    );
    assert_eq!(printed["1"]["inputs"]["height"], 48);
    assert!(printed.get("3").is_none(), "the note is dropped: {printed}");
}
