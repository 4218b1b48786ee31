//! The server operations of `comfy-proxy` (queue, history, interrupt, free, models, stats,
//! upload, view, object-info) against a `comfy-proxy mock` process, as a user runs them: the
//! `--json` documents, the sentences and the exit codes. Every child is killed on every path and
//! every wait is bounded.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::*;

/// Runs `comfy-proxy ARGS` to its end, killing it (and failing) after 30 s.
fn run(args: &[&str]) -> Finished {
    let mut cmd = bin();
    cmd.args(args);
    common::run(cmd, Duration::from_secs(30))
}

/// Runs and expects exit 0 and one JSON document on stdout.
fn json_of(args: &[&str]) -> Value {
    let done = run(args);
    assert_eq!(done.status.code(), Some(0), "{args:?}: {}", done.stderr);
    serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?} printed {:?}: {e}", done.stdout))
}

/// Starts `comfy-proxy mock` (with the recorded object_info) on a free port.
fn start_mock() -> (Guard, String) {
    start_mock_with(&["--fixtures", &fixture("")])
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("comfy-proxy-ops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn information_and_edits_as_json_and_sentences() {
    let (_mock, server) = start_mock();
    let s = server.as_str();
    assert_eq!(
        json_of(&["queue", "--json", "--server", s]),
        json!({"running": [], "pending": []})
    );
    let queue = run(&["queue", "--server", s]);
    assert_eq!(queue.stdout.trim(), "0 running, 0 pending");
    assert_eq!(
        json_of(&["queue", "--json", "--position", "nope", "--server", s]),
        json!({"prompt_id": "nope", "position": null, "ahead": null})
    );
    assert_eq!(
        json_of(&["queue", "--json", "--clear", "--server", s]),
        json!({"running": [], "pending": []})
    );

    let folders = json_of(&["models", "--json", "--server", s]);
    assert!(
        folders.as_array().unwrap().contains(&json!("loras")),
        "{folders}"
    );
    assert_eq!(
        json_of(&["models", "loras", "--json", "--server", s]),
        json!([])
    );
    assert_eq!(
        run(&["models", "loras", "--server", s]).stdout.trim(),
        "no files in loras"
    );
    let missing = run(&["models", "nope", "--server", s]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "an unknown folder is the server's answer"
    );
    assert!(
        missing.stderr.contains("no model folder \"nope\""),
        "{}",
        missing.stderr
    );

    let stats = json_of(&["stats", "--json", "--server", s]);
    assert!(stats["comfyui_version"].is_string(), "{stats}");
    assert!(
        run(&["stats", "--server", s])
            .stdout
            .starts_with("ComfyUI ")
    );

    assert_eq!(json_of(&["history", "--json", "--server", s]), json!([]));
    assert_eq!(
        json_of(&["history", "abc", "--json", "--server", s]),
        json!(null)
    );
    assert_eq!(
        json_of(&["history", "--clear", "--json", "--server", s]),
        json!({"cleared": true})
    );
    assert_eq!(
        json_of(&["interrupt", "p1", "--json", "--server", s]),
        json!({"interrupt": true, "prompt_id": "p1"})
    );
    assert_eq!(
        json_of(&["free", "--unload-models", "--json", "--server", s]),
        json!({"unload_models": true, "free_memory": false})
    );
    let one = json_of(&["object-info", "SaveImageWebsocket", "--json", "--server", s]);
    assert_eq!(one["SaveImageWebsocket"]["output_node"], json!(true));
    let unknown = run(&["object-info", "NoSuchNode", "--server", s]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[test]
fn upload_then_view() {
    let (_mock, server) = start_mock();
    let s = server.as_str();
    let dir = temp_dir("upload");
    let file = dir.join("pic.png");
    std::fs::write(&file, b"\x89PNG\r\n\x1a\nbytes").unwrap();
    let file = file.to_str().unwrap();
    let args = ["upload", file, "--subfolder", "in", "--json", "--server", s];
    let first = json_of(&args);
    assert_eq!(
        first,
        json!({"name": "pic.png", "subfolder": "in", "type": "input",
               "input_value": "in/pic.png", "bytes": 13})
    );
    assert_eq!(
        json_of(&args)["name"],
        json!("pic (1).png"),
        "renamed on a clash"
    );
    let mut over = args.to_vec();
    over.push("--overwrite");
    assert_eq!(json_of(&over)["name"], json!("pic.png"));

    let out = dir.join("back.png");
    let out_text = out.to_str().unwrap();
    let viewed = json_of(&[
        "view",
        "pic.png",
        "--subfolder",
        "in",
        "--type",
        "input",
        "-o",
        out_text,
        "--json",
        "--server",
        s,
    ]);
    assert_eq!(viewed["bytes"], json!(13));
    assert_eq!(std::fs::read(&out).unwrap(), b"\x89PNG\r\n\x1a\nbytes");
    let absent = run(&["view", "nope.png", "-o", out_text, "--server", s]);
    assert_eq!(absent.status.code(), Some(1), "{}", absent.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_and_server_failures_have_their_exit_codes() {
    for (args, code) in [
        (vec!["queue"], 2),
        (vec!["stats", "--server", "not a server::"], 2),
        (
            vec!["upload", "/no/such/file.png", "--server", "127.0.0.1:1"],
            2,
        ),
        (
            vec!["upload", "x.png", "--mask", "--server", "127.0.0.1:1"],
            2,
        ),
        (
            vec!["queue", "--timeout", "0", "--server", "127.0.0.1:1"],
            2,
        ),
        (vec!["queue", "--server", "127.0.0.1:1"], 1),
        (
            vec!["models", "loras", "--json", "--server", "127.0.0.1:1"],
            1,
        ),
    ] {
        let done = run(&args);
        assert_eq!(done.status.code(), Some(code), "{args:?}: {}", done.stderr);
        assert!(!done.stderr.trim().is_empty(), "{args:?} says why");
        assert!(done.stdout.is_empty(), "{args:?} prints nothing on stdout");
    }
}
