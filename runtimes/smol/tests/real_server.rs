//! Opt-in tests against a real ComfyUI: `COMFY_TEST_SERVER=127.0.0.1:8188 cargo test -p
//! comfy-proxy-smol --test real_server`. Unset, every test prints that it was skipped and passes.
//!
//! The server needs the test nodes of `comfyui_testnodes.py` (`TestSlowProgress`,
//! `TestRaiseError`) and, for the models test, `lora_a.safetensors` and `lora_b.safetensors` in
//! its `loras` folder. The tests share the server with whoever else uses it: they only touch
//! their own prompts and files (targeted interrupts and deletes, never a clear), and every wait
//! is bounded.

use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::session::{Event, Failure, OutputKind, Outputs};
use comfy_proxy::wire::http::{PromptRequest, QueuePosition};
use comfy_proxy::wire::{FileRef, http};
use comfy_proxy::{ClientId, PromptId, ServerAddress, Workflow};
use comfy_proxy_driver::{Client, ClientConfig, ClientError, UploadOptions};
use comfy_proxy_smol::{PoolConfig, PoolEvent, Smol, connect_with};
use serde_json::{Value, json};
use smol::stream::StreamExt;

/// The server under test, or `None` (with a note on stderr) when `COMFY_TEST_SERVER` is unset.
fn server(test: &str) -> Option<ServerAddress> {
    match std::env::var("COMFY_TEST_SERVER") {
        Ok(s) if !s.trim().is_empty() => {
            Some(ServerAddress::parse(s.trim()).expect("COMFY_TEST_SERVER is host:port"))
        }
        _ => {
            eprintln!("{test}: skipped (set COMFY_TEST_SERVER=host:port to run it)");
            None
        }
    }
}

fn client(server: ServerAddress) -> Client {
    let mut config = ClientConfig::new(server);
    config.http_timeout = Duration::from_secs(60);
    connect_with(Arc::new(Smol), config)
}

/// A colour no other run used, so the server's cache never answers for these graphs.
fn fresh_color() -> u32 {
    fastrand_like() & 0xFF_FFFF
}

fn fastrand_like() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

fn empty_image(batch: u32) -> Value {
    json!({"class_type": "EmptyImage",
           "inputs": {"width": 64, "height": 64, "batch_size": batch, "color": fresh_color()}})
}

fn workflow(graph: Value) -> Workflow {
    Workflow::from_json(&graph.to_string()).expect("a graph")
}

/// A graph whose TestSlowProgress node runs `steps` steps of 100 ms.
fn slow_graph(steps: u32) -> Value {
    json!({
        "1": empty_image(1),
        "2": {"class_type": "TestSlowProgress",
              "inputs": {"images": ["1", 0], "steps": steps, "sleep_ms": 100, "send_preview": false}},
        "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
    })
}

