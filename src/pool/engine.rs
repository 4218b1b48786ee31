//! The scheduler's inner moves: job states, dispatch, stealing, failures and timers.

use std::time::Duration;

use super::Scheduler;
use super::types::{Action, JobId, JobOutcome, PoolMisuse, ServerId};

/// One job the pool holds, from submission until it is consumed.
#[derive(Debug)]
pub(super) struct Job {
    pub state: State,
    /// The latest attempt dispatched (0 before the first).
    pub attempt: u32,
    /// Attempts that count against the budget: failed, lost or given up on.
    pub failures: u32,
    pub last_error: Option<String>,
    /// The server that just failed it, to avoid when another is free.
    pub avoid: Option<usize>,
    /// The servers that can run it (capability routing); `None` for any.
    pub eligible: Option<Vec<usize>>,
    /// Submitted with priority: it waits ahead of every job without.
    pub front: bool,
}

/// Where a job is. Transitions:
///
/// | from | on | to |
/// | --- | --- | --- |
/// | `Queued` | a server has a slot | `Running` (new attempt) |
/// | `Running` | success | `Done` |
/// | `Running` | failure, not retryable | `Done` |
/// | `Running` | failure, retryable and certain | `Queued`, or `Done` with the budget spent |
/// | `Running` | failure, uncertain; or its server's breaker opens | `Uncertain` |
/// | `Running` | steal confirmed | `Queued` (not counted), dispatched to the thief at once |
/// | `Uncertain` | lookup: finished ok; or success | `Done` |
/// | `Uncertain` | lookup: unknown or finished failed; give-up timer (server unreachable, or lookup unanswered, for `lookup_give_up`) | `Queued`, or `Done` |
/// | `Uncertain` | lookup: pending or unreachable | `Uncertain`, asks again later |
/// | `Queued` | every server out for `all_down_give_up` | `Done` |
#[derive(Debug)]
pub(super) enum State {
    Queued,
    Running(Run),
    Uncertain(Run, Doubt),
    Done,
}

/// One dispatched attempt.
#[derive(Debug, Clone, Copy)]
pub(super) struct Run {
    pub server: usize,
    pub attempt: u32,
    pub dispatched_at: Duration,
    pub accepted_at: Option<Duration>,
    pub started_at: Option<Duration>,
    pub steal: Steal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Steal {
    /// May be stolen while it has not started.
    Open,
    /// The driver was asked to take it back for server `to`, which holds a slot for it.
    Pending { to: usize },
    /// Not to be stolen (a steal failed, or its fate is uncertain).
    Refused,
    /// A steal was asked, then its server was taken out: the slot held for it is freed, but
    /// the driver's answer still tells whether the attempt can run.
    Orphaned,
}

/// Why an attempt's fate is uncertain, and how the scheduler is finding out.
#[derive(Debug)]
pub(super) struct Doubt {
    pub error: String,
    /// Since when its server could not be asked; the give-up timer runs from here.
    pub unreachable_since: Option<Duration>,
    pub ask: Ask,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ask {
    /// Ask when the server is back in service.
    Idle,
    /// A lookup is out since then; unanswered for `lookup_give_up`, the job moves on.
    Asked(Duration),
    /// Ask again at this time.
    At(Duration),
}

/// A stolen job must be expected to finish at least a quarter sooner on the thief: the ratio
/// of the thief's estimate to the victim's must be below 4/5.
const STEAL_NUM: u32 = 4;
const STEAL_DEN: u32 = 5;

impl Scheduler {
    /// The job's attempt, if `attempt` names the one in flight; `Ok(None)` if it is stale.
    pub(super) fn current(
        &self,
        job: JobId,
        attempt: u32,
    ) -> Result<Option<(Run, bool)>, PoolMisuse> {
        let Some(j) = self.jobs.get(&job) else {
            return Ok(None);
        };
        if attempt == 0 || attempt > j.attempt {
            return Err(PoolMisuse::UnknownAttempt { job, attempt });
        }
        Ok(match &j.state {
            State::Running(run) if run.attempt == attempt => Some((*run, false)),
            State::Uncertain(run, _) if run.attempt == attempt => Some((*run, true)),
            _ => None,
        })
    }

