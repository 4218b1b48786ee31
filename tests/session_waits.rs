//! Every wait the session hands out has a deadline, in simulated time: connects that fail or
//! never answer, sockets that go silent, HTTP exchanges that never end; and the `/view`
//! downloads' cap and per-prompt back-pressure.

use std::time::Duration;

use comfy_proxy::session::{
    Deadlines, Event, Failure, RequestId, Session, SessionConfig, Submission, Timeouts, Transmit,
};
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{ClientId, PromptId, TransportError, TransportErrorKind, Workflow};

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{}},
            "file":{"class_type":"SaveImage","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap()
}

fn refused() -> TransportError {
    TransportError::new(TransportErrorKind::Refused, "connect to 127.0.0.1:9")
}

/// What a session asked for and reported, drained after every step.
#[derive(Default)]
struct Seen {
    http: Vec<(RequestId, String)>,
    other: Vec<Transmit>,
    events: Vec<Event>,
}

impl Seen {
    fn drain(&mut self, session: &mut Session) {
        while let Some(t) = session.poll_transmit() {
            match t {
                Transmit::Http { id, request } => self.http.push((id, request.path)),
                other => self.other.push(other),
            }
        }
        while let Some(e) = session.poll_event() {
            self.events.push(e);
        }
    }

    fn take(&mut self, path: &str) -> RequestId {
        let i = self
            .http
            .iter()
            .position(|(_, p)| p.starts_with(path))
            .unwrap_or_else(|| panic!("no request for {path} among {:?}", self.http));
        self.http.remove(i).0
    }

    fn connects(&self) -> usize {
        self.other
            .iter()
            .filter(|t| matches!(t, Transmit::Connect { .. }))
            .count()
    }

    fn failures(&self) -> Vec<(&PromptId, &Failure)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Failed { prompt, failure } => Some((prompt, failure)),
                _ => None,
            })
            .collect()
    }
}

fn session(config: SessionConfig) -> (Session, Seen) {
    let mut session = Session::new(ClientId::from("c"), config);
    let mut seen = Seen::default();
    seen.drain(&mut session);
    (session, seen)
}

fn submit(session: &mut Session, seen: &mut Seen, now: Duration, id: &str) {
    session
        .submit(now, Submission::new(id.into(), graph()))
        .unwrap();
    seen.drain(session);
}

/// Connected, `p1` posted and accepted, running.
fn running(config: SessionConfig) -> (Session, Seen) {
    let (mut session, mut seen) = session(config);
    submit(&mut session, &mut seen, ms(0), "p1");
    session.handle_connected(ms(1));
    seen.drain(&mut session);
    let post = seen.take("/prompt");
    session.handle_response(
        ms(2),
        post,
        HttpResponse::new(200, r#"{"prompt_id":"p1","number":1,"node_errors":{}}"#),
    );
    let start = r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#;
    session.handle_text(ms(3), start).unwrap();
    seen.drain(&mut session);
    (session, seen)
}

#[test]
fn a_refused_connect_fails_every_unposted_prompt_at_once_and_retries_nothing() {
    let (mut session, mut seen) = session(SessionConfig::default());
    submit(&mut session, &mut seen, ms(0), "a");
    submit(&mut session, &mut seen, ms(1), "b");
    session.handle_connect_failed(ms(5), refused());
    seen.drain(&mut session);
    let failures = seen.failures();
    assert_eq!(failures.len(), 2);
    for (_, failure) in failures {
        assert!(
            matches!(failure, Failure::Unreachable(e) if e.kind == TransportErrorKind::Refused)
        );
        assert!(
            failure
                .to_string()
                .contains("connect to 127.0.0.1:9: connection refused")
        );
    }
    assert_eq!(
        session.poll_timeout(),
        None,
        "no backoff: nothing is left to retry"
    );
    assert_eq!(seen.connects(), 1);
    // The next submission tries again, once.
    submit(&mut session, &mut seen, s(1), "c");
    assert_eq!(seen.connects(), 2);
}

#[test]
fn a_failed_reconnect_fails_the_unposted_and_keeps_the_posted_waiting() {
    let (mut session, mut seen) = running(SessionConfig::default().with_keepalive(None));
    session.handle_disconnect(s(1));
    seen.drain(&mut session);
    assert_eq!(seen.connects(), 2, "reconnected at once");
    submit(&mut session, &mut seen, s(1), "late");
    session.handle_connect_failed(s(1), refused());
    seen.drain(&mut session);
    let failures = seen.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0.as_str(), "late");
    assert!(matches!(failures[0].1, Failure::Unreachable(_)));
    // p1 was posted: it waits for the next attempt, then is looked up.
    let due = session.poll_timeout().unwrap();
    session.handle_timeout(due);
    session.handle_connected(due);
    seen.drain(&mut session);
    seen.take("/history/p1");
}

