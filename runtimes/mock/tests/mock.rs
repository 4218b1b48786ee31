//! The mock server driven together with the client state machine, entirely in memory: a small
//! loop moves the sessions' transmits to the mock and the mock's outputs back, and advances a
//! simulated clock to the earlier of both sides' timers.

use std::time::Duration;

use bytes::Bytes;
use comfy_proxy::session::{Event, Session, SessionConfig, Submission, Transmit};
use comfy_proxy::transcript::{RecordKind, Transcript};
use comfy_proxy::wire::{HttpResponse, ImageFormat};
use comfy_proxy::{ClientId, PromptId, Workflow};
use comfy_proxy_mock::{ConnId, Frame, ImageSpec, MockConfig, MockOutput, MockServer, Renderer};
use serde_json::{Value, json};

/// Tiny images that carry their spec: PNG or JPEG magic, then `w h seed index step`.
struct Fake;

fn stamp(magic: &[u8], spec: &ImageSpec) -> Bytes {
    let mut out = magic.to_vec();
    let step = spec
        .step
        .map_or("-".to_owned(), |(k, n)| format!("{k}/{n}"));
    let text = format!(
        "w{} h{} s{} i{} {step}",
        spec.width, spec.height, spec.seed, spec.index
    );
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

impl Renderer for Fake {
    fn png(&self, spec: &ImageSpec) -> Bytes {
        stamp(b"\x89PNG\r\n\x1a\n", spec)
    }
    fn jpeg(&self, spec: &ImageSpec) -> Bytes {
        stamp(&[0xFF, 0xD8, 0xFF], spec)
    }
}

/// What an image from [`Fake`] says after its magic.
fn label(data: &[u8]) -> String {
    let skip = if data.starts_with(b"\x89PNG") { 8 } else { 3 };
    String::from_utf8_lossy(&data[skip.min(data.len())..]).into_owned()
}

struct Client {
    session: Session,
    conn: Option<ConnId>,
    events: Vec<(Duration, Event)>,
}

/// One mock server, its clients, and the simulated clock.
struct Net {
    mock: MockServer,
    clients: Vec<Client>,
    now: Duration,
    next_conn: u64,
    /// Every frame the mock sent, with its connection.
    frames: Vec<(ConnId, Frame)>,
    /// Connections the mock closed.
    closed: Vec<ConnId>,
}

impl Net {
    fn new(config: MockConfig) -> Self {
        Self {
            mock: MockServer::new(config, Box::new(Fake)),
            clients: Vec::new(),
            now: Duration::ZERO,
            next_conn: 0,
            frames: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn add(&mut self, client_id: &str, feature_flags: bool) -> usize {
        let mut config = SessionConfig::default();
        config.feature_flags = feature_flags;
        config.keepalive = None;
        let session = Session::new(ClientId::new(client_id), config);
        self.clients.push(Client {
            session,
            conn: None,
            events: Vec::new(),
        });
        self.clients.len() - 1
    }

    fn submit(&mut self, client: usize, id: &str, graph: Value) {
        let wf = Workflow::from_value(graph).unwrap();
        let sub = Submission::new(PromptId::new(id), wf);
        self.clients[client].session.submit(self.now, sub).unwrap();
    }

    /// Moves everything that can move at this instant; false when nothing did.
    fn step(&mut self) -> bool {
        let now = self.now;
        let mut moved = false;
        for i in 0..self.clients.len() {
            while let Some(t) = self.clients[i].session.poll_transmit() {
                moved = true;
                let c = &mut self.clients[i];
                match t {
                    Transmit::Connect { path } => {
                        self.next_conn += 1;
                        let conn = ConnId(self.next_conn);
                        match self.mock.handle_ws_open(now, conn, &path) {
                            Ok(()) => {
                                c.conn = Some(conn);
                                c.session.handle_connected(now);
                            }
                            Err(_) => c.session.handle_disconnect(now),
                        }
                    }
                    Transmit::Text(text) => {
                        if let Some(conn) = c.conn {
                            self.mock.handle_ws_text(now, conn, &text);
                        }
                    }
                    Transmit::Http { id, request } => {
                        let body = request.body.map(|b| b.bytes).unwrap_or_default();
                        let resp = self.mock.handle_request(
                            now,
                            request.method.as_str(),
                            &request.path,
                            &body,
                        );
                        let resp = HttpResponse::new(resp.status, resp.body);
                        c.session.handle_response(now, id, resp);
                    }
                    Transmit::Close => {
                        if let Some(conn) = c.conn.take() {
                            self.mock.handle_ws_close(now, conn);
                        }
                    }
                    _ => {}
                }
            }
        }
        while let Some(out) = self.mock.poll_output(now) {
            moved = true;
            let (conn, frame) = match out {
                MockOutput::Send { conn, frame } => (conn, Some(frame)),
                MockOutput::Close { conn } => (conn, None),
                _ => continue,
            };
            let client = self.clients.iter_mut().find(|c| c.conn == Some(conn));
            match (frame, client) {
                (Some(frame), client) => {
                    self.frames.push((conn, frame.clone()));
                    let Some(c) = client else { continue };
                    let _ = match frame {
                        Frame::Text(text) => c.session.handle_text(now, &text),
                        Frame::Binary(data) => c.session.handle_binary(now, data),
                        _ => Ok(()),
                    };
                }
                (None, client) => {
                    self.closed.push(conn);
                    if let Some(c) = client {
                        c.conn = None;
                        c.session.handle_disconnect(now);
                    }
                }
            }
        }
        for c in &mut self.clients {
            while let Some(e) = c.session.poll_event() {
                moved = true;
                c.events.push((now, e));
            }
        }
        moved
    }

    /// Runs until `stop` holds after a step, or no timer is left before `limit`.
    fn run_until(&mut self, limit: Duration, mut stop: impl FnMut(&Net) -> bool) {
        loop {
            while self.step() {}
            if stop(self) {
                return;
            }
            let timers = self.clients.iter().map(|c| c.session.poll_timeout());
            let Some(next) = timers.chain([self.mock.poll_timeout()]).flatten().min() else {
                return;
            };
            if next > limit {
                return;
            }
            self.now = self.now.max(next);
            self.mock.handle_timeout(self.now);
            for c in &mut self.clients {
                c.session.handle_timeout(self.now);
            }
        }
    }

    /// Runs until every prompt of every client has ended and the mock is idle.
    fn run(&mut self) {
        self.run_until(Duration::from_secs(600), |net| {
            net.mock.is_idle()
                && net
                    .clients
                    .iter()
                    .all(|c| c.session.in_flight().count() == 0)
        });
    }

    fn events(&self, client: usize) -> Vec<&Event> {
        self.clients[client].events.iter().map(|(_, e)| e).collect()
    }

    /// `(node, index, label)` of every output of `client`, in order.
    fn outputs(&self, client: usize) -> Vec<(String, u32, String)> {
        let outputs = self.events(client).into_iter().filter_map(|e| match e {
            Event::Output {
                node, index, image, ..
            } => Some((node.to_string(), *index, label(&image.data))),
            _ => None,
        });
        outputs.collect()
    }

    /// `(node, label)` of every preview of `client`, in order.
    fn previews(&self, client: usize) -> Vec<(Option<String>, String)> {
        let previews = self.events(client).into_iter().filter_map(|e| match e {
            Event::Preview { node, image, .. } => {
                assert_eq!(image.format, ImageFormat::Jpeg);
                Some((node.as_ref().map(ToString::to_string), label(&image.data)))
            }
            _ => None,
        });
        previews.collect()
    }

    fn completed(&self, client: usize, prompt: &str) -> bool {
        self.events(client)
            .iter()
            .any(|e| matches!(e, Event::Completed { prompt: p } if p == prompt))
    }

    /// The types of the text messages the mock sent on `conn`.
    fn kinds_on(&self, conn: ConnId) -> Vec<String> {
        self.frames
            .iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, f)| match f {
                Frame::Text(t) => serde_json::from_str::<Value>(t).ok()?["type"]
                    .as_str()
                    .map(str::to_owned),
                _ => None,
            })
            .collect()
    }

    /// The first bytes (type) of every binary frame the mock sent.
    fn binary_types(&self) -> Vec<u8> {
        let types = self.frames.iter().filter_map(|(_, f)| match f {
            Frame::Binary(b) => b.get(3).copied(),
            _ => None,
        });
        types.collect()
    }
}

fn config() -> MockConfig {
    let mut c = MockConfig::default();
    c.step = Duration::from_millis(10);
    c.job = Duration::from_millis(20);
    c
}

fn fixture(name: &str) -> Transcript {
    let path = format!("{}/../../fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    Transcript::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn single(width: u32, height: u32) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1, "color": 0}},
        "save": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    })
}

