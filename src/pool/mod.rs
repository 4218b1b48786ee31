//! The scheduler of a pool of ComfyUI servers: which job runs where, when a server is taken out
//! and brought back, and when a job is retried, moved or ended.
//!
//! # How it works
//!
//! The driver owns one [`Session`](crate::session::Session) per server and a [`Scheduler`]
//! that decides; the scheduler does no IO and reads no clock. Jobs wait in a queue and are
//! dispatched while a server has a free slot ([`PoolConfig::per_server`], so that a server
//! always has the next prompt queued when one finishes). Among servers with a free slot it
//! picks the least loaded (our jobs there plus other clients' prompts, estimated from
//! `status.queue_remaining`), then the fastest (moving average of job times), then the first.
//! A retried job avoids the server that just failed it when another has a slot.
//!
//! Each server has a circuit breaker: [`PoolConfig::failure_threshold`] failures in a row
//! (server errors, failed health checks, retryable job failures) take it out of service for a
//! backoff; then one health check decides: pass, and it is back; fail, and it stays out twice as
//! long. Its jobs are not simply re-run: a job that may have run (the connection dropped after
//! the prompt was posted, or its server was taken out) is *uncertain*. The scheduler asks the
//! driver to look it up on that server as soon as the server can be asked, and runs it again
//! only if the server does not know it; if the server stays unreachable for
//! [`PoolConfig::lookup_give_up`], the attempt is cancelled and the job runs elsewhere anyway.
//!
//! Every dispatch is a new numbered attempt. A report about an attempt that is no longer the
//! job's current one is [`Handled::Stale`] and changes nothing, so a job ends exactly once:
//! one [`Action::Finished`], after success, a failure that is not retryable, its attempts
//! spent, or every server being out for [`PoolConfig::all_down_give_up`].
//!
//! When nothing is queued, a fast server with a free slot may steal a job that waits, not yet
//! started, on a clearly slower one ([`Action::Steal`]); the job moves only once the driver
//! confirms it was taken off the slow server, so it never runs twice.
//!
//! Finished jobs the consumer has not taken yet count, with jobs in flight, against
//! [`PoolConfig::max_unconsumed`]: a slow consumer slows dispatch instead of growing memory.
//!
//! # The pool machine
//!
//! [`Pool`] wraps the scheduler with everything else a pool decides: jobs' graphs, uploads
//! and held outputs, capability routing by `/object_info/{class}`, health checks, lookups,
//! steals, which servers can be reached, and each job's [`JobReport`] with a typed
//! [`JobError`]. It asks for I/O with [`Io`] (every HTTP request with its deadline) and is
//! what the runtime driver and the chaos test both drive. A half-open breaker's health check
//! is one of those requests, so its answer (or its timeout) always comes.
//!
//! # Driving it
//!
//! Mutate once (a `submit` or a `handle_*`), then drain [`Scheduler::poll_action`] until it
//! returns `None`; sleep until [`Scheduler::poll_timeout`] or the next input, and call
//! [`Scheduler::handle_timeout`] when the time has come. `now` is any monotonic clock the driver
//! likes, as a [`Duration`] since an epoch of its choosing.
//!
//! ```
//! use std::time::Duration;
//! use comfy_proxy::pool::{Action, JobId, JobOutcome, JobResult, PoolConfig, Scheduler};
//!
//! let mut pool = Scheduler::new(2, PoolConfig::default());
//! let mut now = Duration::ZERO;
//! for n in 0..5 {
//!     pool.submit(now, JobId(n)).unwrap();
//! }
//! let mut posted = Vec::new(); // what a real driver hands to the server's session
//! let mut succeeded = 0;
//! while !pool.is_idle() {
//!     while let Some(action) = pool.poll_action(now) {
//!         match action {
//!             Action::Dispatch { job, server, attempt } => posted.push((job, server, attempt)),
//!             Action::Finished { job, outcome } => {
//!                 if let JobOutcome::Succeeded { .. } = outcome {
//!                     succeeded += 1;
//!                 }
//!                 pool.handle_consumed(job).unwrap(); // when the consumer took it
//!             }
//!             Action::Steal { job, attempt, .. } => {
//!                 // Delete it from that server's queue; report whether it was still there.
//!                 pool.handle_steal(now, job, attempt, false).unwrap();
//!             }
//!             // Health checks, lookups and cancels go to the server in question.
//!             _ => {}
//!         }
//!     }
//!     // The servers run what was posted; the driver reports back.
//!     now += Duration::from_millis(100);
//!     for (job, _server, attempt) in posted.drain(..) {
//!         pool.handle_started(now, job, attempt).unwrap();
//!         pool.handle_result(now, job, attempt, JobResult::Success).unwrap();
//!     }
//!     if pool.poll_timeout().is_some_and(|at| at <= now) {
//!         pool.handle_timeout(now);
//!     }
//! }
//! assert_eq!(succeeded, 5);
//! assert_eq!(pool.stats().finished, 5);
//! ```