    pub(super) fn run_mut(&mut self, job: JobId) -> Option<&mut Run> {
        match &mut self.jobs.get_mut(&job)?.state {
            State::Running(run) | State::Uncertain(run, _) => Some(run),
            _ => None,
        }
    }

    /// Frees the slot a steal of `run` held on the thief.
    fn void_steal(&mut self, run: &Run) {
        if let Steal::Pending { to } = run.steal
            && let Some(s) = self.servers.get_mut(to)
        {
            s.reserved = s.reserved.saturating_sub(1);
        }
    }

    /// Takes the job off its server: frees its slot and any slot held for stealing it.
    pub(super) fn release(&mut self, now: Duration, job: JobId, run: &Run) {
        if let Some(s) = self.servers.get_mut(run.server) {
            s.jobs.retain(|j| *j != job);
            s.track_busy(now);
        }
        self.void_steal(run);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.uncertain.remove(&job);
    }

    /// Ends a job that is on no server. Its only `Finished`.
    pub(super) fn end(&mut self, job: JobId, outcome: JobOutcome) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if matches!(j.state, State::Done) {
            return;
        }
        j.state = State::Done;
        self.unconsumed += 1;
        self.finished += 1;
        self.actions.push_back(Action::Finished { job, outcome });
    }

    /// An attempt of a job on no server failed, was lost or was given up on: queue it again in
    /// front, or fail it when its budget is spent.
    pub(super) fn retry_or_fail(&mut self, job: JobId, server: Option<usize>, error: String) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.failures = j.failures.saturating_add(1);
        j.avoid = server;
        if j.failures >= self.config.attempts {
            let attempts = j.attempt;
            self.end(job, JobOutcome::Failed { error, attempts });
        } else {
            j.last_error = Some(error);
            j.state = State::Queued;
            self.queue.push_front(job);
        }
    }

