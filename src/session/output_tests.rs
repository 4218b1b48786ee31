//! Output classification on real files, and a real run of the mixed graph (fresh and cached)
//! through a [`Session`] into [`Outputs`].

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::ids::{ClientId, PromptId};
use crate::session::{Session, SessionConfig, Submission, Transmit};
use crate::wire::HttpResponse;
use crate::workflow::Workflow;

const PNG: &[u8] = include_bytes!("../../fixtures/outputs/saved_image.png");
const WEBP: &[u8] = include_bytes!("../../fixtures/outputs/saved_anim.webp");
const MP4: &[u8] = include_bytes!("../../fixtures/outputs/saved_video.mp4");
const GRAPH: &str = include_str!("../../fixtures/outputs/mixed_graph.json");
const FRESH: &str = include_str!("../../fixtures/outputs/mixed_ws_fresh.jsonl");
const CACHED: &str = include_str!("../../fixtures/outputs/mixed_ws_cached.jsonl");

fn kind(data: &[u8], name: Option<&str>) -> (OutputKind, String) {
    classify(data, name)
}

/// A PNG whose first chunk after IHDR is `acTL` (what an APNG looks like).
fn apng() -> Vec<u8> {
    let mut d = b"\x89PNG\r\n\x1a\n".to_vec();
    d.extend_from_slice(&13u32.to_be_bytes());
    d.extend_from_slice(b"IHDR");
    d.extend_from_slice(&[0; 13 + 4]);
    d.extend_from_slice(&8u32.to_be_bytes());
    d.extend_from_slice(b"acTL");
    d.extend_from_slice(&[0; 8 + 4]);
    d
}

#[test]
fn content_decides_kind_and_extension() {
    let mut webm = vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x82, 0x84];
    webm.extend_from_slice(b"webm");
    let cases: Vec<(Vec<u8>, Option<&str>, OutputKind, &str)> = vec![
        // Real files from ComfyUI 0.3.64 (SaveImage, SaveAnimatedWEBP, SaveVideo).
        (
            PNG.to_vec(),
            Some("cp_00001_.png"),
            OutputKind::Image,
            "png",
        ),
        (
            WEBP.to_vec(),
            Some("a.webp"),
            OutputKind::AnimatedImage,
            "webp",
        ),
        (
            MP4.to_vec(),
            Some("cp_mixed_00001_.mp4"),
            OutputKind::Video,
            "mp4",
        ),
        // Content wins over a misleading name (SaveVideo files its mp4 under `images`).
        (MP4.to_vec(), Some("x.png"), OutputKind::Video, "mp4"),
        (
            apng(),
            Some("cp_apng_00001_.png"),
            OutputKind::AnimatedImage,
            "png",
        ),
        (vec![0xFF, 0xD8, 0xFF, 0xE0], None, OutputKind::Image, "jpg"),
        (
            b"RIFF\0\0\0\0WEBPVP8 ".to_vec(),
            None,
            OutputKind::Image,
            "webp",
        ),
        (
            b"GIF89a\x01\0".to_vec(),
            None,
            OutputKind::AnimatedImage,
            "gif",
        ),
        (
            b"\0\0\0\x14ftypqt  ".to_vec(),
            None,
            OutputKind::Video,
            "mov",
        ),
        (
            b"\0\0\0\x18ftypM4A ".to_vec(),
            None,
            OutputKind::Audio,
            "m4a",
        ),
        (webm, None, OutputKind::Video, "webm"),
        (
            vec![0x1A, 0x45, 0xDF, 0xA3, 0, 0],
            None,
            OutputKind::Video,
            "mkv",
        ),
        (
            b"RIFF\0\0\0\0AVI LIST".to_vec(),
            None,
            OutputKind::Video,
            "avi",
        ),
        (
            b"fLaC\0\0\0\x22".to_vec(),
            Some("cp_audio_00001_.flac"),
            OutputKind::Audio,
            "flac",
        ),
        (
            b"RIFF\0\0\0\0WAVEfmt ".to_vec(),
            None,
            OutputKind::Audio,
            "wav",
        ),
        (b"ID3\x04\0".to_vec(), None, OutputKind::Audio, "mp3"),
        (vec![0xFF, 0xFB, 0x90, 0x64], None, OutputKind::Audio, "mp3"),
        (b"OggS\0\x02".to_vec(), None, OutputKind::Audio, "ogg"),
        (
            b"OggS\0\x02".to_vec(),
            Some("clip.OGV"),
            OutputKind::Video,
            "ogv",
        ),
        (b"glTF\x02\0\0\0".to_vec(), None, OutputKind::Model3d, "glb"),
        (
            b"ply\nformat ascii 1.0".to_vec(),
            None,
            OutputKind::Model3d,
            "ply",
        ),
        (
            b"Kaydara FBX Binary  \0".to_vec(),
            None,
            OutputKind::Model3d,
            "fbx",
        ),
        // Unknown content: the name's extension, when it is plain.
        (
            b"{\"asset\":{}}".to_vec(),
            Some("mesh.gltf"),
            OutputKind::Model3d,
            "gltf",
        ),
        (
            b"v 0 0 0".to_vec(),
            Some("mesh.OBJ"),
            OutputKind::Model3d,
            "obj",
        ),
        (b"".to_vec(), Some("clip.webm"), OutputKind::Video, "webm"),
        (
            b"".to_vec(),
            Some("anim.gif"),
            OutputKind::AnimatedImage,
            "gif",
        ),
        (b"a,b".to_vec(), Some("table.csv"), OutputKind::File, "csv"),
        // Hostile or odd names never make an extension.
        (
            b"x".to_vec(),
            Some("../../etc/passwd"),
            OutputKind::File,
            "bin",
        ),
        (b"x".to_vec(), Some("a.sh;rm -rf"), OutputKind::File, "bin"),
        (
            b"x".to_vec(),
            Some("a.verylongextension"),
            OutputKind::File,
            "bin",
        ),
        (
            b"x".to_vec(),
            Some("a.\u{e9}t\u{e9}"),
            OutputKind::File,
            "bin",
        ),
        (b"x".to_vec(), Some("noext"), OutputKind::File, "bin"),
        (b"x".to_vec(), None, OutputKind::File, "bin"),
        // Truncated magic is no magic.
        (b"\x89PN".to_vec(), None, OutputKind::File, "bin"),
        (b"RIFF".to_vec(), None, OutputKind::File, "bin"),
    ];
    for (data, name, want_kind, want_ext) in cases {
        assert_eq!(
            kind(&data, name),
            (want_kind, want_ext.to_owned()),
            "{name:?} {:02x?}",
            &data[..data.len().min(12)]
        );
    }
}