/// Latent -> sampler -> decode -> websocket output.
fn sampled(steps: u32, batch: u32, seed: u64) -> Value {
    json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 80, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7, "model": ["4", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["8", 0]}},
    })
}

#[test]
fn single_image() {
    let mut net = Net::new(config());
    let a = net.add("alice", true);
    net.submit(a, "p1", single(64, 48));
    net.run();
    assert_eq!(
        net.outputs(a),
        [("save".into(), 0, "w64 h48 s0 i0 -".into())]
    );
    assert!(net.completed(a, "p1"));
    let kinds: Vec<String> = net.events(a).iter().map(|e| e.to_string()).collect();
    assert!(
        kinds
            .iter()
            .any(|k| k.starts_with("server_features preview_metadata=true"))
    );
    assert!(kinds.iter().any(|k| k == "node p1 1"), "{kinds:#?}");
    // The run took the job time.
    assert_eq!(net.now, Duration::from_millis(20));
}

#[test]
fn batch_of_four_without_previews() {
    let mut c = config();
    c.previews = false;
    let mut net = Net::new(c);
    let a = net.add("alice", true);
    net.submit(a, "p1", sampled(5, 4, 1234));
    net.run();
    let want: Vec<(String, u32, String)> = (0..4)
        .map(|i| ("9".into(), i, format!("w96 h80 s1234 i{i} -")))
        .collect();
    assert_eq!(net.outputs(a), want);
    assert_eq!(net.previews(a), []);
    assert!(net.completed(a, "p1"));
    // 20 ms of job time and 5 steps of 10 ms.
    assert_eq!(net.now, Duration::from_millis(70));
}

