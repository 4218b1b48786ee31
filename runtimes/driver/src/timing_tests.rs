//! The driver's deadlines through the [`Runtime`](crate::Runtime) seam: a fake runtime whose
//! clock the test moves drives the client and the pool, so a deadline of seconds fires when the
//! test says the seconds have passed, and not before.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use comfy_proxy::session::{Deadline, Deadlines, Event, Failure};
use comfy_proxy::{ServerAddress, TransportErrorKind, Workflow};
use futures_util::StreamExt;

use crate::fake::{FakeRuntime, Unanswered};
use crate::pool::{JobError, JobOptions, Pool, PoolConfig, PoolEvent};
use crate::{Client, ClientConfig, Runtime};

fn workflow() -> Workflow {
    Workflow::from_json(r#"{"1":{"class_type":"EmptyLatentImage","inputs":{"width":8}}}"#)
        .expect("test graph")
}

fn server() -> ServerAddress {
    "127.0.0.1:9".parse().expect("address")
}

/// Submits one prompt to `client` and collects its events as they come.
fn submit(rt: &FakeRuntime, client: Client) -> Arc<Mutex<Vec<Event>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    rt.spawn(Box::pin(async move {
        let mut stream = client.submit(workflow()).await.expect("submitted");
        while let Some(event) = stream.next().await {
            sink.lock().unwrap().push(event);
        }
    }));
    rt.run();
    events
}

fn terminal(events: &Mutex<Vec<Event>>) -> Option<Event> {
    events
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.is_terminal())
        .cloned()
}

/// The session's own timer (the accept deadline) is waited for by the actor's loop: on the
/// runtime's clock, so it fires when that clock passes it.
#[test]
fn the_actor_fires_the_accept_deadline_when_the_runtime_clock_passes_it() {
    let rt = FakeRuntime::new();
    let mut config = ClientConfig::new(server());
    let mut deadlines = Deadlines::none();
    deadlines.accept = Some(Duration::from_secs(5));
    config = config.with_deadlines(deadlines);
    // The websocket never opens; its own deadline is far beyond the accept deadline.
    config.connect_timeout = Duration::from_secs(3600);
    let client = Client::connect(rt.clone(), Arc::new(Unanswered), config);
    let events = submit(&rt, client);
    assert_eq!(terminal(&events), None, "nothing ends before time moves");
    rt.advance(Duration::from_millis(4_900));
    assert_eq!(terminal(&events), None, "4.9 s: before the deadline");
    rt.advance(Duration::from_millis(200));
    match terminal(&events) {
        Some(Event::TimedOut { deadline, .. }) => assert_eq!(deadline, Deadline::Accept),
        other => panic!("5.1 s: expected the accept deadline, got {other:?}"),
    }
}

/// The connect task's deadline is a sleep on the runtime: a server that never answers fails
/// the prompt as unreachable, timed out, once the clock passes the connect timeout.
#[test]
fn a_connect_that_never_answers_times_out_on_the_runtime_clock() {
    let rt = FakeRuntime::new();
    let mut config = ClientConfig::new(server()).with_deadlines(Deadlines::none());
    config.connect_timeout = Duration::from_secs(10);
    let client = Client::connect(rt.clone(), Arc::new(Unanswered), config);
    let events = submit(&rt, client);
    rt.advance(Duration::from_millis(9_900));
    assert_eq!(
        terminal(&events),
        None,
        "9.9 s: the connect is still waited for"
    );
    rt.advance(Duration::from_millis(200));
    match terminal(&events) {
        Some(Event::Failed {
            failure: Failure::Unreachable(error),
            ..
        }) => assert_eq!(
            error.kind,
            TransportErrorKind::TimedOut(Duration::from_secs(10))
        ),
        other => panic!("10.1 s: expected the connect to time out, got {other:?}"),
    }
}

/// The pool's driver waits on the machine's timers and the deadlines of its own exchanges on
/// the runtime's clock: with every server silent, a job ends as unreachable once the clock
/// passes the give-up time, in simulated seconds.
#[test]
fn the_pool_gives_up_on_unreachable_servers_on_the_runtime_clock() {
    let rt = FakeRuntime::new();
    let mut client = ClientConfig::new(server()).with_deadlines(Deadlines::none());
    client.connect_timeout = Duration::from_secs(1);
    let mut config = PoolConfig::new(&[server()], &client);
    config.http_timeout = Duration::from_secs(1);
    config.unreachable_give_up = Duration::from_secs(3);
    let (pool, mut events) = Pool::start(rt.clone(), Arc::new(Unanswered), config);
    // The handle is dropped at once: the report comes on `events`.
    let job = pool.try_submit(workflow(), JobOptions::new());
    drop(job.expect("room in the submission queue"));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let sink = reports.clone();
    let clock = rt.clone();
    rt.spawn(Box::pin(async move {
        while let Some(event) = events.next().await {
            if let PoolEvent::Finished(report) = event {
                sink.lock().unwrap().push((clock.now(), report));
            }
        }
    }));
    let start = rt.now();
    rt.run();
    for _ in 0..600 {
        if !reports.lock().unwrap().is_empty() {
            break;
        }
        rt.advance(Duration::from_millis(100));
    }
    let reports = reports.lock().unwrap();
    let (at, report) = reports
        .first()
        .expect("the job ended within a simulated minute");
    assert!(
        matches!(report.outcome, Err(JobError::NoServerReachable { .. })),
        "{report:?}"
    );
    assert!(
        at.duration_since(start) >= Duration::from_secs(3),
        "ended at {:?} of simulated time, before the give-up time",
        at.duration_since(start)
    );
    drop(pool);
}