/// Polls the queue (at most 120 s) until `prompt` is in `want`'s place.
async fn wait_for(client: &Client, prompt: &PromptId, want: QueuePosition) {
    for _ in 0..1200 {
        if client.queue_position(prompt).await.expect("queue") == Some(want) {
            return;
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    panic!("{prompt} never reached {want:?}");
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

#[test]
fn websocket_images() {
    let Some(server) = server("websocket_images") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        let graph = json!({
            "1": empty_image(2),
            "save": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        });
        let result = c.run(workflow(graph)).await.expect("the graph runs");
        assert_eq!(result.outputs.len(), 2, "two frames over the websocket");
        for output in &result.outputs {
            assert_eq!(output.node.as_str(), "save");
            assert!(is_png(output.bytes()));
        }
    });
}

/// The mixed graph of `fixtures/outputs/mixed_graph.json` with a colour of its own, so its
/// first run is fresh and its second is answered from the server's cache.
fn mixed_graph() -> Workflow {
    let mut graph: Value =
        serde_json::from_str(include_str!("../../../fixtures/outputs/mixed_graph.json"))
            .expect("the mixed graph");
    graph["1"]["inputs"]["color"] = fresh_color().into();
    workflow(graph)
}

/// 6 PNG (3 SaveImage files, 3 SaveImageWebsocket frames), 1 WebP, 1 mp4, 1 text.
fn assert_mixed_whole(run: &str, outputs: &Outputs) {
    let ext = |e: &str| outputs.iter().filter(|o| o.extension == e).count();
    let kind = |k: OutputKind| outputs.of_kind(k).count();
    assert_eq!(
        (ext("png"), kind(OutputKind::Image)),
        (6, 6),
        "{run}: {outputs:?}"
    );
    assert_eq!(
        (ext("webp"), kind(OutputKind::AnimatedImage)),
        (1, 1),
        "{run}"
    );
    assert_eq!((ext("mp4"), kind(OutputKind::Video)), (1, 1), "{run}");
    let texts: Vec<&str> = outputs.texts().map(|(_, t)| t).collect();
    assert_eq!(texts, ["hello from comfy-proxy"], "{run}");
    assert_eq!(outputs.len(), 9, "{run}: nothing else");
    let video = outputs.of_kind(OutputKind::Video).next().unwrap();
    assert_eq!(
        video.file().map(|f| f.subfolder.as_str()),
        Some("video"),
        "{run}"
    );
    assert!(video.bytes().get(4..8) == Some(b"ftyp"), "{run}: an mp4");
    let ui = outputs.ui_of(&"5".into()).expect("SaveVideo's ui data");
    assert_eq!(ui["animated"], json!([true]), "{run}");
}

#[test]
fn every_output_kind_fresh_and_cached_client_and_pool() {
    let Some(server) = server("every_output_kind_fresh_and_cached_client_and_pool") else {
        return;
    };
    smol::block_on(async {
        let graph = mixed_graph();
        let c = client(server.clone());
        let fresh = c.run(graph.clone()).await.expect("the mixed graph runs");
        assert_mixed_whole("fresh, client", &fresh.outputs);
        let cached = c.run(graph.clone()).await.expect("and runs again");
        assert_mixed_whole("cached, client", &cached.outputs);

        // The pool's job report carries the same (cached again).
        let template = ClientConfig::new(server.clone());
        let (pool, mut events) =
            comfy_proxy_smol::pool(PoolConfig::new(std::slice::from_ref(&server), &template));
        // The handle is dropped: the report comes on `events`.
        drop(pool.submit(graph).await.expect("submit"));
        pool.close();
        let mut reports = Vec::new();
        while let Some(event) = events.next().await {
            if let PoolEvent::Finished(report) = event {
                reports.push(report);
            }
        }
        let [report] = &reports[..] else {
            panic!("one job: {reports:?}")
        };
        assert!(report.outcome.is_ok(), "{:?}", report.outcome);
        assert_mixed_whole("cached, pool", &report.outputs);
    });
}

#[test]
fn audio_animated_png_texts_and_previews_left_out() {
    let Some(server) = server("audio_animated_png_texts_and_previews_left_out") else {
        return;
    };
    smol::block_on(async {
        let mut graph: Value = serde_json::from_str(include_str!(
            "../../../fixtures/outputs/extra_outputs_graph.json"
        ))
        .expect("the graph");
        graph["1"]["inputs"]["color"] = fresh_color().into();
        let result = client(server).run(workflow(graph)).await.expect("it runs");
        let out = &result.outputs;
        let kinds: Vec<(&str, OutputKind, &str)> = out
            .iter()
            .filter(|o| o.kind != OutputKind::Text)
            .map(|o| (o.node.as_str(), o.kind, o.extension.as_str()))
            .collect();
        assert_eq!(
            kinds.len(),
            2,
            "SaveAnimatedPNG and SaveAudio; the temp previews are not fetched: {out:?}"
        );
        assert!(
            kinds.contains(&("3", OutputKind::AnimatedImage, "png")),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("5", OutputKind::Audio, "flac")),
            "{kinds:?}"
        );
        let mut texts: Vec<&str> = out.texts().map(|(_, t)| t).collect();
        texts.sort();
        assert_eq!(texts, ["1.5", "5", "True"]);
        for preview in ["2", "6"] {
            let ui = out.ui_of(&preview.into()).expect("the preview's ui data");
            let files = ui.values().find_map(Value::as_array).expect("its files");
            assert_eq!(files[0]["type"], "temp", "{ui:?}");
        }
    });
}

