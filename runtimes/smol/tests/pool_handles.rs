//! The pool as users hold it, over loopback against mock servers: job handles, a job's
//! cancel, priority, statistics, close and abort (the mocks count the cancels they saw), and
//! the bounded submission queue.

use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::ServerAddress;
use comfy_proxy::wire::http;
use comfy_proxy_driver::client::{Client, ClientConfig};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::pool::{
    BreakerState, EventDetail, JobError, JobHandle, JobOptions, Pool, PoolConfig, PoolEvent,
    SubmitError,
};
use comfy_proxy_driver::{BoxFuture, HttpClient, Runtime};
use comfy_proxy_mock::MockHandle;
use comfy_proxy_smol::Smol;
use comfy_proxy_testkit::suite::{Kit, fast, sampler, start_mock};
use smol::stream::StreamExt;

#[path = "common/bounded.rs"]
mod bounded;
use bounded::bounded;

fn kit() -> Kit {
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let http: Arc<dyn HttpClient> = Arc::new(Http1::new(rt.clone()));
    Kit { rt, http }
}

/// Mocks whose jobs take `step` per sampler step.
async fn mocks(kit: &Kit, n: usize, step: Duration) -> (Vec<MockHandle>, Vec<ServerAddress>) {
    let mut mocks = Vec::new();
    for _ in 0..n {
        let mut c = fast();
        c.step = step;
        mocks.push(start_mock(kit, c).await);
    }
    let servers = mocks
        .iter()
        .map(|m| ServerAddress::parse(&m.address()).unwrap())
        .collect();
    (mocks, servers)
}

fn probe(kit: &Kit, server: &ServerAddress) -> Client {
    Client::connect(
        kit.rt.clone(),
        kit.http.clone(),
        ClientConfig::new(server.clone()),
    )
}

/// The mock's counters of cancels: (interrupts, deletes).
async fn cancels_seen(probe: &Client) -> (u64, u64) {
    let mut counters = http::queue();
    counters.path = "/mock/faults".to_owned();
    let resp = probe.request(counters).await.unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    (
        seen["interrupts"].as_u64().unwrap(),
        seen["deletes"].as_u64().unwrap(),
    )
}

async fn queue_len(probe: &Client) -> usize {
    let resp = probe.request(http::queue()).await.unwrap();
    http::decode_queue(&resp).unwrap().len()
}

/// Reads a handle's events until the server accepted its prompt.
async fn until_accepted(job: &mut JobHandle) {
    loop {
        match job.next().await {
            Some(PoolEvent::Accepted { .. }) => return,
            Some(PoolEvent::Finished(r)) => panic!("ended before it was accepted: {r:?}"),
            Some(_) => {}
            None => panic!("the handle ended"),
        }
    }
}

