//! The HTTP decoders and builders against the recorded sessions in `fixtures/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use comfy_proxy::wire::http::{self, PromptOutcome, QueuePosition};
use comfy_proxy::wire::{FileRef, HttpResponse, Method};
use comfy_proxy::{NodeId, PromptId, ProtocolError};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ok(name: &str) -> HttpResponse {
    HttpResponse::new(200, read(name))
}

/// One recorded exchange: the request line and body, the response as the adapter would see it,
/// and the recorded response body as JSON (when it was JSON).
struct Exchange {
    file: String,
    method: String,
    path: String,
    request_body: Value,
    response: HttpResponse,
    json: Option<Value>,
}

/// Every request/response pair of every transcript, matched per connection.
fn exchanges() -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut open: HashMap<u64, (String, String, Value)> = HashMap::new();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            let conn = event["conn"].as_u64().unwrap_or(0);
            match event["kind"].as_str() {
                Some("http_request") => {
                    let req = (
                        event["method"].as_str().unwrap().to_owned(),
                        event["path"].as_str().unwrap().to_owned(),
                        event["body"].clone(),
                    );
                    assert!(open.insert(conn, req).is_none(), "{file}: nested requests");
                }
                Some("http_response") => {
                    let (method, path, request_body) = open.remove(&conn).unwrap();
                    let status = event["status"].as_u64().unwrap() as u16;
                    let (bytes, json) = match (event.get("body"), event.get("body_b64")) {
                        (Some(body), _) => (serde_json::to_vec(body).unwrap(), Some(body.clone())),
                        (None, Some(b64)) => {
                            (STANDARD.decode(b64.as_str().unwrap()).unwrap(), None)
                        }
                        (None, None) => panic!("{file}: response without a body"),
                    };
                    out.push(Exchange {
                        file: file.clone(),
                        method,
                        path,
                        request_body,
                        response: HttpResponse::new(status, bytes),
                        json,
                    });
                }
                _ => {}
            }
        }
    }
    out
}

fn find<'a>(all: &'a [Exchange], file: &str, method: &str, path: &str) -> Vec<&'a Exchange> {
    all.iter()
        .filter(|x| x.file == file && x.method == method && x.path.starts_with(path))
        .collect()
}

fn rejected(x: &Exchange) -> Box<http::PromptRejected> {
    match http::decode_prompt(&x.response) {
        Ok(PromptOutcome::Rejected(r)) => r,
        other => panic!("{}: expected a rejection, got {other:?}", x.file),
    }
}

