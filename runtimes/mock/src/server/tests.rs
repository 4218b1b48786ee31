//! Unit tests of the mock server: what it sends, compared with what the real server sent in the
//! recordings (prompt ids and timestamps aside, image bytes aside), and hostile input.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use comfy_proxy::transcript::RecordKind;
use comfy_proxy::wire::frame::{PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA};

/// PNG and JPEG magic, then the spec as text.
struct Stamp;

impl Renderer for Stamp {
    fn png(&self, spec: &ImageSpec) -> Bytes {
        Bytes::from(format!("\u{89}PNG {spec:?}").into_bytes())
    }
    fn jpeg(&self, spec: &ImageSpec) -> Bytes {
        let mut out = vec![0xFF, 0xD8, 0xFF];
        out.extend_from_slice(format!("{spec:?}").as_bytes());
        Bytes::from(out)
    }
}

fn fixture(name: &str) -> Transcript {
    let path = format!("{}/../../fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    Transcript::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_json(name: &str) -> Value {
    let path = format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn quick() -> MockConfig {
    MockConfig {
        step: Duration::ZERO,
        job: Duration::ZERO,
        speed: 0.0,
        ..MockConfig::default()
    }
}

fn server(config: MockConfig) -> MockServer {
    MockServer::new(config, Box::new(Stamp))
}

/// Runs every timer until the server is idle; returns what it sent.
fn run_all(s: &mut MockServer, now: &mut Duration) -> Vec<MockOutput> {
    let mut out = Vec::new();
    for _ in 0..1_000_000 {
        while let Some(o) = s.poll_output(*now) {
            out.push(o);
        }
        match s.poll_timeout() {
            Some(at) => {
                *now = (*now).max(at);
                s.handle_timeout(*now);
            }
            None => break,
        }
    }
    out
}

/// A frame in a comparable form: the prompt id as `PID`, timestamps 0, images by their header.
fn normalize_text(text: &str, pid: &str) -> String {
    let mut v: Value = serde_json::from_str(&text.replace(pid, "PID")).unwrap();
    if let Some(d) = v.get_mut("data").and_then(Value::as_object_mut) {
        if d.contains_key("timestamp") {
            d.insert("timestamp".into(), json!(0));
        }
    }
    pyjson::dumps(&v)
}

fn normalize_binary(data: &[u8], pid: &str) -> String {
    let word = |at: usize| u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
    match word(0) {
        PREVIEW_IMAGE => format!("binary 1 format {}", word(4)),
        PREVIEW_IMAGE_WITH_METADATA => {
            let len = word(4) as usize;
            let meta = std::str::from_utf8(&data[8..8 + len]).unwrap();
            format!("binary 4 {}", meta.replace(pid, "PID"))
        }
        other => format!("binary {other}"),
    }
}

fn normalize(frame: &Frame, pid: &str) -> String {
    match frame {
        Frame::Text(t) => normalize_text(t, pid),
        Frame::Binary(b) => normalize_binary(b, pid),
    }
}

/// What the recorded server sent on connection 0, normalized, and the recorded prompt id.
fn recorded_stream(t: &Transcript) -> (Vec<String>, String) {
    let pid = t
        .records
        .iter()
        .find_map(|r| match &r.kind {
            RecordKind::HttpResponse { body, .. } => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("prompt_id")?.as_str().map(str::to_owned)),
            _ => None,
        })
        .unwrap();
    let frames = t
        .records
        .iter()
        .filter(|r| r.conn == 0)
        .filter_map(|r| match &r.kind {
            RecordKind::WsText { text } => Some(normalize_text(text, &pid)),
            RecordKind::WsBinary { data } => Some(normalize_binary(data, &pid)),
            _ => None,
        });
    (frames.collect(), pid)
}

/// Plays the recorded client against the mock: opens its socket, sends its hello, posts its
/// first graph (`reorder` moves the named nodes to the end, in that order). Returns the mock's
/// normalized stream, the prompt id and the server.
fn mock_stream(t: &Transcript, config: MockConfig, reorder: &[&str]) -> (Vec<String>, String) {
    let mut s = server(config);
    let mut now = Duration::ZERO;
    let mut pid = String::new();
    for r in &t.records {
        match &r.kind {
            RecordKind::WsOpen { path } if r.conn == 0 => {
                s.handle_ws_open(now, ConnId(0), path).unwrap();
            }
            RecordKind::WsSendText { text } => s.handle_ws_text(now, ConnId(0), text),
            RecordKind::HttpRequest { method, path, body } if path == "/prompt" => {
                let mut body = body.clone().unwrap();
                for id in reorder {
                    let graph = body["prompt"].as_object_mut().unwrap();
                    let node = graph.remove(*id).unwrap();
                    graph.insert((*id).to_owned(), node);
                }
                let body = serde_json::to_vec(&body).unwrap();
                let resp = s.handle_request(now, method, path, &body);
                assert_eq!(resp.status, 200, "{:?}", resp.body);
                let v: Value = serde_json::from_slice(&resp.body).unwrap();
                pid = v["prompt_id"].as_str().unwrap().to_owned();
                break;
            }
            _ => {}
        }
    }
    let frames = run_all(&mut s, &mut now)
        .into_iter()
        .filter_map(|o| match o {
            MockOutput::Send {
                conn: ConnId(0),
                frame,
            } => Some(frame),
            _ => None,
        })
        .map(|f| normalize(&f, &pid));
    (frames.collect(), pid)
}

fn assert_same_stream(name: &str, got: &[String], want: &[String]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{name}: frame {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{name}: {got:#?}");
}

#[test]
fn simulation_follows_the_recorded_grammar() {
    for (name, reorder) in [
        ("ws_single", &[][..]),
        ("ws_batch4", &[]),
        ("progress_previews", &[]),
        ("feature_flags", &[]),
        ("saveimage_history", &[]),
        // The real server takes its outputs from a Python set; this one in graph order.
        ("ws_two_outputs", &["save_b", "save_a"]),
    ] {
        let t = fixture(name);
        let (want, _) = recorded_stream(&t);
        let (got, _) = mock_stream(&t, quick(), reorder);
        assert_same_stream(name, &got, &want);
    }
}

#[test]
fn replay_reproduces_the_recording_with_the_new_id() {
    for name in [
        "ws_batch4",
        "feature_flags",
        "exec_error",
        "progress_text",
        "flux_dummy",
    ] {
        let t = fixture(name);
        let (want, recorded_pid) = recorded_stream(&t);
        let config = MockConfig {
            recordings: vec![t.clone()],
            ..quick()
        };
        let (got, pid) = mock_stream(&t, config, &[]);
        assert_ne!(pid, recorded_pid);
        assert_same_stream(name, &got, &want);
    }
}

#[test]
fn replay_of_a_refusal_answers_as_recorded() {
    let t = fixture("flux_two_loras");
    let (body, recorded) = t
        .records
        .iter()
        .find_map(|r| match &r.kind {
            RecordKind::HttpRequest { path, body, .. } if path == "/prompt" => body.clone(),
            _ => None,
        })
        .zip(t.records.iter().find_map(|r| match &r.kind {
            RecordKind::HttpResponse { status, body, .. } => Some((*status, body.clone())),
            _ => None,
        }))
        .unwrap();
    let mut s = server(MockConfig {
        recordings: vec![t.clone()],
        ..quick()
    });
    let resp = s.handle_request(
        Duration::ZERO,
        "POST",
        "/prompt",
        body.to_string().as_bytes(),
    );
    assert_eq!(resp.status, recorded.0);
    let got: Value = serde_json::from_slice(&resp.body).unwrap();
    let want: Value = serde_json::from_slice(&recorded.1).unwrap();
    assert_eq!(got, want);
    assert!(s.is_idle());
}

/// The first recorded `POST /prompt` body and the recorded response body of `name`.
fn recorded_post(name: &str) -> (Vec<u8>, u16, Value) {
    let t = fixture(name);
    let mut body = None;
    for r in &t.records {
        match &r.kind {
            RecordKind::HttpRequest { path, body: b, .. } if path == "/prompt" => {
                body = Some(b.clone().unwrap().to_string().into_bytes());
            }
            RecordKind::HttpResponse {
                status, body: resp, ..
            } if body.is_some() => {
                let v = serde_json::from_slice(resp).unwrap();
                return (body.unwrap(), *status, v);
            }
            _ => {}
        }
    }
    panic!("{name}: no POST /prompt");
}

#[test]
fn refusals_have_the_recorded_shape() {
    for name in [
        "validation_unknown_node",
        "validation_no_outputs",
        "validation_no_prompt",
    ] {
        let (body, status, want) = recorded_post(name);
        let mut s = server(MockConfig {
            object_info: Some(fixture_json("object_info.json")),
            ..quick()
        });
        let resp = s.handle_request(Duration::ZERO, "POST", "/prompt", &body);
        assert_eq!(resp.status, status, "{name}");
        assert_eq!(resp.content_type, "application/json; charset=utf-8");
        let got: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(got, want, "{name}");
    }
    // A dangling link: the recorded answer, traceback aside.
    let (body, status, mut want) = recorded_post("validation_bad_link");
    want["node_errors"]["save_image_websocket_node"]["errors"][0]["extra_info"]["traceback"] =
        json!([]);
    let resp = server(quick()).handle_request(Duration::ZERO, "POST", "/prompt", &body);
    assert_eq!(resp.status, status);
    assert_eq!(serde_json::from_slice::<Value>(&resp.body).unwrap(), want);
}

#[test]
fn history_and_view_have_the_recorded_shape() {
    let t = fixture("saveimage_history");
    let mut s = server(quick());
    let mut now = Duration::ZERO;
    s.handle_ws_open(
        now,
        ConnId(0),
        "/ws?clientId=rec-saveimage_history-0-937612ae",
    )
    .unwrap();
    let (body, _, _) = recorded_post("saveimage_history");
    let resp = s.handle_request(now, "POST", "/prompt", &body);
    let pid = serde_json::from_slice::<Value>(&resp.body).unwrap()["prompt_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.handle_request(now, "GET", &format!("/history/{pid}"), b"")
            .body,
        "{}"
    );
    run_all(&mut s, &mut now);
    let recorded = t
        .records
        .iter()
        .filter_map(|r| match &r.kind {
            RecordKind::HttpResponse { body, .. } => Some(body.clone()),
            _ => None,
        })
        .nth(1)
        .unwrap();
    let recorded = String::from_utf8(recorded.to_vec()).unwrap();
    let recorded_pid = "f27c7303-49d5-465d-99a2-d5f0e02a9274";
    let resp = s.handle_request(now, "GET", &format!("/history/{pid}"), b"");
    let mut got: Value = serde_json::from_slice(&resp.body).unwrap();
    let mut want: Value = serde_json::from_str(&recorded.replace(recorded_pid, &pid)).unwrap();
    for v in [&mut got, &mut want] {
        v[&pid]["prompt"][0] = json!(0);
        for m in v[&pid]["status"]["messages"].as_array_mut().unwrap() {
            m[1]["timestamp"] = json!(0);
        }
    }
    assert_eq!(got, want);
    let view = s.handle_request(
        now,
        "GET",
        "/view?filename=rec_00001_.png&subfolder=&type=output",
        b"",
    );
    assert_eq!((view.status, view.content_type), (200, "image/png"));
    assert!(view.body.starts_with("\u{89}PNG".as_bytes()));
    for path in [
        "/view?filename=..%2F..%2Fetc%2Fpasswd&type=output",
        "/view?filename=rec_00001_.png&subfolder=..&type=output",
        "/view?subfolder=&type=output",
        "/view",
    ] {
        assert_eq!(
            s.handle_request(now, "GET", path, b"").status,
            404,
            "{path}"
        );
    }
}

#[test]
fn queue_runs_by_number_with_front_first() {
    let mut s = server(MockConfig {
        job: Duration::from_millis(10),
        ..quick()
    });
    let now = Duration::ZERO;
    let graph = r#"{"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}"#;
    let post = |s: &mut MockServer, extra: &str| {
        let body = format!(r#"{{"prompt": {graph}, "client_id": "c"{extra}}}"#);
        let resp = s.handle_request(now, "POST", "/prompt", body.as_bytes());
        assert_eq!(resp.status, 200);
        serde_json::from_slice::<Value>(&resp.body).unwrap()
    };
    let a = post(&mut s, r#", "prompt_id": "a""#);
    let b = post(&mut s, r#", "prompt_id": "b""#);
    let c = post(&mut s, r#", "prompt_id": "c", "front": true"#);
    let d = post(&mut s, r#", "prompt_id": "d", "number": 0.5"#);
    let e = post(&mut s, "");
    assert_eq!((&a["number"], &b["number"]), (&json!(0), &json!(1)));
    assert_eq!((&c["number"], &d["number"]), (&json!(-2), &json!(0.5)));
    assert_eq!(
        e["prompt_id"].as_str().unwrap().len(),
        36,
        "a made-up id is UUID-shaped"
    );
    let queue = s.handle_request(now, "GET", "/queue", b"");
    let queue: Value = serde_json::from_slice(&queue.body).unwrap();
    let ids: Vec<&str> = queue["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[1].as_str().unwrap())
        .collect();
    assert_eq!(ids[..4], ["c", "a", "d", "b"]);
    assert_eq!(queue["queue_pending"][1][3], json!({"client_id": "c"}));
    assert_eq!(queue["queue_pending"][1][4], json!(["2"]));
    let edit = s.handle_request(now, "POST", "/queue", br#"{"delete": ["d", "zz"]}"#);
    assert_eq!(
        (edit.status, edit.content_type, edit.body.len()),
        (200, "", 0)
    );
    s.handle_timeout(now);
    let queue: Value =
        serde_json::from_slice(&s.handle_request(now, "GET", "/queue", b"").body).unwrap();
    assert_eq!(queue["queue_running"][0][1], "c");
    assert_eq!(queue["queue_pending"].as_array().unwrap().len(), 3);
    s.handle_request(now, "POST", "/queue", br#"{"clear": true}"#);
    let mut now = now;
    run_all(&mut s, &mut now);
    let history: Value =
        serde_json::from_slice(&s.handle_request(now, "GET", "/history", b"").body).unwrap();
    assert_eq!(
        history.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["c"]
    );
}

#[test]
fn interrupt_stops_at_the_next_step() {
    let graph = json!({
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "2": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 100, "latent_image": ["1", 0]}},
        "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
    });
    let config = MockConfig {
        step: Duration::from_millis(100),
        job: Duration::ZERO,
        ..MockConfig::default()
    };
    let mut s = server(config);
    let mut now = Duration::ZERO;
    s.handle_ws_open(now, ConnId(1), "/ws?clientId=c").unwrap();
    let body = json!({"prompt": graph, "client_id": "c", "prompt_id": "pid-1"}).to_string();
    assert_eq!(
        s.handle_request(now, "POST", "/prompt", body.as_bytes())
            .status,
        200
    );
    now = Duration::from_millis(150);
    s.handle_timeout(now);
    let before: Vec<MockOutput> = std::iter::from_fn(|| s.poll_output(now)).collect();
    assert!(before.iter().any(|o| matches!(o, MockOutput::Send { frame: Frame::Text(t), .. } if t.contains("\"value\": 1, \"max\": 100"))));
    // Another prompt's id does nothing; this one's stops it at the next step (200 ms).
    let other = s.handle_request(now, "POST", "/interrupt", br#"{"prompt_id": "q"}"#);
    assert_eq!((other.status, other.body.len()), (200, 0));
    s.handle_request(now, "POST", "/interrupt", br#"{"prompt_id": "pid-1"}"#);
    assert_eq!(s.poll_timeout(), Some(Duration::from_millis(200)));
    let after = run_all(&mut s, &mut now);
    let texts: Vec<String> = after
        .iter()
        .filter_map(|o| match o {
            MockOutput::Send {
                frame: Frame::Text(t),
                ..
            } => Some(normalize_text(t, "pid-1")),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        [
            r#"{"type": "execution_interrupted", "data": {"prompt_id": "PID", "node_id": "2", "node_type": "KSampler", "executed": ["1"], "timestamp": 0}}"#,
            r#"{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}"#,
            r#"{"type": "executing", "data": {"node": null, "prompt_id": "PID"}}"#,
        ]
    );
    assert_eq!(now, Duration::from_millis(200));
    let history: Value =
        serde_json::from_slice(&s.handle_request(now, "GET", "/history/pid-1", b"").body).unwrap();
    assert_eq!(history["pid-1"]["status"]["status_str"], "error");
    assert_eq!(history["pid-1"]["status"]["completed"], false);
}

#[test]
fn graphs_are_read_for_steps_sizes_and_seeds() {
    let wf = comfy_proxy::workflow::FluxParams::new("a fox", 42)
        .size(comfy_proxy::workflow::Size::parse("landscape-16-9").unwrap())
        .build()
        .unwrap();
    let sampler = wf.nodes_of_class("SamplerCustomAdvanced")[0].clone();
    let save = comfy_proxy::workflow::SAVE_NODE_ID;
    let scheduler = wf.nodes_of_class("BasicScheduler")[0];
    let steps = super::graph::int_input(wf.node(scheduler.as_str()).unwrap(), "steps");
    assert_eq!(
        Some(u64::from(super::graph::steps(&wf, sampler.as_str()))),
        steps
    );
    assert_eq!(super::graph::seed(&wf, save), 42);
    let (w, h, b) = super::graph::image_size(&wf, save);
    assert!(w > h && b == 1, "{w}x{h}x{b}");
    let plan = super::graph::plan(&wf, &[save.into()]);
    assert_eq!(plan.order.last().map(|n| n.as_str()), Some(save));
    assert_eq!(plan.order.len(), wf.len());
}

#[test]
fn cycles_and_dangling_links_are_refused_without_a_stack_overflow() {
    let mut s = server(quick());
    let mut deep = serde_json::Map::new();
    for i in 0..20_000 {
        deep.insert(
            i.to_string(),
            json!({"class_type": "X", "inputs": {"a": [(i + 1).to_string(), 0]}}),
        );
    }
    deep.insert(
        "20000".into(),
        json!({"class_type": "X", "inputs": {"a": ["0", 0]}}),
    );
    deep.insert(
        "out".into(),
        json!({"class_type": "SaveImage", "inputs": {"images": ["0", 0]}}),
    );
    let body = json!({"prompt": deep}).to_string();
    let resp = s.handle_request(Duration::ZERO, "POST", "/prompt", body.as_bytes());
    assert_eq!(resp.status, 400);
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["error"]["type"], "prompt_outputs_failed_validation");
    // One good output and one bad: a 200 naming the bad one, which is skipped.
    let body = br#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}},
        "a": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "b": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["9", 0]}}}}"#;
    let resp = s.handle_request(Duration::ZERO, "POST", "/prompt", body);
    assert_eq!(resp.status, 200);
    let v: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(v["node_errors"]["b"]["dependent_outputs"], json!(["b"]));
}

#[test]
fn hostile_requests_get_4xx() {
    let mut s = server(MockConfig {
        object_info: Some(json!({"SaveImage": {"output_node": true}})),
        ..quick()
    });
    let now = Duration::ZERO;
    let huge = format!(r#"{{"prompt": {{}}, "number": 1{}}}"#, "0".repeat(400));
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/prompt", b"\xff\xfe garbage".to_vec(), 400),
        ("POST", "/prompt", b"[1, 2]".to_vec(), 400),
        ("POST", "/prompt", b"".to_vec(), 400),
        ("POST", "/prompt", nested.into_bytes(), 400),
        ("POST", "/prompt", huge.into_bytes(), 400),
        ("POST", "/prompt", br#"{"prompt": 5}"#.to_vec(), 400),
        ("POST", "/prompt", br#"{"prompt": {"1": 5}}"#.to_vec(), 400),
        ("POST", "/prompt", br#"{"prompt": {"1": {"class_type": 5}}}"#.to_vec(), 400),
        (
            "POST",
            "/prompt",
            br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", 99999999999999999999]}}}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/prompt",
            br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}, "number": "nan"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/prompt",
            br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {}}}, "extra_data": 3}"#.to_vec(),
            400,
        ),
        ("POST", "/queue", b"\x00".to_vec(), 400),
        ("POST", "/interrupt", b"nope".to_vec(), 400),
        ("GET", "/history?max_items=-1", vec![], 400),
        ("GET", "/history?max_items=99999999999999999999999", vec![], 400),
        ("GET", "/history/%FF%FE%00", vec![], 200),
        ("GET", "/object_info/%C0%AF", vec![], 200),
        ("GET", "/view?filename=%FF%FE&type=%", vec![], 404),
        ("GET", "/%%%", vec![], 404),
        ("GET", "", vec![], 404),
        ("DELETE", "/prompt", vec![], 405),
        ("GET", "/interrupt", vec![], 405),
        ("GET", "/models/../../etc", vec![], 404),
    ];
    for (method, path, body, status) in cases {
        let resp = s.handle_request(now, method, path, &body);
        assert_eq!(resp.status, status, "{method} {path}");
    }
    // Hostile sizes are clamped, not obeyed.
    let body = json!({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 1e300, "height": -5, "batch_size": 99999999999u64}},
        "2": {"class_type": "KSampler", "inputs": {"steps": u64::MAX, "images": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "../../x"}},
    }});
    let resp = s.handle_request(now, "POST", "/prompt", body.to_string().as_bytes());
    assert_eq!(resp.status, 400, "KSampler is not in this object_info");
    let mut s = server(MockConfig {
        previews: false,
        ..quick()
    });
    let resp = s.handle_request(now, "POST", "/prompt", body.to_string().as_bytes());
    assert_eq!(resp.status, 200);
    let mut now = now;
    run_all(&mut s, &mut now);
    assert!(s.file("output", "../..", "x_00001_.png").is_some());
    assert!(s.file("output", "../..", "x_04096_.png").is_some());
    assert!(s.file("output", "../..", "x_04097_.png").is_none());
    // Websocket junk.
    assert_eq!(
        s.handle_ws_open(now, ConnId(1), "/nope")
            .unwrap_err()
            .status,
        404
    );
    s.handle_ws_open(now, ConnId(1), "/ws?clientId=%FF")
        .unwrap();
    s.handle_ws_text(now, ConnId(1), "\u{0}{");
    s.handle_ws_text(now, ConnId(99), "{}");
    s.handle_ws_close(now, ConnId(99));
}

#[test]
fn one_socket_per_client_and_made_up_ids() {
    let mut s = server(quick());
    let now = Duration::ZERO;
    s.handle_ws_open(now, ConnId(1), "/ws?clientId=a").unwrap();
    s.handle_ws_open(now, ConnId(2), "/ws?clientId=a").unwrap();
    s.handle_ws_open(now, ConnId(3), "/ws").unwrap();
    s.handle_ws_open(now, ConnId(4), "/ws?clientId=").unwrap();
    let out: Vec<MockOutput> = std::iter::from_fn(|| s.poll_output(now)).collect();
    assert!(out.contains(&MockOutput::Close { conn: ConnId(1) }));
    let sids: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            MockOutput::Send {
                frame: Frame::Text(t),
                ..
            } => serde_json::from_str::<Value>(t).ok()?["data"]["sid"]
                .as_str()
                .map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(sids[..2], ["a", "a"]);
    assert_eq!(sids[2].len(), 32);
    assert_ne!(sids[2], sids[3]);
    // The hello counts only as the first message.
    s.handle_ws_text(now, ConnId(3), "hello");
    s.handle_ws_text(
        now,
        ConnId(3),
        r#"{"type":"feature_flags","data":{"supports_preview_metadata":true}}"#,
    );
    assert_eq!(s.poll_output(now), None);
    s.restart(now);
    let closed: Vec<MockOutput> = std::iter::from_fn(|| s.poll_output(now)).collect();
    assert_eq!(closed.len(), 3);
}

#[test]
fn a_reconnecting_client_learns_the_running_node_and_missed_nothing_queued() {
    let mut s = server(MockConfig {
        step: Duration::from_millis(10),
        job: Duration::ZERO,
        previews: false,
        ..MockConfig::default()
    });
    let mut now = Duration::ZERO;
    s.handle_ws_open(now, ConnId(1), "/ws?clientId=c").unwrap();
    let graph = json!({
        "1": {"class_type": "KSampler", "inputs": {"steps": 10}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    });
    let body = json!({"prompt": graph, "client_id": "c", "prompt_id": "pid-1"}).to_string();
    s.handle_request(now, "POST", "/prompt", body.as_bytes());
    now = Duration::from_millis(35);
    s.handle_timeout(now);
    while s.poll_output(now).is_some() {}
    s.handle_ws_close(now, ConnId(1));
    now = Duration::from_millis(75);
    s.handle_timeout(now);
    assert_eq!(s.poll_output(now), None, "nobody listens: dropped");
    s.handle_ws_open(now, ConnId(2), "/ws?clientId=c").unwrap();
    let texts: Vec<String> = std::iter::from_fn(|| s.poll_output(now))
        .filter_map(|o| match o {
            MockOutput::Send {
                frame: Frame::Text(t),
                ..
            } => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        [
            r#"{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": "c"}}"#,
            r#"{"type": "executing", "data": {"node": "1"}}"#,
        ]
    );
    let rest = run_all(&mut s, &mut now);
    assert!(rest.iter().all(|o| matches!(
        o,
        MockOutput::Send {
            conn: ConnId(2),
            ..
        }
    )));
    // Steps 8-10 (2 frames each), the sampler finished (1), the output node (6), the end (3).
    assert_eq!(rest.len(), 6 + 1 + 6 + 3);
    s.restart(now);
    assert_eq!(s.handle_request(now, "GET", "/history", b"").body, "{}");
    assert!(s.is_idle());
}

#[test]
fn the_server_is_send() {
    fn is_send<T: Send>() {}
    is_send::<MockServer>();
}
