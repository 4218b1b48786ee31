//! The integration suite, written once and run by each runtime crate against mock servers on
//! loopback (`tests/integration.rs` there calls every function here with its runtime).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::session::{Deadlines, Event, OutputKind, SessionConfig};
use comfy_proxy::transcript::Transcript;
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_mock::{MockConfig, MockHandle};
use futures_util::StreamExt;

use comfy_proxy_driver::client::{Client, ClientConfig, ClientError};
use comfy_proxy_driver::runtime::{HttpClient, Runtime};

/// A runtime and its HTTP client, as a runtime crate provides them.
#[derive(Clone)]
pub struct Kit {
    /// The runtime.
    pub rt: Arc<dyn Runtime>,
    /// Its HTTP client.
    pub http: Arc<dyn HttpClient>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn fixture(name: &str) -> String {
    let path = format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A simulating mock with fast steps, and the object_info of the recorded server.
pub async fn start_mock(kit: &Kit, config: MockConfig) -> MockHandle {
    comfy_proxy_mock::serve(kit.rt.clone(), loopback(), config)
        .await
        .expect("bind a loopback port")
}

/// Fast simulation settings.
pub fn fast() -> MockConfig {
    let mut c = MockConfig::default();
    c.step = Duration::from_millis(2);
    c.job = Duration::from_millis(5);
    c
}

fn client(kit: &Kit, mock: &MockHandle, session: SessionConfig) -> Client {
    let server = ServerAddress::parse(&mock.address()).expect("mock address");
    let config = ClientConfig::new(server)
        .with_session(session)
        .with_deadlines(Deadlines::none().total(Duration::from_secs(30)));
    Client::connect(kit.rt.clone(), kit.http.clone(), config)
}

fn graph(batch: u32, steps: u32) -> Workflow {
    sampler_graph(batch, steps, 5)
}

/// A sampler graph the mock simulates: one 64x48 image from `steps` steps (each one a progress
/// message and a preview), sent by `SaveImageWebsocket`; `seed` tells jobs apart.
pub fn sampler(steps: u32, seed: u32) -> Workflow {
    sampler_graph(1, steps, seed)
}

fn sampler_graph(batch: u32, steps: u32, seed: u32) -> Workflow {
    Workflow::from_json(&format!(
        r#"{{"1":{{"class_type":"EmptyLatentImage","inputs":{{"width":64,"height":48,"batch_size":{batch}}}}},
            "2":{{"class_type":"KSampler","inputs":{{"seed":{seed},"steps":{steps},"cfg":1.0,"sampler_name":"euler","scheduler":"normal","denoise":1.0,"latent_image":["1",0]}}}},
            "3":{{"class_type":"VAEDecode","inputs":{{"samples":["2",0]}}}},
            "save":{{"class_type":"SaveImageWebsocket","inputs":{{"images":["3",0]}}}}}}"#
    ))
    .expect("test graph")
}

/// One image comes back as a PNG output.
pub async fn single_image(kit: Kit) {
    let mock = start_mock(&kit, fast()).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let result = c.run(graph(1, 2)).await.expect("success");
    assert_eq!(result.outputs.len(), 1);
    let output = &result.outputs[0];
    assert_eq!((output.node.as_str(), output.index), ("save", 0));
    assert_eq!(output.kind, OutputKind::Image);
    assert_eq!(output.extension, "png");
    let image = output.image().expect("a PNG");
    assert_eq!(image.format.name(), "PNG");
    assert!(image.data.len() > 100);
}

/// Every image of a batch comes back, in order.
pub async fn batch(kit: Kit) {
    let mock = start_mock(&kit, fast()).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let result = c.run(graph(4, 1)).await.expect("success");
    let indexes: Vec<u32> = result.outputs.iter().map(|o| o.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_ne!(
        result.outputs[0].data(),
        result.outputs[1].data(),
        "each batch item is drawn apart"
    );
}

/// Previews are previews, with and without the feature flags.
pub async fn previews(kit: Kit) {
    for flags in [true, false] {
        let mock = start_mock(&kit, fast()).await;
        let c = client(
            &kit,
            &mock,
            SessionConfig::default().with_feature_flags(flags),
        );
        let result = c.run(graph(1, 5)).await.expect("success");
        assert_eq!(result.outputs.len(), 1, "flags {flags}");
        assert_eq!(result.previews, 5, "flags {flags}");
    }
}

/// Two output nodes are told apart.
pub async fn two_outputs(kit: Kit) {
    let mock = start_mock(&kit, fast()).await;
    let c = client(
        &kit,
        &mock,
        SessionConfig::default().with_feature_flags(false),
    );
    let g = Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":255}},
            "2":{"class_type":"EmptyImage","inputs":{"width":32,"height":48,"batch_size":1,"color":0}},
            "save_a":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}},
            "save_b":{"class_type":"SaveImageWebsocket","inputs":{"images":["2",0]}}}"#,
    )
    .unwrap();
    let result = c.run(g).await.expect("success");
    let mut nodes: Vec<&str> = result.outputs.iter().map(|o| o.node.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["save_a", "save_b"]);
}