#[test]
fn a_connect_that_never_answers_fails_at_the_connect_deadline() {
    let config = SessionConfig::default()
        .with_keepalive(None)
        .with_timeouts(Timeouts::none().with_connect(Some(s(3))));
    let (mut session, mut seen) = session(config);
    submit(&mut session, &mut seen, s(10), "a");
    // The adapter's bound comes first; the session's timer is a second later.
    let due = session.poll_timeout().unwrap();
    assert_eq!(due, s(14));
    session.handle_timeout(due - ms(1));
    seen.drain(&mut session);
    assert!(
        seen.failures().is_empty(),
        "spurious timeouts change nothing"
    );
    session.handle_timeout(due);
    seen.drain(&mut session);
    match seen.failures()[..] {
        [(_, Failure::Unreachable(e))] => {
            assert_eq!(e.kind, TransportErrorKind::TimedOut(s(3)));
        }
        ref other => panic!("{other:?}"),
    }
    // A late report of the same attempt is a no-op.
    session.handle_connect_failed(due, refused());
    seen.drain(&mut session);
    assert_eq!(seen.failures().len(), 1);
}

#[test]
fn a_silent_socket_is_given_up_then_reconnected_and_reconciled() {
    let config = SessionConfig::default()
        .with_keepalive(Some(s(20)))
        .with_timeouts(Timeouts::default().with_silence(Some(s(45))));
    let (mut session, mut seen) = running(config);
    session.handle_pong(s(30));
    session
        .handle_text(
            s(40),
            r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":1}}}}"#,
        )
        .unwrap();
    let mut t = Duration::ZERO;
    // Pings go out every 20 s; nothing is heard after 40 s.
    while t < s(85) {
        t = session.poll_timeout().unwrap();
        session.handle_timeout(t);
        seen.drain(&mut session);
    }
    assert_eq!(t, s(85), "silence deadline = last heard (40 s) + 45 s");
    let pings = seen.other.iter().filter(|t| **t == Transmit::Ping).count();
    assert_eq!(pings, 4);
    assert!(seen.other.contains(&Transmit::Close));
    assert!(seen.events.contains(&Event::Disconnected));
    assert!(seen.failures().is_empty());
    assert_eq!(seen.connects(), 2, "reconnected at once");
    let due = t + ms(1);
    session.handle_connected(due);
    seen.drain(&mut session);
    let q = seen.take("/history/p1");
    let history = r#"{"p1":{"prompt":[1,"p1",{},{},[]],"outputs":{},
        "status":{"status_str":"success","completed":true,"messages":[]}}}"#;
    session.handle_response(due, q, HttpResponse::new(200, history));
    seen.drain(&mut session);
    assert!(seen.events.contains(&Event::Completed {
        prompt: "p1".into()
    }));
}

