//! Replays a recorded `comfy-transcript/1` session through the core and prints its events and
//! a per-prompt summary.
//!
//! `cargo run --example replay -- fixtures/ws_batch4.jsonl`

use std::process::ExitCode;

use comfy_proxy::replay::replay;
use comfy_proxy::transcript::Transcript;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: replay TRANSCRIPT.jsonl");
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let transcript = match Transcript::parse(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let result = replay(&transcript);
    for e in &result.events {
        println!("{:>6} ms  {}", e.t_ms, e.event);
    }
    for p in &result.prompts {
        println!("{}", serde_json::to_string(p).unwrap_or_default());
    }
    ExitCode::SUCCESS
}