mod caps;
mod control;
mod engine;
mod exchange;
mod index;
mod inputs;
mod machine;
mod queue;
mod report;
mod routing;
mod server;
mod status;
mod types;

#[cfg(test)]
mod control_tests;
#[cfg(test)]
mod machine_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

pub use types::{
    Action, BreakerBackoff, BreakerState, Handled, JobId, JobOutcome, JobResult, Lookup,
    PoolConfig, PoolMisuse, PoolStats, ServerId, ServerStats,
};

pub use control::JobOptions;
pub use machine::{HttpId, Io, Pool, PoolSettings};
pub use queue::EventQueue;
pub use report::{EventDetail, JobError, JobReport, PoolEvent, Upload};
pub use status::StatusBuffer;

use engine::{Ask, Job, State, Steal};
use server::{Breaker, Server};

/// The pool's scheduler. See the [module docs](self) for how it works and how to drive it.
#[derive(Debug)]
pub struct Scheduler {
    config: PoolConfig,
    /// Unconsumed plus in-flight jobs at most.
    limit: usize,
    servers: index::Servers,
    /// Every job from submission until consumed. Ordered, so that the core is deterministic.
    jobs: BTreeMap<JobId, Job>,
    /// Jobs waiting for a server, in the order they go out.
    queue: VecDeque<JobId>,
    /// Jobs whose fate on their server is being found out (they carry timers).
    uncertain: BTreeSet<JobId>,
    actions: VecDeque<Action>,
    /// Jobs on a server (running or uncertain).
    in_flight: usize,
    unconsumed: usize,
    finished: u64,
}

impl Scheduler {
    /// A scheduler for `servers` servers, known as `ServerId(0)` to `ServerId(servers - 1)`, all
    /// in service. Counts in `config` below 1 are taken as 1.
    pub fn new(servers: usize, mut config: PoolConfig) -> Self {
        config.per_server = config.per_server.max(1);
        config.attempts = config.attempts.max(1);
        config.failure_threshold = config.failure_threshold.max(1);
        let limit = config
            .max_unconsumed
            .unwrap_or_else(|| servers.saturating_mul(config.per_server).saturating_mul(2))
            .max(1);
        Self {
            config,
            limit,
            servers: (0..servers).map(|_| Server::new()).collect(),
            jobs: BTreeMap::new(),
            queue: VecDeque::new(),
            uncertain: BTreeSet::new(),
            actions: VecDeque::new(),
            in_flight: 0,
            unconsumed: 0,
            finished: 0,
        }
    }