#[test]
fn every_recorded_prompt_response_decodes() {
    let all = exchanges();
    let mut seen = (0, 0);
    for x in all
        .iter()
        .filter(|x| x.method == "POST" && x.path == "/prompt")
    {
        let json = x.json.as_ref().unwrap();
        match (x.response.status, http::decode_prompt(&x.response)) {
            (200, Ok(PromptOutcome::Accepted(a))) => {
                assert_eq!(
                    a.prompt_id,
                    json["prompt_id"].as_str().unwrap(),
                    "{}",
                    x.file
                );
                assert_eq!(a.number, json["number"].as_f64().unwrap(), "{}", x.file);
                assert!(a.node_errors.is_empty(), "{}", x.file);
                seen.0 += 1;
            }
            (400, Ok(PromptOutcome::Rejected(r))) => {
                assert_eq!(r.error_type(), json["error"]["type"].as_str().unwrap());
                let ids: Vec<&str> = r.node_ids().iter().map(|i| i.as_str()).collect();
                let recorded: Vec<&str> = json["node_errors"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(ids, recorded, "{}", x.file);
                assert!(!r.to_string().is_empty());
                seen.1 += 1;
            }
            (status, other) => panic!("{}: {status} decoded as {other:?}", x.file),
        }
    }
    assert_eq!(
        seen,
        (18, 7),
        "(accepted, rejected) responses in the fixtures"
    );
}

#[test]
fn rejections_are_typed() {
    let all = exchanges();
    let one = |file: &str| rejected(find(&all, file, "POST", "/prompt")[0]);

    let loras = one("flux_two_loras.jsonl");
    assert_eq!(loras.error_type(), "prompt_outputs_failed_validation");
    assert_eq!(loras.node_ids(), [&NodeId::new("6")]);
    let node = loras.node_errors.get("6").unwrap();
    assert_eq!(node.class_type, "LoraLoader");
    assert_eq!(
        node.dependent_outputs,
        [NodeId::new("save_image_websocket_node")]
    );
    assert_eq!(node.errors[0].kind, "return_type_mismatch");
    assert_eq!(node.errors[0].extra_info["received_type"], "MODEL");
    assert_eq!(
        loras.to_string(),
        "prompt_outputs_failed_validation: node 6 (LoraLoader): return_type_mismatch clip, \
         received_type(MODEL) mismatch input_type(CLIP)"
    );

    let unknown = one("validation_unknown_node.jsonl");
    assert_eq!(unknown.error_type(), "invalid_prompt");
    assert!(unknown.node_ids().is_empty());
    assert_eq!(
        unknown.to_string(),
        "invalid_prompt: Cannot execute because node NoSuchNode does not exist. (Node ID '#1')"
    );

    let values = one("validation_bad_values.jsonl");
    assert_eq!(values.node_ids(), [&NodeId::new("1")]);
    let kinds: Vec<&str> = values
        .node_errors
        .get("1")
        .unwrap()
        .errors
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["invalid_input_type", "value_smaller_than_min"]);

    assert_eq!(one("validation_no_prompt.jsonl").error_type(), "no_prompt");
    assert_eq!(
        one("validation_no_outputs.jsonl").error_type(),
        "prompt_no_outputs"
    );
    let link = one("validation_bad_link.jsonl");
    assert_eq!(link.node_ids(), [&NodeId::new("save_image_websocket_node")]);
    assert_eq!(
        link.node_errors
            .get("save_image_websocket_node")
            .unwrap()
            .errors[0]
            .kind,
        "exception_during_validation"
    );
    let model = one("validation_missing_model.jsonl");
    assert_eq!(
        model.node_errors.get("3").unwrap().errors[0].kind,
        "value_not_in_list"
    );
}

