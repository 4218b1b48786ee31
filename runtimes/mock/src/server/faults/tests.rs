//! Unit tests of the fault switches.

use super::*;
use crate::server::{ImageSpec, MockConfig, Renderer};
use comfy_proxy::wire::frame::FrameError;
use comfy_proxy::wire::{BinaryFrame, ServerMessage};

struct Blank;

impl Renderer for Blank {
    fn png(&self, _: &ImageSpec) -> Bytes {
        Bytes::from_static(b"\x89PNG\r\n\x1a\npng")
    }
    fn jpeg(&self, _: &ImageSpec) -> Bytes {
        Bytes::from_static(b"\xff\xd8\xffjpeg")
    }
}

const GRAPH: &str = r#"{"prompt": {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2}},
    "9": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}},
    "client_id": "me", "prompt_id": "mine"}"#;

/// A server with these faults, `me` connected on socket 1 (type 4 frames when `metadata`).
fn server(faults: &str, metadata: bool) -> MockServer {
    let config = MockConfig {
        faults: Faults::parse(faults).unwrap(),
        ..MockConfig::default()
    };
    let mut s = MockServer::new(config, Box::new(Blank));
    s.handle_ws_open(Duration::ZERO, ConnId(1), "/ws?clientId=me")
        .unwrap();
    if metadata {
        let hello = r#"{"type":"feature_flags","data":{"supports_preview_metadata":true}}"#;
        s.handle_ws_text(Duration::ZERO, ConnId(1), hello);
    }
    s
}

/// Posts [`GRAPH`] and runs every timer; returns the outputs and the time it ended.
fn run(s: &mut MockServer) -> (u16, Vec<MockOutput>, Duration) {
    let mut now = Duration::ZERO;
    let status = s
        .handle_request(now, "POST", "/prompt", GRAPH.as_bytes())
        .status;
    let mut out = Vec::new();
    for _ in 0..10_000 {
        while let Some(o) = s.poll_output(now) {
            out.push(o);
        }
        match s.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                s.handle_timeout(now);
            }
            None => break,
        }
    }
    (status, out, now)
}

fn frames(out: &[MockOutput]) -> Vec<&Frame> {
    let frames = out.iter().filter_map(|o| match o {
        MockOutput::Send { frame, .. } => Some(frame),
        _ => None,
    });
    frames.collect()
}

fn images(out: &[MockOutput]) -> Vec<Bytes> {
    let images = frames(out).into_iter().filter_map(|f| match f {
        Frame::Binary(b) if is_image(b) => Some(b.clone()),
        _ => None,
    });
    images.collect()
}

