//! The pool machine in simulated time: (state, input) -> I/O and events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::session::{Deadline, Event, Failure, Image, OutputKind};
use crate::wire::{HttpResponse, ImageFormat};
use crate::{PromptId, ServerAddress, TransportError, TransportErrorKind, Workflow};

const INFO: &str = include_str!("../../fixtures/object_info.json");

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn machine(servers: usize, routing: bool) -> Pool {
    let addresses = (0..servers)
        .map(|i| ServerAddress::parse(&format!("127.0.0.1:{}", 9000 + i)).unwrap())
        .collect();
    let mut settings = PoolSettings {
        route_by_capability: routing,
        ..PoolSettings::default()
    };
    settings.scheduler.per_server = 1;
    Pool::new(addresses, settings, 7)
}

fn graph() -> Workflow {
    Workflow::from_value(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
    }))
    .unwrap()
}

fn drain(pool: &mut Pool) -> Vec<Io> {
    std::iter::from_fn(|| pool.poll_io()).collect()
}

fn events(pool: &mut Pool) -> Vec<PoolEvent> {
    std::iter::from_fn(|| pool.poll_event()).collect()
}

fn refused(server: usize) -> TransportError {
    TransportError::new(
        TransportErrorKind::Refused,
        format!("connect to server {server}"),
    )
}

/// Answers every class fetch in `io` addressed to `server` from the recorded `object_info`,
/// less `without`; returns the other I/O.
fn answer_classes(
    pool: &mut Pool,
    now: Duration,
    io: Vec<Io>,
    server: usize,
    without: &str,
) -> Vec<Io> {
    let full: Value = serde_json::from_str(INFO).unwrap();
    let mut rest = Vec::new();
    for i in io {
        match &i {
            Io::Http {
                server: ServerId(s),
                id,
                request,
                ..
            } if *s == server && request.path.starts_with("/object_info/") => {
                let class = request.path.trim_start_matches("/object_info/");
                let mut body = serde_json::Map::new();
                if class != without
                    && let Some(c) = full.get(class)
                {
                    body.insert(class.to_owned(), c.clone());
                }
                let resp = HttpResponse::new(200, Value::Object(body).to_string());
                pool.handle_http(now, *id, Ok(resp));
            }
            _ => rest.push(i),
        }
    }
    rest
}

fn submits(io: &[Io]) -> Vec<(usize, u32, PromptId)> {
    io.iter()
        .filter_map(|i| match i {
            Io::Submit {
                server,
                attempt,
                submission,
                ..
            } => Some((server.0, *attempt, submission.prompt_id.clone())),
            _ => None,
        })
        .collect()
}