#[test]
fn prompt_response_variants() {
    // Older servers: `error` is a string and `node_errors` a list.
    let old = HttpResponse::new(400, r#"{"error": "no prompt", "node_errors": []}"#);
    let r = http::decode_prompt(&old)
        .unwrap()
        .into_result()
        .unwrap_err();
    assert_eq!(
        (r.error_type(), r.error.message.as_str()),
        ("error", "no prompt")
    );
    assert_eq!(r.to_string(), "error: no prompt");

    // A float number, and warnings about skipped branches on a 200.
    let warn = HttpResponse::new(
        200,
        r#"{"prompt_id":"p","number":5.0,"node_errors":{"9":{"errors":[{"type":"value_not_in_list","message":"m","details":"d","extra_info":{}}],"dependent_outputs":["10"],"class_type":"LoraLoader"}}}"#,
    );
    let a = http::decode_prompt(&warn).unwrap().into_result().unwrap();
    assert_eq!((a.number, a.node_errors.len()), (5.0, 1));
    assert_eq!(a.node_errors.ids(), [&NodeId::new("9")]);

    // Two nodes, one with two errors: one line, in the server's order.
    let two = HttpResponse::new(
        400,
        r#"{"error":{"type":"prompt_outputs_failed_validation","message":"M","details":"","extra_info":{}},"node_errors":{"b":{"errors":[{"type":"x","message":"mx","details":""},{"type":"y","details":"dy"}],"class_type":"B"},"a":{"errors":[],"class_type":""}}}"#,
    );
    let r = http::decode_prompt(&two)
        .unwrap()
        .into_result()
        .unwrap_err();
    assert_eq!(
        r.to_string(),
        "prompt_outputs_failed_validation: node b (B): x mx; y dy; node a"
    );
}

#[test]
fn history_of_a_saved_image() {
    let all = exchanges();
    let x = find(&all, "saveimage_history.jsonl", "GET", "/history/")[0];
    let id = PromptId::new("f27c7303-49d5-465d-99a2-d5f0e02a9274");
    assert_eq!(http::history(&id).path, x.path);
    let entry = http::decode_history(&x.response, &id).unwrap().unwrap();
    assert_eq!(entry.prompt_id, id);
    assert_eq!(entry.number, 4.0);
    assert!(entry.succeeded() && !entry.interrupted());
    assert!(entry.execution_error().is_none());
    assert_eq!(entry.output_node_ids, [NodeId::new("2")]);
    assert_eq!(entry.graph["2"]["class_type"], "SaveImage");
    assert_eq!(
        entry.extra_data["client_id"],
        "rec-saveimage_history-0-937612ae"
    );
    let file = FileRef {
        filename: "rec_00001_.png".into(),
        subfolder: String::new(),
        kind: "output".into(),
    };
    assert_eq!(entry.files(), [(NodeId::new("2"), file.clone())]);

    // Another id in the same body, and `{}` (not finished yet) are both "no entry".
    assert_eq!(
        http::decode_history(&x.response, &PromptId::new("other")),
        Ok(None)
    );
    assert_eq!(
        http::decode_history(&HttpResponse::new(200, "{}"), &id),
        Ok(None)
    );

    // The file it names, fetched with /view: the same bytes, without a copy.
    let v = find(&all, "saveimage_history.jsonl", "GET", "/view")[0];
    assert_eq!(http::view(&file).path, v.path);
    let bytes = http::decode_view(&v.response).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n"));
    assert_eq!(bytes.as_ptr(), v.response.body.as_ptr());
    assert!(http::decode_view(&HttpResponse::new(404, "")).is_err());
}

#[test]
fn history_lists() {
    let entries = http::decode_history_all(&ok("history_max3.json")).unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e.prompt_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "aa93a186-d17c-4331-895e-000eef549cbb",
            "a0d70aa3-5da7-489d-bd21-42ea2806b70e",
            "3145bd98-6220-463d-b5ef-7dad794fb9d2"
        ]
    );
    assert!(entries[0].interrupted() && !entries[0].succeeded());
    assert_eq!(entries[0].status.as_ref().unwrap().status_str, "error");
    assert!(entries[1].succeeded() && !entries[1].interrupted());
    assert_eq!(entries[2].number, 24.0);

    let all = exchanges();
    let x = find(&all, "queue_ops.jsonl", "GET", "/history?")[0];
    assert_eq!(http::history_recent(2).path, x.path);
    assert_eq!(http::decode_history_all(&x.response).unwrap().len(), 2);
}

#[test]
fn history_with_an_execution_error() {
    // Build the history entry the server stores for exec_error from its websocket message.
    let text = String::from_utf8(read("exec_error.jsonl")).unwrap();
    let msg: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "ws_text")
        .map(|e| serde_json::from_str::<Value>(e["text"].as_str().unwrap()).unwrap())
        .find(|m| m["type"] == "execution_error")
        .unwrap();
    let id = msg["data"]["prompt_id"].as_str().unwrap().to_owned();
    let body = serde_json::json!({ &id: {
        "prompt": [7.0, &id, {}, {}, ["3"], "a sixth item"],
        "outputs": {},
        "status": {"status_str": "error", "completed": false,
                   "messages": [["execution_start", {}], ["execution_error", msg["data"]]]},
        "meta": {}
    }});
    let resp = HttpResponse::new(200, serde_json::to_vec(&body).unwrap());
    let entry = http::decode_history(&resp, &PromptId::new(id.as_str()))
        .unwrap()
        .unwrap();
    assert!(!entry.succeeded() && !entry.interrupted());
    let err = entry.execution_error().unwrap();
    assert_eq!(err.node_id, msg["data"]["node_id"].as_str().unwrap());
    assert_eq!(entry.number, 7.0);
    assert_eq!(entry.output_node_ids, [NodeId::new("3")]);
}

