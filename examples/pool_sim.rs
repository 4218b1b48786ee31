//! The scheduler at scale, in simulated time: N servers (1,000 by default) run M jobs (1,000,000
//! by default), all submitted at once. Each server runs its jobs one after the other, at its own
//! speed (200 to 500 ms a job); one job in 1,000 fails and is retried. Reports the wall time, the
//! cost per job, the memory per queued job and the peak memory. A one-off measurement, not a
//! test: run it by hand.
//!
//! ```sh
//! cargo run --release --example pool_sim -- 1000 1000000
//! cargo run --release --example pool_sim -- 1000 1000000 nosteal   # work stealing off
//! ```

// The wall clock measures this harness; the scheduler itself runs on simulated time.
#![allow(clippy::disallowed_methods)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use comfy_proxy::pool::{Action, JobId, JobOutcome, JobResult, PoolConfig, Scheduler};

/// A figure from `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB; 0 where there is none.
fn proc_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// One simulated server: the attempts the scheduler gave it, in order.
struct Sim {
    queue: VecDeque<(JobId, u32)>,
    busy: bool,
    job_time: Duration,
}

fn main() {
    let servers = arg(1, 1000);
    let jobs = arg(2, 1_000_000) as u64;
    let mut config = PoolConfig::default();
    config.health_interval = Some(Duration::from_secs(30));
    config.steal = std::env::args().nth(3).as_deref() != Some("nosteal");
    let mut pool = Scheduler::new(servers, config);
    let mut sims: Vec<Sim> = (0..servers)
        .map(|i| Sim {
            queue: VecDeque::new(),
            busy: false,
            job_time: Duration::from_millis(200 + (i as u64 * 37) % 300),
        })
        .collect();

    let rss_before = proc_kib("VmRSS");
    let start = Instant::now();
    let mut now = Duration::ZERO;
    for n in 0..jobs {
        pool.submit(now, JobId(n)).expect("ids are unique");
    }
    let submitted = start.elapsed();
    let rss_queued = proc_kib("VmRSS");

    // (when, seq, server): a server finishes the attempt at the front of its queue.
    let mut done: BinaryHeap<Reverse<(Duration, u64, usize)>> = BinaryHeap::new();
    let (mut seq, mut succeeded, mut failed, mut decisions) = (0u64, 0u64, 0u64, 0u64);
    let mut touched: Vec<usize> = Vec::new();
    let run_start = Instant::now();
    loop {
        while let Some(action) = pool.poll_action(now) {
            decisions += 1;
            match action {
                Action::Dispatch {
                    job,
                    server,
                    attempt,
                } => {
                    sims[server.0].queue.push_back((job, attempt));
                    touched.push(server.0);
                }
                Action::Finished { job, outcome } => {
                    match outcome {
                        JobOutcome::Succeeded { .. } => succeeded += 1,
                        _ => failed += 1,
                    }
                    pool.handle_consumed(job).expect("finished");
                }
                Action::HealthCheck { server } => {
                    pool.handle_health(now, server, Ok(()))
                        .expect("known server");
                }
                Action::Steal {
                    job,
                    attempt,
                    server: from,
                    ..
                } => {
                    let sim = &mut sims[from.0];
                    let at = sim.queue.iter().position(|&(j, _)| j == job);
                    // The front attempt is the one running: it cannot be taken back.
                    let taken = at.is_some_and(|at| at > 0 || !sim.busy);
                    if let (Some(at), true) = (at, taken) {
                        sim.queue.remove(at);
                    }
                    pool.handle_steal(now, job, attempt, taken)
                        .expect("known job");
                }
                _ => {}
            }
        }
        // Idle servers that were given work start the next attempt they hold.
        for i in touched.drain(..) {
            let sim = &mut sims[i];
            if !sim.busy
                && let Some(&(job, attempt)) = sim.queue.front()
            {
                sim.busy = true;
                pool.handle_started(now, job, attempt).expect("known job");
                seq += 1;
                done.push(Reverse((now + sim.job_time, seq, i)));
            }
        }
        let next_done = done.peek().map(|Reverse((t, ..))| *t);
        let next_timer = pool.poll_timeout();
        if next_done.is_none() && pool.is_idle() {
            break; // only the periodic health checks are left
        }
        match (next_done, next_timer) {
            (None, None) => panic!("the pool waits for nothing but is not idle"),
            (Some(d), Some(t)) if t < d => {
                now = t;
                pool.handle_timeout(now);
            }
            (None, Some(t)) => {
                now = t;
                pool.handle_timeout(now);
            }
            (Some(_), _) => {
                let Some(Reverse((t, _, i))) = done.pop() else {
                    continue;
                };
                now = t;
                let sim = &mut sims[i];
                sim.busy = false;
                touched.push(i);
                let Some((job, attempt)) = sim.queue.pop_front() else {
                    continue;
                };
                let result = if job.0 % 1000 == 999 && attempt == 1 {
                    JobResult::failed(true, false, "simulated failure")
                } else {
                    JobResult::Success
                };
                pool.handle_result(now, job, attempt, result)
                    .expect("known job");
            }
        }
    }
    let ran = run_start.elapsed();
    let wall = start.elapsed();
    let queued_bytes = rss_queued.saturating_sub(rss_before) * 1024;
    let steal = pool.config().steal;
    println!("servers: {servers}, jobs: {jobs}, steal: {steal}, simulated time: {now:?}");
    println!("succeeded: {succeeded}, failed: {failed}, actions: {decisions}");
    println!(
        "wall: {wall:.2?} (submitting {submitted:.2?}, running {ran:.2?}), {:.0} ns per job",
        wall.as_nanos() as f64 / jobs as f64
    );
    println!(
        "memory per queued job: {} B (RSS {} MiB before submitting, {} MiB with every job queued)",
        queued_bytes / jobs.max(1),
        rss_before / 1024,
        rss_queued / 1024
    );
    println!("peak memory (VmHWM): {} MiB", proc_kib("VmHWM") / 1024);
    assert_eq!(succeeded, jobs, "every job succeeds in the end");
}
