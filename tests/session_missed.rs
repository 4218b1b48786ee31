//! What the session does about messages it may have missed or cannot place: image frames
//! sent during another prompt's run (one of ours that ended here, another client's), a text
//! frame that does not decode, and a completion after a gap whose history is not written yet.
//! In each case an output is neither given to the wrong prompt nor silently dropped.

use std::time::Duration;

use bytes::Bytes;
use comfy_proxy::session::{
    Deadlines, Event, Failure, RequestId, Session, SessionConfig, Submission, Transmit,
};
use comfy_proxy::wire::frame::encode_image;
use comfy_proxy::wire::{HttpResponse, ImageFormat};
use comfy_proxy::{ClientId, PromptId, Workflow};

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nimage";

/// The history of `p1` after a successful run whose `file` node saved one image.
const FILE_HISTORY: &str = r#"{"p1":{"prompt":[1,"p1",{},{},["save","file"]],"outputs":{"file":{"images":[{"filename":"x_00001_.png","subfolder":"","type":"output"}]}},"status":{"status_str":"success","completed":true,"messages":[]},"meta":{}}}"#;

const RUNNING_P1: &str =
    r#"{"queue_running":[[1,"p1",{},{"client_id":"c"},["save"]]],"queue_pending":[]}"#;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A websocket output node with a batch of two, and a file output node.
fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":2,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}},
            "file":{"class_type":"SaveImage","inputs":{"images":["1",0],"filename_prefix":"x"}}}"#,
    )
    .unwrap()
}

/// A connected session and what it asked for and reported.
struct Harness {
    s: Session,
    http: Vec<(RequestId, String)>,
    events: Vec<Event>,
}