#[test]
fn previews_with_and_without_feature_flags() {
    for flags in [false, true] {
        let mut net = Net::new(config());
        let a = net.add("alice", flags);
        net.submit(a, "p1", sampled(3, 1, 7));
        net.run();
        let want: Vec<(Option<String>, String)> = (1..=3)
            .map(|k| (Some("3".into()), format!("w96 h80 s7 i0 {k}/3")))
            .collect();
        assert_eq!(net.previews(a), want, "flags {flags}");
        assert_eq!(net.outputs(a), [("9".into(), 0, "w96 h80 s7 i0 -".into())]);
        assert!(net.completed(a, "p1"));
        let frame_type = if flags { 4 } else { 1 };
        assert_eq!(net.binary_types(), [frame_type; 4], "flags {flags}");
        let progress = net
            .events(a)
            .iter()
            .filter(|e| matches!(e, Event::Progress { .. }))
            .count();
        assert_eq!(progress, 3 + 1, "3 steps, 1 batch item");
    }
}

#[test]
fn two_output_nodes() {
    let mut net = Net::new(config());
    let a = net.add("alice", false);
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 48, "batch_size": 2}},
        "save_a": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        "save_b": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}},
    });
    net.submit(a, "p1", graph);
    net.run();
    assert_eq!(
        net.outputs(a),
        [
            ("save_a".into(), 0, "w64 h64 s0 i0 -".into()),
            ("save_b".into(), 0, "w32 h48 s0 i0 -".into()),
            ("save_b".into(), 1, "w32 h48 s0 i1 -".into()),
        ]
    );
    assert!(net.completed(a, "p1"));
}

#[test]
fn saveimage_file_is_fetched_with_view() {
    let mut net = Net::new(config());
    let a = net.add("alice", true);
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mock/run"}},
    });
    net.submit(a, "p1", graph.clone());
    net.submit(a, "p2", graph);
    net.run();
    let files: Vec<(String, String)> = net
        .events(a)
        .iter()
        .filter_map(|e| match e {
            Event::Output {
                image,
                file: Some(f),
                ..
            } => Some((
                format!("{}/{}", f.subfolder, f.filename),
                label(&image.data),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        files,
        [
            ("mock/run_00001_.png".into(), "w16 h16 s0 i0 -".into()),
            ("mock/run_00002_.png".into(), "w16 h16 s0 i1 -".into()),
            ("mock/run_00003_.png".into(), "w16 h16 s0 i0 -".into()),
            ("mock/run_00004_.png".into(), "w16 h16 s0 i1 -".into()),
        ]
    );
    assert!(net.completed(a, "p1") && net.completed(a, "p2"));
    let history = net.mock.handle_request(net.now, "GET", "/history/p2", b"");
    let history: Value = serde_json::from_slice(&history.body).unwrap();
    assert_eq!(
        history["p2"]["outputs"]["2"]["images"][1],
        json!({"filename": "run_00004_.png", "subfolder": "mock", "type": "output"})
    );
    assert_eq!(history["p2"]["status"]["status_str"], "success");
}

#[test]
fn unknown_class_is_rejected() {
    let mut c = config();
    let info = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/object_info.json"
    ))
    .unwrap();
    c.object_info = Some(serde_json::from_str(&info).unwrap());
    let mut net = Net::new(c);
    let a = net.add("alice", true);
    let mut graph = single(8, 8);
    graph["1"]["class_type"] = json!("NoSuchNode");
    net.submit(a, "p1", graph);
    net.run();
    let rejected = net.events(a).into_iter().find_map(|e| match e {
        Event::Rejected { rejection, .. } => Some(rejection.to_string()),
        _ => None,
    });
    let rejected = rejected.expect("a rejection");
    assert!(rejected.contains("invalid_prompt"), "{rejected}");
    assert!(rejected.contains("NoSuchNode"), "{rejected}");
    assert!(net.mock.is_idle());
}