#[test]
fn saveimage_files_through_history_and_view() {
    let Some(server) = server("saveimage_files_through_history_and_view") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        let graph = json!({
            "1": empty_image(2),
            "9": {"class_type": "SaveImage",
                  "inputs": {"images": ["1", 0], "filename_prefix": "comfy_proxy_real_test"}},
        });
        let result = c.run(workflow(graph)).await.expect("the graph runs");
        assert_eq!(result.outputs.len(), 2, "both files fetched");
        assert!(result.outputs.iter().all(|o| is_png(o.bytes())));
        let id = result.prompt_id.expect("a prompt id");

        let entry = c.history(&id).await.expect("history").expect("an entry");
        assert!(entry.succeeded());
        let files = entry.files();
        assert_eq!(files.len(), 2);
        for (node, file) in &files {
            assert_eq!((node.as_str(), file.kind.as_str()), ("9", "output"));
            assert!(file.filename.starts_with("comfy_proxy_real_test"));
            let bytes = c.view(file).await.expect("view");
            assert!(is_png(&bytes));
        }
        c.delete_history(std::slice::from_ref(&id))
            .await
            .expect("delete history");
        assert_eq!(c.history(&id).await.expect("history"), None);
    });
}

#[test]
fn execution_error() {
    let Some(server) = server("execution_error") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        let graph = json!({
            "1": empty_image(1),
            "2": {"class_type": "TestRaiseError",
                  "inputs": {"images": ["1", 0], "message": "boom from comfy-proxy"}},
            "3": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
        });
        match c.run(workflow(graph)).await {
            Err(ClientError::Failed(Failure::Execution(e))) => {
                assert_eq!(
                    (e.node_id.as_str(), e.node_type.as_str()),
                    ("2", "TestRaiseError")
                );
                assert!(e.exception_message.contains("boom from comfy-proxy"));
            }
            other => panic!("expected an execution error: {other:?}"),
        }
    });
}

#[test]
fn rejections() {
    let Some(server) = server("rejections") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        let unknown = json!({"1": {"class_type": "NoSuchNodeForComfyProxy", "inputs": {}}});
        match c.run(workflow(unknown)).await {
            Err(ClientError::Rejected(r)) => {
                assert_eq!(r.error_type(), "invalid_prompt");
                assert!(r.node_errors.is_empty());
            }
            other => panic!("expected a rejection: {other:?}"),
        }
        let bad_value = json!({
            "1": {"class_type": "EmptyImage",
                  "inputs": {"width": -5, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        });
        match c.run(workflow(bad_value)).await {
            Err(ClientError::Rejected(r)) => {
                assert!(r.node_errors.get("1").is_some(), "node 1 is named: {r:?}");
            }
            other => panic!("expected a rejection: {other:?}"),
        }
    });
}

#[test]
fn queue_interrupt_and_delete() {
    let Some(server) = server("queue_interrupt_and_delete") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        // 600 steps of 100 ms: it runs until interrupted.
        let mut slow = c.submit(workflow(slow_graph(600))).await.expect("submit");
        let slow_id = slow.prompt_id().clone();
        wait_for(&c, &slow_id, QueuePosition::Running).await;
        // Once it runs, a second prompt posted behind the client's back, deleted while waiting.
        let mut post = PromptRequest::new(slow_graph(1), ClientId::new("comfy-proxy-real-test"));
        let waiting = PromptId::new(format!("comfy-proxy-real-test-{}", fastrand_like()));
        post.prompt_id = Some(waiting.clone());
        let accepted = c.request(post.to_request()).await.expect("post");
        http::decode_prompt(&accepted)
            .expect("decode")
            .into_result()
            .expect("accepted");

        match c.queue_position(&waiting).await.expect("queue") {
            Some(QueuePosition::Pending { .. }) => {}
            other => panic!("the second prompt waits: {other:?}"),
        }
        let queue = c.queue().await.expect("queue");
        assert!(queue.running.iter().any(|i| i.prompt_id == slow_id));
        c.delete_from_queue(std::slice::from_ref(&waiting))
            .await
            .expect("delete");
        assert_eq!(c.queue_position(&waiting).await.expect("queue"), None);

        // An interrupt aimed at another prompt does not stop ours.
        c.interrupt(Some(&waiting)).await.expect("interrupt");
        assert_eq!(
            c.queue_position(&slow_id).await.expect("queue"),
            Some(QueuePosition::Running)
        );
        c.interrupt(Some(&slow_id)).await.expect("interrupt");
        let mut last = None;
        while let Some(event) = slow.next().await {
            last = Some(event);
        }
        assert!(
            matches!(last, Some(Event::Interrupted { .. })),
            "ends interrupted: {last:?}"
        );
        let entry = c.history(&slow_id).await.expect("history").expect("entry");
        assert!(entry.interrupted());
        let recent = c.recent_history(50).await.expect("recent history");
        assert!(recent.iter().any(|e| e.prompt_id == slow_id));
        c.delete_history(std::slice::from_ref(&slow_id))
            .await
            .expect("delete history");
    });
}