/// With the default watch (pings 20 s apart, 45 s of silence) a prompt whose total deadline
/// is 10 s would run into it on a silent socket. The watch shrinks to a quarter and half of
/// that deadline: the socket is given up after 5 s, replaced at once, and the prompt learns
/// its fate from `/history` well before its deadline.
#[test]
fn a_short_deadline_has_a_silent_socket_noticed_in_time() {
    let (mut session, mut seen) = session(SessionConfig::default());
    let submission =
        Submission::new("p1".into(), graph()).with_deadlines(Deadlines::none().total(s(10)));
    session.submit(ms(0), submission).unwrap();
    session.handle_connected(ms(1));
    seen.drain(&mut session);
    let post = seen.take("/prompt");
    session.handle_response(
        ms(2),
        post,
        HttpResponse::new(200, r#"{"prompt_id":"p1","number":1,"node_errors":{}}"#),
    );
    let start = r#"{"type":"execution_start","data":{"prompt_id":"p1"}}"#;
    session.handle_text(ms(3), start).unwrap();
    seen.drain(&mut session);
    let mut t = ms(3);
    while !seen.other.contains(&Transmit::Close) {
        t = session.poll_timeout().unwrap();
        assert!(t < s(10), "the socket was not given up before the deadline");
        session.handle_timeout(t);
        seen.drain(&mut session);
    }
    assert_eq!(
        t,
        ms(3) + s(5),
        "silence: half the deadline after the last frame"
    );
    let pings = seen.other.iter().filter(|t| **t == Transmit::Ping).count();
    assert_eq!(pings, 2, "pings a quarter of the deadline apart");
    assert!(seen.failures().is_empty());
    assert_eq!(seen.connects(), 2, "reconnected at once");
    session.handle_connected(t + ms(1));
    seen.drain(&mut session);
    let q = seen.take("/history/p1");
    let history = r#"{"p1":{"prompt":[1,"p1",{},{},[]],"outputs":{},
        "status":{"status_str":"success","completed":true,"messages":[]}}}"#;
    session.handle_response(t + ms(2), q, HttpResponse::new(200, history));
    seen.drain(&mut session);
    assert!(seen.events.contains(&Event::Completed {
        prompt: "p1".into()
    }));
}