#[test]
fn queues() {
    let empty = http::decode_queue(&ok("queue.json")).unwrap();
    assert!(empty.is_empty());

    let busy = http::decode_queue(&ok("queue_busy.json")).unwrap();
    assert_eq!(
        (busy.running.len(), busy.pending.len(), busy.len()),
        (1, 1, 2)
    );
    let running = PromptId::new("a0d70aa3-5da7-489d-bd21-42ea2806b70e");
    let pending = PromptId::new("ab3f9973-b42a-4c07-ac10-e3d59303f47b");
    assert_eq!(busy.running[0].number, 22.0);
    assert_eq!(
        busy.running[0].client_id.as_ref().unwrap(),
        "rec-queue_ops-0-57eca35e"
    );
    assert_eq!(busy.contains(&running), Some(QueuePosition::Running));
    assert_eq!(
        busy.contains(&pending),
        Some(QueuePosition::Pending { ahead: 0 })
    );
    assert_eq!(busy.contains(&PromptId::new("gone")), None);

    let all = exchanges();
    let gets = find(&all, "queue_ops.jsonl", "GET", "/queue");
    assert_eq!(gets[0].path, http::queue().path);
    let before = http::decode_queue(&gets[0].response).unwrap();
    let after = http::decode_queue(&gets[1].response).unwrap();
    assert_eq!(
        before.contains(&pending),
        Some(QueuePosition::Pending { ahead: 0 })
    );
    assert_eq!(after.contains(&pending), None);

    let delete = find(&all, "queue_ops.jsonl", "POST", "/queue")[0];
    let req = http::queue_delete(std::slice::from_ref(&pending));
    let sent: Value = serde_json::from_slice(&req.body.unwrap().bytes).unwrap();
    assert_eq!(sent, delete.request_body);
    assert_eq!(delete.response.body.len(), 0);
    assert_eq!(http::decode_queue_edit(&delete.response), Ok(()));
}

#[test]
fn interrupts() {
    let all = exchanges();
    let global = find(&all, "interrupt.jsonl", "POST", "/interrupt")[0];
    let targeted = find(&all, "interrupt_targeted.jsonl", "POST", "/interrupt")[0];
    for x in [global, targeted] {
        assert_eq!(x.response.body.len(), 0);
        assert_eq!(http::decode_interrupt(&x.response), Ok(()));
    }
    let id = PromptId::new("aa93a186-d17c-4331-895e-000eef549cbb");
    for (req, x) in [
        (http::interrupt(None), global),
        (http::interrupt(Some(&id)), targeted),
    ] {
        assert_eq!(
            (req.method, req.path.as_str()),
            (Method::Post, x.path.as_str())
        );
        let sent: Value = serde_json::from_slice(&req.body.unwrap().bytes).unwrap();
        assert_eq!(sent, x.request_body);
    }
    assert!(http::decode_interrupt(&HttpResponse::new(500, "boom")).is_err());
    assert_eq!(http::decode_free(&HttpResponse::new(200, "")), Ok(()));
}

#[test]
fn recorded_prompt_bodies_round_trip() {
    // A request built from a recorded body's parts is that body, byte for byte up to order.
    for x in exchanges().iter().filter(|x| x.path == "/prompt") {
        let Some(prompt) = x.request_body.get("prompt") else {
            continue;
        };
        let client = x.request_body["client_id"].as_str().unwrap();
        let req = http::PromptRequest::new(prompt.clone(), client.into()).to_request();
        let sent: Value = serde_json::from_slice(&req.body.unwrap().bytes).unwrap();
        assert_eq!(sent, x.request_body, "{}", x.file);
    }
}

