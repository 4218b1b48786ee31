//! Every recorded session replayed through the core, with a snapshot of its event sequence
//! (images shown as format, length and a short hash) and of its summary; and the facts each
//! recording shows, asserted by name so that a wrong snapshot cannot hide them.

use comfy_proxy::replay::{Outcome, Replay, replay};
use comfy_proxy::session::Event;
use comfy_proxy::transcript::Transcript;
use sha2::{Digest, Sha256};

fn load(name: &str) -> Replay {
    let path = format!("{}/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    replay(&Transcript::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn short_hash(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One line per event; images as `format length hash`, long JSON cut.
fn render(replay: &Replay) -> String {
    let mut out = String::new();
    for e in &replay.events {
        let line = match &e.event {
            Event::Output { image, .. } | Event::Preview { image, .. } => {
                format!("{} #{}", e.event, short_hash(&image.data))
            }
            Event::Failed {
                prompt,
                failure: comfy_proxy::session::Failure::Execution(x),
            } => format!(
                "failed {prompt}: node {} ({}) raised {}",
                x.node_id, x.node_type, x.exception_type
            ),
            other => {
                let mut s = other.to_string();
                if s.len() > 200 {
                    let mut cut = 200;
                    while !s.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    s.truncate(cut);
                    s.push('…');
                }
                s
            }
        };
        let conn = if e.conn == 0 {
            String::new()
        } else {
            format!("[{}] ", e.conn)
        };
        out.push_str(&format!("{:>5} {conn}{line}\n", e.t_ms));
    }
    out.push_str("---\n");
    out.push_str(&serde_json::to_string_pretty(&replay.prompts).unwrap());
    out
}

macro_rules! recordings {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let r = load(stringify!($name));
            insta::assert_snapshot!(stringify!($name), render(&r));
        }
    )*};
}

recordings!(
    cached_rerun,
    exec_error,
    feature_flags,
    flux_dummy,
    flux_two_loras,
    interrupt,
    interrupt_targeted,
    progress_previews,
    progress_text,
    queue_ops,
    qwen_dummy,
    saveimage_history,
    two_clients,
    validation_bad_link,
    validation_bad_values,
    validation_missing_model,
    validation_no_outputs,
    validation_no_prompt,
    validation_unknown_node,
    ws_batch4,
    ws_single,
    ws_two_outputs,
);

fn outcome(name: &str) -> Vec<Outcome> {
    load(name).prompts.iter().map(|p| p.outcome).collect()
}

#[test]
fn every_recording_is_covered() {
    let dir = format!("{}/fixtures", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".jsonl").map(str::to_owned))
        .filter(|n| !n.starts_with("faulty_"))
        .collect();
    names.sort();
    let snapshots = format!("{}/tests/snapshots", env!("CARGO_MANIFEST_DIR"));
    for name in names {
        let snap = format!("{snapshots}/replay__{name}.snap");
        assert!(
            std::path::Path::new(&snap).exists(),
            "no replay snapshot for {name}"
        );
    }
}

#[test]
fn batch_of_four_gives_four_outputs_and_no_previews() {
    let p = &load("ws_batch4").prompts[0];
    assert_eq!(p.outcome, Outcome::Success);
    assert_eq!(p.outputs.len(), 4);
    assert!(
        p.outputs
            .iter()
            .all(|o| o.format == "PNG" && o.node == "save_image_websocket_node")
    );
    assert_eq!(p.previews, 0);
}

#[test]
fn previews_are_not_outputs() {
    for name in ["progress_previews", "feature_flags"] {
        let p = &load(name).prompts[0];
        assert_eq!(p.outcome, Outcome::Success, "{name}");
        assert_eq!(p.outputs.len(), 1, "{name}");
        assert_eq!(p.outputs[0].format, "PNG", "{name}");
        assert_eq!(p.previews, 10, "{name}");
    }
}

#[test]
fn feature_flags_recording_delivers_type_4_frames() {
    let r = load("feature_flags");
    assert!(r.events.iter().any(|e| matches!(
        e.event,
        Event::ServerFeatures {
            supports_preview_metadata: true,
            ..
        }
    )));
    let previews: Vec<_> = r
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Preview { node, image, .. } => Some((node.clone(), image.format)),
            _ => None,
        })
        .collect();
    assert!(
        previews
            .iter()
            .all(|(node, f)| node.as_ref().is_some_and(|n| n == "2") && f.name() == "JPEG")
    );
}

#[test]
fn two_outputs_are_told_apart_by_executing() {
    let p = &load("ws_two_outputs").prompts[0];
    let nodes: Vec<&str> = p.outputs.iter().map(|o| o.node.as_str()).collect();
    assert_eq!(p.outputs.len(), 2);
    assert!(
        nodes.contains(&"save_a") && nodes.contains(&"save_b"),
        "{nodes:?}"
    );
}

