//! The client's server operations on smol, against the mock server on loopback: queue,
//! interrupt, history, models, stats, uploads and downloads, and the deadline of each exchange.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::session::Event;
use comfy_proxy::wire::http::QueuePosition;
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{Client, ClientConfig, ClientError, Runtime, UploadOptions};
use comfy_proxy_mock::{self as mock, MockConfig, MockHandle};
use comfy_proxy_smol::Smol;
use smol::stream::StreamExt;

fn rt() -> Arc<dyn Runtime> {
    Arc::new(Smol)
}

async fn start_mock(step: Duration) -> MockHandle {
    let mut config = MockConfig::default();
    config.step = step;
    config.job = Duration::from_millis(5);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/object_info.json"
    );
    let text = std::fs::read_to_string(path).expect("the recorded object_info");
    config.object_info = Some(serde_json::from_str(&text).expect("object_info is JSON"));
    mock::serve(rt(), SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .expect("bind a loopback port")
}

fn client_for(address: &str, http_timeout: Duration) -> Client {
    let mut config = ClientConfig::new(ServerAddress::parse(address).expect("address"));
    config.http_timeout = http_timeout;
    let rt = rt();
    Client::connect(rt.clone(), Arc::new(Http1::new(rt)), config)
}

fn graph(steps: u32, seed: u32) -> Workflow {
    Workflow::from_json(&format!(
        r#"{{"1":{{"class_type":"EmptyLatentImage","inputs":{{"width":64,"height":48,"batch_size":1}}}},
            "2":{{"class_type":"KSampler","inputs":{{"seed":{seed},"steps":{steps},"cfg":1.0,"sampler_name":"euler","scheduler":"normal","denoise":1.0,"latent_image":["1",0]}}}},
            "3":{{"class_type":"VAEDecode","inputs":{{"samples":["2",0]}}}},
            "save":{{"class_type":"SaveImageWebsocket","inputs":{{"images":["3",0]}}}}}}"#
    ))
    .expect("test graph")
}

/// Reads `stream` up to the prompt's `Accepted` event.
async fn accepted(stream: &mut comfy_proxy_driver::PromptStream) {
    loop {
        match stream.next().await {
            Some(Event::Accepted { .. }) => return,
            Some(event) if event.is_terminal() => panic!("{event:?}"),
            Some(_) => {}
            None => panic!("the prompt's events ended"),
        }
    }
}