/// Every output kind the simulating mock makes, as ComfyUI 0.3.64 reports it: websocket and
/// file PNGs, an mp4 filed under `images` with `animated: [true]`, a FLAC under `audio`, and
/// `PreviewAny`'s text; previews (`PreviewImage`, type `temp`) stay out.
pub async fn every_output_kind(kit: Kit) {
    let mock = start_mock(&kit, fast()).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let g = Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":32,"height":32,"batch_size":2,"color":0}},
            "ws":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}},
            "files":{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"kit"}},
            "preview":{"class_type":"PreviewImage","inputs":{"images":["1",0]}},
            "video":{"class_type":"SaveVideo","inputs":{"video":["1",0],"filename_prefix":"video/kit","format":"mp4","codec":"h264"}},
            "audio":{"class_type":"SaveAudio","inputs":{"audio":["1",0],"filename_prefix":"audio/kit"}},
            "say":{"class_type":"PreviewAny","inputs":{"source":"hello from comfy-proxy"}}}"#,
    )
    .unwrap();
    let result = c.run(g).await.expect("success");
    let kinds = |k: OutputKind| result.outputs.of_kind(k).count();
    assert_eq!(kinds(OutputKind::Image), 4, "{:?}", result.outputs);
    assert_eq!(kinds(OutputKind::Video), 1, "{:?}", result.outputs);
    assert_eq!(kinds(OutputKind::Audio), 1, "{:?}", result.outputs);
    let texts: Vec<&str> = result.outputs.texts().map(|(_, t)| t).collect();
    assert_eq!(texts, ["hello from comfy-proxy"]);
    assert_eq!(
        result.outputs.len(),
        7,
        "the temp preview files are not fetched"
    );
    let video = result.outputs.of_kind(OutputKind::Video).next().unwrap();
    assert_eq!(
        (video.node.as_str(), video.extension.as_str()),
        ("video", "mp4")
    );
    assert_eq!(video.file().map(|f| f.subfolder.as_str()), Some("video"));
    let audio = result.outputs.of_kind(OutputKind::Audio).next().unwrap();
    assert_eq!(audio.extension, "flac");
    let preview = result
        .outputs
        .ui_of(&"preview".into())
        .expect("its ui data");
    assert_eq!(preview["images"][0]["type"], "temp");
}

/// A recorded execution error, replayed by the mock, fails the prompt with the node's error.
pub async fn execution_error(kit: Kit) {
    let mut config = fast();
    config.recordings = vec![Transcript::parse(&fixture("exec_error.jsonl")).unwrap()];
    config.speed = 0.0;
    let mock = start_mock(&kit, config).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let recorded = Transcript::parse(&fixture("exec_error.jsonl")).unwrap();
    let graph = recorded
        .records
        .iter()
        .find_map(|r| match &r.kind {
            comfy_proxy::transcript::RecordKind::HttpRequest { body: Some(b), .. } => {
                b.get("prompt").cloned()
            }
            _ => None,
        })
        .unwrap();
    match c.run(Workflow::from_value(graph).unwrap()).await {
        Err(ClientError::Failed(comfy_proxy::session::Failure::Execution(e))) => {
            assert_eq!(e.node_type, "TestRaiseError");
        }
        other => panic!("{other:?}"),
    }
}