impl Harness {
    /// A connected session with the prompts `ids` submitted, posted and accepted.
    fn with(ids: &[(&str, Deadlines)]) -> Self {
        let config = SessionConfig::default().with_keepalive(None);
        let mut h = Self {
            s: Session::new(ClientId::from("c"), config),
            http: vec![],
            events: vec![],
        };
        for (id, deadlines) in ids {
            let submission =
                Submission::new(PromptId::from(*id), graph()).with_deadlines(*deadlines);
            h.s.submit(ms(0), submission).unwrap();
        }
        h.s.handle_connected(ms(1));
        h.drain();
        for (number, (id, _)) in ids.iter().enumerate() {
            let post = h.take("/prompt");
            let body = format!(r#"{{"prompt_id":"{id}","number":{number},"node_errors":{{}}}}"#);
            h.s.handle_response(ms(2), post, HttpResponse::new(200, body));
        }
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(t) = self.s.poll_transmit() {
            if let Transmit::Http { id, request } = t {
                self.http.push((id, request.path));
            }
        }
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
    }

    /// Removes and returns the open request whose path starts with `path`.
    fn take(&mut self, path: &str) -> RequestId {
        let i = (self.http.iter())
            .position(|(_, p)| p.starts_with(path))
            .unwrap_or_else(|| panic!("no request for {path} among {:?}", self.http));
        self.http.remove(i).0
    }

    fn answer(&mut self, t: u64, path: &str, body: impl Into<Bytes>) {
        let id = self.take(path);
        self.s
            .handle_response(ms(t), id, HttpResponse::new(200, body));
        self.drain();
    }

    fn text(&mut self, t: u64, kind: &str, data: &str) {
        let text = format!(r#"{{"type":"{kind}","data":{data}}}"#);
        self.s.handle_text(ms(t), &text).unwrap();
        self.drain();
    }

    fn executing(&mut self, t: u64, prompt: &str, node: &str) {
        let data = format!(r#"{{"node":"{node}","prompt_id":"{prompt}"}}"#);
        self.text(t, "executing", &data);
    }

    fn image(&mut self, t: u64, byte: u8) {
        let mut png = PNG.to_vec();
        png.push(byte);
        self.s
            .handle_binary(ms(t), Bytes::from(encode_image(ImageFormat::Png, &png)))
            .unwrap();
        self.drain();
    }

    /// A whole run of `prompt` as the server sends it: both images of `save`, then success.
    fn run(&mut self, t: u64, prompt: &str, first_byte: u8) {
        let id = format!(r#"{{"prompt_id":"{prompt}"}}"#);
        self.text(t, "execution_start", &id);
        self.executing(t, prompt, "1");
        self.executing(t, prompt, "save");
        self.image(t, first_byte);
        self.image(t, first_byte + 1);
        self.executing(t, prompt, "file");
        self.text(t, "execution_success", &id);
        let end = format!(r#"{{"node":null,"prompt_id":"{prompt}"}}"#);
        self.text(t, "executing", &end);
    }

    /// The last byte of every websocket image reported for `prompt`.
    fn images_of(&self, prompt: &str) -> Vec<u8> {
        (self.events.iter())
            .filter_map(|e| match e {
                Event::Output {
                    prompt: p, image, ..
                } if p == prompt => image.data.last().copied(),
                _ => None,
            })
            .collect()
    }

    /// Previews reported, for any prompt.
    fn previews(&self) -> usize {
        (self.events.iter())
            .filter(|e| matches!(e, Event::Preview { .. }))
            .count()
    }

    /// `prompt` ended failing with `LostOutputs` for the websocket node `save`.
    /// `prompt` ended once, and completed.
    fn assert_completed(&self, prompt: &str) {
        assert!(
            matches!(self.terminal_of(prompt)[..], [Event::Completed { .. }]),
            "{:?}",
            self.events
        );
    }

    fn assert_lost_save(&self, prompt: &str) {
        match self.terminal_of(prompt)[..] {
            [
                Event::Failed {
                    failure: Failure::LostOutputs { nodes },
                    ..
                },
            ] => assert_eq!(nodes, &["save".into()] as &[comfy_proxy::NodeId]),
            ref other => panic!("{other:?}"),
        }
    }

    fn terminal_of(&self, prompt: &str) -> Vec<&Event> {
        (self.events.iter())
            .filter(|e| e.is_terminal() && e.prompt().is_some_and(|p| p == prompt))
            .collect()
    }
}

/// A prompt that ended here (its deadline passed) still runs on the server: its images,
/// which carry no prompt id, are not given to the next prompt, which gets its own two.
#[test]
fn images_of_a_prompt_that_ended_here_do_not_go_to_the_next() {
    let short = Deadlines::none().total(ms(100));
    let mut h = Harness::with(&[("p1", short), ("p2", Deadlines::none())]);
    h.s.handle_timeout(ms(100));
    h.drain();
    assert!(
        matches!(h.terminal_of("p1")[..], [Event::TimedOut { .. }]),
        "{:?}",
        h.events
    );
    h.run(200, "p1", 10);
    assert_eq!(
        h.previews(),
        0,
        "p1's images are nobody's, not p2's previews"
    );
    h.run(300, "p2", 20);
    assert_eq!(h.images_of("p2"), [20, 21], "p2's own images, once");
    h.assert_completed("p2");
}

/// The server says another prompt runs while ours is at its websocket output node: an image
/// after that is nobody's, and ours, which may have missed it, fails instead of completing
/// with one image of two.
#[test]
fn an_image_during_another_prompts_run_fails_the_output_it_may_belong_to() {
    let mut h = Harness::with(&[("p1", Deadlines::none())]);
    h.text(3, "execution_start", r#"{"prompt_id":"p1"}"#);
    h.executing(4, "p1", "save");
    h.image(5, 10);
    h.executing(6, "someone-else", "9");
    h.image(7, 11);
    h.executing(8, "p1", "file");
    h.text(9, "execution_success", r#"{"prompt_id":"p1"}"#);
    assert_eq!(h.images_of("p1"), [10]);
    h.assert_lost_save("p1");
}

/// Right after a reconnect nobody has said whose run it is: an image then is nobody's, not
/// the first accepted prompt's.
#[test]
fn an_image_right_after_a_reconnect_goes_to_nobody() {
    let mut h = Harness::with(&[("p1", Deadlines::none())]);
    h.s.handle_disconnect(ms(3));
    h.s.handle_connected(ms(4));
    h.drain();
    h.image(5, 10);
    assert!(h.images_of("p1").is_empty(), "{:?}", h.events);
    assert_eq!(h.previews(), 0, "nor a preview of it: {:?}", h.events);
    // Still waiting in the queue: nothing of it was missed, and it completes from the socket.
    h.answer(6, "/history/p1", "{}");
    let pending =
        r#"{"queue_running":[],"queue_pending":[[1,"p1",{},{"client_id":"c"},["save"]]]}"#;
    h.answer(7, "/queue", pending);
    h.run(8, "p1", 20);
    assert_eq!(h.images_of("p1"), [20, 21]);
    h.assert_completed("p1");
}

/// The socket drops while p1's websocket node runs; p1's end and p2's start go to nobody. p1
/// fails at once (its node was cut). The new socket hears, as ComfyUI says to a client that
/// reconnects mid-run, `executing` without a prompt id, then p2's images as type 1 frames (the
/// `feature_flags` hello not yet read). They are nobody's: not p1's, which would have had four
/// images of two, nor p2's, whose own node start was never seen.
#[test]
fn a_reconnect_mid_run_does_not_give_the_next_prompts_images_to_the_last() {
    let mut h = Harness::with(&[("p1", Deadlines::none()), ("p2", Deadlines::none())]);
    h.text(3, "execution_start", r#"{"prompt_id":"p1"}"#);
    h.executing(4, "p1", "save");
    h.image(5, 10);
    h.image(5, 11);
    h.s.handle_disconnect(ms(6));
    h.drain();
    h.assert_lost_save("p1");
    h.s.handle_connected(ms(7));
    h.drain();
    h.text(8, "executing", r#"{"node":"save"}"#);
    h.image(9, 20);
    h.image(9, 21);
    assert_eq!(h.images_of("p1"), [10, 11], "p1's own images only");
    assert!(h.images_of("p2").is_empty(), "{:?}", h.events);
    assert_eq!(h.previews(), 0);
}

/// A text frame that does not decode while the prompt runs may have been its `executed`: the
/// prompt reads its history before it completes, and fetches the file the frame named.
#[test]
fn an_undecodable_frame_makes_the_completion_read_the_history() {
    let mut h = Harness::with(&[("p1", Deadlines::none())]);
    h.text(3, "execution_start", r#"{"prompt_id":"p1"}"#);
    h.executing(4, "p1", "save");
    h.image(5, 10);
    h.image(5, 11);
    h.executing(6, "p1", "file");
    assert!(
        h.s.handle_text(ms(7), r#"{"type":"executed","data":{"node""#)
            .is_err()
    );
    h.text(8, "execution_success", r#"{"prompt_id":"p1"}"#);
    assert!(h.terminal_of("p1").is_empty(), "{:?}", h.events);
    h.answer(9, "/history/p1", FILE_HISTORY);
    h.answer(10, "/view?filename=x_00001_.png", Bytes::from_static(PNG));
    h.assert_completed("p1");
    let files = (h.events.iter())
        .filter(|e| matches!(e, Event::Output { file: Some(_), .. }))
        .count();
    assert_eq!(files, 1, "the file the damaged frame named");
    assert_eq!(
        h.images_of("p1").len(),
        3,
        "two websocket images and the file"
    );
}

/// A frame that does not decode but names another prompt leaves ours alone.
#[test]
fn an_undecodable_frame_of_another_prompt_changes_nothing() {
    let mut h = Harness::with(&[("p1", Deadlines::none())]);
    h.text(3, "execution_start", r#"{"prompt_id":"p1"}"#);
    let damaged = r#"{"type":"executed","data":{"prompt_id":"someone-else","node":7}}"#;
    assert!(h.s.handle_text(ms(4), damaged).is_err());
    h.run(5, "p1", 10);
    assert!(h.http.is_empty(), "no history read: {:?}", h.http);
    h.assert_completed("p1");
}

/// The prompt ran on through a dropped socket and the socket said it ended; ComfyUI writes
/// the history just after that, so the first read may find it still running: the session
/// reads again (100 ms, then 200 ms...), and gives up with a named cause after six reads.
#[test]
fn a_history_not_written_yet_is_read_again_and_not_forever() {
    let ran_through_a_drop = || {
        let mut h = Harness::with(&[("p1", Deadlines::none())]);
        h.text(3, "execution_start", r#"{"prompt_id":"p1"}"#);
        h.s.handle_disconnect(ms(4));
        h.s.handle_connected(ms(5));
        h.drain();
        h.answer(6, "/history/p1", "{}");
        h.answer(7, "/queue", RUNNING_P1);
        h.run(8, "p1", 10);
        assert!(h.terminal_of("p1").is_empty(), "{:?}", h.events);
        h.answer(9, "/history/p1", "{}");
        h.answer(10, "/queue", RUNNING_P1);
        h
    };
    let mut h = ran_through_a_drop();
    assert_eq!(h.s.poll_timeout(), Some(ms(110)));
    h.s.handle_timeout(ms(110));
    h.drain();
    h.answer(111, "/history/p1", FILE_HISTORY);
    h.answer(112, "/view", Bytes::from_static(PNG));
    h.assert_completed("p1");

    let mut h = ran_through_a_drop();
    let mut waits = vec![];
    while h.terminal_of("p1").is_empty() {
        let at = h.s.poll_timeout().expect("a recheck is due");
        waits.push(at);
        h.s.handle_timeout(at);
        h.drain();
        let t = at.as_millis() as u64;
        h.answer(t, "/history/p1", "{}");
        h.answer(t, "/queue", RUNNING_P1);
    }
    assert_eq!(waits, [ms(110), ms(310), ms(710), ms(1510), ms(3110)]);
    match h.terminal_of("p1")[..] {
        [
            Event::Failed {
                failure: Failure::NoHistory { checks: 6 },
                ..
            },
        ] => {}
        ref other => panic!("{other:?}"),
    }
}