#[test]
fn information() {
    let Some(server) = server("information") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        let loras = c.models(Some("loras")).await.expect("models loras");
        for want in ["lora_a.safetensors", "lora_b.safetensors"] {
            assert!(loras.iter().any(|l| l == want), "{want} in {loras:?}");
        }
        let folders = c.models(None).await.expect("models");
        assert!(folders.iter().any(|f| f == "checkpoints"));
        assert!(matches!(
            c.models(Some("no-such-folder")).await,
            Err(ClientError::Protocol(_))
        ));
        let stats = c.system_stats().await.expect("stats");
        assert!(stats.comfyui_version.is_some());
        assert!(stats.ram_total > 0 && !stats.devices.is_empty());
        let one = c
            .object_info(Some("TestSlowProgress"))
            .await
            .expect("object_info");
        assert!(one["TestSlowProgress"]["input"]["required"]["steps"].is_array());
        let all = c.object_info(None).await.expect("object_info");
        assert!(all.as_object().is_some_and(|o| o.len() > 100));
        c.free(true, true).await.expect("free");
    });
}

/// An 8x8 RGBA PNG of one colour, written by hand (stored zlib blocks).
fn png(rgba: [u8; 4]) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    }
    // Eight rows, each a filter byte (0) and eight pixels.
    let row: Vec<u8> = std::iter::once(0)
        .chain(rgba.iter().copied().cycle().take(32))
        .collect();
    let raw = row.repeat(8);
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let len = u16::try_from(raw.len()).unwrap_or(0);
    let mut z = vec![0x78, 0x01, 1];
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(&raw);
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&8u32.to_be_bytes());
    ihdr.extend_from_slice(&8u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn upload_mask_and_view() {
    let Some(server) = server("upload_mask_and_view") else {
        return;
    };
    smol::block_on(async {
        let c = client(server);
        let image = png([200, 30, 30, 255]);
        let opts = UploadOptions::new()
            .subfolder("comfy-proxy-real-test")
            .overwrite(true);
        let stored = c.upload("real.png", &image, &opts).await.expect("upload");
        assert_eq!(stored.input_value(), "comfy-proxy-real-test/real.png");
        assert_eq!(
            &c.view(&stored.file_ref()).await.expect("view")[..],
            &image[..]
        );

        // Without overwrite, a different file under the same name is stored under a new name.
        let other = png([10, 200, 30, 255]);
        let renamed = c
            .upload("real.png", &other, &opts.clone().overwrite(false))
            .await
            .expect("upload again");
        assert_ne!(renamed.name, "real.png");
        assert_eq!(
            &c.view(&renamed.file_ref()).await.expect("view")[..],
            &other[..]
        );

        // The mask's alpha goes onto the original: the stored file is a new PNG.
        let mask = png([0, 0, 0, 128]);
        let masked = c
            .upload(
                "real-mask.png",
                &mask,
                &opts.clone().mask_of(stored.file_ref()),
            )
            .await
            .expect("upload mask");
        assert_eq!(masked.name, "real-mask.png");
        let bytes = c.view(&masked.file_ref()).await.expect("view mask");
        assert!(is_png(&bytes));
        assert_ne!(
            &bytes[..],
            &mask[..],
            "the server wrote the masked original"
        );

        let missing = FileRef {
            filename: "no-such-file.png".into(),
            subfolder: "comfy-proxy-real-test".into(),
            kind: "input".into(),
        };
        assert!(matches!(
            c.view(&missing).await,
            Err(ClientError::Protocol(_))
        ));
    });
}