    /// The settings in force (after counts below 1 were raised).
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Jobs finished but not consumed, plus jobs in flight, at most (see
    /// [`PoolConfig::max_unconsumed`]).
    pub fn unconsumed_limit(&self) -> usize {
        self.limit
    }

    /// Queues a job. It is dispatched from [`Scheduler::poll_action`] when a server has room.
    pub fn submit(&mut self, _now: Duration, job: JobId) -> Result<(), PoolMisuse> {
        if self.servers.is_empty() {
            return Err(PoolMisuse::NoServers);
        }
        if self.jobs.contains_key(&job) {
            return Err(PoolMisuse::DuplicateJob(job));
        }
        self.jobs.insert(
            job,
            Job {
                state: State::Queued,
                attempt: 0,
                failures: 0,
                last_error: None,
                avoid: None,
                eligible: None,
                front: false,
            },
        );
        self.queue.push_back(job);
        Ok(())
    }

    /// Restricts a job to the servers that can run it (capability routing: their
    /// `object_info` lists every class and model file it needs). A job never goes to another
    /// server, nor is it stolen by one. Callable while the job waits, e.g. after a server came
    /// back from a restart with other models. An empty list is misuse: fail such a job instead.
    pub fn set_eligible(&mut self, job: JobId, servers: &[ServerId]) -> Result<(), PoolMisuse> {
        if servers.is_empty() {
            return Err(PoolMisuse::NoServers);
        }
        if let Some(bad) = servers.iter().find(|s| s.0 >= self.servers.len()) {
            return Err(PoolMisuse::UnknownServer(*bad));
        }
        let j = self.jobs.get_mut(&job).ok_or(PoolMisuse::UnknownJob(job))?;
        j.eligible = Some(servers.iter().map(|s| s.0).collect());
        Ok(())
    }

    /// The server accepted the attempt's prompt (`POST /prompt` answered 200). Used to time
    /// jobs when the start of execution is not reported.
    pub fn handle_accepted(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
    ) -> Result<Handled, PoolMisuse> {
        self.stamp(job, attempt, |run| run.accepted_at.get_or_insert(now))
    }

    /// The attempt started executing on its server (`execution_start`). From then on it is not
    /// stolen, and its duration is timed from here.
    pub fn handle_started(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
    ) -> Result<Handled, PoolMisuse> {
        self.stamp(job, attempt, |run| run.started_at.get_or_insert(now))
    }

    /// Records a moment of the current attempt's run; a report about another attempt is stale.
    fn stamp(
        &mut self,
        job: JobId,
        attempt: u32,
        mark: impl FnOnce(&mut engine::Run) -> &mut Duration,
    ) -> Result<Handled, PoolMisuse> {
        if self.current(job, attempt)?.is_none() {
            return Ok(Handled::Stale);
        }
        if let Some(run) = self.run_mut(job) {
            mark(run);
        }
        Ok(Handled::Applied)
    }

    /// What became of an attempt. A success ends the job; a failure that is not retryable
    /// ends it at once; a retryable one runs it again (on another server if one has room)
    /// until [`PoolConfig::attempts`] are spent; an uncertain one is looked up first. Retryable
    /// failures count against the server's breaker.
    pub fn handle_result(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
        result: JobResult,
    ) -> Result<Handled, PoolMisuse> {
        let Some((run, uncertain)) = self.current(job, attempt)? else {
            return Ok(Handled::Stale);
        };
        let s = run.server;
        match result {
            JobResult::Success => {
                self.release(now, job, &run);
                let server = &mut self.servers[s];
                server.succeeded += 1;
                server.record_success();
                if !uncertain {
                    let from = run
                        .started_at
                        .or(run.accepted_at)
                        .unwrap_or(run.dispatched_at);
                    server.record_duration(now.saturating_sub(from));
                }
                let outcome = JobOutcome::Succeeded {
                    server: ServerId(s),
                    attempt,
                };
                self.end(job, outcome);
            }
            JobResult::Failed {
                retryable: false,
                error,
                ..
            } => {
                self.release(now, job, &run);
                self.servers[s].failed += 1;
                let attempts = self.jobs.get(&job).map_or(attempt, |j| j.attempt);
                self.end(job, JobOutcome::Failed { error, attempts });
            }
            JobResult::Failed {
                uncertain: true,
                error,
                ..
            } => {
                self.make_uncertain(now, job, error.clone());
                self.server_failure(now, s, error);
                self.ask_if_idle(now, job);
            }
            JobResult::Failed { error, .. } => {
                self.release(now, job, &run);
                self.servers[s].failed += 1;
                self.server_failure(now, s, error.clone());
                self.retry_or_fail(job, Some(s), error);
            }
        }
        Ok(Handled::Applied)
    }

    /// The answer to an [`Action::Lookup`]. Finished ok ends the job, succeeded by that
    /// attempt; finished failed, or unknown, counts as a failed attempt and runs the job again
    /// (elsewhere if a server has room); pending or unreachable asks again after
    /// [`PoolConfig::lookup_interval`]. `Stale` when the answer is no longer needed (the job's
    /// result arrived meanwhile, or the job moved on).
    pub fn handle_lookup(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
        result: Lookup,
    ) -> Result<Handled, PoolMisuse> {
        let Some((run, true)) = self.current(job, attempt)? else {
            return Ok(Handled::Stale);
        };
        let s = run.server;
        let error = match self.jobs.get(&job).map(|j| &j.state) {
            Some(State::Uncertain(_, doubt)) => doubt.error.clone(),
            _ => String::new(),
        };
        match result {
            Lookup::Finished { ok: true } => {
                self.release(now, job, &run);
                self.servers[s].succeeded += 1;
                self.servers[s].record_success();
                let outcome = JobOutcome::Succeeded {
                    server: ServerId(s),
                    attempt,
                };
                self.end(job, outcome);
            }
            Lookup::Finished { ok: false } | Lookup::Unknown => {
                self.release(now, job, &run);
                // The driver may still hold the abandoned attempt (a post that never got an
                // answer): it must stop waiting for it, and the server must not run it later.
                self.actions.push_back(Action::Cancel {
                    job,
                    server: ServerId(s),
                    attempt,
                });
                self.servers[s].failed += 1;
                let error = if result == Lookup::Unknown {
                    format!("{error} (server {s} has no record of it)")
                } else {
                    format!("{error} (server {s}'s history shows the run failed)")
                };
                self.retry_or_fail(job, Some(s), error);
            }
            Lookup::Pending | Lookup::Unreachable => {
                let again = now.saturating_add(self.config.lookup_interval);
                if let Some(Job {
                    state: State::Uncertain(_, doubt),
                    ..
                }) = self.jobs.get_mut(&job)
                {
                    doubt.ask = Ask::At(again);
                    if result == Lookup::Pending {
                        doubt.unreachable_since = None;
                    } else {
                        doubt.unreachable_since.get_or_insert(now);
                    }
                }
                if result == Lookup::Unreachable {
                    let why = format!("lookup of job {job} failed: server unreachable");
                    self.server_failure(now, s, why);
                }
            }
        }
        Ok(Handled::Applied)
    }

    /// The answer to an [`Action::Steal`]: `taken` when the attempt was removed from its
    /// server before it started (so it will not run there). The job is then dispatched anew to
    /// the faster server; otherwise it stays where it is and is not stolen again. If its server
    /// was taken out of service meanwhile, a job taken back is queued again without a lookup.
    pub fn handle_steal(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
        taken: bool,
    ) -> Result<Handled, PoolMisuse> {
        let Some((run, uncertain)) = self.current(job, attempt)? else {
            return Ok(Handled::Stale);
        };
        let to = match (run.steal, uncertain) {
            (Steal::Pending { to }, false) => to,
            (Steal::Orphaned, true) => {
                // Its server was taken out meanwhile. Taken back, it is known not to run there:
                // no lookup is needed, and it does not count against the budget.
                if taken {
                    self.release(now, job, &run);
                    self.servers[run.server].stolen += 1;
                    if let Some(j) = self.jobs.get_mut(&job) {
                        j.state = State::Queued;
                        j.avoid = Some(run.server);
                    }
                    self.queue.push_front(job);
                } else if let Some(r) = self.run_mut(job) {
                    r.steal = Steal::Refused;
                }
                return Ok(Handled::Applied);
            }
            _ => return Ok(Handled::Stale),
        };
        if !taken {
            self.servers[to].reserved = self.servers[to].reserved.saturating_sub(1);
            if let Some(r) = self.run_mut(job) {
                r.steal = Steal::Refused;
            }
            return Ok(Handled::Applied);
        }
        self.release(now, job, &run);
        self.servers[run.server].stolen += 1;
        if let Some(j) = self.jobs.get_mut(&job) {
            j.state = State::Queued;
        }
        if self.servers[to].has_slot(self.config.per_server) {
            self.dispatch(now, job, to);
        } else {
            self.queue.push_front(job);
        }
        Ok(Handled::Applied)
    }

    /// The consumer took the finished job: it no longer counts against the unconsumed limit,
    /// and the scheduler forgets it (its id may be used again).
    pub fn handle_consumed(&mut self, job: JobId) -> Result<(), PoolMisuse> {
        match self.jobs.get(&job).map(|j| &j.state) {
            None => Err(PoolMisuse::UnknownJob(job)),
            Some(State::Done) => {
                self.jobs.remove(&job);
                self.unconsumed = self.unconsumed.saturating_sub(1);
                Ok(())
            }
            Some(_) => Err(PoolMisuse::NotFinished(job)),
        }
    }

    /// A transport failure the driver saw on `server` (websocket refused or dropped, a request
    /// failed). Counts toward its breaker.
    pub fn handle_server_error(
        &mut self,
        now: Duration,
        server: ServerId,
        error: impl Into<String>,
    ) -> Result<(), PoolMisuse> {
        self.server_index(server)?;
        self.server_failure(now, server.0, error.into());
        Ok(())
    }

    /// The answer to an [`Action::HealthCheck`]. While the server is out waiting for its
    /// check, a pass puts it back in service and a failure keeps it out twice as long; in
    /// service, a failure counts toward its breaker. Ignored while the breaker is open.
    pub fn handle_health(
        &mut self,
        now: Duration,
        server: ServerId,
        result: Result<(), crate::error::ExchangeError>,
    ) -> Result<(), PoolMisuse> {
        let i = self.server_index(server)?;
        self.servers[i].health_asked = false;
        match (self.servers[i].breaker, result) {
            (Breaker::HalfOpen { .. }, Ok(())) => self.on_close(now, i),
            // A server that answers `/system_stats` may still fail every job (it accepts prompts
            // and never runs them): only a job's success clears its count of failures.
            (Breaker::Closed, Ok(())) => {}
            (Breaker::Open { .. }, _) => {}
            (_, Err(error)) => self.server_failure(now, i, format!("health check: {error}")),
        }
        Ok(())
    }

    /// The server's `status.queue_remaining`: every client's prompts waiting or running there.
    /// Whatever is not ours is other clients' load, and dispatch balances it.
    pub fn handle_queue_status(
        &mut self,
        server: ServerId,
        remaining: u64,
    ) -> Result<(), PoolMisuse> {
        let i = self.server_index(server)?;
        let ours = self.servers[i].jobs.len() as u64;
        self.servers[i].external = remaining.saturating_sub(ours);
        Ok(())
    }

    /// The next thing to do, or `None` when there is nothing until the next input or timeout.
    /// Dispatch and steal decisions are made here, at `now`.
    #[must_use]
    pub fn poll_action(&mut self, now: Duration) -> Option<Action> {
        if self.actions.is_empty() {
            self.schedule(now);
        }
        self.actions.pop_front()
    }

    /// When [`Scheduler::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.next_timer()
    }