fn finished(events: &[PoolEvent]) -> Vec<&JobReport> {
    events
        .iter()
        .filter_map(|e| match e {
            PoolEvent::Finished(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn png(n: u8) -> Image {
    Image {
        format: ImageFormat::Png,
        data: bytes::Bytes::from(vec![0x89, b'P', b'N', b'G', n]),
    }
}

#[test]
fn nothing_reachable_ends_jobs_naming_every_server() {
    let mut pool = machine(2, true);
    let now = Duration::ZERO;
    pool.submit(now, graph(), Vec::new());
    let io = drain(&mut pool);
    assert!(io.iter().all(|i| matches!(i, Io::Http { .. })), "{io:?}");
    assert!(
        submits(&io).is_empty(),
        "nothing is sent before a server is known able"
    );
    for i in io {
        if let Io::Http { server, id, .. } = i {
            pool.handle_http(now, id, Err(refused(server.0)));
        }
    }
    // Class fetches are asked again on a backoff; they are refused too.
    let mut now;
    while let Some(at) = pool.poll_timeout() {
        assert!(at <= s(3), "the give-up is due within 3 s, not {at:?}");
        now = at;
        pool.handle_timeout(now);
        for i in drain(&mut pool) {
            if let Io::Http { server, id, .. } = i {
                pool.handle_http(now, id, Err(refused(server.0)));
            }
        }
        if pool.has_event() {
            break;
        }
    }
    let ev = events(&mut pool);
    let reports = finished(&ev);
    assert_eq!(reports.len(), 1);
    let Err(JobError::NoServerReachable { servers }) = &reports[0].outcome else {
        panic!("{:?}", reports[0].outcome);
    };
    assert_eq!(servers.len(), 2);
    assert!(
        servers
            .iter()
            .all(|(_, e)| e.kind == TransportErrorKind::Refused)
    );
    let text = reports[0].outcome.as_ref().unwrap_err().to_string();
    assert!(
        text.contains("127.0.0.1:9000") && text.contains("127.0.0.1:9001"),
        "{text}"
    );
    assert!(text.contains("refused"), "{text}");
}

#[test]
fn a_silent_server_never_holds_back_jobs_others_can_run() {
    let mut pool = machine(2, true);
    let now = Duration::ZERO;
    for _ in 0..2 {
        pool.submit(now, graph(), Vec::new());
    }
    let io = drain(&mut pool);
    // Server 1 never answers; server 0 does, at once.
    let rest = answer_classes(&mut pool, ms(5), io, 0, "");
    let io: Vec<Io> = rest.into_iter().chain(drain(&mut pool)).collect();
    let sent = submits(&io);
    assert_eq!(sent.len(), 1, "one slot on server 0: {io:?}");
    assert_eq!(sent[0].0, 0);
    // Server 1's fetches time out at their deadline; the job still waiting stays for server 0.
    let deadline = pool.poll_timeout().unwrap();
    assert_eq!(deadline, s(10));
    pool.handle_timeout(deadline);
    assert!(submits(&drain(&mut pool)).is_empty());
}

#[test]
fn unrunnable_everywhere_fails_at_once_with_the_report() {
    let mut pool = machine(2, true);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let io = answer_classes(&mut pool, ms(1), io, 0, "SaveImageWebsocket");
    let io = answer_classes(&mut pool, ms(2), io, 1, "SaveImageWebsocket");
    assert!(io.is_empty());
    assert!(submits(&drain(&mut pool)).is_empty());
    let ev = events(&mut pool);
    let reports = finished(&ev);
    assert_eq!(reports.len(), 1);
    match &reports[0].outcome {
        Err(JobError::Unrunnable { report, .. }) => {
            assert!(!report.is_valid());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reports[0].attempts, 0);
}

#[test]
fn a_server_that_lists_nothing_rules_nothing_out() {
    let mut pool = machine(1, true);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    for i in drain(&mut pool) {
        if let Io::Http { id, .. } = i {
            pool.handle_http(ms(1), id, Ok(HttpResponse::new(200, "{}")));
        }
    }
    assert_eq!(submits(&drain(&mut pool)).len(), 1);
}

/// A failure that proves the prompt is not on its server (never reached it, or the server went
/// away with it) moves the job at once, to another server, with no lookup.
fn moves_at_once_without_a_lookup(failure: impl Fn(usize) -> Failure) {
    let mut pool = machine(2, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let [(first, 1, prompt)] = &submits(&io)[..] else {
        panic!("{io:?}")
    };
    let (first, prompt) = (*first, prompt.clone());
    let failure = failure(first);
    pool.handle_event(ms(3), ServerId(first), Event::Failed { prompt, failure });
    let io = drain(&mut pool);
    assert!(
        io.iter().all(|i| !matches!(i, Io::Http { .. })),
        "no lookup: {io:?}"
    );
    let [(second, 2, prompt)] = &submits(&io)[..] else {
        panic!("{io:?}")
    };
    let (second, prompt) = (*second, prompt.clone());
    assert_ne!(second, first);
    let stats = pool.scheduler().stats();
    assert_eq!(stats.servers[first].failed, 1);
    pool.handle_event(ms(4), ServerId(second), Event::Completed { prompt });
    let ev = events(&mut pool);
    let r = finished(&ev)[0];
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.server, Some(second));
}

#[test]
fn an_unreached_attempt_moves_at_once_without_a_lookup() {
    moves_at_once_without_a_lookup(|s| Failure::Unreachable(refused(s)));
}

#[test]
fn an_attempt_whose_server_went_away_moves_at_once_without_a_lookup() {
    moves_at_once_without_a_lookup(|s| Failure::ServerGone {
        refusals: 3,
        error: refused(s),
    });
}

#[test]
fn sent_is_reported_only_once_the_server_accepts() {
    let mut pool = machine(1, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let prompt = submits(&io)[0].2.clone();
    let ev = events(&mut pool);
    assert!(
        matches!(ev[..], [PoolEvent::Dispatched { attempt: 1, .. }]),
        "{ev:?}"
    );
    let accepted = Event::Accepted {
        prompt,
        number: 1.0,
        warnings: Default::default(),
    };
    pool.handle_event(ms(1), ServerId(0), accepted);
    let ev = events(&mut pool);
    assert!(
        matches!(ev[..], [PoolEvent::Accepted { attempt: 1, .. }]),
        "{ev:?}"
    );
}

#[test]
fn outputs_are_held_until_success_and_delivered_once() {
    let mut pool = machine(2, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let (s1, _, p1) = submits(&io)[0].clone();
    let out = |prompt: &PromptId, n| Event::Output {
        prompt: prompt.clone(),
        node: "2".into(),
        index: 0,
        image: png(n),
        file: None,
    };
    pool.handle_event(ms(1), ServerId(s1), out(&p1, 1));
    let failure = Failure::NotOnServer;
    pool.handle_event(
        ms(2),
        ServerId(s1),
        Event::Failed {
            prompt: p1,
            failure,
        },
    );
    let io = drain(&mut pool);
    let (s2, _, p2) = submits(&io)[0].clone();
    pool.handle_event(ms(3), ServerId(s2), out(&p2, 2));
    pool.handle_event(ms(4), ServerId(s2), Event::Completed { prompt: p2 });
    let ev = events(&mut pool);
    let reports = finished(&ev);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].outputs.len(), 1);
    assert_eq!(
        reports[0].outputs[0].data().map(|d| d[4]),
        Some(2),
        "the succeeding attempt's image"
    );
}

#[test]
fn uploads_go_first_to_the_server_that_runs_the_attempt() {
    let mut pool = machine(2, false);
    let upload = Upload {
        input: "1.width".into(),
        file_name: "cat.png".into(),
        bytes: Arc::new(b"\x89PNG".to_vec()),
    };
    pool.submit(Duration::ZERO, graph(), vec![upload]);
    let io = drain(&mut pool);
    let [
        Io::Http {
            server,
            id,
            request,
            ..
        },
    ] = &io[..]
    else {
        panic!("{io:?}")
    };
    assert_eq!(request.path, "/upload/image");
    let first = server.0;
    // Refused: nothing was posted, so the attempt moves to the other server at once.
    pool.handle_http(ms(1), *id, Err(refused(first)));
    let io = drain(&mut pool);
    let [
        Io::Http {
            server,
            id,
            request,
            ..
        },
    ] = &io[..]
    else {
        panic!("{io:?}")
    };
    assert_eq!(request.path, "/upload/image");
    assert_ne!(server.0, first);
    let second = server.0;
    let body = r#"{"name": "cat (1).png", "subfolder": "", "type": "input"}"#;
    pool.handle_http(ms(2), *id, Ok(HttpResponse::new(200, body)));
    let io = drain(&mut pool);
    let [
        Io::Submit {
            server, submission, ..
        },
    ] = &io[..]
    else {
        panic!("{io:?}")
    };
    assert_eq!(server.0, second);
    let sent = submission.workflow.to_json();
    assert_eq!(sent["1"]["inputs"]["width"], "cat (1).png");
}

#[test]
fn an_uncertain_attempt_is_looked_up_then_run_again() {
    let mut pool = machine(1, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let (_, _, prompt) = submits(&io)[0].clone();
    let failure = Failure::Disconnected { attempts: 3 };
    pool.handle_event(ms(1), ServerId(0), Event::Failed { prompt, failure });
    let io = drain(&mut pool);
    let [Io::Http { id, request, .. }] = &io[..] else {
        panic!("{io:?}")
    };
    assert!(request.path.starts_with("/history/"), "{}", request.path);
    pool.handle_http(ms(2), *id, Ok(HttpResponse::new(200, "{}")));
    let io = drain(&mut pool);
    let [Io::Http { id, request, .. }] = &io[..] else {
        panic!("{io:?}")
    };
    assert_eq!(request.path, "/queue");
    let queue = r#"{"queue_running": [], "queue_pending": []}"#;
    pool.handle_http(ms(3), *id, Ok(HttpResponse::new(200, queue)));
    let io = drain(&mut pool);
    assert_eq!(submits(&io).len(), 1, "unknown there: run again ({io:?})");
}

#[test]
fn an_unanswered_exchange_times_out_at_its_deadline() {
    let mut pool = machine(1, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let (_, _, prompt) = submits(&io)[0].clone();
    let failure = Failure::Disconnected { attempts: 3 };
    pool.handle_event(ms(1), ServerId(0), Event::Failed { prompt, failure });
    let io = drain(&mut pool);
    let [Io::Http { deadline, .. }] = &io[..] else {
        panic!("{io:?}")
    };
    assert_eq!(*deadline, ms(1) + s(10));
    assert!(pool.poll_timeout().is_some_and(|t| t <= *deadline));
    pool.handle_timeout(*deadline);
    // The lookup counts as unreachable: asked again after the lookup interval.
    assert!(drain(&mut pool).is_empty());
    assert!(pool.poll_timeout().is_some_and(|t| t > *deadline));
}

#[test]
fn abort_cancels_every_prompt_and_ends_every_job() {
    let mut pool = machine(2, false);
    for _ in 0..3 {
        pool.submit(Duration::ZERO, graph(), Vec::new());
    }
    let sent = submits(&drain(&mut pool));
    assert_eq!(sent.len(), 2);
    pool.abort(ms(5));
    let io = drain(&mut pool);
    let cancelled: Vec<&PromptId> = io
        .iter()
        .filter_map(|i| match i {
            Io::Cancel { prompt, .. } => Some(prompt),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled.len(), 2);
    for (_, _, p) in &sent {
        assert!(cancelled.contains(&p));
    }
    let ev = events(&mut pool);
    let reports = finished(&ev);
    assert_eq!(reports.len(), 3);
    assert!(
        reports
            .iter()
            .all(|r| matches!(r.outcome, Err(JobError::Cancelled)))
    );
    for r in reports {
        pool.handle_consumed(ms(6), r.job);
    }
    assert!(pool.is_done());
}

#[test]
fn a_timed_out_prompt_reports_its_deadline() {
    let mut pool = machine(1, false);
    let mut settings = PoolSettings::default();
    settings.scheduler.attempts = 1;
    let mut pool1 = Pool::new(pool.servers().to_vec(), settings, 1);
    std::mem::swap(&mut pool, &mut pool1);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let (_, _, prompt) = submits(&drain(&mut pool))[0].clone();
    let deadline = Deadline::Accept;
    pool.handle_event(ms(1), ServerId(0), Event::TimedOut { prompt, deadline });
    let ev = events(&mut pool);
    let r = finished(&ev)[0];
    assert!(
        matches!(r.outcome, Err(JobError::TimedOut(Deadline::Accept))),
        "{:?}",
        r.outcome
    );
    let e = r.outcome.as_ref().unwrap_err();
    assert!(std::error::Error::source(e).is_none());
}

#[test]
fn progress_is_dropped_and_counted_when_the_consumer_lags() {
    let settings = PoolSettings {
        max_progress: 4,
        ..PoolSettings::default()
    };
    let addr = ServerAddress::parse("127.0.0.1:9000").unwrap();
    let mut pool = Pool::new(vec![addr], settings, 3);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let (_, _, prompt) = submits(&drain(&mut pool))[0].clone();
    for n in 0..10 {
        let e = Event::Progress {
            prompt: prompt.clone(),
            node: None,
            value: f64::from(n),
            max: 10.0,
        };
        pool.handle_event(ms(1), ServerId(0), e);
    }
    assert_eq!(pool.dropped_progress(), 6);
    pool.handle_event(ms(2), ServerId(0), Event::Completed { prompt });
    let ev = events(&mut pool);
    assert_eq!(finished(&ev).len(), 1, "a report is never dropped");
}

const PNG: &[u8] = include_bytes!("../../fixtures/outputs/saved_image.png");
const MP4: &[u8] = include_bytes!("../../fixtures/outputs/saved_video.mp4");

fn ui(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn a_report_holds_every_output_kind_and_no_preview() {
    let mut pool = machine(1, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let (_, _, p) = submits(&io)[0].clone();
    let png = Image {
        format: ImageFormat::Png,
        data: bytes::Bytes::from_static(PNG),
    };
    let mp4 = crate::wire::FileRef {
        filename: "cp_mixed_00001_.mp4".into(),
        subfolder: "video".into(),
        kind: "output".into(),
    };
    let node_output = |node: &str, v: Value| Event::NodeOutput {
        prompt: p.clone(),
        node: node.into(),
        output: ui(v),
    };
    let seq = [
        Event::Preview {
            prompt: p.clone(),
            node: Some("2".into()),
            image: png.clone(),
        },
        Event::Output {
            prompt: p.clone(),
            node: "2".into(),
            index: 0,
            image: png,
            file: None,
        },
        // `executed` of SaveVideo, PreviewAny, PreviewImage as ComfyUI 0.3.64 sends them.
        node_output("5", json!({"images": [mp4], "animated": [true]})),
        Event::File {
            prompt: p.clone(),
            node: "5".into(),
            index: 0,
            file: mp4.clone(),
            data: bytes::Bytes::from_static(MP4),
        },
        node_output("7", json!({"text": ["hello from comfy-proxy"]})),
        node_output(
            "9",
            json!({"images": [{"filename": "ComfyUI_temp_mtogp_00001_.png", "subfolder": "",
                               "type": "temp"}]}),
        ),
        Event::Completed { prompt: p.clone() },
    ];
    for (i, e) in seq.into_iter().enumerate() {
        pool.handle_event(ms(1 + i as u64), ServerId(0), e);
    }
    let ev = events(&mut pool);
    for e in &ev {
        if let PoolEvent::Progress { event, .. } = e {
            assert!(
                !matches!(
                    event,
                    Event::Output { .. } | Event::File { .. } | Event::NodeOutput { .. }
                ),
                "outputs come once, with the report: {event:?}"
            );
        }
    }
    let reports = finished(&ev);
    let [report] = reports[..] else {
        panic!("{ev:?}")
    };
    let kinds: Vec<(&str, OutputKind)> = report
        .outputs
        .iter()
        .map(|o| (o.node.as_str(), o.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("2", OutputKind::Image),
            ("5", OutputKind::Video),
            ("7", OutputKind::Text)
        ]
    );
    assert_eq!(report.outputs[1].file(), Some(&mp4));
    assert_eq!(report.outputs[2].text(), Some("hello from comfy-proxy"));
    assert_eq!(report.previews, 1, "the preview is counted, not kept");
    let nodes: Vec<&str> = report
        .outputs
        .ui()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        nodes,
        ["5", "7", "9"],
        "ui data of every output node, the temp one too"
    );
}

#[test]
fn a_lookup_brings_back_files_and_texts_but_no_temp_preview() {
    let mut pool = machine(1, false);
    let graph = Workflow::from_value(json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 6.0}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "video/x", "format": "mp4", "codec": "h264"}},
        "6": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }))
    .unwrap();
    pool.submit(Duration::ZERO, graph, Vec::new());
    let io = drain(&mut pool);
    let (_, _, prompt) = submits(&io)[0].clone();
    let failure = Failure::Disconnected { attempts: 3 };
    let p = prompt.clone();
    pool.handle_event(ms(1), ServerId(0), Event::Failed { prompt: p, failure });
    let io = drain(&mut pool);
    let [Io::Http { id, request, .. }] = &io[..] else {
        panic!("{io:?}")
    };
    assert!(request.path.starts_with("/history/"), "{}", request.path);
    let history = json!({prompt.as_str(): {
        "prompt": [1, prompt.as_str(), {}, {}, ["5", "7", "9"]],
        "outputs": {
            "5": {"images": [{"filename": "x_00001_.mp4", "subfolder": "video", "type": "output"}],
                  "animated": [true]},
            "9": {"images": [{"filename": "ComfyUI_temp_a_00001_.png", "subfolder": "", "type": "temp"}]},
            "7": {"text": ["hello"]}
        },
        "status": {"status_str": "success", "completed": true, "messages": []},
        "meta": {}
    }});
    pool.handle_http(ms(2), *id, Ok(HttpResponse::new(200, history.to_string())));
    let io = drain(&mut pool);
    let [Io::Http { id, request, .. }] = &io[..] else {
        panic!("one /view, for the mp4 only: {io:?}")
    };
    assert!(
        request.path.starts_with("/view?filename=x_00001_.mp4"),
        "{}",
        request.path
    );
    pool.handle_http(ms(3), *id, Ok(HttpResponse::new(200, MP4)));
    let ev = events(&mut pool);
    let reports = finished(&ev);
    let [report] = reports[..] else {
        panic!("{ev:?}")
    };
    assert!(report.outcome.is_ok(), "{report:?}");
    let kinds: Vec<(&str, OutputKind)> = report
        .outputs
        .iter()
        .map(|o| (o.node.as_str(), o.kind))
        .collect();
    assert_eq!(kinds, [("7", OutputKind::Text), ("5", OutputKind::Video)]);
    assert_eq!(report.outputs[1].data().map(|d| d.len()), Some(MP4.len()));
    assert_eq!(report.outputs.ui().len(), 3);
}

/// One job through a pool at `detail`: dispatched, accepted, started, a step, an output, done.
/// Returns what the consumer saw and whether the session was asked for progress.
fn one_job_at(detail: EventDetail) -> (Vec<PoolEvent>, bool) {
    let settings = PoolSettings {
        events: detail,
        ..PoolSettings::default()
    };
    let addr = ServerAddress::parse("127.0.0.1:9000").unwrap();
    let mut pool = Pool::new(vec![addr], settings, 3);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let io = drain(&mut pool);
    let progress = io.iter().any(|io| match io {
        Io::Submit { submission, .. } => submission.progress,
        _ => false,
    });
    let (_, _, prompt) = submits(&io)[0].clone();
    let p = || prompt.clone();
    for e in [
        Event::Accepted {
            prompt: p(),
            number: 1.0,
            warnings: Default::default(),
        },
        Event::Started { prompt: p() },
        Event::Progress {
            prompt: p(),
            node: None,
            value: 1.0,
            max: 2.0,
        },
        Event::Output {
            prompt: p(),
            node: "2".into(),
            index: 0,
            image: png(1),
            file: None,
        },
        Event::Completed { prompt: p() },
    ] {
        pool.handle_event(ms(1), ServerId(0), e);
    }
    (events(&mut pool), progress)
}

#[test]
fn the_event_detail_leaves_out_what_the_consumer_did_not_ask_for() {
    let kinds = |ev: &[PoolEvent]| -> Vec<&'static str> {
        ev.iter()
            .map(|e| match e {
                PoolEvent::Dispatched { .. } => "dispatched",
                PoolEvent::Accepted { .. } => "accepted",
                PoolEvent::Progress { .. } => "progress",
                PoolEvent::Output { .. } => "output",
                PoolEvent::Finished(_) => "finished",
            })
            .collect()
    };
    let (all, progress) = one_job_at(EventDetail::All);
    assert!(progress, "every event: the session reports progress");
    assert_eq!(
        kinds(&all),
        [
            "dispatched",
            "accepted",
            "progress",
            "progress",
            "output",
            "finished"
        ]
    );
    let (outputs, progress) = one_job_at(EventDetail::Outputs);
    assert!(
        !progress,
        "below every event, the session leaves progress out"
    );
    assert_eq!(kinds(&outputs), ["output", "finished"]);
    let (reports, progress) = one_job_at(EventDetail::Reports);
    assert!(!progress);
    assert_eq!(kinds(&reports), ["finished"]);
    // The report is the same whatever else was left out.
    for ev in [&all, &outputs, &reports] {
        let report = finished(ev)[0];
        assert!(report.outcome.is_ok());
        assert_eq!(report.outputs.len(), 1);
    }
}

/// Another service on the port: the websocket upgrade and every request get a 404.
#[test]
fn a_port_that_answers_404_everywhere_ends_jobs_as_unreachable_soon() {
    let mut pool = machine(1, false);
    pool.submit(Duration::ZERO, graph(), Vec::new());
    let not_comfyui = || {
        TransportError::new(TransportErrorKind::Handshake, "connect to 127.0.0.1:9000")
            .with_detail("HTTP error: 404 Not Found")
    };
    let mut now = Duration::ZERO;
    let mut answered = 0;
    let mut reports = Vec::new();
    for _ in 0..100 {
        while let Some(io) = pool.poll_io() {
            match io {
                Io::Submit { submission, .. } => {
                    let failed = Event::Failed {
                        prompt: submission.prompt_id,
                        failure: Failure::Unreachable(not_comfyui()),
                    };
                    pool.handle_event(now, ServerId(0), failed);
                }
                Io::Http { id, .. } => {
                    answered += 1;
                    pool.handle_http(now, id, Ok(HttpResponse::new(404, "404: Not Found")));
                }
                _ => {}
            }
        }
        let ev = events(&mut pool);
        reports.extend(finished(&ev).into_iter().cloned());
        if !reports.is_empty() {
            break;
        }
        let Some(at) = pool.poll_timeout() else {
            break;
        };
        now = at;
        pool.handle_timeout(now);
    }
    assert!(
        answered > 0,
        "the pool asked the server's health, and got 404s"
    );
    assert!(
        now <= s(3),
        "ended at {now:?}, not after the breaker's backoff"
    );
    assert_eq!(reports.len(), 1);
    let Err(JobError::NoServerReachable { servers }) = &reports[0].outcome else {
        panic!("{:?}", reports[0].outcome);
    };
    assert_eq!(
        servers[0].1.kind,
        TransportErrorKind::Handshake,
        "{servers:?}"
    );
    let text = reports[0].outcome.as_ref().unwrap_err().to_string();
    assert!(
        text.contains("refused (HTTP error: 404 Not Found)"),
        "{text}"
    );
}