#[test]
fn parse_and_print() {
    let f = Faults::parse(" seed=3 , stall=0.5,wrong-id=1, oversize-len=100 ").unwrap();
    assert_eq!(f.seed, 3);
    assert_eq!(f.oversize_len, 100);
    assert_eq!((f.rate(Fault::Stall), f.rate(Fault::WrongId)), (0.5, 1.0));
    assert_eq!(f.rate(Fault::Refuse), 0.0);
    assert_eq!(
        f.to_string(),
        "seed=3,stall=0.5,wrong-id=1,oversize-len=100"
    );
    assert_eq!(Faults::parse(&f.to_string()), Ok(f));
    assert_eq!(Faults::parse(""), Ok(Faults::none()));
    assert!(Faults::parse("").unwrap().is_none());
    for fault in Fault::ALL {
        assert_eq!(Fault::from_name(fault.name()), Some(fault));
        let one = Faults::parse(&format!("{fault}=0.25")).unwrap();
        assert_eq!(one.rate(fault), 0.25, "{fault}");
    }
    for (text, item, needle) in [
        (
            "drop-ws=0.1,teleport=1",
            "teleport=1",
            "unknown fault \"teleport\"",
        ),
        ("stall=2", "stall=2", "between 0 and 1"),
        ("stall=-0.1", "stall=-0.1", "between 0 and 1"),
        ("stall=NaN", "stall=NaN", "between 0 and 1"),
        ("stall=lots", "stall=lots", "not a number"),
        ("stall", "stall", "name=value"),
        ("stall=0.1,stall=0.2", "stall=0.2", "twice"),
        ("seed=-1", "seed=-1", "not a u64"),
        ("oversize-len=big", "oversize-len=big", "byte count"),
    ] {
        let e = Faults::parse(text).unwrap_err();
        assert_eq!(e.item, item, "{text}");
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
    let clamped = Faults::none()
        .with(Fault::Slow, 7.0)
        .with(Fault::Stall, f64::NAN);
    assert_eq!(
        (clamped.rate(Fault::Slow), clamped.rate(Fault::Stall)),
        (1.0, 0.0)
    );
}

#[test]
fn no_faults_draw_nothing_and_change_nothing() {
    let (status, plain, end) = run(&mut server("", true));
    let (_, seeded, end2) = run(&mut server("seed=99", true));
    assert_eq!((status, &plain, end), (200, &seeded, end2));
    assert_eq!(images(&plain).len(), 2);
}

#[test]
fn socket_layer_faults_are_asked_for_and_counted() {
    let mut s = server("refuse=1,stall=1", false);
    assert!(s.should_refuse(Duration::ZERO) && s.should_stall(Duration::ZERO));
    assert_eq!(s.faults_injected(Fault::Refuse), 1);
    assert_eq!(s.faults_injected(Fault::Stall), 1);
    let mut calm = server("drop-ws=0.5", false);
    assert!(!calm.should_refuse(Duration::ZERO) && !calm.should_stall(Duration::ZERO));
}

#[test]
fn http500_queues_nothing() {
    let mut s = server("http500=1", false);
    let (status, out, _) = run(&mut s);
    assert_eq!(status, 500);
    assert!(s.is_idle());
    assert!(images(&out).is_empty());
    let r = s.handle_request(Duration::ZERO, "POST", "/api/prompt?x=1", GRAPH.as_bytes());
    assert_eq!(
        (r.status, r.content_type),
        (500, "text/html; charset=utf-8")
    );
    assert!(r.body.starts_with(b"<html>"));
    assert_eq!(
        s.handle_request(Duration::ZERO, "GET", "/queue", b"")
            .status,
        200
    );
    assert_eq!(s.faults_injected(Fault::Http500), 2);
}

#[test]
fn drop_ws_closes_the_socket_mid_run() {
    let mut s = server("drop-ws=1", false);
    let (status, out, _) = run(&mut s);
    assert_eq!(status, 200);
    let close = out
        .iter()
        .position(|o| matches!(o, MockOutput::Close { conn: ConnId(1) }))
        .expect("a close");
    assert!(out[close + 1..].is_empty(), "{:?}", &out[close + 1..]);
    // The prompt ran on without a listener, as it does on the real server.
    let history = s.handle_request(Duration::ZERO, "GET", "/history/mine", b"");
    assert!(history.body.len() > 2);
}

#[test]
fn restart_forgets_the_queue_and_history() {
    let mut s = server("restart=1", false);
    let (status, out, _) = run(&mut s);
    assert_eq!(status, 200);
    assert!(out.contains(&MockOutput::Close { conn: ConnId(1) }));
    assert!(s.is_idle());
    let history = s.handle_request(Duration::ZERO, "GET", "/history/mine", b"");
    assert_eq!(&history.body[..], b"{}");
    assert!(s.faults_injected(Fault::Restart) >= 1);
}

#[test]
fn slow_stretches_a_run() {
    let (_, plain, end) = run(&mut server("", false));
    let (_, slow, slow_end) = run(&mut server("slow=1", false));
    assert_eq!(end, Duration::from_millis(20));
    assert!(
        slow_end >= end * 2 && slow_end <= end * 8,
        "{slow_end:?} against {end:?}"
    );
    assert_eq!(frames(&plain).len(), frames(&slow).len());
    // The next prompt starts when the slow one ended, not before.
    let mut s = server("slow=1", false);
    let body = |id: &str| GRAPH.replace("\"mine\"", &format!("\"{id}\""));
    s.handle_request(Duration::ZERO, "POST", "/prompt", body("a").as_bytes());
    s.handle_request(Duration::ZERO, "POST", "/prompt", body("b").as_bytes());
    let mut now = Duration::ZERO;
    let mut starts = Vec::new();
    while let Some(at) = s.poll_timeout() {
        now = now.max(at);
        s.handle_timeout(now);
        while let Some(o) = s.poll_output(now) {
            if let MockOutput::Send {
                frame: Frame::Text(t),
                ..
            } = o
            {
                if t.contains("execution_start") {
                    starts.push(now);
                }
            }
        }
    }
    assert_eq!(starts.len(), 2);
    assert!(starts[1] >= Duration::from_millis(40), "{starts:?}");
}

#[test]
fn damaged_images() {
    for metadata in [false, true] {
        let (_, out, _) = run(&mut server("truncated=1", metadata));
        let cut = frames(&out)
            .into_iter()
            .filter_map(|f| match f {
                Frame::Binary(b) => Some(b.clone()),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert_eq!(cut.len(), 2);
        for frame in cut {
            assert!(
                matches!(
                    BinaryFrame::decode(&frame),
                    Err(FrameError::Truncated { .. })
                ),
                "{frame:?}"
            );
        }
        let (_, out, _) = run(&mut server("oversize=1,oversize-len=100", metadata));
        let big = images(&out);
        assert_eq!(big.len(), 2);
        assert!(big.iter().all(|b| b.len() == 100));
        assert!(matches!(
            BinaryFrame::decode_with_limit(&big[0], 99),
            Err(FrameError::TooLarge { len: 100, .. })
        ));
    }
}

#[test]
fn hostile_frames_go_before_real_ones() {
    let (_, clean, _) = run(&mut server("", true));
    for (fault, check) in [
        ("bad-json", 0),
        ("bad-utf8", 1),
        ("unknown-type", 2),
        ("wrong-id", 3),
    ] {
        let mut s = server(&format!("{fault}=1,seed=5"), true);
        let (_, out, _) = run(&mut s);
        let all = frames(&out);
        assert_eq!(all.len(), 2 * frames(&clean).len(), "{fault}");
        for pair in all.chunks(2) {
            let hostile = pair[0];
            match (check, hostile) {
                (0, Frame::Text(t)) => {
                    assert!(serde_json::from_str::<serde_json::Value>(t).is_err())
                }
                (1, Frame::Binary(b)) => assert_eq!(
                    BinaryFrame::decode(b),
                    Err(FrameError::BadUtf8("progress text"))
                ),
                (2, Frame::Text(t)) => assert!(matches!(
                    ServerMessage::decode(t),
                    Ok(ServerMessage::Unknown { .. })
                )),
                (3, Frame::Text(t)) => {
                    let id = ServerMessage::decode(t).unwrap().prompt_id().cloned();
                    assert!(id.is_some_and(|id| id.as_str().starts_with("foreign-")));
                }
                (3, Frame::Binary(b)) => match BinaryFrame::decode(b).unwrap() {
                    BinaryFrame::ImageWithMetadata { metadata, .. } => {
                        assert!(metadata.prompt_id.starts_with("foreign-"))
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{fault}: {other:?}"),
            }
        }
        assert!(s.faults_injected(Fault::from_name(fault).unwrap()) > 0);
    }
}

#[test]
fn the_same_seed_strikes_the_same_way() {
    let faults = "seed=11,drop-ws=0.2,bad-json=0.3,wrong-id=0.3,truncated=0.5,slow=0.5";
    let a = run(&mut server(faults, true));
    let b = run(&mut server(faults, true));
    assert_eq!(a, b);
    let c = run(&mut server(&faults.replace("seed=11", "seed=12"), true));
    assert_ne!(a.1, c.1);
}