/// A lookup after a reconnect that the server never answers fails the prompt with a cause
/// after half the prompt's deadline (here 5 of 10 s), not at the HTTP bound (120 s) and not
/// by running into the deadline itself; a `POST /prompt` is bounded the same way.
#[test]
fn a_lookup_never_answered_fails_within_half_the_prompts_deadline() {
    let (mut session, mut seen) = session(SessionConfig::default().with_keepalive(None));
    let submission =
        Submission::new("p1".into(), graph()).with_deadlines(Deadlines::none().total(s(10)));
    session.submit(ms(0), submission).unwrap();
    session.handle_connected(ms(1));
    seen.drain(&mut session);
    assert_eq!(
        session.poll_timeout(),
        Some(ms(1) + s(5)),
        "the post's bound"
    );
    let post = seen.take("/prompt");
    session.handle_response(
        ms(2),
        post,
        HttpResponse::new(200, r#"{"prompt_id":"p1","number":1,"node_errors":{}}"#),
    );
    session.handle_disconnect(ms(3));
    session.handle_connected(ms(4));
    seen.drain(&mut session);
    let _unanswered = seen.take("/history/p1");
    let due = session.poll_timeout().unwrap();
    assert_eq!(due, ms(4) + s(5));
    session.handle_timeout(due);
    seen.drain(&mut session);
    match seen.failures()[..] {
        [(_, Failure::Transport { error, .. })] => {
            assert_eq!(error.kind, TransportErrorKind::TimedOut(s(5)));
        }
        ref other => panic!("{other:?}"),
    }
}

/// A reconnect whose handshake the server never answers is given up after half the
/// deadline of the prompt on the server (5 of 10 s), not the connect bound (10 s + 1 s), and
/// the next attempt follows while the prompt can still learn its fate.
#[test]
fn a_reconnect_never_answered_is_given_up_within_half_the_prompts_deadline() {
    let (mut session, mut seen) = session(SessionConfig::default().with_keepalive(None));
    let submission =
        Submission::new("p1".into(), graph()).with_deadlines(Deadlines::none().total(s(10)));
    session.submit(ms(0), submission).unwrap();
    session.handle_connected(ms(1));
    seen.drain(&mut session);
    let post = seen.take("/prompt");
    session.handle_response(
        ms(2),
        post,
        HttpResponse::new(200, r#"{"prompt_id":"p1","number":1,"node_errors":{}}"#),
    );
    session.handle_disconnect(ms(3));
    seen.drain(&mut session);
    assert_eq!(seen.connects(), 2, "reconnected at once");
    let due = session.poll_timeout().unwrap();
    assert_eq!(due, ms(3) + s(5));
    session.handle_timeout(due);
    let next = session.poll_timeout().unwrap();
    assert_eq!(
        next,
        due + ms(250),
        "the next attempt after the first backoff"
    );
    session.handle_timeout(next);
    seen.drain(&mut session);
    assert_eq!(seen.connects(), 3);
    assert!(seen.failures().is_empty(), "p1 waits for the new socket");
}

#[test]
fn without_keepalive_silence_is_not_watched() {
    let config = SessionConfig::default()
        .with_keepalive(None)
        .with_timeouts(Timeouts::none().with_silence(Some(s(1))));
    let (mut session, _) = running(config);
    assert_eq!(session.poll_timeout(), None);
    session.handle_timeout(s(1000));
    assert!(session.is_connected());
}

#[test]
fn an_unanswered_http_exchange_fails_at_its_deadline() {
    let config = SessionConfig::default()
        .with_keepalive(None)
        .with_timeouts(Timeouts::none().with_http(Some(s(5))));
    let (mut session, mut seen) = session(config);
    submit(&mut session, &mut seen, ms(0), "a");
    session.handle_connected(s(1));
    seen.drain(&mut session);
    seen.take("/prompt");
    // No answer to the POST: it may have been queued, so it is looked up, not failed.
    assert_eq!(session.poll_timeout(), Some(s(7)));
    session.handle_timeout(s(7));
    seen.drain(&mut session);
    assert!(seen.failures().is_empty());
    seen.take("/history/a");
    // The lookup is not answered either: the prompt fails, naming what timed out.
    session.handle_timeout(s(13));
    seen.drain(&mut session);
    match seen.failures()[..] {
        [(_, Failure::Transport { error, .. })] => {
            assert_eq!(error.kind, TransportErrorKind::TimedOut(s(5)));
            assert_eq!(error.what, "GET /history/a", "the exchange is named");
        }
        ref other => panic!("{other:?}"),
    }
}

/// With the default timeouts a server that never answers `POST /prompt` costs 10 s
/// (`Timeouts::exchange`), not the 120 s a `/view` download may take; the lookup that follows
/// is bounded alike, and the prompt fails naming it within 20 s.
#[test]
fn small_exchanges_are_bounded_by_the_exchange_timeout() {
    let config = SessionConfig::default().with_keepalive(None);
    let (mut session, mut seen) = session(config);
    let submission =
        Submission::new(PromptId::from("a"), graph()).with_deadlines(Deadlines::none());
    session.submit(ms(0), submission).unwrap();
    session.handle_connected(s(1));
    seen.drain(&mut session);
    seen.take("/prompt");
    assert_eq!(session.poll_timeout(), Some(s(11)));
    session.handle_timeout(s(11));
    seen.drain(&mut session);
    assert!(seen.failures().is_empty(), "looked up, not failed");
    seen.take("/history/a");
    assert_eq!(session.poll_timeout(), Some(s(21)));
    session.handle_timeout(s(21));
    seen.drain(&mut session);
    match seen.failures()[..] {
        [(_, Failure::Transport { error, .. })] => {
            assert_eq!(error.kind, TransportErrorKind::TimedOut(s(10)));
            assert_eq!(error.what, "GET /history/a");
        }
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn timeouts_none_leave_nothing_armed() {
    let config = SessionConfig::default()
        .with_keepalive(None)
        .with_timeouts(Timeouts::none());
    let (mut session, mut seen) = session(config);
    submit(&mut session, &mut seen, ms(0), "a");
    assert_eq!(session.poll_timeout(), None);
    session.handle_connected(ms(1));
    seen.drain(&mut session);
    assert_eq!(session.poll_timeout(), None);
}

fn executed(prompt: &str, files: usize) -> String {
    let images: Vec<String> = (0..files)
        .map(|i| format!(r#"{{"filename":"{prompt}_{i}.png","subfolder":"","type":"output"}}"#))
        .collect();
    format!(
        r#"{{"type":"executed","data":{{"node":"file","prompt_id":"{prompt}","output":{{"images":[{}]}}}}}}"#,
        images.join(",")
    )
}

fn png() -> HttpResponse {
    HttpResponse::new(200, b"\x89PNG\r\n\x1a\nimage".to_vec())
}

#[test]
fn view_downloads_are_capped_per_session() {
    let config = SessionConfig::default()
        .with_keepalive(None)
        .with_max_views(2);
    let (mut session, mut seen) = running(config);
    session.handle_text(ms(4), &executed("p1", 5)).unwrap();
    seen.drain(&mut session);
    // (answers given so far, downloads in flight, queued)
    let table = [
        (0, 2, 3),
        (1, 2, 2),
        (2, 2, 1),
        (3, 2, 0),
        (4, 1, 0),
        (5, 0, 0),
    ];
    for (answered, in_flight, queued) in table {
        assert_eq!(seen.http.len(), in_flight, "after {answered} answers");
        assert_eq!(session.views_in_flight(), in_flight);
        assert_eq!(session.views_queued(), queued);
        if in_flight > 0 {
            let id = seen.take("/view");
            session.handle_response(ms(5), id, png());
            seen.drain(&mut session);
        }
    }
    let outputs = seen
        .events
        .iter()
        .filter(|e| matches!(e, Event::Output { .. }))
        .count();
    assert_eq!(outputs, 5);
}

#[test]
fn a_lagging_reader_holds_back_its_own_downloads_only() {
    let config = SessionConfig::default()
        .with_keepalive(None)
        .with_max_views(2);
    let (mut session, mut seen) = running(config);
    submit(&mut session, &mut seen, ms(4), "p2");
    let post = seen.take("/prompt");
    session.handle_response(
        ms(5),
        post,
        HttpResponse::new(200, r#"{"prompt_id":"p2","number":2,"node_errors":{}}"#),
    );
    session.handle_reader_lag(ms(5), &"p1".into(), true);
    session.handle_text(ms(6), &executed("p1", 2)).unwrap();
    session.handle_text(ms(7), &executed("p2", 1)).unwrap();
    seen.drain(&mut session);
    let paths: Vec<&str> = seen.http.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert!(paths[0].contains("p2_0"), "{paths:?}");
    assert_eq!(session.views_queued(), 2);
    // p1's reader catches up: its downloads start.
    session.handle_reader_lag(ms(8), &"p1".into(), false);
    seen.drain(&mut session);
    assert_eq!(session.views_in_flight(), 2);
    assert_eq!(session.views_queued(), 1);
}

#[test]
fn pongs_alone_keep_an_idle_socket_alive() {
    // (pong times in s) -> when the socket counts as silent (connected at 0, silence 45 s)
    let table: [(&[u64], u64); 3] = [(&[], 45), (&[20], 65), (&[20, 40, 60], 105)];
    for (pongs, silent_at) in table {
        let config = SessionConfig::default().with_keepalive(Some(s(20)));
        let (mut session, mut seen) = session(config);
        session.handle_connected(s(0));
        for p in pongs {
            session.handle_pong(s(*p));
        }
        let mut t = Duration::ZERO;
        while !seen.other.contains(&Transmit::Close) {
            t = session.poll_timeout().unwrap();
            session.handle_timeout(t);
            seen.drain(&mut session);
        }
        assert_eq!(t, s(silent_at), "pongs at {pongs:?}");
        assert!(!session.is_connected());
    }
}
