//! Scenarios of the session state machine that no recording shows: reconnects and
//! reconciliation, deadlines, cancels, damaged frames, foreign prompt ids.

use std::time::Duration;

use bytes::Bytes;
use comfy_proxy::session::{
    Deadline, Deadlines, Event, Failure, RequestId, Session, SessionConfig, Submission, Transmit,
};
use comfy_proxy::wire::frame::{encode_image, encode_image_with_metadata};
use comfy_proxy::wire::{HttpResponse, ImageFormat};
use comfy_proxy::{ClientId, PromptId, TransportError, TransportErrorKind, Workflow};

fn reset() -> TransportError {
    TransportError::new(TransportErrorKind::Reset, "POST /prompt")
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nimage";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}},
            "file":{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"x"}}}"#,
    )
    .unwrap()
}

/// A session with one submitted prompt, connected, its POST answered with 200.
struct Harness {
    s: Session,
    id: PromptId,
    http: Vec<(RequestId, String, String)>,
    other: Vec<Transmit>,
    events: Vec<Event>,
}

impl Harness {
    fn new(config: SessionConfig, deadlines: Deadlines) -> Self {
        let mut s = Session::new(ClientId::from("c"), config);
        let id = PromptId::from("p1");
        s.submit(
            ms(0),
            Submission::new(id.clone(), graph()).with_deadlines(deadlines),
        )
        .unwrap();
        let mut h = Self {
            s,
            id,
            http: vec![],
            other: vec![],
            events: vec![],
        };
        h.drain();
        assert!(
            h.http.is_empty(),
            "nothing is posted before the websocket is open"
        );
        h
    }

    fn accepted(config: SessionConfig) -> Self {
        Self::accepted_with(config, Deadlines::none())
    }