/// A graph with a class the server does not know is rejected before it runs.
pub async fn rejection(kit: Kit) {
    let mut config = fast();
    config.object_info = Some(serde_json::from_str(&fixture("object_info.json")).unwrap());
    let mock = start_mock(&kit, config).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let g = Workflow::from_json(r#"{"1":{"class_type":"NoSuchNode","inputs":{}},"save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#).unwrap();
    match c.run(g).await {
        Err(ClientError::Rejected(r)) => assert_eq!(r.error_type(), "invalid_prompt"),
        other => panic!("{other:?}"),
    }
}

/// Cancelling a running prompt interrupts it; the stream ends with `Cancelled`.
pub async fn cancel(kit: Kit) {
    let mut config = fast();
    config.step = Duration::from_millis(50);
    let mock = start_mock(&kit, config).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let mut stream = c.submit(graph(1, 100)).await.unwrap();
    let mut last = None;
    while let Some(event) = stream.next().await {
        if matches!(event, Event::Progress { .. }) {
            stream.cancel();
        }
        last = Some(event);
    }
    assert!(matches!(last, Some(Event::Cancelled { .. })), "{last:?}");
    // The server is free again: the next prompt runs.
    let result = c
        .run(graph(1, 1))
        .await
        .expect("the server was interrupted and is free");
    assert_eq!(result.outputs.len(), 1);
}

/// Several prompts on one client, concurrently, each gets its own images.
pub async fn concurrent_prompts(kit: Kit) {
    let mock = start_mock(&kit, fast()).await;
    let c = client(&kit, &mock, SessionConfig::default());
    let runs = (0..6).map(|i| {
        let c = c.clone();
        async move { c.run(graph(1 + i % 3, 1)).await }
    });
    let results = futures_util::future::join_all(runs).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("success").outputs.len(), 1 + i % 3);
    }
}

/// The websocket drops while a prompt runs: the client reconnects, asks the server what became
/// of the prompt, and still gets its image (the output node runs after the reconnect).
pub async fn websocket_dropped_and_recovered(kit: Kit) {
    let mut config = fast();
    config.step = Duration::from_millis(20);
    let mock = start_mock(&kit, config).await;
    let session = SessionConfig::default().with_backoff(comfy_proxy::session::Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        5,
    ));
    let c = client(&kit, &mock, session);
    // 60 steps of 20 ms: the drop at step 3 lands long before the images, even when a loaded
    // machine delays the reader by half a second.
    let mut stream = c.submit(graph(2, 60)).await.unwrap();
    let mut dropped = false;
    let mut outputs = 0;
    let mut last = None;
    while let Some(event) = stream.next().await {
        match &event {
            Event::Progress { value, .. } if *value >= 3.0 && !dropped => {
                mock.drop_websockets();
                dropped = true;
            }
            Event::Output { .. } => outputs += 1,
            _ => {}
        }
        last = Some(event);
    }
    assert!(dropped);
    assert!(matches!(last, Some(Event::Completed { .. })), "{last:?}");
    assert_eq!(outputs, 2, "both images of the batch");
}

/// The websocket drops while the output node sends its images: the client must not report
/// success with images missing.
pub async fn websocket_dropped_during_outputs(kit: Kit) {
    let mut config = fast();
    config.step = Duration::from_millis(1);
    let mock = start_mock(&kit, config).await;
    let session = SessionConfig::default().with_backoff(comfy_proxy::session::Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(50),
        5,
    ));
    let c = client(&kit, &mock, session);
    let mut stream = c.submit(graph(8, 1)).await.unwrap();
    let mut last = None;
    let mut outputs = 0;
    while let Some(event) = stream.next().await {
        if let Event::Output { .. } = &event {
            outputs += 1;
            if outputs == 1 {
                mock.drop_websockets();
            }
        }
        last = Some(event);
    }
    match last {
        Some(Event::Completed { .. }) => assert_eq!(outputs, 8, "a success carries every image"),
        Some(Event::Failed { failure, .. }) => assert!(failure.is_retryable(), "{failure}"),
        other => panic!("{other:?}"),
    }
}

/// A recorded session replays through the core with the same outcome and outputs.
pub async fn record_and_replay(kit: Kit) {
    let dir = std::env::temp_dir().join(format!("comfy-proxy-record-{:x}", fastrand::u64(..)));
    let mock = start_mock(&kit, fast()).await;
    let server = ServerAddress::parse(&mock.address()).unwrap();
    let c = Client::connect(
        kit.rt.clone(),
        kit.http.clone(),
        ClientConfig::new(server).with_recording(&dir),
    );
    let live = c.run(graph(3, 2)).await.expect("success");
    drop(c);
    kit.rt.sleep(Duration::from_millis(100)).await;
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .expect("a transcript")
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let replayed =
        comfy_proxy::replay::replay(&Transcript::parse(&text).expect("a valid transcript"));
    assert_eq!(replayed.prompts.len(), 1);
    let p = &replayed.prompts[0];
    assert_eq!(p.outcome, comfy_proxy::replay::Outcome::Success);
    assert_eq!(p.outputs.len(), live.outputs.len());
    assert_eq!(p.previews, live.previews);
}

