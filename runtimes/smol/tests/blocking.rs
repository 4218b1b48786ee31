//! The blocking API from plain threads, against the mock server on loopback: a run, two
//! threads sharing a client, a pool of two servers, the pool's job handles, bounded waits, and
//! a dropped stream that cancels its prompt.
//!
//! No test here runs an async runtime of its own: the mock runs on smol's global executor (a
//! server elsewhere, as far as the client knows), and every call under test is a blocking one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_proxy::session::{Deadlines, Event};
use comfy_proxy::wire::http::QueuePosition;
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_mock::{self as mock, MockConfig, MockHandle};
use comfy_proxy_smol::Smol;
use comfy_proxy_smol::blocking::{
    Client, ClientConfig, JobError, JobOptions, Pool, PoolConfig, PoolEvent, RecvTimeoutError,
    SubmitError, TryRecvError,
};
use comfy_proxy_testkit::suite::sampler;

/// The longest any wait here may take before the test fails instead of hanging.
const BOUND: Duration = Duration::from_secs(60);

fn start_mock(step: Duration) -> MockHandle {
    let mut config = MockConfig::default();
    config.step = step;
    config.job = Duration::from_millis(5);
    config.previews = false;
    smol::block_on(mock::serve(
        Arc::new(Smol),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config,
    ))
    .expect("bind a loopback port")
}

fn address(mock: &MockHandle) -> ServerAddress {
    ServerAddress::parse(&mock.address()).expect("mock address")
}

fn client(mock: &MockHandle) -> Client {
    let config = ClientConfig::new(address(mock)).with_deadlines(Deadlines::none().total(BOUND));
    Client::connect(config)
}

/// `batch` images, each saved over the websocket.
fn images(batch: u32) -> Workflow {
    Workflow::from_json(&format!(
        r#"{{"1":{{"class_type":"EmptyImage","inputs":{{"width":64,"height":64,"batch_size":{batch},"color":0}}}},
            "save":{{"class_type":"SaveImageWebsocket","inputs":{{"images":["1",0]}}}}}}"#
    ))
    .expect("test graph")
}

/// Reads `stream` until an event `wanted` accepts, failing on its end or after [`BOUND`].
fn wait_for(
    stream: &mut comfy_proxy_smol::blocking::PromptStream,
    wanted: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + BOUND;
    loop {
        match stream.recv_deadline(deadline) {
            Ok(event) if wanted(&event) => return event,
            Ok(event) => assert!(!event.is_terminal(), "ended early: {event:?}"),
            Err(e) => panic!("no wanted event: {e:?}"),
        }
    }
}

#[test]
fn runs_a_job_from_a_plain_thread() {
    let mock = start_mock(Duration::from_millis(2));
    let client = client(&mock);
    let worker = std::thread::spawn(move || {
        let result = client.run(images(3)).expect("the run succeeds");
        let stats = client.system_stats().expect("system stats");
        let queue = client.queue().expect("queue");
        (result, stats, queue)
    });
    let (result, stats, queue) = worker.join().expect("the worker thread");
    assert_eq!(result.outputs.len(), 3, "three images: {result:?}");
    assert!(result.prompt_id.is_some());
    assert_eq!(stats.comfyui_version.as_deref(), Some("0.3.64"));
    assert!(queue.running.is_empty() && queue.pending.is_empty());
}

