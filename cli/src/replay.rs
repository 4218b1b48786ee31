//! `comfy-proxy replay TRANSCRIPT.jsonl`: drives a recording through the core's session and
//! prints what it reports, as sentences or as JSON lines.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use comfy_proxy::replay::{self, Replay, ReplayedEvent};
use comfy_proxy::session::{Event, Failure};
use comfy_proxy::text::{terminal_safe_json, terminal_safe_line};
use comfy_proxy::transcript::Transcript;
use comfy_proxy::{NodeId, PromptId};
use serde_json::{Map, Value, json};

use crate::error::{Result, runtime, usage};
use crate::output::sha256_hex;

/// The flags of `replay`.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// A comfy-transcript/1 recording (JSON lines).
    #[arg(value_name = "TRANSCRIPT.jsonl")]
    pub transcript: PathBuf,
    /// One JSON line per event, then a last line {"summary": {"prompts": [...]}} with one entry
    /// per prompt in posting order (outcome, outputs with their sha256, previews, texts, error,
    /// rejection).
    #[arg(long)]
    pub json: bool,
}

/// Replays the recording and prints it.
pub fn run(args: &ReplayArgs) -> Result<ExitCode> {
    let path = &args.transcript;
    let text = fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let transcript = Transcript::parse(&text).map_err(|e| {
        usage(format!(
            "{} is not a comfy-transcript/1 file: {e}",
            path.display()
        ))
    })?;
    let result = replay::replay(&transcript);
    if args.json {
        // A recording holds a server's text: escaped so that it prints safely.
        for e in &result.events {
            println!("{}", terminal_safe_json(&event_line(e).to_string()));
        }
        println!(
            "{}",
            terminal_safe_json(&summary_line(&result)?.to_string())
        );
    } else {
        for e in &result.events {
            let event = e.event.to_string();
            println!(
                "{:>7} ms  conn {}  {}",
                e.t_ms,
                e.conn,
                terminal_safe_line(&event)
            );
        }
        for p in &result.prompts {
            let formats: Vec<&str> = p.outputs.iter().map(|o| o.format).collect();
            let line = format!(
                "prompt {}: {} with {} output(s) [{}], {} preview(s)",
                p.prompt_id,
                serde_json::to_value(p.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                p.outputs.len(),
                formats.join(", "),
                p.previews
            );
            println!("{}", terminal_safe_line(&line));
            if let Some(e) = &p.error {
                let node = e.node_id.as_ref().map_or("-", NodeId::as_str);
                let class = e.node_type.as_deref().unwrap_or("-");
                let line = format!("  error at node {node} ({class}): {}", e.exception_type);
                println!("{}", terminal_safe_line(&line));
            }
            if let Some(r) = &p.rejected {
                let nodes: Vec<&str> = r.node_ids.iter().map(NodeId::as_str).collect();
                let line = format!("  rejected: {} at node(s) [{}]", r.kind, nodes.join(", "));
                println!("{}", terminal_safe_line(&line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The last line: the core's summaries, each output with the sha256 of its image.
fn summary_line(result: &Replay) -> Result<Value> {
    let mut prompts = Vec::new();
    for p in &result.prompts {
        let mut value =
            serde_json::to_value(p).map_err(|e| runtime(format!("cannot write a summary: {e}")))?;
        // The summary lists a prompt's outputs in arrival order, as its Output events come.
        let digests = result.events.iter().filter_map(|e| match &e.event {
            Event::Output { prompt, image, .. } if *prompt == p.prompt_id => {
                Some(sha256_hex(&image.data))
            }
            _ => None,
        });
        if let Some(outputs) = value.get_mut("outputs").and_then(Value::as_array_mut) {
            for (output, digest) in outputs.iter_mut().zip(digests) {
                if let Some(o) = output.as_object_mut() {
                    o.insert("sha256".into(), Value::from(digest));
                }
            }
        }
        prompts.push(value);
    }
    Ok(json!({ "summary": { "prompts": prompts } }))
}

fn prompt(p: &PromptId) -> Value {
    Value::from(p.as_str())
}

fn node(n: &Option<NodeId>) -> Value {
    n.as_ref().map_or(Value::Null, |n| Value::from(n.as_str()))
}

/// One event as a JSON object: `{"t_ms", "conn", "event": KIND, ...its fields}`.
fn event_line(e: &ReplayedEvent) -> Value {
    let mut line = Map::new();
    line.insert("t_ms".into(), e.t_ms.into());
    line.insert("conn".into(), e.conn.into());
    let (kind, fields) = event_fields(&e.event);
    line.insert("event".into(), kind.into());
    if let Value::Object(fields) = fields {
        line.extend(fields);
    }
    Value::Object(line)
}

fn event_fields(event: &Event) -> (&'static str, Value) {
    match event {
        Event::Connected => ("connected", json!({})),
        Event::Disconnected => ("disconnected", json!({})),
        Event::Accepted {
            prompt: p,
            number,
            warnings,
        } => (
            "accepted",
            json!({"prompt_id": prompt(p), "number": number, "warnings": warnings.len()}),
        ),
        Event::Rejected {
            prompt: p,
            rejection,
        } => {
            let nodes: Vec<&str> = rejection.node_ids().iter().map(|n| n.as_str()).collect();
            (
                "rejected",
                json!({"prompt_id": prompt(p), "type": rejection.error_type(),
                       "node_ids": nodes, "message": rejection.to_string()}),
            )
        }
        Event::Started { prompt: p } => ("started", json!({"prompt_id": prompt(p)})),
        Event::Cached { prompt: p, nodes } => {
            let nodes: Vec<&str> = nodes.iter().map(NodeId::as_str).collect();
            ("cached", json!({"prompt_id": prompt(p), "nodes": nodes}))
        }
        Event::NodeStarted { prompt: p, node: n } => (
            "node_started",
            json!({"prompt_id": prompt(p), "node": n.as_str()}),
        ),
        Event::Progress {
            prompt: p,
            node: n,
            value,
            max,
        } => (
            "progress",
            json!({"prompt_id": prompt(p), "node": node(n), "value": value, "max": max}),
        ),
        Event::Preview {
            prompt: p,
            node: n,
            image,
        } => (
            "preview",
            json!({"prompt_id": prompt(p), "node": node(n), "format": image.format.name(),
                   "bytes": image.data.len(), "sha256": sha256_hex(&image.data)}),
        ),
        Event::Output {
            prompt: p,
            node: n,
            index,
            image,
            file,
        } => (
            "output",
            json!({"prompt_id": prompt(p), "node": n.as_str(), "index": index,
                   "format": image.format.name(), "bytes": image.data.len(),
                   "sha256": sha256_hex(&image.data),
                   "file": file.as_ref().map(|f| f.filename.as_str())}),
        ),
        Event::File {
            prompt: p,
            node: n,
            index,
            file,
            data,
        } => (
            "file",
            json!({"prompt_id": prompt(p), "node": n.as_str(), "index": index,
                   "file": file.filename, "bytes": data.len(), "sha256": sha256_hex(data)}),
        ),
        Event::Text {
            prompt: p,
            node: n,
            text,
        } => (
            "text",
            json!({"prompt_id": p.as_ref().map(PromptId::as_str), "node": n.as_str(),
                   "text": text}),
        ),
        Event::NodeOutput {
            prompt: p,
            node: n,
            output,
        } => (
            "node_output",
            json!({"prompt_id": prompt(p), "node": n.as_str(), "output": output}),
        ),
        Event::Completed { prompt: p } => ("completed", json!({"prompt_id": prompt(p)})),
        Event::Failed { prompt: p, failure } => {
            let mut fields = json!({"prompt_id": prompt(p), "message": failure.to_string()});
            if let Failure::Execution(x) = failure {
                fields["node_id"] = x.node_id.as_str().into();
                fields["node_type"] = x.node_type.as_str().into();
                fields["exception_type"] = x.exception_type.as_str().into();
            }
            ("failed", fields)
        }
        Event::Interrupted { prompt: p, node: n } => (
            "interrupted",
            json!({"prompt_id": prompt(p), "node": node(n)}),
        ),
        Event::TimedOut {
            prompt: p,
            deadline,
        } => (
            "timed_out",
            json!({"prompt_id": prompt(p), "deadline": format!("{deadline:?}").to_lowercase()}),
        ),
        Event::Cancelled { prompt: p } => ("cancelled", json!({"prompt_id": prompt(p)})),
        Event::QueueStatus { remaining } => ("queue_status", json!({"remaining": remaining})),
        Event::ServerFeatures {
            supports_preview_metadata,
            max_upload_size,
        } => (
            "server_features",
            json!({"supports_preview_metadata": supports_preview_metadata,
                   "max_upload_size": max_upload_size}),
        ),
        Event::Unknown { kind, data } => ("unknown", json!({"type": kind, "data": data})),
        other => ("other", json!({"text": other.to_string()})),
    }
}