/// Waits (a bounded number of polls) until `prompt` has the wanted place in the queue.
async fn wait_for(
    client: &Client,
    prompt: &comfy_proxy::PromptId,
    want: Option<QueuePosition>,
) -> Option<QueuePosition> {
    let mut last = None;
    for _ in 0..200 {
        last = client.queue_position(prompt).await.expect("queue");
        if last == want {
            break;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    last
}

#[test]
fn queue_interrupt_and_history() {
    smol::block_on(async {
        let mock = start_mock(Duration::from_millis(50)).await;
        let client = client_for(&mock.address(), Duration::from_secs(10));
        assert!(client.queue().await.expect("queue").is_empty());

        // 200 steps of 50 ms: long enough to be seen running, then interrupted.
        // Two prompts posted at once may reach the server in either order (each on its own
        // connection): the second is submitted once the first is queued, and looked for once
        // it is queued too.
        let mut slow = client.submit(graph(200, 1)).await.expect("submit");
        accepted(&mut slow).await;
        let mut waiting = client.submit(graph(2, 2)).await.expect("submit");
        accepted(&mut waiting).await;
        let slow_id = slow.prompt_id().clone();
        let waiting_id = waiting.prompt_id().clone();
        assert_eq!(
            wait_for(&client, &slow_id, Some(QueuePosition::Running)).await,
            Some(QueuePosition::Running)
        );
        assert_eq!(
            client.queue_position(&waiting_id).await.expect("queue"),
            Some(QueuePosition::Pending { ahead: 0 })
        );
        let queue = client.queue().await.expect("queue");
        assert_eq!((queue.running.len(), queue.pending.len()), (1, 1));

        client
            .delete_from_queue(std::slice::from_ref(&waiting_id))
            .await
            .expect("delete");
        assert_eq!(client.queue_position(&waiting_id).await.expect("q"), None);

        // An interrupt aimed at another prompt leaves the running one alone.
        client
            .interrupt(Some(&waiting_id))
            .await
            .expect("interrupt");
        assert_eq!(
            client.queue_position(&slow_id).await.expect("q"),
            Some(QueuePosition::Running)
        );
        client.interrupt(Some(&slow_id)).await.expect("interrupt");
        let mut last = None;
        while let Some(event) = slow.next().await {
            last = Some(event);
        }
        assert!(
            matches!(last, Some(Event::Interrupted { .. })),
            "the slow prompt ends interrupted: {last:?}"
        );
        drop(waiting);

        let entry = client
            .history(&slow_id)
            .await
            .expect("history")
            .expect("an entry for the interrupted prompt");
        assert!(entry.interrupted());
        let recent = client.recent_history(10).await.expect("recent");
        assert!(recent.iter().any(|e| e.prompt_id == slow_id));
        client
            .delete_history(std::slice::from_ref(&slow_id))
            .await
            .expect("delete history");
        assert_eq!(client.history(&slow_id).await.expect("history"), None);

        // A quick prompt, then both lists cleared.
        client.run(graph(2, 3)).await.expect("run");
        assert!(!client.recent_history(10).await.expect("recent").is_empty());
        client.clear_history().await.expect("clear history");
        assert!(client.recent_history(10).await.expect("recent").is_empty());
        client.clear_queue().await.expect("clear queue");
        assert!(client.queue().await.expect("queue").is_empty());
        client.free(true, true).await.expect("free");
    });
}

#[test]
fn information_uploads_and_downloads() {
    smol::block_on(async {
        let mock = start_mock(Duration::from_millis(2)).await;
        let client = client_for(&mock.address(), Duration::from_secs(10));

        let stats = client.system_stats().await.expect("stats");
        assert!(stats.comfyui_version.is_some());
        let folders = client.models(None).await.expect("models");
        assert!(folders.iter().any(|f| f == "loras"), "{folders:?}");
        assert!(
            client
                .models(Some("loras"))
                .await
                .expect("loras")
                .is_empty()
        );
        match client.models(Some("no-such-folder")).await {
            Err(ClientError::Protocol(e)) => assert!(e.to_string().contains("404"), "{e}"),
            other => panic!("an unknown folder is a 404: {other:?}"),
        }
        let info = client.object_info(None).await.expect("object_info");
        assert_eq!(info.as_object().map(|o| o.len()), Some(498));
        let one = client
            .object_info(Some("SaveImageWebsocket"))
            .await
            .expect("one class");
        assert_eq!(one.as_object().map(|o| o.len()), Some(1));

        let bytes = b"\x89PNG\r\n\x1a\nnot really";
        let opts = UploadOptions::new().subfolder("ops");
        let first = client.upload("a.png", bytes, &opts).await.expect("upload");
        assert_eq!(
            (first.name.as_str(), first.subfolder.as_str()),
            ("a.png", "ops")
        );
        let second = client
            .upload("a.png", b"other", &opts)
            .await
            .expect("again");
        assert_eq!(second.name, "a (1).png", "renamed, not overwritten");
        let replaced = client
            .upload("a.png", b"third", &opts.clone().overwrite(true))
            .await
            .expect("overwrite");
        assert_eq!(replaced.name, "a.png");
        assert_eq!(
            &client.view(&second.file_ref()).await.expect("view")[..],
            b"other"
        );
        assert_eq!(
            &client.view(&first.file_ref()).await.expect("view")[..],
            b"third"
        );
        match client.upload("a\".png", bytes, &opts).await {
            Err(ClientError::Upload(_)) => {}
            other => panic!("a quote in the name is refused: {other:?}"),
        }
    });
}

/// A server that accepts connections and never answers: every operation ends with a transport
/// error at the client's `http_timeout`.
#[test]
fn every_operation_has_a_deadline() {
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let held = smol::spawn(async move {
            let mut open = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                open.push(tcp);
            }
        });
        let client = client_for(&address, Duration::from_millis(200));
        let results = [
            client.queue().await.map(drop),
            client.interrupt(None).await,
            client.recent_history(1).await.map(drop),
            client.models(Some("loras")).await.map(drop),
            client.system_stats().await.map(drop),
            client
                .upload("a.png", b"x", &UploadOptions::new())
                .await
                .map(drop),
        ];
        for result in results {
            match result {
                Err(ClientError::Transport(e)) => assert!(
                    matches!(e.kind, comfy_proxy::TransportErrorKind::TimedOut(_)),
                    "{e}"
                ),
                other => panic!("expected the deadline to strike: {other:?}"),
            }
        }
        drop(held);
    });
}