#[test]
fn a_damaged_png_chunk_list_is_not_animated_and_does_not_panic() {
    let mut d = b"\x89PNG\r\n\x1a\n".to_vec();
    d.extend_from_slice(&u32::MAX.to_be_bytes());
    d.extend_from_slice(b"IHDR");
    assert_eq!(kind(&d, None).0, OutputKind::Image);
}

fn ui(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn node_output(node: &str, output: Value) -> Event {
    Event::NodeOutput {
        prompt: PromptId::from("p"),
        node: node.into(),
        output: ui(output),
    }
}

fn file(name: &str, subfolder: &str) -> FileRef {
    FileRef {
        filename: name.into(),
        subfolder: subfolder.into(),
        kind: "output".into(),
    }
}

#[test]
fn animated_flag_of_the_node_makes_a_still_looking_image_animated() {
    // Pillow writes a 3-frame batch of identical frames as one still WebP: only the node's
    // `animated: [true]` says it is an animation.
    let still = b"RIFF\0\0\0\0WEBPVP8 \0\0".to_vec();
    let mut out = Outputs::new();
    out.handle_event(&node_output(
        "3",
        json!({"images": [{"filename": "a.webp", "subfolder": "", "type": "output"}],
               "animated": [true]}),
    ));
    out.push_data(
        "3".into(),
        0,
        Bytes::from(still.clone()),
        Some(file("a.webp", "")),
    );
    out.push_data("9".into(), 0, Bytes::from(still), None);
    assert_eq!(out[0].kind, OutputKind::AnimatedImage);
    assert_eq!(out[1].kind, OutputKind::Image, "no flag for node 9");
}

#[test]
fn texts_ui_data_and_events_fold_into_outputs() {
    let mut out = Outputs::new();
    let png = Bytes::from_static(PNG);
    let handled = [
        out.handle_event(&Event::Started {
            prompt: PromptId::from("p"),
        }),
        out.handle_event(&Event::Preview {
            prompt: PromptId::from("p"),
            node: Some("8".into()),
            image: Image {
                format: ImageFormat::Png,
                data: png.clone(),
            },
        }),
        out.handle_event(&node_output(
            "7",
            json!({"text": ["hello from comfy-proxy", 5, "second"]}),
        )),
        out.handle_event(&node_output(
            "11",
            json!({"images": [{"filename": "ComfyUI_temp_mtogp_00001_.png", "subfolder": "",
                               "type": "temp"}]}),
        )),
        out.handle_event(&node_output(
            "12",
            json!({"text": "bare", "custom": {"k": 1}}),
        )),
        out.handle_event(&Event::Output {
            prompt: PromptId::from("p"),
            node: "8".into(),
            index: 0,
            image: Image {
                format: ImageFormat::Png,
                data: png.clone(),
            },
            file: None,
        }),
        out.handle_event(&Event::File {
            prompt: PromptId::from("p"),
            node: "5".into(),
            index: 0,
            file: file("cp_mixed_00001_.mp4", "video"),
            data: Bytes::from_static(MP4),
        }),
    ];
    assert_eq!(handled, [false, false, true, true, true, true, true]);
    let kinds: Vec<(&str, u32, OutputKind)> = out
        .iter()
        .map(|o| (o.node.as_str(), o.index, o.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("7", 0, OutputKind::Text),
            ("7", 1, OutputKind::Text),
            ("12", 0, OutputKind::Text),
            ("8", 0, OutputKind::Image),
            ("5", 0, OutputKind::Video),
        ],
        "previews stay out; non-string text items stay in ui only"
    );
    let texts: Vec<&str> = out.texts().map(|(_, t)| t).collect();
    assert_eq!(texts, ["hello from comfy-proxy", "second", "bare"]);
    assert_eq!(out[4].file().map(|f| f.subfolder.as_str()), Some("video"));
    assert_eq!(out[4].extension, "mp4");
    assert_eq!(out[4].bytes().len(), MP4.len());
    // Bytes share the buffer they came in.
    assert_eq!(out[3].data().map(|d| d.as_ptr()), Some(png.as_ptr()));
    assert_eq!(out.images().count(), 1, "the mp4 is no image");
    // Nothing a node returned is dropped: the temp preview file and custom data stay in ui.
    assert_eq!(out.ui().len(), 3);
    assert_eq!(
        out.ui_of(&"11".into())
            .and_then(|u| u["images"][0]["type"].as_str()),
        Some("temp")
    );
    assert_eq!(
        out.ui_of(&"12".into()).map(|u| &u["custom"]),
        Some(&json!({"k": 1}))
    );
}

#[test]
fn a_node_reported_twice_joins_its_lists() {
    let mut out = Outputs::new();
    out.handle_ui(&"7".into(), &ui(json!({"text": ["a"], "n": 1})));
    out.handle_ui(&"7".into(), &ui(json!({"text": ["b"], "n": 2})));
    let texts: Vec<(u32, &str)> = out.iter().map(|o| (o.index, o.text().unwrap())).collect();
    assert_eq!(texts, [(0, "a"), (1, "b")]);
    assert_eq!(
        out.ui_of(&"7".into()),
        Some(&ui(json!({"text": ["a", "b"], "n": 2})))
    );
}

/// Runs the real mixed graph's websocket messages (fresh or cached run of ComfyUI 0.3.64)
/// through a session, answering `/view` with real files, and folds its events.
fn run_mixed(transcript: &str) -> (Outputs, Vec<Event>) {
    run_mixed_with(transcript, true)
}

/// [`run_mixed`], with the submission's progress on or off.
fn run_mixed_with(transcript: &str, progress: bool) -> (Outputs, Vec<Event>) {
    let lines: Vec<Value> = transcript
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let prompt = lines
        .iter()
        .find(|v| v["type"] == "execution_start")
        .and_then(|v| v["data"]["prompt_id"].as_str())
        .map(PromptId::from)
        .unwrap();
    let graph = Workflow::from_json(GRAPH).unwrap();
    let mut session = Session::new(ClientId::from("c"), SessionConfig::default());
    let now = Duration::ZERO;
    let mut submission = Submission::new(prompt.clone(), graph);
    if !progress {
        submission = submission.without_progress();
    }
    session.submit(now, submission).unwrap();
    session.handle_connected(now);
    let mut events = Vec::new();
    let answer_all = |session: &mut Session, events: &mut Vec<Event>| loop {
        let mut answered = false;
        let requests: Vec<_> = std::iter::from_fn(|| session.poll_transmit()).collect();
        // Downloads finish in any order: answer the last asked first.
        for t in requests.into_iter().rev() {
            let Transmit::Http { id, request } = t else {
                continue;
            };
            let body: Bytes = if request.path == "/prompt" {
                Bytes::from(
                    json!({"prompt_id": prompt.as_str(), "number": 1, "node_errors": {}})
                        .to_string(),
                )
            } else if request.path.contains(".mp4") {
                Bytes::from_static(MP4)
            } else if request.path.contains(".webp") {
                Bytes::from_static(WEBP)
            } else {
                Bytes::from_static(PNG)
            };
            session.handle_response(now, id, HttpResponse::new(200, body));
            answered = true;
        }
        events.extend(std::iter::from_fn(|| session.poll_event()));
        if !answered {
            return;
        }
    };
    answer_all(&mut session, &mut events);
    for line in &lines {
        if line["binary"] == true {
            // The real frames: type 1 (image), format 2 (PNG), then a PNG.
            let mut frame = vec![0, 0, 0, 1, 0, 0, 0, 2];
            frame.extend_from_slice(PNG);
            session.handle_binary(now, Bytes::from(frame)).unwrap();
        } else {
            session.handle_text(now, &line.to_string()).unwrap();
        }
        answer_all(&mut session, &mut events);
    }
    let mut outputs = Outputs::new();
    for e in &events {
        outputs.handle_event(e);
    }
    (outputs, events)
}

#[test]
fn the_real_mixed_graph_comes_back_whole_fresh_and_cached() {
    for (name, transcript) in [("fresh", FRESH), ("cached", CACHED)] {
        let (out, events) = run_mixed(transcript);
        assert!(
            events.iter().any(|e| matches!(e, Event::Completed { .. })),
            "{name}: {events:?}"
        );
        assert_eq!(
            events.iter().filter(|e| e.is_terminal()).count(),
            1,
            "{name}"
        );
        let count = |k| out.of_kind(k).count();
        let by_ext = |e: &str| out.iter().filter(|o| o.extension == e).count();
        assert_eq!(count(OutputKind::Image), 6, "{name}: 3 files + 3 frames");
        assert_eq!(by_ext("png"), 6, "{name}");
        assert_eq!(count(OutputKind::AnimatedImage), 1, "{name}: the WebP");
        assert_eq!(by_ext("webp"), 1, "{name}");
        assert_eq!(count(OutputKind::Video), 1, "{name}: the mp4");
        assert_eq!(by_ext("mp4"), 1, "{name}");
        let texts: Vec<&str> = out.texts().map(|(_, t)| t).collect();
        assert_eq!(texts, ["hello from comfy-proxy"], "{name}");
        assert_eq!(out.len(), 9, "{name}: nothing else");
        let ui_nodes: Vec<&str> = out.ui().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(ui_nodes.len(), 4, "{name}: {ui_nodes:?}");
        let ws: Vec<u32> = out
            .iter()
            .filter(|o| o.node.as_str() == "8")
            .map(|o| o.index)
            .collect();
        assert_eq!(ws, [0, 1, 2], "{name}: the websocket frames, in order");
        let files: Vec<(u32, &str)> = out
            .iter()
            .filter(|o| o.node.as_str() == "2")
            .map(|o| (o.index, o.file().map_or("", |f| f.filename.as_str())))
            .collect();
        let mut in_order = files.clone();
        in_order.sort();
        assert_eq!(files.len(), 3, "{name}");
        assert!(
            in_order.windows(2).all(|w| w[0].1 < w[1].1),
            "{name}: indexes follow the server's list, not download order: {files:?}"
        );
    }
}

#[test]
fn without_progress_the_real_graph_reports_the_same_outputs_and_no_steps() {
    let is_progress = |e: &Event| {
        matches!(
            e,
            Event::Cached { .. } | Event::NodeStarted { .. } | Event::Progress { .. }
        )
    };
    for (name, transcript) in [("fresh", FRESH), ("cached", CACHED)] {
        let (out_on, events_on) = run_mixed_with(transcript, true);
        let (out_off, events_off) = run_mixed_with(transcript, false);
        assert!(
            events_on.iter().any(is_progress),
            "{name}: the recording has progress to leave out"
        );
        assert!(
            !events_off.iter().any(is_progress),
            "{name}: {events_off:?}"
        );
        let rest: Vec<&Event> = events_on.iter().filter(|e| !is_progress(e)).collect();
        assert_eq!(rest, events_off.iter().collect::<Vec<_>>(), "{name}");
        assert_eq!(out_on.len(), out_off.len(), "{name}");
        assert!(
            events_off
                .iter()
                .any(|e| matches!(e, Event::Completed { .. })),
            "{name}"
        );
    }
}
