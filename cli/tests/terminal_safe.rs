//! Text a server sends reaches the terminal without its escape sequences: a hostile
//! `comfy-proxy mock` (its object_info names a node class with ANSI and OSC sequences, a bell
//! and a C1 control) queried with `object-info`, as sentences and as JSON.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

/// The class name the hostile server sends: recolours, retitles the window, clears the screen.
const HOSTILE: &str = "Evil\u{1b}[31m\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}1mNode\r";

/// Runs `comfy-proxy ARGS` to its end (killed after 30 s); returns (exit code, stdout).
fn run(args: &[&str]) -> (Option<i32>, String) {
    let child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start comfy-proxy");
    let mut guard = Guard(child);
    let mut pipe = guard.0.stdout.take().expect("stdout");
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{args:?} ran over 30 s"
        );
        thread::sleep(Duration::from_millis(20));
    };
    (status.code(), stdout.join().unwrap_or_default())
}

#[test]
fn object_info_from_a_hostile_server_prints_safely() {
    let dir = std::env::temp_dir().join(format!("comfy-proxy-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let class = json!({"input": {"required": {}}, "output": [], "output_node": false,
                       "name": HOSTILE, "display_name": HOSTILE, "category": "x"});
    let info = json!({ HOSTILE: class.clone(), "Plain": class });
    std::fs::write(dir.join("object_info.json"), info.to_string()).unwrap();
    let child = bin()
        .args(["mock", "--listen", "127.0.0.1:0", "--fixtures"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the mock");
    let mut mock = Guard(child);
    let stdout = mock.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the mock prints its address");
    let server = line.trim().to_owned();
    let unsafe_char = |c: char| c.is_control() && c != '\n';

    let (code, names) = run(&["object-info", "--server", &server]);
    assert_eq!(code, Some(0), "{names}");
    assert!(!names.chars().any(unsafe_char), "{names:?}");
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["EvilNode", "Plain"],
        "{names:?}"
    );

    let (code, text) = run(&["object-info", "--json", "--server", &server]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.chars().any(unsafe_char), "{text:?}");
    // The document is the server's, escaped rather than changed.
    let parsed: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(parsed, info);
    drop(mock);
    let _ = std::fs::remove_dir_all(&dir);
}