#[test]
fn cancel_interrupts_the_running_prompt() {
    let mut net = Net::new(config());
    let a = net.add("alice", true);
    net.submit(a, "p1", sampled(50, 1, 3));
    let limit = Duration::from_secs(60);
    net.run_until(limit, |net| {
        net.events(0)
            .iter()
            .any(|e| matches!(e, Event::Progress { value, .. } if *value >= 2.0))
    });
    let at = net.now;
    net.clients[a]
        .session
        .cancel(at, &PromptId::new("p1"))
        .unwrap();
    net.run();
    assert!(
        net.events(a)
            .iter()
            .any(|e| matches!(e, Event::Cancelled { prompt } if prompt == "p1"))
    );
    let conn = ConnId(1);
    let kinds = net.kinds_on(conn);
    assert_eq!(
        kinds[kinds.len() - 3..],
        ["execution_interrupted", "status", "executing"]
    );
    // The interrupt came at the next step: 10 ms later, not after the remaining 48 steps.
    assert_eq!(net.now, at + Duration::from_millis(10));
    let history = net.mock.handle_request(net.now, "GET", "/history/p1", b"");
    let history: Value = serde_json::from_slice(&history.body).unwrap();
    let messages = &history["p1"]["status"]["messages"];
    assert_eq!(messages[2][0], "execution_interrupted");
    assert_eq!(messages[2][1]["node_id"], "3");
}