    fn accepted_with(config: SessionConfig, deadlines: Deadlines) -> Self {
        let mut h = Self::new(config, deadlines);
        h.s.handle_connected(ms(1));
        h.drain();
        let post = h.take("POST", "/prompt");
        h.s.handle_response(
            ms(2),
            post,
            HttpResponse::new(200, r#"{"prompt_id":"p1","number":1,"node_errors":{}}"#),
        );
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(t) = self.s.poll_transmit() {
            match t {
                Transmit::Http { id, request } => {
                    self.http
                        .push((id, request.method.as_str().into(), request.path))
                }
                other => self.other.push(other),
            }
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    /// Removes and returns the open request with this method and path prefix.
    fn take(&mut self, method: &str, path: &str) -> RequestId {
        let i = self
            .http
            .iter()
            .position(|(_, m, p)| m == method && p.starts_with(path))
            .unwrap_or_else(|| panic!("no {method} {path} among {:?}", self.http));
        self.http.remove(i).0
    }

    fn text(&mut self, t: u64, json: &str) {
        self.s.handle_text(ms(t), json).unwrap();
        self.drain();
    }

    fn executing(&mut self, t: u64, node: &str) {
        self.text(
            t,
            &format!(r#"{{"type":"executing","data":{{"node":"{node}","prompt_id":"p1"}}}}"#),
        );
    }

    fn terminal(&self) -> Vec<&Event> {
        self.events.iter().filter(|e| e.is_terminal()).collect()
    }
}

/// The history of `p1` after a successful run whose `file` node saved one image.
const FILE_HISTORY: &str = r#"{"p1":{"prompt":[1,"p1",{},{},["save","file"]],"outputs":{"file":{"images":[{"filename":"x_00001_.png","subfolder":"","type":"output"}]}},"status":{"status_str":"success","completed":true,"messages":[]},"meta":{}}}"#;

fn no_keepalive() -> SessionConfig {
    SessionConfig::default().with_keepalive(None)
}

#[test]
fn feature_flags_go_first_then_the_post() {
    let mut h = Harness::new(no_keepalive(), Deadlines::none());
    assert!(matches!(&h.other[0], Transmit::Connect { path } if path == "/ws?clientId=c"));
    h.s.handle_connected(ms(1));
    h.drain();
    assert!(matches!(&h.other[1], Transmit::Text(t) if t.contains("feature_flags")));
    h.take("POST", "/prompt");
}

/// The socket drops while a `SaveImageWebsocket` node runs: its images may have gone to
/// nobody, so the prompt cannot succeed. It fails at once, naming the node, and is interrupted
/// on the server (which it no longer needs to occupy), instead of failing at its end.
#[test]
fn websocket_output_lost_in_a_disconnect_fails_the_prompt_at_once() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.executing(4, "1");
    h.executing(5, "save");
    h.s.handle_disconnect(ms(6));
    h.drain();
    match h.terminal()[..] {
        [
            Event::Failed {
                failure: Failure::LostOutputs { nodes },
                ..
            },
        ] => assert_eq!(nodes, &["save".into()] as &[comfy_proxy::NodeId]),
        ref other => panic!("{other:?}"),
    }
    h.take("POST", "/interrupt");
    assert!(h.http.is_empty(), "nothing else: {:?}", h.http);

    // A drop while another node runs costs nothing yet: the prompt reconciles after the
    // reconnect.
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.executing(4, "1");
    h.s.handle_disconnect(ms(5));
    h.s.handle_connected(ms(6));
    h.drain();
    assert!(h.terminal().is_empty(), "{:?}", h.events);
    h.take("GET", "/history/p1");
}

#[test]
fn a_reconnect_reports_the_ui_data_the_socket_missed_once() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.executing(4, "save");
    h.executing(5, "file");
    let file = r#"{"images":[{"filename":"x_00001_.png","subfolder":"","type":"output"}]}"#;
    h.text(
        6,
        &format!(
            r#"{{"type":"executed","data":{{"node":"file","output":{file},"prompt_id":"p1"}}}}"#
        ),
    );
    let view = h.take("GET", "/view?filename=x_00001_.png");
    h.s.handle_response(ms(7), view, HttpResponse::new(200, Bytes::from_static(PNG)));
    h.s.handle_disconnect(ms(8));
    h.drain();
    let t = h.s.poll_timeout().expect("a reconnect is scheduled");
    h.s.handle_timeout(t);
    h.s.handle_connected(t);
    h.drain();
    // Meanwhile a PreviewAny node ran: only the history tells its text.
    let q = h.take("GET", "/history/p1");
    let history = format!(
        r#"{{"p1":{{"prompt":[1,"p1",{{}},{{}},["save","file","say"]],"outputs":{{"file":{file},"say":{{"text":["hi"]}}}},"status":{{"status_str":"success","completed":true,"messages":[]}},"meta":{{}}}}}}"#
    );
    h.s.handle_response(t, q, HttpResponse::new(200, history));
    h.drain();
    assert!(
        h.http.is_empty(),
        "the file is not fetched twice: {:?}",
        h.http
    );
    let ui: Vec<&str> = (h.events.iter())
        .filter_map(|e| match e {
            Event::NodeOutput { node, .. } => Some(node.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ui, ["file", "say"], "each node's ui data once");
    assert!(
        matches!(h.terminal()[..], [Event::Completed { .. }]),
        "{:?}",
        h.events
    );
    let mut outputs = comfy_proxy::session::Outputs::new();
    for e in &h.events {
        outputs.handle_event(e);
    }
    let texts: Vec<&str> = outputs.texts().map(|(_, t)| t).collect();
    assert_eq!(texts, ["hi"]);
    assert_eq!(outputs.len(), 2, "the file and the text");
}

#[test]
fn a_prompt_still_queued_after_a_reconnect_completes_normally() {
    let mut h = Harness::accepted(no_keepalive());
    h.s.handle_disconnect(ms(3));
    h.s.handle_connected(ms(300));
    h.drain();
    let q = h.take("GET", "/history/p1");
    h.s.handle_response(ms(301), q, HttpResponse::new(200, "{}"));
    h.drain();
    let q = h.take("GET", "/queue");
    h.s.handle_response(
        ms(302),
        q,
        HttpResponse::new(
            200,
            r#"{"queue_running":[],"queue_pending":[[1,"p1",{},{"client_id":"c"},["save"]]]}"#,
        ),
    );
    h.drain();
    h.text(
        400,
        r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#,
    );
    h.executing(401, "save");
    h.s.handle_binary(ms(402), Bytes::from(encode_image(ImageFormat::Png, PNG)))
        .unwrap();
    h.executing(403, "file");
    h.text(
        404,
        r#"{"type":"execution_success","data":{"prompt_id":"p1"}}"#,
    );
    assert!(
        matches!(h.terminal()[..], [Event::Completed { .. }]),
        "{:?}",
        h.events
    );
}

/// A socket dropped while the prompt runs is replaced at once, not after the backoff: the
/// frames the server sends after the drop (here the `SaveImageWebsocket` image) reach the new
/// socket, and the prompt succeeds. A fourth drop within `Backoff::initial` waits the backoff.
#[test]
fn a_dropped_socket_is_reconnected_at_once_and_the_prompt_catches_up() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.executing(4, "1");
    let connects = |h: &Harness| {
        h.other
            .iter()
            .filter(|t| matches!(t, Transmit::Connect { .. }))
            .count()
    };
    assert_eq!(connects(&h), 1);
    h.s.handle_disconnect(ms(5));
    h.drain();
    assert_eq!(connects(&h), 2, "the reconnect goes at once, with no timer");
    h.s.handle_connected(ms(6));
    h.drain();
    // Still running: not in the history, in the queue; its frames come on the new socket.
    let q = h.take("GET", "/history/p1");
    h.s.handle_response(ms(7), q, HttpResponse::new(200, "{}"));
    h.drain();
    let q = h.take("GET", "/queue");
    h.s.handle_response(
        ms(8),
        q,
        HttpResponse::new(
            200,
            r#"{"queue_running":[[1,"p1",{},{"client_id":"c"},["save"]]],"queue_pending":[]}"#,
        ),
    );
    h.drain();
    h.executing(9, "save");
    h.s.handle_binary(ms(10), Bytes::from(encode_image(ImageFormat::Png, PNG)))
        .unwrap();
    h.executing(11, "file");
    h.text(
        12,
        r#"{"type":"execution_success","data":{"prompt_id":"p1"}}"#,
    );
    // Node "1" ran while the socket was down: before the prompt completes, its history tells
    // what the socket missed (here nothing), and the file node's `executed`, never sent here,
    // is found there and fetched.
    assert!(h.terminal().is_empty(), "{:?}", h.events);
    let q = h.take("GET", "/history/p1");
    h.s.handle_response(ms(13), q, HttpResponse::new(200, FILE_HISTORY));
    h.drain();
    let view = h.take("GET", "/view?filename=x_00001_.png");
    h.s.handle_response(
        ms(14),
        view,
        HttpResponse::new(200, Bytes::from_static(PNG)),
    );
    h.drain();
    assert!(
        matches!(h.terminal()[..], [Event::Completed { .. }]),
        "{:?}",
        h.events
    );
    let outputs = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::Output { .. }))
        .count();
    assert_eq!(outputs, 2, "the websocket image and the file");

    // Four drops within `initial` (250 ms): three reconnects go at once, the fourth waits
    // the backoff.
    let mut h = Harness::accepted(no_keepalive());
    for t in [100, 120, 140] {
        h.s.handle_disconnect(ms(t));
        h.s.handle_connected(ms(t + 1));
    }
    h.drain();
    assert_eq!(connects(&h), 4, "three reconnects at once");
    h.s.handle_disconnect(ms(200));
    h.drain();
    assert_eq!(connects(&h), 4, "no fourth reconnect at once");
    assert_eq!(
        h.s.poll_timeout(),
        Some(ms(450)),
        "the first backoff: 250 ms"
    );
    h.s.handle_timeout(ms(450));
    h.drain();
    assert_eq!(connects(&h), 5);
    // Over `initial` after the first of them, a drop is again reconnected at once.
    h.s.handle_connected(ms(451));
    h.s.handle_disconnect(ms(460));
    h.drain();
    assert_eq!(connects(&h), 6);
}

#[test]
fn a_prompt_the_server_forgot_fails_as_not_on_server() {
    let mut h = Harness::accepted(no_keepalive());
    h.s.handle_disconnect(ms(3));
    h.s.handle_connected(ms(300));
    h.drain();
    let q = h.take("GET", "/history/p1");
    h.s.handle_response(ms(301), q, HttpResponse::new(200, "{}"));
    h.drain();
    let q = h.take("GET", "/queue");
    h.s.handle_response(
        ms(302),
        q,
        HttpResponse::new(200, r#"{"queue_running":[],"queue_pending":[]}"#),
    );
    h.drain();
    let q = h.take("GET", "/history/p1");
    h.s.handle_response(ms(303), q, HttpResponse::new(200, "{}"));
    h.drain();
    match h.terminal()[..] {
        [Event::Failed { failure, .. }] => {
            assert_eq!(failure, &Failure::NotOnServer);
            assert!(failure.is_retryable());
        }
        ref other => panic!("{other:?}"),
    }
}

fn refused() -> TransportError {
    TransportError::new(TransportErrorKind::Refused, "connect to 127.0.0.1:1")
}

/// Runs the session to its next reconnect (at once, or after its backoff) and fails it with
/// `error`.
fn fail_next_connect(h: &mut Harness, at: &mut Duration, error: TransportError) {
    let connecting = |h: &mut Harness| {
        let i = h
            .other
            .iter()
            .position(|t| matches!(t, Transmit::Connect { .. }));
        i.map(|i| h.other.remove(i)).is_some()
    };
    if !connecting(h) {
        *at = h.s.poll_timeout().expect("a reconnect is due");
        h.s.handle_timeout(*at);
        h.drain();
        assert!(connecting(h), "a reconnect: {:?}", h.other);
    }
    *at += ms(1);
    h.s.handle_connect_failed(*at, error);
    h.drain();
}

#[test]
fn a_posted_prompt_moves_once_its_server_refuses_reconnects_in_a_row() {
    let mut h = Harness::accepted(no_keepalive());
    h.other.clear();
    h.s.handle_disconnect(ms(3));
    h.drain();
    let mut at = ms(3);
    for _ in 1..comfy_proxy::session::REFUSALS_GONE {
        fail_next_connect(&mut h, &mut at, refused());
        assert!(h.terminal().is_empty(), "{:?}", h.events);
    }
    fail_next_connect(&mut h, &mut at, refused());
    match h.terminal()[..] {
        [
            Event::Failed {
                failure: failure @ Failure::ServerGone { refusals, .. },
                ..
            },
        ] => {
            assert_eq!(*refusals, comfy_proxy::session::REFUSALS_GONE);
            assert!(failure.is_retryable());
            assert!(failure.to_string().contains("refused"), "{failure}");
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn refusals_must_come_in_a_row_to_give_a_posted_prompt_up() {
    let mut h = Harness::accepted(no_keepalive());
    h.other.clear();
    h.s.handle_disconnect(ms(3));
    h.drain();
    let mut at = ms(3);
    for _ in 1..comfy_proxy::session::REFUSALS_GONE {
        fail_next_connect(&mut h, &mut at, refused());
    }
    // A connect that times out (a server restarting, a slow network) is not a refusal.
    let timed_out = TransportError::new(TransportErrorKind::TimedOut(ms(10)), "connect");
    fail_next_connect(&mut h, &mut at, timed_out);
    fail_next_connect(&mut h, &mut at, refused());
    assert!(h.terminal().is_empty(), "{:?}", h.events);
}

#[test]
fn reconnect_gives_up_after_the_attempts() {
    let mut h = Harness::accepted(no_keepalive());
    h.s.handle_disconnect(ms(3));
    let mut now = ms(3);
    // The reconnect at once fails too; then come the counted attempts, with backoff.
    let mut connects = 1;
    h.s.handle_disconnect(now);
    h.drain();
    while let Some(t) = h.s.poll_timeout() {
        now = t;
        h.s.handle_timeout(now);
        h.drain();
        connects += 1;
        h.s.handle_disconnect(now);
        h.drain();
        assert!(connects < 100, "the session must give up");
    }
    assert_eq!(connects, 1 + 8);
    assert!(now < Duration::from_secs(60), "{now:?}");
    assert!(matches!(
        h.terminal()[..],
        [Event::Failed {
            failure: Failure::Disconnected { attempts: 8 },
            ..
        }]
    ));
}

#[test]
fn accept_deadline_times_out_and_stops_nothing_unposted() {
    let mut h = Harness::new(no_keepalive(), Deadlines::none().accept(ms(500)));
    assert_eq!(h.s.poll_timeout(), Some(ms(500)));
    h.s.handle_timeout(ms(499));
    h.drain();
    assert!(h.terminal().is_empty(), "not due yet");
    h.s.handle_timeout(ms(500));
    h.drain();
    assert!(matches!(
        h.terminal()[..],
        [Event::TimedOut {
            deadline: Deadline::Accept,
            ..
        }]
    ));
    assert!(h.http.is_empty(), "it was never posted, so nothing to stop");
}

#[test]
fn idle_deadline_interrupts_a_running_prompt() {
    let mut h = Harness::accepted_with(no_keepalive(), Deadlines::none().idle(ms(1000)));
    assert_eq!(
        h.s.poll_timeout(),
        None,
        "the idle clock runs only once the prompt runs"
    );
    h.text(
        10,
        r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#,
    );
    h.text(
        500,
        r#"{"type":"progress","data":{"value":1,"max":2,"prompt_id":"p1","node":"1"}}"#,
    );
    assert_eq!(
        h.s.poll_timeout(),
        Some(ms(1500)),
        "activity resets the idle deadline"
    );
    h.s.handle_timeout(ms(1500));
    h.drain();
    assert!(matches!(
        h.terminal()[..],
        [Event::TimedOut {
            deadline: Deadline::Idle,
            ..
        }]
    ));
    h.take("POST", "/interrupt");
    // Late messages for an ended prompt change nothing.
    h.text(
        1600,
        r#"{"type":"execution_success","data":{"prompt_id":"p1"}}"#,
    );
    assert_eq!(h.terminal().len(), 1);
}

#[test]
fn a_progress_state_tells_its_prompt_runs_without_its_nodes_being_read() {
    let mut h = Harness::accepted_with(no_keepalive(), Deadlines::none().idle(ms(1000)));
    h.text(
        10,
        r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#,
    );
    assert_eq!(h.s.poll_timeout(), Some(ms(1010)));
    // Another prompt's: no activity of ours.
    h.text(
        300,
        r#"{"type": "progress_state", "data": {"prompt_id": "other", "nodes": {}}}"#,
    );
    assert_eq!(h.s.poll_timeout(), Some(ms(1010)));
    // Ours, as ComfyUI writes it: only the id is read, so nodes that are not even JSON pass.
    h.text(
        500,
        r#"{"type": "progress_state", "data": {"prompt_id": "p1", "nodes": {"1": [}}}"#,
    );
    assert_eq!(
        h.s.poll_timeout(),
        Some(ms(1500)),
        "a progress_state is activity"
    );
    // Written another way, it is decoded in full, with the same effect.
    h.text(
        700,
        r#"{"type":"progress_state","data":{"prompt_id":"p1","nodes":{}}}"#,
    );
    assert_eq!(h.s.poll_timeout(), Some(ms(1700)));
    assert!(
        h.s.handle_text(
            ms(800),
            r#"{"type":"progress_state","data":{"prompt_id":"p1","nodes":{"1":[}}}"#
        )
        .is_err(),
        "decoded in full, bad nodes are an error"
    );
    h.drain();
    assert!(h.terminal().is_empty(), "{:?}", h.events);
}

#[test]
fn cancel_before_start_deletes_from_queue_then_interrupts() {
    let mut h = Harness::accepted(no_keepalive());
    h.s.cancel(ms(5), &h.id.clone()).unwrap();
    h.drain();
    let delete = h.take("POST", "/queue");
    assert!(matches!(h.terminal()[..], [Event::Cancelled { .. }]));
    // The interrupt waits for the delete's answer: sent together, it could reach the server
    // while the prompt still waits, and the delete after the prompt started.
    assert!(
        h.http.iter().all(|(_, _, p)| p != "/interrupt"),
        "{:?}",
        h.http
    );
    assert!(h.s.is_stopping());
    h.s.handle_http_error(ms(7), delete, reset());
    h.drain();
    let interrupt = h.take("POST", "/interrupt");
    assert!(h.s.is_stopping(), "the interrupt is still unanswered");
    h.s.handle_http_error(ms(9), interrupt, reset());
    h.drain();
    assert!(!h.s.is_stopping());
    assert!(h.http.is_empty(), "{:?}", h.http);
    assert!(
        h.s.cancel(ms(10), &h.id.clone()).is_err(),
        "a second cancel is misuse"
    );
}

#[test]
fn cancel_while_running_only_interrupts() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.s.cancel(ms(5), &h.id.clone()).unwrap();
    h.drain();
    h.take("POST", "/interrupt");
    assert!(h.http.iter().all(|(_, _, p)| p != "/queue"), "{:?}", h.http);
}

#[test]
fn a_truncated_frame_at_an_output_node_fails_the_prompt() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.executing(4, "save");
    let err =
        h.s.handle_binary(ms(5), Bytes::from_static(&[0, 0, 0, 1, 0, 0]))
            .unwrap_err();
    h.drain();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert!(matches!(
        h.terminal()[..],
        [Event::Failed {
            failure: Failure::Protocol(_),
            ..
        }]
    ));
}

#[test]
fn frames_for_foreign_prompts_are_ignored() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(
        3,
        r#"{"type":"execution_start","data":{"prompt_id":"someone-else"}}"#,
    );
    let meta = r#"{"node_id":"save","prompt_id":"someone-else","image_type":"image/png"}"#;
    h.s.handle_binary(ms(4), Bytes::from(encode_image_with_metadata(meta, PNG)))
        .unwrap();
    h.text(
        5,
        r#"{"type":"execution_success","data":{"prompt_id":"someone-else"}}"#,
    );
    assert!(
        h.events
            .iter()
            .all(|e| e.prompt().is_none_or(|p| p == "p1")),
        "{:?}",
        h.events
    );
    assert!(h.terminal().is_empty());
}

#[test]
fn output_image_shares_the_frame_buffer() {
    let mut h = Harness::accepted(no_keepalive());
    h.text(3, r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#);
    h.executing(4, "save");
    let frame = Bytes::from(encode_image(ImageFormat::Png, &[9u8; 1 << 20]));
    let start = frame[8..].as_ptr();
    h.s.handle_binary(ms(5), frame).unwrap();
    h.drain();
    let image = h.events.iter().find_map(|e| match e {
        Event::Output { image, .. } => Some(image),
        _ => None,
    });
    assert_eq!(image.unwrap().data.as_ptr(), start, "no copy of the image");
}

#[test]
fn a_lost_post_response_is_looked_up_by_the_client_chosen_id() {
    let mut h = Harness::new(no_keepalive(), Deadlines::none());
    h.s.handle_connected(ms(1));
    h.drain();
    let post = h.take("POST", "/prompt");
    h.s.handle_http_error(ms(2), post, reset());
    h.drain();
    let q = h.take("GET", "/history/p1");
    h.s.handle_response(ms(3), q, HttpResponse::new(200, "{}"));
    h.drain();
    let q = h.take("GET", "/queue");
    h.s.handle_response(
        ms(4),
        q,
        HttpResponse::new(
            200,
            r#"{"queue_running":[[1,"p1",{},{},[]]],"queue_pending":[]}"#,
        ),
    );
    h.drain();
    assert!(h.terminal().is_empty(), "it is running: wait for it");
    h.text(
        5,
        r#"{"type":"executing","data":{"node":null,"prompt_id":"p1"}}"#,
    );
    assert!(matches!(h.terminal()[..], [Event::Completed { .. }]));
}

#[test]
fn submit_misuse_is_typed() {
    let mut s = Session::new(ClientId::from("c"), no_keepalive());
    s.submit(ms(0), Submission::new("a".into(), graph()))
        .unwrap();
    assert!(
        s.submit(ms(0), Submission::new("a".into(), graph()))
            .is_err()
    );
    s.close(ms(1));
    assert_eq!(
        s.submit(ms(1), Submission::new("b".into(), graph())),
        Err(comfy_proxy::Misuse::Closed)
    );
}

#[test]
fn keepalive_pings() {
    let mut s = Session::new(ClientId::from("c"), SessionConfig::default());
    s.handle_connected(ms(0));
    while s.poll_transmit().is_some() {}
    let t = s.poll_timeout().unwrap();
    assert_eq!(t, Duration::from_secs(20));
    s.handle_timeout(t);
    assert_eq!(s.poll_transmit(), Some(Transmit::Ping));
}

#[test]
fn an_ended_prompt_id_is_refused_until_a_thousand_more_have_ended() {
    let mut s = Session::new(ClientId::from("c"), SessionConfig::default());
    let now = Duration::ZERO;
    let run_and_cancel = |s: &mut Session, id: &PromptId| {
        s.submit(now, Submission::new(id.clone(), graph())).unwrap();
        s.cancel(now, id).unwrap();
    };
    let first = PromptId::from("first");
    run_and_cancel(&mut s, &first);
    let again = s.submit(now, Submission::new(first.clone(), graph()));
    assert!(
        matches!(again, Err(comfy_proxy::Misuse::DuplicatePrompt(ref id)) if *id == first),
        "{again:?}"
    );
    // The session remembers the last 1,024 ids that ended: after 1,023 more, still refused...
    let others: Vec<PromptId> = (0..1024).map(|n| PromptId::new(format!("p{n}"))).collect();
    for id in &others[..1023] {
        run_and_cancel(&mut s, id);
    }
    assert!(
        s.submit(now, Submission::new(first.clone(), graph()))
            .is_err()
    );
    // ...after one more it is forgotten and may be used again; the newer ones are not.
    run_and_cancel(&mut s, &others[1023]);
    assert!(s.submit(now, Submission::new(first, graph())).is_ok());
    assert!(
        s.submit(now, Submission::new(others[1].clone(), graph()))
            .is_err()
    );
}