#[test]
fn server_information() {
    let stats = http::decode_system_stats(&ok("system_stats.json")).unwrap();
    assert_eq!(stats.comfyui_version.as_deref(), Some("0.3.64"));
    assert_eq!(stats.pytorch_version.as_deref(), Some("2.8.0+cu128"));
    assert!(stats.python_version.unwrap().starts_with("3.11.7"));
    assert_eq!(
        (stats.ram_total, stats.ram_free),
        (25276502016, 24250593280)
    );
    assert_eq!(stats.devices.len(), 1);
    assert_eq!(
        (
            stats.devices[0].name.as_str(),
            stats.devices[0].kind.as_str()
        ),
        ("cpu", "cpu")
    );
    assert_eq!(stats.devices[0].vram_total, 25276502016);
    let sparse =
        http::decode_system_stats(&HttpResponse::new(200, r#"{"system":{"ram_total":1.0e3}}"#))
            .unwrap();
    assert_eq!(
        (
            sparse.ram_total,
            sparse.comfyui_version,
            sparse.devices.len()
        ),
        (1000, None, 0)
    );

    let features = http::decode_features(&ok("features.json")).unwrap();
    assert!(features.supports_preview_metadata);
    assert_eq!(features.max_upload_size, Some(104857600));
    assert_eq!(
        http::decode_features(&HttpResponse::new(200, "{}"))
            .unwrap()
            .max_upload_size,
        None
    );

    let folders = http::decode_models(&ok("models.json")).unwrap();
    assert!(folders.iter().any(|f| f == "loras"));
    assert_eq!(
        http::decode_models(&ok("models_loras.json")).unwrap(),
        ["lora_a.safetensors", "lora_b.safetensors"]
    );
    assert!(
        http::decode_embeddings(&ok("embeddings.json"))
            .unwrap()
            .is_empty()
    );

    let one = http::decode_object_info(&ok("object_info_SaveImageWebsocket.json")).unwrap();
    assert_eq!(one["SaveImageWebsocket"]["output_node"], true);
    let every = http::decode_object_info(&ok("object_info.json")).unwrap();
    assert_eq!(every.as_object().unwrap().len(), 498);
}

#[test]
fn uploads() {
    let resp = HttpResponse::new(
        200,
        r#"{"name": "cat (1).png", "subfolder": "pets", "type": "input"}"#,
    );
    let up = http::decode_upload(&resp).unwrap();
    assert_eq!(up.name, "cat (1).png");
    assert_eq!(up.input_value(), "pets/cat (1).png");
    assert_eq!(
        http::view(&up.file_ref()).path,
        "/view?filename=cat%20%281%29.png&subfolder=pets&type=input"
    );
    assert!(http::decode_upload(&HttpResponse::new(200, r#"{"subfolder":""}"#)).is_err());
    assert!(http::decode_upload(&HttpResponse::new(413, "too big")).is_err());
}

/// Every decoder, boxed to one signature, so hostile inputs can be thrown at all of them.
type Decoder = (&'static str, fn(&HttpResponse) -> Result<(), ProtocolError>);

fn decoders() -> Vec<Decoder> {
    vec![
        ("prompt", |r| http::decode_prompt(r).map(drop)),
        ("history", |r| {
            http::decode_history(r, &PromptId::new("p")).map(drop)
        }),
        ("history_all", |r| http::decode_history_all(r).map(drop)),
        ("queue", |r| http::decode_queue(r).map(drop)),
        ("upload", |r| http::decode_upload(r).map(drop)),
        ("system_stats", |r| http::decode_system_stats(r).map(drop)),
        ("features", |r| http::decode_features(r).map(drop)),
        ("object_info", |r| http::decode_object_info(r).map(drop)),
        ("models", |r| http::decode_models(r).map(drop)),
        ("embeddings", |r| http::decode_embeddings(r).map(drop)),
    ]
}

#[test]
fn hostile_responses_are_errors() {
    let html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    let cases: Vec<(&str, HttpResponse)> = vec![
        ("500 html", HttpResponse::new(500, html)),
        ("400 html", HttpResponse::new(400, html)),
        ("404", HttpResponse::new(404, "404: Not Found")),
        ("200 array", HttpResponse::new(200, "[1]")),
        (
            "200 truncated",
            HttpResponse::new(200, r#"{"prompt_id": "p", "numb"#),
        ),
        (
            "200 not utf-8",
            HttpResponse::new(200, &b"{\"a\": \"\xff\xfe\"}"[..]),
        ),
        ("200 empty", HttpResponse::new(200, "")),
        ("200 html", HttpResponse::new(200, html)),
        ("400 empty object", HttpResponse::new(400, "{}")),
    ];
    for (name, decode) in decoders() {
        for (case, resp) in &cases {
            assert!(decode(resp).is_err(), "{name} accepted {case}");
        }
    }
    // `[]` is a valid (empty) list of models or embeddings, and nothing else.
    for (name, decode) in decoders() {
        let accepted = decode(&HttpResponse::new(200, "[]")).is_ok();
        assert_eq!(
            accepted,
            name == "models" || name == "embeddings",
            "{name} on []"
        );
    }
    let e = http::decode_prompt(&HttpResponse::new(502, html.repeat(10))).unwrap_err();
    match e {
        ProtocolError::UnexpectedStatus {
            context,
            status,
            body,
        } => {
            assert_eq!(
                (context, status, body.len()),
                ("/prompt response", 502, 200)
            );
        }
        other => panic!("{other:?}"),
    }
    let e = http::decode_queue(&HttpResponse::new(200, &b"\xff"[..])).unwrap_err();
    assert_eq!(
        e,
        ProtocolError::BadUtf8 {
            context: "/queue response"
        }
    );
    let e = http::decode_prompt(&HttpResponse::new(400, html)).unwrap_err();
    assert!(
        matches!(
            e,
            ProtocolError::BadJson {
                context: "/prompt response",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn wrong_shapes_are_errors() {
    let cases: &[(&str, &str)] = &[
        ("prompt", r#"{"number": 1}"#),
        ("prompt", r#"{"prompt_id": 5, "number": 1}"#),
        ("prompt", r#"{"prompt_id": "p", "number": "1"}"#),
        ("history", r#"{"p": {"prompt": []}}"#),
        ("history", r#"{"p": {"prompt": [1]}}"#),
        ("history", r#"{"p": {"prompt": "x"}}"#),
        (
            "history",
            r#"{"p": {"prompt": [1, "p"], "outputs": {"1": 3}}}"#,
        ),
        (
            "history",
            r#"{"p": {"prompt": [1, "p"], "status": {"messages": [[1, 2]]}}}"#,
        ),
        ("history_all", r#"{"p": 1}"#),
        ("queue", r#"{"queue_running": [[]]}"#),
        ("queue", r#"{"queue_running": {}}"#),
        ("system_stats", r#"{"system": {"ram_total": -1}}"#),
        ("system_stats", r#"{"system": {"ram_total": 1.5}}"#),
        ("system_stats", r#"{"devices": [{"vram_free": "a lot"}]}"#),
        ("features", r#"{"max_upload_size": -3}"#),
        ("object_info", "1"),
        ("models", r#"[1, 2]"#),
        ("embeddings", "{}"),
    ];
    let decoders = decoders();
    for (name, body) in cases {
        let decode = decoders.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(
            decode(&HttpResponse::new(200, *body)).is_err(),
            "{name} accepted {body}"
        );
    }
    let e = http::decode_prompt(&HttpResponse::new(400, r#"{"error": 3}"#));
    assert!(e.is_err());
    let e = http::decode_prompt(&HttpResponse::new(
        400,
        r#"{"error": "x", "node_errors": [1]}"#,
    ));
    assert!(e.is_err());
}

#[test]
fn truncated_recordings_never_panic() {
    // Every prefix of every recorded JSON body, through every decoder, at both statuses.
    let bodies: Vec<Vec<u8>> = exchanges()
        .into_iter()
        .filter(|x| x.json.is_some())
        .map(|x| x.response.body.to_vec())
        .chain(["history_max3.json", "queue_busy.json", "system_stats.json"].map(read))
        .collect();
    let decoders = decoders();
    for body in &bodies {
        let step = (body.len() / 64).max(1);
        for cut in (0..body.len()).step_by(step) {
            for status in [200, 400] {
                let resp = HttpResponse::new(status, body[..cut].to_vec());
                for (name, decode) in &decoders {
                    assert!(
                        decode(&resp).is_err(),
                        "{name} accepted a prefix of {cut} bytes"
                    );
                }
            }
        }
    }
}