#[test]
fn replay_of_ws_batch4_gives_the_recorded_images_and_the_new_id() {
    let t = fixture("ws_batch4");
    let recorded: Vec<Bytes> = t
        .records
        .iter()
        .filter_map(|r| match &r.kind {
            RecordKind::WsBinary { data } => Some(data.slice(8..)),
            _ => None,
        })
        .collect();
    let graph = t
        .records
        .iter()
        .find_map(|r| match &r.kind {
            RecordKind::HttpRequest { body: Some(b), .. } => Some(b["prompt"].clone()),
            _ => None,
        })
        .unwrap();
    let mut c = config();
    c.recordings = vec![t];
    c.speed = 0.5;
    let mut net = Net::new(c);
    let a = net.add("alice", true);
    // Another color: the shape matches, the values need not.
    let mut graph = graph;
    graph["1"]["inputs"]["color"] = json!(123);
    net.submit(a, "fresh-id", graph);
    net.run();
    let outputs: Vec<(String, u32, Bytes)> = net
        .events(a)
        .into_iter()
        .filter_map(|e| match e {
            Event::Output {
                prompt,
                node,
                index,
                image,
                ..
            } => {
                assert_eq!(prompt, "fresh-id");
                Some((node.to_string(), *index, image.data.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 4);
    for (i, (node, index, data)) in outputs.iter().enumerate() {
        assert_eq!(
            (node.as_str(), *index),
            ("save_image_websocket_node", i as u32)
        );
        assert_eq!(data, &recorded[i]);
    }
    assert!(net.completed(a, "fresh-id"));
    let recorded_id = "c70e7a28-bc47-4590-b963-134f89c1b1ea";
    assert!(net.frames.iter().all(|(_, f)| match f {
        Frame::Text(t) => !t.contains(recorded_id),
        _ => true,
    }));
    // Recorded: 2 ms from execution_start to the last frame, played at half speed.
    assert_eq!(net.now, Duration::from_millis(1));
}

#[test]
fn queue_order_with_two_clients() {
    let mut net = Net::new(config());
    let a = net.add("alice", true);
    let b = net.add("bob", false);
    net.submit(a, "a1", sampled(4, 1, 1));
    net.run_until(Duration::from_secs(1), |net| {
        net.events(0)
            .iter()
            .any(|e| matches!(e, Event::Started { .. }))
    });
    net.submit(b, "b1", single(8, 8));
    net.run_until(Duration::from_secs(1), |net| {
        net.events(1)
            .iter()
            .any(|e| matches!(e, Event::Accepted { .. }))
    });
    net.submit(a, "a2", single(8, 8));
    net.run();
    let started: Vec<(Duration, String)> = net
        .clients
        .iter()
        .flat_map(|c| &c.events)
        .filter_map(|(t, e)| match e {
            Event::Started { prompt } => Some((*t, prompt.to_string())),
            _ => None,
        })
        .collect();
    let mut by_time = started.clone();
    by_time.sort();
    let order: Vec<&str> = by_time.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(order, ["a1", "b1", "a2"]);
    // Runs never overlap: each starts when the one before ended (job 20 ms, 4 steps of 10).
    let times: Vec<u128> = by_time.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, [0, 60, 80]);
    // Each client hears only of its own prompts, and of everyone's queue.
    for (client, own) in [(a, ["a1", "a2"].as_slice()), (b, ["b1"].as_slice())] {
        for e in net.events(client) {
            if let Some(p) = e.prompt() {
                assert!(own.contains(&p.as_str()), "{e}");
            }
        }
        let statuses = net
            .events(client)
            .iter()
            .filter(|e| matches!(e, Event::QueueStatus { .. }))
            .count();
        assert!(statuses >= 4, "client {client}: {statuses}");
    }
    assert!(net.completed(a, "a1") && net.completed(b, "b1") && net.completed(a, "a2"));
}

#[test]
fn a_second_socket_with_the_same_id_replaces_the_first() {
    let mut net = Net::new(config());
    let a = net.add("alice", true);
    net.run_until(Duration::from_secs(1), |net| net.clients[0].conn.is_some());
    let first = net.clients[a].conn.unwrap();
    // Someone else opens a socket with alice's id: alice's socket is closed.
    let intruder = ConnId(1000);
    net.mock
        .handle_ws_open(net.now, intruder, "/ws?clientId=alice")
        .unwrap();
    // Alice reconnects at once and takes the id back: the intruder's socket is closed.
    net.run_until(Duration::from_secs(1), |net| net.closed.len() == 2);
    assert_eq!(net.closed, [first, intruder]);
    assert!(
        net.events(a)
            .iter()
            .any(|e| matches!(e, Event::Disconnected))
    );
    // Her prompt then runs.
    net.submit(a, "p1", single(8, 8));
    net.run();
    assert_eq!(net.closed, [first, intruder]);
    assert!(net.completed(a, "p1"));
    assert!(net.kinds_on(intruder).iter().all(|k| k == "status"));
}

#[test]
fn hostile_requests_never_panic() {
    let mut mock = MockServer::new(MockConfig::default(), Box::new(Fake));
    let now = Duration::ZERO;
    let cases: &[(&str, &str, &[u8])] = &[
        ("POST", "/prompt", b"\x00\xff garbage"),
        ("POST", "/prompt", br#"{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": ["1", 1e999]}}}}"#),
        ("POST", "/prompt", br#"{"prompt": {}, "number": 1e308, "front": 99999999999999999999999}"#),
        ("POST", "/prompt", br#"{"prompt": {"1": {"class_type": "SaveImage", "inputs": {"images": ["1", -1]}}}}"#),
        ("POST", "/queue", br#"{"delete": 5}"#),
        ("POST", "/interrupt", b"[]"),
        ("GET", "/history?max_items=1e3", b""),
        ("GET", "/view?filename=%ZZ%FF%C3%28&subfolder=%00", b""),
        ("GET", "/history/%ED%A0%80", b""),
        ("PUT", "/queue", b""),
        ("GET", "/no/such/thing", b""),
    ];
    for (method, path, body) in cases {
        let resp = mock.handle_request(now, method, path, body);
        assert!(
            (200..500).contains(&resp.status),
            "{method} {path}: {}",
            resp.status
        );
        if resp.status == 200 {
            assert!(
                path.starts_with("/history") || path.starts_with("/queue"),
                "{path}"
            );
        } else {
            assert!(resp.status >= 400, "{method} {path}");
        }
    }
    assert!(mock.is_idle());
}