/// Capability routing: a job goes only to servers whose `object_info` lists what it needs; a
/// job no server can run fails at once with the validation errors.
pub async fn capability_routing(kit: Kit) {
    use comfy_proxy_driver::pool::{Pool, PoolConfig, PoolEvent};
    let full: serde_json::Value = serde_json::from_str(&fixture("object_info.json")).unwrap();
    let mut lacking = full.clone();
    lacking
        .as_object_mut()
        .unwrap()
        .remove("SaveImageWebsocket");
    let mut mocks = Vec::new();
    for info in [lacking, full] {
        let mut c = fast();
        c.object_info = Some(info);
        mocks.push(start_mock(&kit, c).await);
    }
    let servers: Vec<ServerAddress> = mocks
        .iter()
        .map(|m| ServerAddress::parse(&m.address()).unwrap())
        .collect();
    let mut config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
    config.route_by_capability = true;
    let (pool, mut events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
    let good = Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap();
    let bad = Workflow::from_json(
        r#"{"1":{"class_type":"NoSuchNode","inputs":{}},"save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap();
    let mut jobs = Vec::new();
    for _ in 0..6 {
        jobs.push(pool.submit(good.clone()).await.unwrap().id());
    }
    let doomed = pool.submit(bad).await.unwrap().id();
    pool.close();
    let mut done = 0;
    while let Some(event) = events.next().await {
        if let PoolEvent::Finished(r) = event {
            done += 1;
            if r.job == doomed {
                let e = r.outcome.unwrap_err().to_string();
                assert!(
                    e.contains("no server can run") && e.contains("NoSuchNode"),
                    "{e}"
                );
                assert_eq!(r.attempts, 0, "it was never sent");
            } else {
                assert!(jobs.contains(&r.job));
                assert!(r.outcome.is_ok(), "{:?}", r.outcome);
                assert_eq!(r.server, Some(1), "only server 1 has SaveImageWebsocket");
            }
        }
    }
    assert_eq!(done, 7);
}

/// Every job uploads its input image to the server that runs it, and uses the name that
/// server returned (a clash is renamed): a mock refuses a `LoadImage` of a file it lacks.
pub async fn uploads_follow_the_job(kit: Kit) {
    use comfy_proxy_driver::pool::{Pool, PoolConfig, PoolEvent, Upload};
    let mut mocks = Vec::new();
    for _ in 0..3 {
        mocks.push(start_mock(&kit, fast()).await);
    }
    let servers: Vec<ServerAddress> = mocks
        .iter()
        .map(|m| ServerAddress::parse(&m.address()).unwrap())
        .collect();
    let (pool, mut events) = Pool::start(
        kit.rt.clone(),
        kit.http.clone(),
        PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone())),
    );
    let graph = Workflow::from_json(
        r#"{"load":{"class_type":"LoadImage","inputs":{"image":"not-uploaded-yet.png"}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["load",0]}}}"#,
    )
    .unwrap();
    let upload = Upload {
        input: "load.image".into(),
        file_name: "in.png".into(),
        bytes: Arc::new(b"\x89PNG\r\n\x1a\nfake".to_vec()),
    };
    for _ in 0..9 {
        drop(
            pool.submit_with_uploads(graph.clone(), vec![upload.clone()])
                .await
                .unwrap(),
        );
    }
    pool.close();
    let mut ok = 0;
    let mut used = std::collections::HashSet::new();
    while let Some(event) = events.next().await {
        if let PoolEvent::Finished(r) = event {
            assert!(r.outcome.is_ok(), "{:?}", r.outcome);
            used.insert(r.server.unwrap());
            ok += 1;
        }
    }
    assert_eq!(ok, 9);
    assert!(
        used.len() > 1,
        "the jobs spread over several servers: {used:?}"
    );
    // Without the upload the same graph is refused: the check is real.
    let c = client(&kit, &mocks[0], SessionConfig::default());
    match c.run(graph).await {
        Err(ClientError::Rejected(r)) => {
            assert!(r.to_string().contains("Invalid image file"), "{r}")
        }
        other => panic!("{other:?}"),
    }
}