    /// Fires every timer due at `now`: breaker backoffs, health checks, lookups asked again,
    /// give-ups. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.fire_timers(now);
    }

    /// Whether the consumer reading a finished job's report would let the pool go on now: a
    /// queued job waits only for room under the unconsumed limit, or nothing is in flight
    /// (so no event will come before the consumer reads). Otherwise a driver whose consumer
    /// reads reports on another thread can hear of them on its next turn, without a wake-up
    /// for each.
    pub fn waits_on_consumer(&self) -> bool {
        self.unconsumed > 0
            && (self.in_flight == 0
                || (!self.queue.is_empty()
                    && self.unconsumed.saturating_add(self.in_flight) >= self.limit))
    }

    /// No job is queued or on a server, and no action waits to be polled: every submitted job
    /// has been reported finished.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0 && self.actions.is_empty()
    }

    /// A snapshot of the pool; each server's busy time counts the intervals that have ended.
    pub fn stats(&self) -> PoolStats {
        self.snapshot(None)
    }

    /// A snapshot of the pool at `now`: busy times include the current interval.
    pub fn stats_at(&self, now: Duration) -> PoolStats {
        self.snapshot(Some(now))
    }

    fn snapshot(&self, now: Option<Duration>) -> PoolStats {
        PoolStats {
            servers: self.servers.iter().map(|s| s.stats(now)).collect(),
            queued: self.queue.len(),
            in_flight: self.in_flight,
            unconsumed: self.unconsumed,
            finished: self.finished,
        }
    }

    fn server_index(&self, server: ServerId) -> Result<usize, PoolMisuse> {
        if server.0 < self.servers.len() {
            Ok(server.0)
        } else {
            Err(PoolMisuse::UnknownServer(server))
        }
    }
}