#[test]
fn execution_error_names_the_node() {
    let p = &load("exec_error").prompts[0];
    assert_eq!(p.outcome, Outcome::Error);
    let e = p.error.as_ref().unwrap();
    assert_eq!(e.node_id.as_ref().unwrap(), "2");
    assert_eq!(e.node_type.as_deref(), Some("TestRaiseError"));
    assert_eq!(e.exception_type, "RuntimeError");
}

#[test]
fn flux_two_loras_is_rejected_at_node_6() {
    let p = &load("flux_two_loras").prompts[0];
    assert_eq!(p.outcome, Outcome::Rejected);
    let r = p.rejected.as_ref().unwrap();
    assert_eq!(r.kind, "prompt_outputs_failed_validation");
    assert_eq!(r.node_ids, vec!["6".into()] as Vec<comfy_proxy::NodeId>);
    let replay = load("flux_two_loras");
    let text = replay
        .events
        .iter()
        .map(|e| e.event.to_string())
        .collect::<String>();
    assert!(text.contains("return_type_mismatch"), "{text}");
}

#[test]
fn outcomes_match_the_recordings() {
    use Outcome::*;
    assert_eq!(outcome("ws_single"), [Success]);
    assert_eq!(outcome("cached_rerun"), [Success, Success]);
    assert_eq!(outcome("interrupt"), [Interrupted]);
    assert_eq!(outcome("interrupt_targeted"), [Interrupted]);
    assert_eq!(outcome("flux_dummy"), [Error]);
    assert_eq!(outcome("qwen_dummy"), [Error]);
    assert_eq!(outcome("two_clients"), [Success, Success]);
    assert_eq!(outcome("queue_ops"), [Success, Cancelled]);
    for v in [
        "bad_link",
        "bad_values",
        "missing_model",
        "no_outputs",
        "no_prompt",
        "unknown_node",
    ] {
        assert_eq!(outcome(&format!("validation_{v}")), [Rejected], "{v}");
    }
}

#[test]
fn saveimage_file_is_fetched_by_view() {
    let r = load("saveimage_history");
    let p = &r.prompts[0];
    assert_eq!(p.outcome, Outcome::Success);
    assert_eq!(p.outputs.len(), 1);
    assert_eq!(p.outputs[0].node, "2");
    assert!(r.events.iter().any(|e| matches!(&e.event, Event::Output { file: Some(f), .. } if f.filename == "rec_00001_.png")));
}

#[test]
fn progress_text_arrives() {
    let p = &load("progress_text").prompts[0];
    assert_eq!(p.outcome, Outcome::Success);
    assert_eq!(p.texts.len(), 1);
    assert!(p.texts[0].contains("width: 40"), "{:?}", p.texts);
}

#[test]
fn every_prompt_ends_exactly_once() {
    for name in [
        "ws_single",
        "queue_ops",
        "two_clients",
        "cached_rerun",
        "exec_error",
    ] {
        let r = load(name);
        for p in &r.prompts {
            let ends = r
                .events
                .iter()
                .filter(|e| e.event.is_terminal() && e.event.prompt() == Some(&p.prompt_id))
                .count();
            assert_eq!(ends, 1, "{name} {}", p.prompt_id);
        }
    }
}

/// A client records a request beside its answer, when the answer came: a server quick to start
/// the prompt puts the socket's messages about it before its `POST /prompt` in the
/// transcript. Replay still gives the prompt the frames the live session did.
#[test]
fn a_post_recorded_after_the_prompts_first_messages_replays_the_same() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/ws_single.jsonl"
    ))
    .unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let post = lines
        .iter()
        .position(|l| l.contains(r#""kind":"http_request""#))
        .unwrap();
    let exchange: Vec<&str> = lines.drain(post..post + 2).collect();
    assert!(exchange[1].contains("http_response"), "{exchange:?}");
    // Just before the image: after the prompt's start, its nodes and its progress.
    let image = lines
        .iter()
        .position(|l| l.contains(r#""kind":"ws_binary""#))
        .unwrap();
    assert!(lines[..image].iter().any(|l| l.contains("execution_start")));
    lines.splice(image..image, exchange);
    let moved = Transcript::parse(&lines.join("\n")).unwrap();
    let result = replay(&moved);
    assert_eq!(result.prompts.len(), 1);
    assert_eq!(result.prompts[0].outcome, Outcome::Success);
    assert_eq!(
        result.prompts[0].outputs.len(),
        1,
        "{:?}",
        result.prompts[0]
    );
}
