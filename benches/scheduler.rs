//! The scheduler's cost per decision as the pool grows: 4, 64 and 1,000 servers.
//!
//! Each iteration is one cycle of a pool that is kept full: the oldest job in flight reports
//! success, a new job is submitted, the actions are drained (one dispatch, one finish) and the
//! next timeout is asked for, as a driver does after every input. Time is simulated: the clock
//! moves 1 ms per cycle, so servers' mean job times differ and change.
//!
//! - `dispatch/N`: a backlog of queued jobs, the steady state of a long run;
//! - `dispatch_tail/N`: nothing queued, the end of a run, where a free server may steal;
//! - `dispatch_health/N`: with a backlog and periodic health checks (every 5 s per server).
//!
//! Run with `cargo bench --bench scheduler`.

use std::collections::VecDeque;
use std::time::Duration;

use comfy_proxy::pool::{Action, JobId, JobResult, PoolConfig, Scheduler};
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const SERVERS: &[usize] = &[4, 64, 1000];

/// A pool kept full, and the jobs on its servers, oldest first.
struct Sim {
    pool: Scheduler,
    now: Duration,
    next_job: u64,
    in_flight: VecDeque<(JobId, u32)>,
}

impl Sim {
    fn new(servers: usize, backlog: usize, config: PoolConfig) -> Self {
        let per_server = config.per_server.max(1);
        let mut sim = Self {
            pool: Scheduler::new(servers, config),
            now: Duration::ZERO,
            next_job: 0,
            in_flight: VecDeque::new(),
        };
        for _ in 0..servers * per_server + backlog {
            sim.submit();
        }
        sim.drain();
        // Warm up: every server gets a mean job time.
        for _ in 0..servers * per_server * 4 {
            sim.cycle();
        }
        sim
    }

    fn submit(&mut self) {
        self.pool.submit(self.now, JobId(self.next_job)).unwrap();
        self.next_job += 1;
    }

    fn drain(&mut self) {
        while let Some(action) = self.pool.poll_action(self.now) {
            match action {
                Action::Dispatch { job, attempt, .. } => {
                    self.pool.handle_started(self.now, job, attempt).unwrap();
                    self.in_flight.push_back((job, attempt));
                }
                Action::Finished { job, .. } => self.pool.handle_consumed(job).unwrap(),
                Action::Steal { job, attempt, .. } => {
                    self.pool
                        .handle_steal(self.now, job, attempt, false)
                        .unwrap();
                }
                Action::HealthCheck { server } => {
                    self.pool.handle_health(self.now, server, Ok(())).unwrap();
                }
                _ => {}
            }
        }
    }

    /// One decision: a result, a submission, the actions, the next timeout.
    fn cycle(&mut self) -> Option<Duration> {
        self.now += Duration::from_millis(1);
        if self.pool.poll_timeout().is_some_and(|t| t <= self.now) {
            self.pool.handle_timeout(self.now);
        }
        if let Some((job, attempt)) = self.in_flight.pop_front() {
            self.pool
                .handle_result(self.now, job, attempt, JobResult::Success)
                .unwrap();
        }
        self.submit();
        self.drain();
        self.pool.poll_timeout()
    }
}

fn run(bencher: Bencher, mut sim: Sim) {
    bencher.bench_local(|| black_box(sim.cycle()));
}

#[divan::bench(args = SERVERS)]
fn dispatch(bencher: Bencher, servers: usize) {
    run(bencher, Sim::new(servers, 1000, PoolConfig::default()));
}

#[divan::bench(args = SERVERS)]
fn dispatch_tail(bencher: Bencher, servers: usize) {
    run(bencher, Sim::new(servers, 0, PoolConfig::default()));
}

#[divan::bench(args = SERVERS)]
fn dispatch_health(bencher: Bencher, servers: usize) {
    let mut config = PoolConfig::default();
    config.health_interval = Some(Duration::from_secs(5));
    run(bencher, Sim::new(servers, 1000, config));
}