    /// Sends a queued job (already off the queue) to `server` as a new attempt.
    pub(super) fn dispatch(&mut self, now: Duration, job: JobId, server: usize) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        j.attempt = j.attempt.saturating_add(1);
        let attempt = j.attempt;
        j.state = State::Running(Run {
            server,
            attempt,
            dispatched_at: now,
            accepted_at: None,
            started_at: None,
            steal: Steal::Open,
        });
        if let Some(s) = self.servers.get_mut(server) {
            s.jobs.push(job);
            s.dispatched += 1;
            s.track_busy(now);
        }
        self.in_flight += 1;
        self.actions.push_back(Action::Dispatch {
            job,
            server: ServerId(server),
            attempt,
        });
    }

    /// The attempt in flight may have run, or may still: keep its slot and find out. While its
    /// server is in service and `unreachable_since` is unset, a lookup is asked at once.
    pub(super) fn make_uncertain(&mut self, now: Duration, job: JobId, error: String) {
        let closed = match self.jobs.get(&job).map(|j| &j.state) {
            Some(State::Running(r) | State::Uncertain(r, _)) => {
                self.servers.get(r.server).is_some_and(|s| s.is_closed())
            }
            _ => false,
        };
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        match std::mem::replace(&mut j.state, State::Queued) {
            State::Running(mut run) => {
                let old = run;
                run.steal = match run.steal {
                    Steal::Pending { .. } => Steal::Orphaned,
                    _ => Steal::Refused,
                };
                j.state = State::Uncertain(
                    run,
                    Doubt {
                        error,
                        unreachable_since: (!closed).then_some(now),
                        ask: Ask::Idle,
                    },
                );
                self.void_steal(&old);
                self.uncertain.insert(job);
            }
            State::Uncertain(run, mut doubt) => {
                doubt.error = error;
                if !closed {
                    doubt.unreachable_since.get_or_insert(now);
                }
                j.state = State::Uncertain(run, doubt);
            }
            other => j.state = other,
        }
    }

    /// Asks for a lookup of an uncertain job whose server is in service, unless one is out.
    pub(super) fn ask_if_idle(&mut self, now: Duration, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let State::Uncertain(run, doubt) = &mut j.state else {
            return;
        };
        let closed = self.servers.get(run.server).is_some_and(|s| s.is_closed());
        if closed && doubt.ask == Ask::Idle {
            doubt.ask = Ask::Asked(now);
            self.actions.push_back(Action::Lookup {
                job,
                server: ServerId(run.server),
                attempt: run.attempt,
            });
        }
    }

    /// A failure of the server itself; opens its breaker when it is one too many.
    pub(super) fn server_failure(&mut self, now: Duration, server: usize, error: String) {
        let Some(s) = self.servers.get_mut(server) else {
            return;
        };
        s.last_error = Some(error);
        if s.record_failure(now, &self.config) {
            self.on_open(now, server);
        }
    }

    /// The server's breaker opened: nothing it holds is trusted to report back. Its jobs become
    /// uncertain, with the give-up timer running.
    fn on_open(&mut self, now: Duration, server: usize) {
        let held = self.servers[server].jobs.clone();
        let why = self.servers[server].last_error.clone().unwrap_or_default();
        for job in held {
            let Some(j) = self.jobs.get_mut(&job) else {
                continue;
            };
            if let State::Uncertain(_, doubt) = &mut j.state {
                doubt.unreachable_since.get_or_insert(now);
                if matches!(doubt.ask, Ask::At(_)) {
                    doubt.ask = Ask::Idle;
                }
            } else {
                let error = format!("server {server} was taken out of service: {why}");
                self.make_uncertain(now, job, error);
            }
        }
    }

    /// The server is back in service: ask about the jobs it may have run.
    pub(super) fn on_close(&mut self, now: Duration, server: usize) {
        self.servers[server].close(now, &self.config);
        for job in self.servers[server].jobs.clone() {
            self.ask_if_idle(now, job);
        }
    }

    /// Gives up on learning an uncertain attempt's fate: cancels it and runs the job elsewhere.
    fn abandon(&mut self, now: Duration, job: JobId) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let State::Uncertain(run, doubt) = std::mem::replace(&mut j.state, State::Queued) else {
            return;
        };
        self.actions.push_back(Action::Cancel {
            job,
            server: ServerId(run.server),
            attempt: run.attempt,
        });
        self.release(now, job, &run);
        self.servers[run.server].failed += 1;
        let error = format!(
            "server {} could not be asked for {:?} whether the job ran: {}",
            run.server, self.config.lookup_give_up, doubt.error
        );
        self.retry_or_fail(job, Some(run.server), error);
    }

    /// When every server has been out long enough for queued jobs to fail.
    pub(super) fn all_down_deadline(&self) -> Option<Duration> {
        if !self.servers.all_down() {
            return None;
        }
        let mut latest = Duration::ZERO;
        for s in &self.servers {
            latest = latest.max(s.down_since?);
        }
        (!self.servers.is_empty()).then(|| latest.saturating_add(self.config.all_down_give_up))
    }

    fn expire_all_down(&mut self, now: Duration) {
        if self.queue.is_empty() || self.all_down_deadline().is_none_or(|t| t > now) {
            return;
        }
        // Failed jobs are finished jobs too: no more of them than the consumer can hold.
        while self.unconsumed.saturating_add(self.in_flight) < self.limit {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            let Some(j) = self.jobs.get(&job) else {
                continue;
            };
            let mut error = format!(
                "every server is unreachable: all {} servers have been out of service for over {:?}",
                self.servers.len(),
                self.config.all_down_give_up
            );
            if let Some(last) = &j.last_error {
                error.push_str("; last error: ");
                error.push_str(last);
            }
            let attempts = j.attempt;
            self.end(job, JobOutcome::Failed { error, attempts });
        }
    }

    /// Dispatches queued jobs while slots and the unconsumed limit allow, then steals.
    pub(super) fn schedule(&mut self, now: Duration) {
        self.start_health_timers(now);
        self.expire_all_down(now);
        // The first queued job that a free server can run goes out; a job that only busy
        // servers can run does not hold up the jobs behind it.
        let mut i = 0;
        while i < self.queue.len() {
            if self.unconsumed.saturating_add(self.in_flight) >= self.limit {
                break;
            }
            let job = self.queue[i];
            self.servers.reindex(self.config.per_server);
            let (pick, restricted) = match self.jobs.get(&job) {
                Some(j) => (
                    self.pick_server_for(j.avoid, j.eligible.as_deref()),
                    j.eligible.is_some(),
                ),
                None => (self.pick_server_for(None, None), false),
            };
            match pick {
                Some(server) => {
                    self.queue.remove(i);
                    self.dispatch(now, job, server);
                }
                None if !restricted => break,
                None => i += 1,
            }
        }
        if self.config.steal && self.queue.is_empty() {
            self.steal_pass(now);
        }
    }

    /// The server with a free slot and the least load, then the fastest, then the first; one
    /// other than `avoid` if there is any.
    #[cfg(test)]
    pub(super) fn pick_server(&self, avoid: Option<usize>) -> Option<usize> {
        self.pick_server_for(avoid, None)
    }

    /// The server to dispatch to, as `pick_server` chooses, among `eligible` servers only.
    pub(super) fn pick_server_for(
        &self,
        avoid: Option<usize>,
        eligible: Option<&[usize]>,
    ) -> Option<usize> {
        self.servers.pick(self.config.per_server, avoid, eligible)
    }

    /// How long until the work already on `server` is done, by its mean job time.
    fn backlog(&self, now: Duration, server: usize, mean: Duration) -> Duration {
        let s = &self.servers[server];
        let mut total = mean.saturating_mul(s.reserved as u32);
        for job in &s.jobs {
            total = total.saturating_add(match self.jobs.get(job).map(|j| &j.state) {
                Some(State::Running(run)) => remaining(run, mean, now),
                _ => mean,
            });
        }
        let external = u32::try_from(s.external).unwrap_or(u32::MAX);
        total.saturating_add(mean.saturating_mul(external))
    }

    /// With nothing queued, lets each server with a free slot take back a job that waits, not
    /// started, where it would finish clearly later. One steal per free slot.
    ///
    /// Of all (thief, job) pairs it takes the one that gains the most time, the lowest thief,
    /// victim and place in the victim's queue on a tie. A job's gain is largest with the thief
    /// that would finish it first, so each job is weighed against that thief only: the cost is
    /// one look at each server's jobs, not one per thief.
    fn steal_pass(&mut self, now: Duration) {
        while let Some((job, from, to)) = self.steal_choice(now) {
            let Some(run) = self.run_mut(job) else {
                return;
            };
            run.steal = Steal::Pending { to };
            let attempt = run.attempt;
            self.servers[to].reserved += 1;
            self.actions.push_back(Action::Steal {
                job,
                server: ServerId(from),
                attempt,
                to: ServerId(to),
            });
        }
    }

    /// The next steal: the job, the server it waits on, the server to take it.
    pub(super) fn steal_choice(&mut self, now: Duration) -> Option<(JobId, usize, usize)> {
        self.servers.reindex(self.config.per_server);
        // Thieves by when they would finish one more job, then by id.
        let mut thieves: Vec<(Duration, usize)> = self
            .servers
            .with_slot()
            .into_iter()
            .filter_map(|to| {
                let fast = self.servers[to].ewma?;
                Some((self.backlog(now, to, fast).saturating_add(fast), to))
            })
            .collect();
        if thieves.is_empty() {
            return None;
        }
        thieves.sort_unstable();
        // (gain, thief, job, victim)
        let mut best: Option<(Duration, usize, JobId, usize)> = None;
        for (from, victim) in self.servers.iter().enumerate() {
            let Some(slow) = victim.ewma else { continue };
            if !victim.is_closed() {
                continue;
            }
            let mut ahead = Duration::ZERO;
            for &job in &victim.jobs {
                let j = self.jobs.get(&job);
                let Some(State::Running(run)) = j.map(|j| &j.state) else {
                    ahead = ahead.saturating_add(slow);
                    continue;
                };
                let here = ahead.saturating_add(slow);
                ahead = ahead.saturating_add(remaining(run, slow, now));
                if run.started_at.is_some() || run.steal != Steal::Open {
                    continue;
                }
                let eligible = j.and_then(|j| j.eligible.as_ref());
                let Some(&(there, to)) = thieves
                    .iter()
                    .find(|&&(_, to)| to != from && eligible.is_none_or(|e| e.contains(&to)))
                else {
                    continue;
                };
                if there.saturating_mul(STEAL_DEN) < here.saturating_mul(STEAL_NUM) {
                    let gain = here.saturating_sub(there);
                    if best.is_none_or(|b| gain > b.0 || (gain == b.0 && to < b.1)) {
                        best = Some((gain, to, job, from));
                    }
                }
            }
        }
        best.map(|(_, to, job, from)| (job, from, to))
    }

    /// Arms periodic health checks of servers in service that have none armed.
    fn start_health_timers(&mut self, now: Duration) {
        let Some(every) = self.config.health_interval else {
            return;
        };
        self.servers.reindex(self.config.per_server);
        for i in self.servers.unarmed() {
            self.servers[i].next_health = Some(now.saturating_add(every));
        }
    }

    /// The earliest timer.
    pub(super) fn next_timer(&self) -> Option<Duration> {
        let servers = self.servers.next_timer();
        let give_up = self.config.lookup_give_up;
        let jobs = self.uncertain.iter().flat_map(|job| {
            let mut at = [None, None];
            if let Some(State::Uncertain(_, d)) = self.jobs.get(job).map(|j| &j.state) {
                at[0] = d.unreachable_since.map(|t| t.saturating_add(give_up));
                at[1] = match d.ask {
                    Ask::At(t) => Some(t),
                    Ask::Asked(t) => Some(t.saturating_add(give_up)),
                    Ask::Idle => None,
                };
            }
            at.into_iter().flatten()
        });
        let room = self.unconsumed.saturating_add(self.in_flight) < self.limit;
        let all_down = if self.queue.is_empty() || !room {
            None
        } else {
            self.all_down_deadline()
        };
        servers.into_iter().chain(jobs).chain(all_down).min()
    }

    /// Fires every timer due at `now`.
    pub(super) fn fire_timers(&mut self, now: Duration) {
        use super::server::Breaker;
        let every = self.config.health_interval;
        self.servers.reindex(self.config.per_server);
        for i in self.servers.due(now) {
            let s = &mut self.servers[i];
            match s.breaker {
                Breaker::Open { until, backoff } if until <= now => {
                    s.breaker = Breaker::HalfOpen { backoff };
                    s.health_asked = true;
                    self.actions.push_back(Action::HealthCheck {
                        server: ServerId(i),
                    });
                }
                Breaker::Closed if s.next_health.is_some_and(|t| t <= now) => {
                    if !s.health_asked {
                        s.health_asked = true;
                        self.actions.push_back(Action::HealthCheck {
                            server: ServerId(i),
                        });
                    }
                    s.next_health = every.map(|d| now.saturating_add(d));
                }
                _ => {}
            }
        }
        self.start_health_timers(now);
        let give_up = self.config.lookup_give_up;
        for job in self.uncertain.clone() {
            let Some(j) = self.jobs.get_mut(&job) else {
                continue;
            };
            let State::Uncertain(_, doubt) = &mut j.state else {
                continue;
            };
            let unreachable = doubt
                .unreachable_since
                .is_some_and(|t| t.saturating_add(give_up) <= now);
            let unanswered = matches!(doubt.ask, Ask::Asked(t) if t.saturating_add(give_up) <= now);
            if unreachable || unanswered {
                self.abandon(now, job);
            } else if matches!(doubt.ask, Ask::At(t) if t <= now) {
                doubt.ask = Ask::Idle;
                self.ask_if_idle(now, job);
            }
        }
        self.expire_all_down(now);
    }
}

/// How much of its mean time a run still needs.
fn remaining(run: &Run, mean: Duration, now: Duration) -> Duration {
    match run.started_at {
        Some(t) => mean.saturating_sub(now.saturating_sub(t)),
        None => mean,
    }
}