/// A server that is not there: the prompt fails with a clear error, it does not hang.
pub async fn unreachable_server(kit: Kit) {
    let server = ServerAddress::parse("127.0.0.1:9").unwrap();
    let session = SessionConfig::default().with_backoff(comfy_proxy::session::Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(20),
        2,
    ));
    let config = ClientConfig::new(server).with_session(session);
    let c = Client::connect(kit.rt.clone(), kit.http.clone(), config);
    match c.run(graph(1, 1)).await {
        Err(ClientError::Failed(f)) => assert!(f.to_string().contains("refused"), "{f}"),
        other => panic!("{other:?}"),
    }
}

/// Runs every scenario; `block_on` is the runtime's.
#[macro_export]
macro_rules! integration_suite {
    ($kit:expr, $block_on:path) => {
        #[test]
        fn single_image() {
            $block_on($crate::suite::single_image($kit));
        }
        #[test]
        fn batch() {
            $block_on($crate::suite::batch($kit));
        }
        #[test]
        fn previews() {
            $block_on($crate::suite::previews($kit));
        }
        #[test]
        fn two_outputs() {
            $block_on($crate::suite::two_outputs($kit));
        }
        #[test]
        fn every_output_kind() {
            $block_on($crate::suite::every_output_kind($kit));
        }
        #[test]
        fn execution_error() {
            $block_on($crate::suite::execution_error($kit));
        }
        #[test]
        fn rejection() {
            $block_on($crate::suite::rejection($kit));
        }
        #[test]
        fn cancel() {
            $block_on($crate::suite::cancel($kit));
        }
        #[test]
        fn concurrent_prompts() {
            $block_on($crate::suite::concurrent_prompts($kit));
        }
        #[test]
        fn pool_of_four() {
            $block_on($crate::suite::pool_of_four($kit));
        }
        #[test]
        fn websocket_dropped_and_recovered() {
            $block_on($crate::suite::websocket_dropped_and_recovered($kit));
        }
        #[test]
        fn websocket_dropped_during_outputs() {
            $block_on($crate::suite::websocket_dropped_during_outputs($kit));
        }
        #[test]
        fn record_and_replay() {
            $block_on($crate::suite::record_and_replay($kit));
        }
        #[test]
        fn capability_routing() {
            $block_on($crate::suite::capability_routing($kit));
        }
        #[test]
        fn uploads_follow_the_job() {
            $block_on($crate::suite::uploads_follow_the_job($kit));
        }
        #[test]
        fn unreachable_server() {
            $block_on($crate::suite::unreachable_server($kit));
        }
    };
}

/// A pool of 4 mock servers runs 200 jobs; every job ends once with all its images.
pub async fn pool_of_four(kit: Kit) {
    use comfy_proxy_driver::pool::{Pool, PoolConfig, PoolEvent};
    let mut mocks = Vec::new();
    for _ in 0..4 {
        let mut c = fast();
        c.step = Duration::from_millis(1);
        c.job = Duration::from_millis(2);
        mocks.push(start_mock(&kit, c).await);
    }
    let servers: Vec<ServerAddress> = mocks
        .iter()
        .map(|m| ServerAddress::parse(&m.address()).unwrap())
        .collect();
    let template = ClientConfig::new(servers[0].clone())
        .with_deadlines(Deadlines::none().total(Duration::from_secs(60)));
    let (pool, mut events) = Pool::start(
        kit.rt.clone(),
        kit.http.clone(),
        PoolConfig::new(&servers, &template),
    );
    let mut expected = std::collections::HashMap::new();
    for i in 0..200u32 {
        let batch = 1 + i % 3;
        let job = pool.submit(graph(batch, 1)).await.unwrap().id();
        expected.insert(job, batch as usize);
    }
    pool.close();
    let mut finished = std::collections::HashMap::new();
    let mut per_server = [0usize; 4];
    while let Some(event) = events.next().await {
        if let PoolEvent::Finished(report) = event {
            assert!(
                report.outcome.is_ok(),
                "job {} failed: {:?}",
                report.job,
                report.outcome
            );
            let indexes: Vec<u32> = report.outputs.iter().map(|o| o.index).collect();
            assert_eq!(
                indexes,
                (0..expected[&report.job] as u32).collect::<Vec<_>>(),
                "job {}",
                report.job
            );
            per_server[report.server.unwrap()] += 1;
            assert!(
                finished.insert(report.job, report).is_none(),
                "a job ended twice"
            );
        }
    }
    assert_eq!(finished.len(), 200, "every job ends");
    assert!(
        per_server.iter().all(|&n| n > 0),
        "every server worked: {per_server:?}"
    );
}
