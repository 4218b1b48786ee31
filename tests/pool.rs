//! The pool scheduler driven with simulated time: scenarios, a heterogeneous pool's makespan,
//! and a seeded chaos run against a model of what really ran on each server.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use comfy_proxy::pool::{
    Action, BreakerState, Handled, JobId, JobOutcome, JobResult, Lookup, PoolConfig, Scheduler,
    ServerId,
};
use comfy_proxy_testkit::rng::SplitMix64 as Rng;
use comfy_proxy_testkit::sim::Timeline;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Milliseconds, rounded up, so that a timer is never fired early.
fn to_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap()
}

fn drain(pool: &mut Scheduler, now: Duration) -> Vec<Action> {
    std::iter::from_fn(|| pool.poll_action(now)).collect()
}

fn dispatch(job: u64, server: usize, attempt: u32) -> Action {
    let (job, server) = (JobId(job), ServerId(server));
    Action::Dispatch {
        job,
        server,
        attempt,
    }
}

fn succeeded(job: u64, server: usize, attempt: u32) -> Action {
    let (job, server) = (JobId(job), ServerId(server));
    let outcome = JobOutcome::Succeeded { server, attempt };
    Action::Finished { job, outcome }
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_attempt_results_are_ignored() {
    let mut pool = Scheduler::new(2, PoolConfig::default());
    let (job, mut now) = (JobId(7), Duration::ZERO);
    pool.submit(now, job).unwrap();
    assert_eq!(drain(&mut pool, now), [dispatch(7, 0, 1)]);
    // The connection dropped after the prompt was posted, then the server went away.
    let dropped = JobResult::failed(true, true, "websocket down");
    pool.handle_result(now, job, 1, dropped).unwrap();
    let (server, attempt) = (ServerId(0), 1);
    let lookup = Action::Lookup {
        job,
        server,
        attempt,
    };
    assert_eq!(drain(&mut pool, now), [lookup]);
    pool.handle_lookup(now, job, 1, Lookup::Unreachable)
        .unwrap();
    assert_eq!(pool.stats().servers[0].state, BreakerState::Open);
    // Nobody can ask server 0; after the give-up time the job runs elsewhere.
    let mut actions = Vec::new();
    while actions.is_empty() {
        now = pool.poll_timeout().unwrap();
        pool.handle_timeout(now);
        for a in drain(&mut pool, now) {
            match a {
                Action::HealthCheck { server } => {
                    pool.handle_health(now, server, Err(refused())).unwrap();
                }
                other => actions.push(other),
            }
        }
    }
    assert_eq!(now, Duration::from_secs(30));
    let cancel = Action::Cancel {
        job,
        server,
        attempt,
    };
    assert_eq!(actions, [cancel, dispatch(7, 1, 2)]);
    // Attempt 1 did run after all: its late reports are stale and change nothing.
    let late = pool.handle_result(now, job, 1, JobResult::Success);
    assert_eq!(late, Ok(Handled::Stale));
    assert_eq!(pool.handle_started(now, job, 1), Ok(Handled::Stale));
    assert_eq!(drain(&mut pool, now), []);
    let current = pool.handle_result(now, job, 2, JobResult::Success);
    assert_eq!(current, Ok(Handled::Applied));
    assert_eq!(drain(&mut pool, now), [succeeded(7, 1, 2)]);
    let again = pool.handle_result(now, job, 2, JobResult::Success);
    assert_eq!(again, Ok(Handled::Stale));
    assert!(pool.is_idle());
}

#[test]
fn every_server_unreachable_fails_jobs_after_the_give_up_time() {
    let mut pool = Scheduler::new(2, PoolConfig::default());
    let mut now = Duration::ZERO;
    for s in [0, 0, 1, 1] {
        pool.handle_server_error(now, ServerId(s), "refused")
            .unwrap();
    }
    pool.submit(now, JobId(1)).unwrap();
    now = ms(500);
    pool.submit(now, JobId(2)).unwrap();
    assert_eq!(drain(&mut pool, now), []);
    let mut finished = Vec::new();
    while finished.is_empty() {
        now = pool.poll_timeout().expect("a timer while jobs wait");
        pool.handle_timeout(now);
        for a in drain(&mut pool, now) {
            match a {
                Action::HealthCheck { server } => {
                    pool.handle_health(now, server, Err(refused())).unwrap()
                }
                Action::Finished { outcome, .. } => finished.push(outcome),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(now, Duration::from_secs(120));
    assert_eq!(finished.len(), 2);
    for outcome in &finished {
        let JobOutcome::Failed { error, attempts } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(*attempts, 0);
        assert!(error.contains("every server is unreachable"), "{error}");
        assert!(error.contains("all 2 servers"), "{error}");
    }
    assert!(pool.is_idle());
    // Later jobs fail at once while every server stays out.
    pool.submit(now, JobId(3)).unwrap();
    let actions = drain(&mut pool, now);
    let failed = |a: &Action| {
        matches!(
            a,
            Action::Finished {
                outcome: JobOutcome::Failed { .. },
                ..
            }
        )
    };
    assert!(actions.len() == 1 && failed(&actions[0]), "{actions:?}");
}

// ---------------------------------------------------------------------------------------------
// The simulator
// ---------------------------------------------------------------------------------------------

/// What really became of one attempt, whatever anybody was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Queued,
    Running,
    RanOk,
    RanFailed,
    /// Never ran: lost in transit, cancelled, stolen, or wiped by a crash.
    Gone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Submit,
    Complete { server: usize },
    Down { server: usize },
    Up { server: usize },
    Result { job: JobId, attempt: u32, kind: u8 },
    Health { server: usize },
    Lookup { job: JobId, attempt: u32 },
    Steal { job: JobId, attempt: u32 },
    Consume,
}

/// How each completion is reported (see `Sim::complete`).
const OK: u8 = 0;
const FAIL_RETRYABLE: u8 = 1;
const FAIL_FINAL: u8 = 2;
const FAIL_UNCERTAIN: u8 = 3;

/// The simulated world: faults, consumer, latencies.
#[derive(Default)]
struct World {
    /// A run fails; the driver knows it failed (retryable).
    retryable: f64,
    /// A run fails in a way that will not change (a node raised).
    fatal: f64,
    /// The connection drops around a run's end: the driver cannot tell what happened.
    uncertain: f64,
    /// The connection drops right after posting: the prompt runs on, unseen (or was lost).
    lost_after_post: f64,
    /// Lookups fail in transport although the server is up.
    flaky_lookup: f64,
    /// Servers go down now and then, for this many ms (range).
    outages: Option<(u64, u64)>,
    /// The consumer takes one job per this many ms (range), or at once.
    consumer: Option<(u64, u64)>,
    /// Driver round trips in ms (range).
    latency: (u64, u64),
    /// Run times vary by +-5 %; otherwise every run takes exactly the server's speed.
    jitter: bool,
    /// Jobs arrive in random bursts; otherwise all at once at the start.
    bursts: bool,
}

struct SimServer {
    speed: u64,
    waiting: VecDeque<(JobId, u32)>,
    running: Option<(JobId, u32)>,
    up: bool,
    /// A crash (not a partition) took it down: its queue and history are wiped.
    crashed: bool,
    history: BTreeMap<(JobId, u32), bool>,
}

struct Sim {
    rng: Rng,
    faults: World,
    now: u64,
    events: Timeline<u64, Ev>,
    servers: Vec<SimServer>,
    per_server: usize,
    pool: Scheduler,
    truth: BTreeMap<(JobId, u32), (usize, Truth)>,
    /// Attempts whose outcome the driver no longer watches (reported uncertain).
    orphans: BTreeSet<(JobId, u32)>,
    /// The latest attempt dispatched per job, and per server what the pool holds there.
    latest: BTreeMap<JobId, u32>,
    holding: Vec<BTreeSet<(JobId, u32)>>,
    to_submit: u64,
    next_job: u64,
    finished: BTreeMap<JobId, (u64, JobOutcome)>,
    unconsumed: VecDeque<JobId>,
    max_unconsumed_seen: usize,
    counts: BTreeMap<&'static str, u64>,
}

impl Sim {
    fn new(seed: u64, speeds: &[u64], config: PoolConfig, faults: World, jobs: u64) -> Self {
        let per_server = config.per_server;
        let servers = speeds
            .iter()
            .map(|&speed| SimServer {
                speed,
                waiting: VecDeque::new(),
                running: None,
                up: true,
                crashed: false,
                history: BTreeMap::new(),
            })
            .collect();
        let mut sim = Self {
            rng: Rng::new(seed),
            faults,
            now: 0,
            events: Timeline::new(),
            servers,
            per_server,
            pool: Scheduler::new(speeds.len(), config),
            truth: BTreeMap::new(),
            orphans: BTreeSet::new(),
            latest: BTreeMap::new(),
            holding: vec![BTreeSet::new(); speeds.len()],
            to_submit: jobs,
            next_job: 0,
            finished: BTreeMap::new(),
            unconsumed: VecDeque::new(),
            max_unconsumed_seen: 0,
            counts: BTreeMap::new(),
        };
        if sim.faults.bursts {
            sim.at(0, Ev::Submit);
        } else {
            for n in 0..jobs {
                sim.pool.submit(Duration::ZERO, JobId(n)).unwrap();
            }
            sim.next_job = jobs;
            sim.to_submit = 0;
        }
        if sim.faults.outages.is_some() {
            for s in 0..speeds.len() {
                let t = sim.rng.range(5_000, 60_000);
                sim.at(t, Ev::Down { server: s });
            }
        }
        sim
    }

    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.events.at(t, ev);
    }

    fn later(&mut self, ev: Ev) {
        let (lo, hi) = self.faults.latency;
        let t = self.now + self.rng.range(lo, hi);
        self.at(t, ev);
    }

    /// The driver reports an attempt's result, `delay` ms plus a round trip from now.
    fn report(&mut self, delay: u64, job: JobId, attempt: u32, kind: u8) {
        let (lo, hi) = self.faults.latency;
        let t = self.now + delay + self.rng.range(lo, hi);
        self.at(t, Ev::Result { job, attempt, kind });
    }

    fn now(&self) -> Duration {
        ms(self.now)
    }

    /// Runs until every job is finished and consumed; returns the time the last one finished.
    fn run(&mut self, limit_ms: u64) -> u64 {
        let mut spins = 0;
        loop {
            self.drain();
            let all_in = self.to_submit == 0;
            if all_in && self.finished.len() as u64 == self.next_job && self.unconsumed.is_empty() {
                assert!(self.pool.is_idle());
                return self.finished.values().map(|(t, _)| *t).max().unwrap_or(0);
            }
            let event = self.events.next_time().copied();
            let timer = self.pool.poll_timeout().map(to_ms);
            let t = match (event, timer) {
                (Some(e), Some(t)) => e.min(t),
                (e, t) => e
                    .or(t)
                    .expect("nothing left to happen, yet jobs are unfinished"),
            };
            assert!(
                t <= limit_ms,
                "still running at {t} ms: {:?}",
                self.pool.stats()
            );
            if t <= self.now {
                spins += 1;
                assert!(spins < 10_000, "no progress at {} ms", self.now);
            } else {
                spins = 0;
            }
            self.now = self.now.max(t);
            if timer.is_some_and(|t| t <= self.now) {
                self.pool.handle_timeout(self.now());
                continue;
            }
            let (_, ev) = self.events.pop().unwrap();
            self.event(ev);
        }
    }

    /// Drains the pool's actions, checking the invariants after each.
    fn drain(&mut self) {
        while let Some(action) = self.pool.poll_action(self.now()) {
            self.action(action);
            let stats = self.pool.stats();
            for (s, held) in self.holding.iter().enumerate() {
                assert!(held.len() <= self.per_server, "server {s} holds {held:?}");
                assert!(stats.servers[s].in_flight <= self.per_server);
            }
            assert!(stats.unconsumed + stats.in_flight <= self.pool.unconsumed_limit());
            assert!(self.unconsumed.len() <= self.pool.unconsumed_limit());
            self.max_unconsumed_seen = self.max_unconsumed_seen.max(self.unconsumed.len());
        }
    }

    fn release(&mut self, job: JobId, attempt: u32) {
        for held in &mut self.holding {
            held.remove(&(job, attempt));
        }
    }

    fn action(&mut self, action: Action) {
        match action {
            Action::Dispatch {
                job,
                server,
                attempt,
            } => {
                self.count("dispatches");
                let previous = self.latest.insert(job, attempt).unwrap_or(0);
                assert_eq!(
                    attempt,
                    previous + 1,
                    "attempts of {job} are numbered in order"
                );
                self.release(job, previous);
                assert!(
                    !self.finished.contains_key(&job),
                    "{job} dispatched after finishing"
                );
                self.holding[server.0].insert((job, attempt));
                self.post(job, attempt, server.0);
            }
            Action::Cancel {
                job,
                server,
                attempt,
            } => {
                self.count("cancels");
                self.release(job, attempt);
                self.cancel(job, attempt, server.0);
            }
            Action::Steal { job, attempt, .. } => {
                self.count("steals asked");
                self.later(Ev::Steal { job, attempt });
            }
            Action::HealthCheck { server } => {
                self.count("health checks");
                self.later(Ev::Health { server: server.0 });
            }
            Action::Lookup { job, attempt, .. } => {
                self.count("lookups");
                self.later(Ev::Lookup { job, attempt });
            }
            Action::Finished { job, outcome } => {
                assert!(
                    !self.finished.contains_key(&job),
                    "{job} finished twice: {outcome:?}"
                );
                if let JobOutcome::Succeeded { server, attempt } = outcome {
                    let truth = self.truth.get(&(job, attempt)).copied();
                    assert_eq!(
                        truth,
                        Some((server.0, Truth::RanOk)),
                        "{job} reported succeeded by attempt {attempt} on {server}"
                    );
                    self.count("succeeded");
                } else {
                    self.count("failed");
                }
                let attempts = self.latest.get(&job).copied().unwrap_or(0);
                for a in 1..=attempts {
                    self.release(job, a);
                }
                self.finished.insert(job, (self.now, outcome));
                self.unconsumed.push_back(job);
                match self.faults.consumer {
                    None => self.consume(),
                    Some(_) if self.unconsumed.len() == 1 => self.schedule_consume(),
                    Some(_) => {}
                }
            }
            other => panic!("unknown action {other:?}"),
        }
    }

    fn schedule_consume(&mut self) {
        if let Some((lo, hi)) = self.faults.consumer {
            let t = self.now + self.rng.range(lo, hi);
            self.at(t, Ev::Consume);
        }
    }

    fn consume(&mut self) {
        if let Some(job) = self.unconsumed.pop_front() {
            self.pool.handle_consumed(job).unwrap();
        }
    }

    /// The driver posts a prompt: it lands unless the server is down or the post is lost.
    fn post(&mut self, job: JobId, attempt: u32, server: usize) {
        if !self.servers[server].up {
            self.truth.insert((job, attempt), (server, Truth::Gone));
            self.report(0, job, attempt, FAIL_RETRYABLE);
            return;
        }
        if self.rng.chance(self.faults.lost_after_post) {
            // The connection drops right after posting: the driver reports the run as
            // uncertain; the prompt landed or not.
            self.orphans.insert((job, attempt));
            self.report(0, job, attempt, FAIL_UNCERTAIN);
            if self.rng.chance(0.5) {
                self.count("posts lost");
                self.truth.insert((job, attempt), (server, Truth::Gone));
                return;
            }
            self.count("posts orphaned");
        }
        self.truth.insert((job, attempt), (server, Truth::Queued));
        self.servers[server].waiting.push_back((job, attempt));
        self.start_next(server);
    }

    fn start_next(&mut self, s: usize) {
        let server = &mut self.servers[s];
        if server.running.is_some() || !server.up && server.crashed {
            return;
        }
        let Some((job, attempt)) = server.waiting.pop_front() else {
            return;
        };
        server.running = Some((job, attempt));
        let t = if self.faults.jitter {
            self.now + server.speed - server.speed / 20 + self.rng.range(0, server.speed / 10)
        } else {
            self.now + server.speed
        };
        self.truth.insert((job, attempt), (s, Truth::Running));
        self.at(t, Ev::Complete { server: s });
        if self.servers[s].up && !self.orphans.contains(&(job, attempt)) {
            self.pool.handle_started(self.now(), job, attempt).unwrap();
        }
    }

    fn cancel(&mut self, job: JobId, attempt: u32, s: usize) {
        let server = &mut self.servers[s];
        if !server.up {
            return; // unreachable: the attempt may run on as a ghost
        }
        let before = server.waiting.len();
        server.waiting.retain(|w| *w != (job, attempt));
        if server.waiting.len() < before {
            self.truth.insert((job, attempt), (s, Truth::Gone));
        }
        if server.running == Some((job, attempt)) {
            // Interrupted: it does not finish.
            server.running = None;
            self.truth.insert((job, attempt), (s, Truth::Gone));
            self.start_next(s);
        }
    }

    fn event(&mut self, ev: Ev) {
        let now = self.now();
        match ev {
            Ev::Submit => {
                let burst = self.rng.range(1, 20).min(self.to_submit);
                for _ in 0..burst {
                    self.pool.submit(now, JobId(self.next_job)).unwrap();
                    self.next_job += 1;
                }
                self.to_submit -= burst;
                if self.to_submit > 0 {
                    let t = self.now + self.rng.range(0, 600);
                    self.at(t, Ev::Submit);
                }
            }
            Ev::Complete { server } => self.complete(server),
            Ev::Down { server } => self.down(server),
            Ev::Up { server } => {
                let s = &mut self.servers[server];
                s.up = true;
                s.crashed = false;
                self.start_next(server);
                let t = self.now + self.rng.range(20_000, 120_000);
                self.at(t, Ev::Down { server });
            }
            Ev::Result { job, attempt, kind } => {
                let (server, _) = self.truth[&(job, attempt)];
                let result = match kind {
                    OK => JobResult::Success,
                    FAIL_RETRYABLE => JobResult::failed(true, false, "the run failed"),
                    FAIL_FINAL => JobResult::failed(false, false, "node 3 raised"),
                    _ => JobResult::failed(true, true, "websocket dropped"),
                };
                let handled = self.pool.handle_result(now, job, attempt, result).unwrap();
                if handled == Handled::Stale {
                    self.count("stale results");
                } else if self.latest.get(&job) == Some(&attempt) && kind != FAIL_UNCERTAIN {
                    self.holding[server].remove(&(job, attempt));
                }
            }
            Ev::Health { server } => {
                let up = self.servers[server].up;
                let result = if up { Ok(()) } else { Err(refused()) };
                self.pool
                    .handle_health(now, ServerId(server), result)
                    .unwrap();
            }
            Ev::Lookup { job, attempt } => {
                let (server, _) = self.truth[&(job, attempt)];
                let answer = self.lookup(server, job, attempt);
                self.count(match answer {
                    Lookup::Finished { ok: true } => "lookups: ran ok",
                    Lookup::Finished { ok: false } => "lookups: ran, failed",
                    Lookup::Pending => "lookups: pending",
                    Lookup::Unknown => "lookups: unknown",
                    _ => "lookups: unreachable",
                });
                let handled = self.pool.handle_lookup(now, job, attempt, answer).unwrap();
                if handled == Handled::Applied
                    && matches!(answer, Lookup::Finished { .. } | Lookup::Unknown)
                {
                    self.holding[server].remove(&(job, attempt));
                }
            }
            Ev::Steal { job, attempt } => {
                let (server, truth) = self.truth[&(job, attempt)];
                let taken = self.servers[server].up && truth == Truth::Queued;
                if taken {
                    self.servers[server]
                        .waiting
                        .retain(|w| *w != (job, attempt));
                    self.truth.insert((job, attempt), (server, Truth::Gone));
                    self.count("steals taken");
                }
                let handled = self.pool.handle_steal(now, job, attempt, taken).unwrap();
                if taken {
                    assert_eq!(handled, Handled::Applied);
                    self.holding[server].remove(&(job, attempt));
                }
            }
            Ev::Consume => {
                self.consume();
                if !self.unconsumed.is_empty() {
                    self.schedule_consume();
                }
            }
        }
    }

    /// What the server's `/history` and `/queue` say, or that it cannot be asked.
    fn lookup(&mut self, s: usize, job: JobId, attempt: u32) -> Lookup {
        let server = &self.servers[s];
        if !server.up || self.rng.chance(self.faults.flaky_lookup) {
            return Lookup::Unreachable;
        }
        if let Some(&ok) = server.history.get(&(job, attempt)) {
            return Lookup::Finished { ok };
        }
        if server.running == Some((job, attempt)) || server.waiting.contains(&(job, attempt)) {
            return Lookup::Pending;
        }
        Lookup::Unknown
    }

    fn complete(&mut self, s: usize) {
        let Some((job, attempt)) = self.servers[s].running.take() else {
            return; // interrupted, or wiped by a crash
        };
        let f = &self.faults;
        let roll = self.rng.unit();
        let (ok, kind) = if roll < f.fatal {
            (false, FAIL_FINAL)
        } else if roll < f.fatal + f.retryable {
            (false, FAIL_RETRYABLE)
        } else if roll < f.fatal + f.retryable + f.uncertain {
            let ok = self.rng.chance(0.6);
            (ok, FAIL_UNCERTAIN)
        } else {
            (true, OK)
        };
        self.truth.insert(
            (job, attempt),
            (s, if ok { Truth::RanOk } else { Truth::RanFailed }),
        );
        self.servers[s].history.insert((job, attempt), ok);
        let watched = self.servers[s].up && !self.orphans.contains(&(job, attempt));
        if watched {
            if kind == FAIL_UNCERTAIN {
                self.orphans.insert((job, attempt));
            }
            self.report(0, job, attempt, kind);
        } else if self.servers[s].up && self.rng.chance(0.5) {
            // A reconnected session saw an orphan finish after all: a late, true report, maybe
            // after the pool learned the same from a lookup, or moved the job on.
            self.count("late reports");
            let kind = if ok { OK } else { FAIL_RETRYABLE };
            let delay = self.rng.range(1, 5_000);
            self.report(delay, job, attempt, kind);
        }
        self.start_next(s);
    }

    fn down(&mut self, s: usize) {
        self.count("outages");
        let crash = self.rng.chance(0.5);
        let server = &mut self.servers[s];
        server.up = false;
        server.crashed = crash;
        let mut watched: Vec<(JobId, u32)> = server.waiting.iter().copied().collect();
        watched.extend(server.running);
        if crash {
            server.waiting.clear();
            server.running = None;
            server.history.clear();
        }
        let now = self.now();
        self.pool
            .handle_server_error(now, ServerId(s), "websocket dropped")
            .unwrap();
        for (job, attempt) in watched {
            if crash {
                self.truth.insert((job, attempt), (s, Truth::Gone));
            }
            if self.orphans.insert((job, attempt)) {
                // The session gives up on its prompts after its reconnect attempts.
                self.report(2_000, job, attempt, FAIL_UNCERTAIN);
            }
        }
        let (lo, hi) = self.faults.outages.unwrap_or((1_000, 60_000));
        let t = self.now + self.rng.range(lo, hi);
        self.at(t, Ev::Up { server: s });
    }
}

#[test]
fn heterogeneous_pool_makespan_is_near_ideal() {
    let speeds = [50, 100, 150, 200];
    let ideal = 200.0 / speeds.iter().map(|s| 1.0 / *s as f64).sum::<f64>();
    for steal in [false, true] {
        let mut config = PoolConfig::default();
        config.steal = steal;
        // All 200 jobs at once, exact speeds, no faults, instant driver and consumer.
        let mut sim = Sim::new(1, &speeds, config, World::default(), 200);
        let makespan = sim.run(60_000) as f64;
        let ratio = makespan / ideal;
        let stats = sim.pool.stats();
        let per_server: Vec<u64> = stats.servers.iter().map(|s| s.succeeded).collect();
        println!(
            "steal={steal}: makespan {makespan} ms, ideal {ideal:.0} ms, ratio {ratio:.3}, \
             jobs per server {per_server:?}, steals {:?}",
            sim.counts.get("steals taken")
        );
        if steal {
            assert!(ratio <= 1.10, "ratio {ratio}");
        }
    }
}

#[test]
fn seeded_chaos() {
    let speeds = [50, 100, 150, 200];
    let world = World {
        retryable: 0.03,
        fatal: 0.002,
        uncertain: 0.02,
        lost_after_post: 0.01,
        flaky_lookup: 0.1,
        outages: Some((1_000, 60_000)),
        consumer: Some((15, 40)),
        latency: (1, 20),
        jitter: true,
        bursts: true,
    };
    let config = PoolConfig::default();
    let mut sim = Sim::new(0x5EED_CAFE, &speeds, config, world, 10_000);
    let end = sim.run(900_000);
    assert_eq!(sim.finished.len(), 10_000);
    let stats = sim.pool.stats();
    assert_eq!(stats.finished, 10_000);
    assert_eq!(stats.unconsumed, 0);
    // Jobs that ran to success more than once (at-least-once) were still finished once.
    let mut runs: BTreeMap<JobId, u32> = BTreeMap::new();
    for ((job, _), (_, truth)) in &sim.truth {
        if *truth == Truth::RanOk {
            *runs.entry(*job).or_default() += 1;
        }
    }
    let twice = runs.values().filter(|n| **n > 1).count();
    println!("chaos: all 10000 jobs finished by {end} ms (simulated)");
    println!("chaos: succeeded jobs that ran to success more than once: {twice}");
    println!(
        "chaos: most unconsumed at once {} (limit {})",
        sim.max_unconsumed_seen,
        sim.pool.unconsumed_limit()
    );
    for (what, n) in &sim.counts {
        println!("chaos: {what}: {n}");
    }
    for (i, s) in stats.servers.iter().enumerate() {
        println!(
            "chaos: server {i} ({} ms): dispatched {}, succeeded {}, failed {}, stolen {}, mean {:?}",
            speeds[i], s.dispatched, s.succeeded, s.failed, s.stolen, s.mean_job_time
        );
    }
    let failed = sim.counts.get("failed").copied().unwrap_or(0);
    assert!(failed < 500, "{failed} jobs failed");
    assert!(sim.counts.get("stale results").copied().unwrap_or(0) > 0);
    assert!(sim.counts.get("lookups: pending").copied().unwrap_or(0) > 0);
    assert!(sim.counts.get("lookups: unknown").copied().unwrap_or(0) > 0);
}

/// A failed health check: nothing listens at the server's address.
fn refused() -> comfy_proxy::ExchangeError {
    comfy_proxy::ExchangeError::Transport(comfy_proxy::TransportError::new(
        comfy_proxy::TransportErrorKind::Refused,
        "GET /system_stats",
    ))
}
