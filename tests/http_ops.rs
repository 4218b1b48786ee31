//! The server operations' requests and answers, as tables: each builder against the request
//! recorded from the real server (or its documented shape), each decoder against a recorded
//! answer in `fixtures/`.

use std::path::Path;

use comfy_proxy::PromptId;
use comfy_proxy::wire::http::{self, QueuePosition};
use comfy_proxy::wire::{FileRef, HttpRequest, HttpResponse, Method};
use serde_json::{Value, json};

fn fixture(name: &str) -> HttpResponse {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    HttpResponse::new(
        200,
        std::fs::read(&path).unwrap_or_else(|e| panic!("{name}: {e}")),
    )
}

fn json_body(req: &HttpRequest) -> Value {
    let body = req.body.as_ref().expect("a body");
    assert_eq!(body.content_type, "application/json");
    serde_json::from_slice(&body.bytes).expect("JSON")
}

/// The requests recorded in `queue_ops.jsonl` and the shapes the server reads (`server.py`'s
/// `post_history`, `post_free`).
#[test]
fn builders_make_the_recorded_requests() {
    let pending = PromptId::new("ab3f9973-b42a-4c07-ac10-e3d59303f47b");
    let cases: Vec<(HttpRequest, Method, &str, Value)> = vec![
        (
            http::queue_delete(std::slice::from_ref(&pending)),
            Method::Post,
            "/queue",
            json!({"delete": [pending.as_str()]}),
        ),
        (
            http::queue_clear(),
            Method::Post,
            "/queue",
            json!({"clear": true}),
        ),
        (
            http::history_delete(std::slice::from_ref(&pending)),
            Method::Post,
            "/history",
            json!({"delete": [pending.as_str()]}),
        ),
        (
            http::history_clear(),
            Method::Post,
            "/history",
            json!({"clear": true}),
        ),
        (
            http::free(true, true),
            Method::Post,
            "/free",
            json!({"unload_models": true, "free_memory": true}),
        ),
        (http::interrupt(None), Method::Post, "/interrupt", json!({})),
    ];
    for (req, method, path, body) in cases {
        assert_eq!((req.method, req.path.as_str()), (method, path));
        assert_eq!(json_body(&req), body, "{path}");
    }
    let gets = [
        (http::queue(), "/queue"),
        (http::history_recent(2), "/history?max_items=2"),
        (http::models(Some("loras")), "/models/loras"),
        (http::models(None), "/models"),
        (http::system_stats(), "/system_stats"),
        (
            http::object_info(Some("SaveImageWebsocket")),
            "/object_info/SaveImageWebsocket",
        ),
    ];
    for (req, path) in gets {
        assert_eq!(
            (req.method, req.path.as_str(), req.body),
            (Method::Get, path, None)
        );
    }
}

/// Every answer of the operations, decoded from what the real server sent.
#[test]
fn decoders_read_the_recorded_answers() {
    let busy = http::decode_queue(&fixture("queue_busy.json")).unwrap();
    let positions: Vec<_> = [
        "a0d70aa3-5da7-489d-bd21-42ea2806b70e",
        "ab3f9973-b42a-4c07-ac10-e3d59303f47b",
        "not-queued",
    ]
    .iter()
    .map(|id| busy.contains(&PromptId::new(*id)))
    .collect();
    assert_eq!(
        positions,
        [
            Some(QueuePosition::Running),
            Some(QueuePosition::Pending { ahead: 0 }),
            None
        ]
    );
    assert!(
        http::decode_queue(&fixture("queue.json"))
            .unwrap()
            .is_empty()
    );

    let recent = http::decode_history_all(&fixture("history_max3.json")).unwrap();
    assert_eq!(recent.len(), 3);
    assert!(
        recent.windows(2).all(|w| w[0].number < w[1].number),
        "oldest first"
    );

    assert_eq!(
        http::decode_models(&fixture("models_loras.json")).unwrap(),
        ["lora_a.safetensors", "lora_b.safetensors"]
    );
    let stats = http::decode_system_stats(&fixture("system_stats.json")).unwrap();
    assert_eq!(stats.comfyui_version.as_deref(), Some("0.3.64"));

    let renamed = http::decode_upload(&fixture("upload_image_renamed.json")).unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.input_value()),
        ("ops_img (1).png", "ops-fixture/ops_img (1).png".to_owned())
    );
    let mask = http::decode_upload(&fixture("upload_mask.json")).unwrap();
    assert_eq!(
        mask.file_ref(),
        FileRef {
            filename: "ops_mask.png".into(),
            subfolder: "ops-fixture".into(),
            kind: "input".into(),
        }
    );

    // The edits answer 200 with an empty body; anything but 2xx is the server's fault.
    let empty = HttpResponse::new(200, "");
    for decode in [
        http::decode_history_edit,
        http::decode_queue_edit,
        http::decode_free,
        http::decode_interrupt,
    ] {
        assert_eq!(decode(&empty), Ok(()));
        assert!(decode(&HttpResponse::new(500, "boom")).is_err());
    }
    let missing = http::decode_models(&HttpResponse::new(404, "404: Not Found")).unwrap_err();
    assert!(missing.to_string().contains("404"), "{missing}");
}