#[test]
fn two_threads_share_one_client() {
    let mock = start_mock(Duration::from_millis(2));
    let client = client(&mock);
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                (1..=4u32)
                    .map(|i| {
                        let batch = 1 + (t + i) % 3;
                        let result = client.run(images(batch)).expect("the run succeeds");
                        (batch, result)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut prompts = HashSet::new();
    for thread in threads {
        for (batch, result) in thread.join().expect("a worker thread") {
            assert_eq!(result.outputs.len(), batch as usize, "{result:?}");
            assert!(prompts.insert(result.prompt_id.expect("a prompt id")));
        }
    }
    assert_eq!(prompts.len(), 8, "eight distinct prompts");
}

#[test]
fn a_pool_of_two_servers_runs_twenty_jobs_from_plain_threads() {
    let mocks = [
        start_mock(Duration::from_millis(2)),
        start_mock(Duration::from_millis(2)),
    ];
    let servers: Vec<ServerAddress> = mocks.iter().map(address).collect();
    let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
    let (pool, mut events) = Pool::start(config);
    assert_eq!(pool.servers(), &servers[..]);
    // Submitted from one thread, read from another.
    let submitter = std::thread::spawn(move || {
        // Each handle is dropped at once: the reports come on `events`.
        let jobs: Vec<_> = (0..20)
            .map(|i| pool.submit(sampler(3, i)).unwrap().id())
            .collect();
        pool.close();
        // The pool handle stays alive until the events end: dropping it would cancel the jobs.
        (pool, jobs)
    });
    let mut reports = Vec::new();
    let deadline = Instant::now() + BOUND;
    loop {
        match events.recv_deadline(deadline) {
            Ok(PoolEvent::Finished(report)) => reports.push(report),
            Ok(_) => {}
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the pool is still running after {BOUND:?}"),
        }
    }
    let (_pool, jobs) = submitter.join().expect("the submitting thread");
    assert_eq!(reports.len(), 20, "one report per job");
    let finished: HashSet<_> = reports.iter().map(|r| r.job).collect();
    assert_eq!(finished, jobs.into_iter().collect::<HashSet<_>>());
    for report in &reports {
        assert!(report.outcome.is_ok(), "{report:?}");
        assert_eq!(report.outputs.len(), 1, "{report:?}");
    }
    let used: HashSet<_> = reports.iter().filter_map(|r| r.server).collect();
    assert_eq!(used.len(), 2, "both servers ran jobs");
    assert!(matches!(events.try_recv(), Err(TryRecvError::Disconnected)));
}

#[test]
fn recv_timeout_returns_a_timeout_when_nothing_comes() {
    // A pool with no job reports nothing.
    let idle = start_mock(Duration::from_millis(2));
    let servers = [address(&idle)];
    let (_pool, mut events) = Pool::start(PoolConfig::new(
        &servers,
        &ClientConfig::new(servers[0].clone()),
    ));
    let wait = Duration::from_millis(100);
    let asked = Instant::now();
    assert!(matches!(
        events.recv_timeout(wait),
        Err(RecvTimeoutError::Timeout)
    ));
    assert!(asked.elapsed() >= wait, "it waited the whole timeout");
    assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));

    // A prompt queued behind one of 100 steps of 1 s hears nothing once it is accepted.
    let mock = start_mock(Duration::from_secs(1));
    let client = client(&mock);
    let mut long = client.submit(sampler(100, 1)).expect("submit");
    wait_for(&mut long, |e| matches!(e, Event::Started { .. }));
    let mut queued = client.submit(images(1)).expect("submit");
    wait_for(&mut queued, |e| matches!(e, Event::Accepted { .. }));
    let mut timeouts = 0;
    for _ in 0..10 {
        match queued.recv_timeout(Duration::from_millis(50)) {
            Err(RecvTimeoutError::Timeout) => timeouts += 1,
            Ok(event) => assert!(
                !event.is_terminal() && !matches!(event, Event::Started { .. }),
                "the queued prompt did not run: {event:?}"
            ),
            Err(RecvTimeoutError::Disconnected) => panic!("the stream ended"),
        }
    }
    assert!(timeouts > 0, "recv_timeout timed out");
    assert_eq!(
        client.queue_position(queued.prompt_id()).expect("queue"),
        Some(QueuePosition::Pending { ahead: 0 })
    );

    // After the terminal event the stream reports that it ended, at once.
    long.cancel();
    wait_for(&mut long, |e| matches!(e, Event::Cancelled { .. }));
    assert!(matches!(
        long.recv_timeout(BOUND),
        Err(RecvTimeoutError::Disconnected)
    ));
    assert!(long.next().is_none());
    let last = queued.by_ref().last().expect("the queued prompt's events");
    assert!(matches!(last, Event::Completed { .. }), "{last:?}");
}

#[test]
fn dropping_a_stream_cancels_its_prompt() {
    let mock = start_mock(Duration::from_secs(1));
    // No deadline of the client's own that would stop the prompt: only the drop may.
    let client =
        Client::connect(ClientConfig::new(address(&mock)).with_deadlines(Deadlines::none()));
    let mut stream = client.submit(sampler(200, 1)).expect("submit");
    wait_for(&mut stream, |e| matches!(e, Event::Started { .. }));
    let id = stream.prompt_id().clone();
    assert_eq!(
        client.queue_position(&id).expect("queue"),
        Some(QueuePosition::Running),
        "the prompt runs before the drop"
    );
    drop(stream);
    // 200 s of work left: only a cancel empties the queue within the bound.
    let deadline = Instant::now() + BOUND / 2;
    while client.queue_position(&id).expect("queue").is_some() {
        assert!(Instant::now() < deadline, "the prompt still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
    let entry = client
        .history(&id)
        .expect("history")
        .expect("an entry for the dropped prompt");
    assert!(entry.interrupted(), "the prompt was interrupted: {entry:?}");
}

#[test]
fn pool_job_handles_from_plain_threads() {
    let mocks = [start_mock(Duration::from_millis(10))];
    let servers: Vec<ServerAddress> = mocks.iter().map(address).collect();
    let mut config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
    config.scheduler.per_server = 1;
    let (pool, mut events) = Pool::start(config);
    let mut first = pool.submit(sampler(100, 1)).expect("submit");
    // Handles are waited on from other threads.
    let normal = pool.submit(sampler(3, 2)).expect("submit");
    let urgent = pool
        .submit_with(sampler(3, 3), JobOptions::new().in_front())
        .expect("submit");
    let (normal_id, urgent_id) = (normal.id(), urgent.id());
    loop {
        match first.recv_timeout(BOUND) {
            Ok(PoolEvent::Accepted { .. }) => break,
            Ok(PoolEvent::Finished(r)) => panic!("{r:?}"),
            Ok(_) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    let stats = pool.stats().expect("the pool runs");
    assert_eq!((stats.in_flight, stats.queued), (1, 2), "{stats:?}");
    first.cancel();
    let report = first.result_timeout(BOUND).expect("a report in time");
    assert!(
        matches!(report.outcome, Err(JobError::Cancelled)),
        "{report:?}"
    );
    let waiter = std::thread::spawn(move || {
        let urgent = urgent.result();
        (urgent, normal.result())
    });
    let (urgent, normal) = waiter.join().expect("the waiting thread");
    assert_eq!((urgent.job, normal.job), (urgent_id, normal_id));
    assert!(urgent.outcome.is_ok() && normal.outcome.is_ok());
    // One slot: the urgent job, submitted last, ran before the other.
    assert!(urgent.elapsed < normal.elapsed, "{urgent:?} {normal:?}");
    pool.close();
    assert!(matches!(pool.submit(images(1)), Err(SubmitError::Closed)));
    // Every job had a handle: the pool's events end without one.
    assert!(matches!(
        events.recv_timeout(BOUND),
        Err(RecvTimeoutError::Disconnected)
    ));
}