#[test]
fn handles_follow_their_jobs_and_close_lets_them_finish() {
    let kit = kit();
    smol::block_on(bounded("close", async {
        let (_mocks, servers) = mocks(&kit, 1, Duration::from_millis(20)).await;
        let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        let (pool, mut events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        let mut jobs = Vec::new();
        for seed in 0..3 {
            jobs.push(pool.submit(sampler(5, seed)).await.unwrap());
        }
        until_accepted(&mut jobs[0]).await;
        pool.close();
        let stats = pool
            .stats()
            .await
            .expect("the pool runs until its jobs end");
        assert_eq!(stats.in_flight + stats.queued, 3, "{stats:?}");
        assert_eq!(
            pool.submit(sampler(5, 9)).await.err(),
            Some(SubmitError::Closed),
            "a closed pool takes no more jobs"
        );
        assert_eq!(
            pool.try_submit(sampler(5, 9), JobOptions::new()).err(),
            Some(SubmitError::Closed)
        );
        // Each handle's stream: where it went, progress, its output as it came, its report.
        let mut first = jobs.remove(0);
        let mut seen = Vec::new();
        while let Some(event) = first.next().await {
            seen.push(event);
        }
        let outputs = seen
            .iter()
            .filter(|e| matches!(e, PoolEvent::Output { .. }))
            .count();
        assert_eq!(outputs, 1, "{seen:?}");
        assert!(
            seen.iter().any(|e| matches!(e, PoolEvent::Progress { .. })),
            "{seen:?}"
        );
        let Some(PoolEvent::Finished(report)) = seen.last() else {
            panic!("the report comes last: {seen:?}")
        };
        assert!(report.outcome.is_ok(), "{report:?}");
        assert_eq!(report.outputs.len(), 1);
        for job in jobs {
            let id = job.id();
            let report = job.result().await;
            assert_eq!(report.job, id);
            assert!(report.outcome.is_ok(), "{report:?}");
        }
        // Every job had a handle: nothing came on the pool-wide stream, which ends, and the
        // pool has stopped.
        assert!(events.next().await.is_none());
        assert!(pool.stats().await.is_none());
        let probe = probe(&kit, &servers[0]);
        assert_eq!(cancels_seen(&probe).await, (0, 0), "close cancels nothing");
    }));
}

#[test]
fn a_pool_that_reports_jobs_alone_gives_one_event_per_job() {
    let kit = kit();
    smol::block_on(bounded("reports", async {
        let (_mocks, servers) = mocks(&kit, 2, Duration::from_millis(5)).await;
        let mut config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        config.events = EventDetail::Reports;
        let (pool, mut events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        // One job followed by its handle, four by the pool-wide stream.
        let mut held = pool.submit(sampler(5, 1)).await.unwrap();
        for seed in 2..6 {
            drop(pool.submit(sampler(5, seed)).await.unwrap());
        }
        pool.close();
        let mut seen = Vec::new();
        while let Some(event) = held.next().await {
            seen.push(event);
        }
        let [PoolEvent::Finished(report)] = &seen[..] else {
            panic!("the handle's one event is its report: {seen:?}")
        };
        assert!(report.outcome.is_ok(), "{report:?}");
        assert_eq!(report.outputs.len(), 1, "the report keeps the outputs");
        let mut rest = Vec::new();
        while let Some(event) = events.next().await {
            rest.push(event);
        }
        assert_eq!(rest.len(), 4, "{rest:?}");
        for event in &rest {
            let PoolEvent::Finished(report) = event else {
                panic!("only reports: {rest:?}")
            };
            assert!(report.outcome.is_ok(), "{report:?}");
            assert_eq!(report.outputs.len(), 1);
        }
    }));
}

#[test]
fn abort_cancels_every_job_on_its_server() {
    let kit = kit();
    smol::block_on(bounded("abort", async {
        // Jobs of 100 steps of 1 s: without a cancel they would hold the servers for minutes.
        let (_mocks, servers) = mocks(&kit, 2, Duration::from_secs(1)).await;
        let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        let (pool, _events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        let mut jobs = Vec::new();
        for seed in 0..6 {
            jobs.push(pool.submit(sampler(100, seed)).await.unwrap());
        }
        // Two per server (two slots each); two wait in the pool's queue.
        for job in &mut jobs[..4] {
            until_accepted(job).await;
        }
        let probes: Vec<Client> = servers.iter().map(|s| probe(&kit, s)).collect();
        for p in &probes {
            assert_eq!(queue_len(p).await, 2);
        }
        pool.abort();
        assert_eq!(
            pool.submit(sampler(1, 1)).await.err(),
            Some(SubmitError::Closed)
        );
        for job in jobs {
            let report = job.result().await;
            assert!(
                matches!(report.outcome, Err(JobError::Cancelled)),
                "{report:?}"
            );
        }
        for p in &probes {
            while queue_len(p).await > 0 {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            // Its running prompt interrupted, its waiting one deleted (or interrupted once it
            // started).
            let (interrupts, deletes) = cancels_seen(p).await;
            assert!(interrupts >= 1, "{interrupts} interrupts");
            assert!(interrupts + deletes >= 2, "{interrupts} + {deletes}");
        }
    }));
}

#[test]
fn a_handle_cancels_its_job_alone() {
    let kit = kit();
    smol::block_on(bounded("cancel", async {
        let (_mocks, servers) = mocks(&kit, 1, Duration::from_millis(20)).await;
        let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        let (pool, _events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        let mut long = pool.submit(sampler(5000, 1)).await.unwrap();
        let short = pool.submit(sampler(3, 2)).await.unwrap();
        until_accepted(&mut long).await;
        long.cancel();
        long.cancel(); // a second call does nothing
        let report = long.result().await;
        assert!(
            matches!(report.outcome, Err(JobError::Cancelled)),
            "{report:?}"
        );
        let report = short.result().await;
        assert!(report.outcome.is_ok(), "the other job runs on: {report:?}");
        let probe = probe(&kit, &servers[0]);
        while queue_len(&probe).await > 0 {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        let (interrupts, deletes) = cancels_seen(&probe).await;
        assert_eq!(interrupts + deletes, 1, "one cancel, of the long job");
        let stats = pool.stats().await.unwrap();
        let server = &stats.servers[0];
        assert_eq!(server.succeeded, 1);
        assert_eq!(server.failed, 0, "a cancel is not a failure");
        assert_eq!(server.in_flight, 0);
        assert_eq!(server.state, BreakerState::Closed);
        assert!(server.busy > Duration::ZERO, "{stats:?}");
        assert_eq!((stats.queued, stats.finished), (0, 2));
    }));
}

#[test]
fn a_job_with_priority_runs_before_the_queue() {
    let kit = kit();
    smol::block_on(bounded("priority", async {
        let (_mocks, servers) = mocks(&kit, 1, Duration::from_millis(10)).await;
        let mut config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
        config.scheduler.per_server = 1;
        let (pool, _events) = Pool::start(kit.rt.clone(), kit.http.clone(), config);
        let mut first = pool.submit(sampler(20, 1)).await.unwrap();
        until_accepted(&mut first).await;
        let mut normal = Vec::new();
        for seed in 2..4 {
            normal.push(pool.submit(sampler(5, seed)).await.unwrap());
        }
        let urgent = pool
            .submit_with(sampler(5, 9), JobOptions::new().in_front())
            .await
            .unwrap();
        assert_eq!(pool.stats().await.unwrap().queued, 3);
        let report = urgent.result().await;
        assert!(report.outcome.is_ok(), "{report:?}");
        // One slot: the waiting jobs go out only after the urgent one ended.
        for job in &mut normal {
            let mut seen = Vec::new();
            while let Some(Some(event)) = smol::future::poll_once(job.next()).await {
                seen.push(event);
            }
            assert!(
                !seen.iter().any(|e| matches!(e, PoolEvent::Finished(_))),
                "{seen:?}"
            );
        }
        assert!(first.result().await.outcome.is_ok());
        for job in normal {
            assert!(job.result().await.outcome.is_ok());
        }
    }));
}

/// A runtime that keeps what it is given and never runs it: the pool's task never takes a
/// submission.
#[derive(Default)]
struct Stalled(std::sync::Mutex<Vec<BoxFuture<'static, ()>>>);

impl Runtime for Stalled {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        self.0.lock().unwrap().push(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Smol.sleep(duration)
    }

    fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<Box<dyn comfy_proxy_driver::Stream>>> {
        Smol.connect(host, port)
    }
}

#[test]
fn the_submission_queue_is_bounded() {
    let rt: Arc<dyn Runtime> = Arc::new(Stalled::default());
    let http: Arc<dyn HttpClient> = Arc::new(Http1::new(rt.clone()));
    let server = ServerAddress::parse("127.0.0.1:9").unwrap();
    let template = ClientConfig::new(server.clone());
    let config = PoolConfig::new(std::slice::from_ref(&server), &template);
    let (pool, _events) = Pool::start(rt, http, config);
    let mut taken = 0;
    let mut handles = Vec::new();
    let full = loop {
        match pool.try_submit(sampler(1, 1), JobOptions::new()) {
            Ok(handle) => {
                taken += 1;
                handles.push(handle);
            }
            Err(e) => break e,
        }
        assert!(taken <= 1000, "the queue never filled");
    };
    assert_eq!(full, SubmitError::Full);
    assert!(
        (comfy_proxy_driver::pool::SUBMIT_QUEUE..=comfy_proxy_driver::pool::SUBMIT_QUEUE + 1)
            .contains(&taken),
        "{taken} taken"
    );
    // The async submit waits for room instead.
    let waiting = smol::block_on(smol::future::poll_once(pool.submit(sampler(1, 1))));
    assert!(waiting.is_none());
    // Control messages still go: each has room of its own.
    pool.close();
}
