//! The pool machine: the whole of a pool's decisions over many servers, sans IO.
//!
//! # How it works
//!
//! [`Pool`] wraps the [`Scheduler`] and adds what a pool needs around it: the jobs' graphs
//! and uploads, each attempt's outputs (held until the attempt succeeds, then handed over
//! once), capability routing (see `caps`), the exchanges a pool has with a server outside a
//! prompt (class fetches, health checks, lookups, steals, uploads), whether each server can be
//! reached, and each job's [`JobReport`]. It opens no socket and reads no clock: it asks for
//! I/O with [`Io`] values, each HTTP request with the deadline by which an answer must be
//! in, and takes back responses, typed transport errors and timeouts.
//!
//! A job's attempt goes: uploads (one after the other, on the server that runs the attempt),
//! then [`Io::Submit`] of its prompt to that server's session. Everything the session reports
//! about the prompt comes back through [`Pool::handle_event`]. An attempt that never reached
//! its server (refused, unresolvable, timed out before the post) goes elsewhere at once; when
//! every server has been unreachable for [`PoolSettings::unreachable_give_up`], the jobs that
//! wait end with [`JobError::NoServerReachable`], naming each server and why.
//!
//! # Driving it
//!
//! Mutate once (`submit`, a `handle_*`), then drain [`Pool::poll_io`] and
//! [`Pool::poll_event`]; sleep until [`Pool::poll_timeout`] or the next input. Call
//! [`Pool::handle_consumed`] once the consumer has taken a [`PoolEvent::Finished`]: until
//! then it counts against the scheduler's backpressure.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use foldhash::HashMap;

use crate::error::TransportError;
use crate::session::{Deadlines, Event, Failure, Submission};
use crate::wire::HttpRequest;
use crate::wire::message::FileRef;
use crate::{NodeId, PromptId, ServerAddress, Workflow};

use super::caps::ServerCaps;
use super::report::{EventDetail, JobError, JobReport, PoolEvent, Upload};
use super::{Action, JobId, JobOutcome, JobResult, PoolConfig, Scheduler, ServerId};
use crate::session::Outputs;

/// An HTTP exchange's id, named by the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpId(pub u64);

/// Settings of a [`Pool`] machine.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolSettings {
    /// The scheduler's settings.
    pub scheduler: PoolConfig,
    /// Capability routing: learn which classes each server has and send a job only where it
    /// validates. Off by default.
    pub route_by_capability: bool,
    /// Deadline of each HTTP exchange the pool makes itself. Default: 10 s.
    pub http_timeout: Duration,
    /// When every server has been unreachable this long, waiting jobs end with
    /// [`JobError::NoServerReachable`]. Default: 3 s.
    pub unreachable_give_up: Duration,
    /// Deadlines of every prompt. Default: accepted within 60 s.
    pub deadlines: Deadlines,
    /// Progress events held for a consumer that lags before more are dropped. Default: 256.
    pub max_progress: usize,
    /// Which events are reported. Below [`EventDetail::All`], the sessions leave out the
    /// prompts' progress too ([`Submission::progress`]). Default: all.
    pub events: EventDetail,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            scheduler: PoolConfig::default(),
            route_by_capability: false,
            http_timeout: Duration::from_secs(10),
            unreachable_give_up: Duration::from_secs(3),
            deadlines: Deadlines::none().accept(Duration::from_secs(60)),
            max_progress: 256,
            events: EventDetail::All,
        }
    }
}

/// I/O the machine asks for, from [`Pool::poll_io`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Io {
    /// Send `request` to `server`; report with [`Pool::handle_http`] by `deadline` (after it,
    /// the machine counts the exchange timed out and ignores a late answer).
    Http {
        /// The server.
        server: ServerId,
        /// The exchange.
        id: HttpId,
        /// The request.
        request: HttpRequest,
        /// When the answer must be in, on the machine's clock.
        deadline: Duration,
    },
    /// Submit a prompt to `server`'s session; report its events with [`Pool::handle_event`].
    Submit {
        /// The server.
        server: ServerId,
        /// The job.
        job: JobId,
        /// The attempt.
        attempt: u32,
        /// The prompt.
        submission: Submission,
    },
    /// Cancel a prompt on `server` (its session deletes or interrupts it).
    Cancel {
        /// The server.
        server: ServerId,
        /// The prompt.
        prompt: PromptId,
    },
}

pub(super) struct Job {
    pub workflow: Workflow,
    pub classes: Vec<String>,
    pub uploads: Vec<Upload>,
    pub submitted_at: Duration,
    /// Not yet handed to the scheduler (no server known able to run it).
    pub held: bool,
    /// Final verdicts per server (Ok or Invalid), until that server's cache is dropped.
    pub verdicts: Vec<Option<super::caps::Verdict>>,
    pub attempt: Option<Attempt>,
    pub attempts: u32,
    pub last_error: Option<JobError>,
    pub done: bool,
    /// Submitted with priority: ahead in the pool's queue and in its server's.
    pub front: bool,
}

pub(super) struct Attempt {
    pub number: u32,
    pub server: usize,
    pub prompt: PromptId,
    pub outputs: Outputs,
    pub previews: usize,
    /// Uploads still to make (index of the next), and the graph they rewrite.
    pub uploading: Option<(usize, Workflow)>,
}

/// A pool's own exchange with a server, and where it stands.
pub(super) enum Exchange {
    Class {
        class: String,
    },
    Health,
    History {
        job: JobId,
        attempt: u32,
    },
    Queue {
        job: JobId,
        attempt: u32,
    },
    View {
        job: JobId,
        attempt: u32,
        files: VecDeque<(NodeId, FileRef)>,
        outputs: Outputs,
    },
    StealDelete {
        job: JobId,
        attempt: u32,
    },
    StealCheck {
        job: JobId,
        attempt: u32,
    },
    Upload {
        job: JobId,
        attempt: u32,
    },
}

/// The pool machine: every decision of a pool over many servers, sans IO (how it works is told
/// at the top of `src/pool/machine.rs`).
pub struct Pool {
    pub(super) settings: PoolSettings,
    pub(super) servers: Vec<ServerAddress>,
    pub(super) scheduler: Scheduler,
    pub(super) jobs: BTreeMap<JobId, Job>,
    pub(super) prompts: HashMap<PromptId, (JobId, u32)>,
    pub(super) caps: Option<Vec<ServerCaps>>,
    /// Per server: since when, and why, it cannot be reached (`None`: it can, or is untried).
    pub(super) down: Vec<Option<(Duration, TransportError)>>,
    pub(super) exchanges: HashMap<HttpId, (usize, Duration, Exchange)>,
    next_http: u64,
    pub(super) next_job: u64,
    seed: u64,
    pub(super) io: VecDeque<Io>,
    events: VecDeque<PoolEvent>,
    progress_held: usize,
    /// Jobs held (not yet handed to the scheduler).
    pub(super) held: usize,
    dropped: u64,
    pub(super) closed: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("servers", &self.servers)
            .field("jobs", &self.jobs.len())
            .finish()
    }
}

impl Pool {
    /// A machine over `servers` (their index is their [`ServerId`]). `seed` makes its prompt
    /// ids and upload boundaries; pass a random one so that two pools never share prompt ids.
    pub fn new(servers: Vec<ServerAddress>, settings: PoolSettings, seed: u64) -> Self {
        let n = servers.len();
        Self {
            scheduler: Scheduler::new(n, settings.scheduler.clone()),
            caps: settings
                .route_by_capability
                .then(|| (0..n).map(|_| ServerCaps::default()).collect()),
            settings,
            servers,
            jobs: BTreeMap::new(),
            prompts: HashMap::default(),
            down: vec![None; n],
            exchanges: HashMap::default(),
            next_http: 0,
            next_job: 0,
            seed,
            io: VecDeque::new(),
            events: VecDeque::new(),
            progress_held: 0,
            held: 0,
            dropped: 0,
            closed: false,
        }
    }

    /// The servers, by index.
    pub fn servers(&self) -> &[ServerAddress] {
        &self.servers
    }

    /// The scheduler inside (read only: its stats, its limits).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Progress and preview events dropped because the consumer lagged.
    pub fn dropped_progress(&self) -> u64 {
        self.dropped
    }

    /// Queues a job whose inputs need `uploads` (each attempt uploads them to its server first),
    /// numbered by the machine. With routing on, it waits until a server is known to be able to
    /// run it. A driver that numbers jobs itself uses [`Pool::submit_with`] instead (not both).
    pub fn submit(&mut self, now: Duration, workflow: Workflow, uploads: Vec<Upload>) -> JobId {
        let mut job = JobId(self.next_job);
        while self.jobs.contains_key(&job) {
            job = JobId(job.0.wrapping_add(1));
        }
        self.next_job = job.0.wrapping_add(1);
        let options = super::JobOptions::new().uploads(uploads);
        let _ = self.submit_with(now, job, workflow, options);
        job
    }

    /// Takes no more jobs; [`Pool::is_done`] once every job was consumed.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Closed, and every job ended and consumed.
    pub fn is_done(&self) -> bool {
        self.closed && self.jobs.is_empty() && self.events.is_empty()
    }

    /// Ends every job now with [`JobError::Cancelled`] and cancels their prompts on their
    /// servers (the pool or its consumer went away).
    pub fn abort(&mut self, now: Duration) {
        self.closed = true;
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            let Some(j) = self.jobs.get_mut(&job) else {
                continue;
            };
            if j.done {
                continue;
            }
            if let Some(a) = &j.attempt {
                self.io.push_back(Io::Cancel {
                    server: ServerId(a.server),
                    prompt: a.prompt.clone(),
                });
            }
            self.finish_now(now, job, JobError::Cancelled);
        }
        self.exchanges.clear();
    }

    /// The next I/O to perform.
    #[must_use]
    pub fn poll_io(&mut self) -> Option<Io> {
        self.io.pop_front()
    }

    /// Whether [`Pool::poll_event`] has an event.
    pub fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the consumer.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PoolEvent> {
        let e = self.events.pop_front()?;
        if matches!(e, PoolEvent::Progress { .. }) {
            self.progress_held = self.progress_held.saturating_sub(1);
        }
        Some(e)
    }

    /// The consumer took `job`'s [`PoolEvent::Finished`]: it no longer counts against the
    /// backpressure, and the machine forgets it.
    pub fn handle_consumed(&mut self, now: Duration, job: JobId) {
        if self.jobs.get(&job).is_some_and(|j| j.done) {
            self.jobs.remove(&job);
            let _ = self.scheduler.handle_consumed(job);
        }
        self.pump(now);
    }

    /// Whether the consumer reading a report would let the machine go on now (see
    /// [`Scheduler::waits_on_consumer`](super::Scheduler::waits_on_consumer)): until then, a
    /// driver may learn of reports read on its next turn instead of being woken for each.
    #[must_use]
    pub fn waits_on_consumer(&self) -> bool {
        self.scheduler.waits_on_consumer()
            // Closed with nothing left to run (aborted jobs among them): only reports remain.
            || (self.closed && self.scheduler.is_idle() && !self.jobs.is_empty())
    }

    /// When [`Pool::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let http = self.exchanges.values().map(|(_, d, _)| *d).min();
        let caps = self.caps.iter().flatten().filter_map(|c| c.retry_at).min();
        [self.scheduler.poll_timeout(), http, caps, self.give_up_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires what is due at `now`: HTTP deadlines, the scheduler's timers, class fetches
    /// asked again, the unreachable give-up. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Duration) {
        let expired: Vec<HttpId> = self
            .exchanges
            .iter()
            .filter(|(_, (_, d, _))| *d <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((server, _, _)) = self.exchanges.get(&id) {
                let what = format!("request to {}", self.servers[*server]);
                let after = self.settings.http_timeout;
                let e = TransportError::new(crate::TransportErrorKind::TimedOut(after), what);
                self.handle_http(now, id, Err(e));
            }
        }
        if self.scheduler.poll_timeout().is_some_and(|t| t <= now) {
            self.scheduler.handle_timeout(now);
        }
        let due: Vec<usize> = self
            .caps
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, c)| c.retry_at.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        if !due.is_empty() {
            for s in due {
                if let Some(c) = self.caps.as_mut().and_then(|c| c.get_mut(s)) {
                    c.retry_at = None;
                }
            }
            self.reroute_all(now);
        }
        if self.give_up_at().is_some_and(|t| t <= now) {
            self.give_up_unreachable(now);
        }
        self.pump(now);
    }

    /// An event of `server`'s session: about one of the pool's prompts, or about the server.
    pub fn handle_event(&mut self, now: Duration, server: ServerId, event: Event) {
        let s = server.0;
        match &event {
            Event::QueueStatus { remaining } => {
                let _ = self.scheduler.handle_queue_status(server, *remaining);
            }
            Event::Connected => self.reachable(s),
            _ => {}
        }
        let Some(&(job, attempt)) = event.prompt().and_then(|p| self.prompts.get(p)) else {
            self.pump(now);
            return;
        };
        if event.is_terminal()
            && let Some(p) = event.prompt()
        {
            self.prompts.remove(p);
        }
        self.attempt_event(now, s, job, attempt, event);
        self.pump(now);
    }

    fn attempt_event(&mut self, now: Duration, s: usize, job: JobId, attempt: u32, event: Event) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(a) = j.attempt.as_mut().filter(|a| a.number == attempt) else {
            return;
        };
        match &event {
            Event::Accepted { .. } => {
                let _ = self.scheduler.handle_accepted(now, job, attempt);
                self.reachable(s);
                self.emit(PoolEvent::Accepted {
                    job,
                    server: s,
                    attempt,
                });
                return;
            }
            Event::Started { .. } => drop(self.scheduler.handle_started(now, job, attempt)),
            // Reported as they arrive, and held for the report until the attempt succeeds;
            // previews are only counted.
            Event::Output { .. } | Event::File { .. } | Event::NodeOutput { .. } => {
                a.outputs.handle_event(&event);
                self.emit(PoolEvent::Output {
                    job,
                    server: s,
                    attempt,
                    event,
                });
                return;
            }
            Event::Preview { .. } => a.previews += 1,
            _ => {}
        }
        if !event.is_terminal() {
            self.emit(PoolEvent::Progress {
                job,
                server: s,
                event,
            });
            return;
        }
        let (result, error) = match event {
            Event::Completed { .. } => (JobResult::Success, None),
            Event::Failed {
                failure: Failure::Unreachable(e),
                ..
            } => {
                self.unreached(now, job, attempt, s, e);
                return;
            }
            // Its server went away with the prompt: it moves at once, away from that server,
            // as if it had never reached it.
            Event::Failed {
                failure: Failure::ServerGone { refusals, error },
                ..
            } => {
                self.unreached(now, job, attempt, s, error.clone());
                if let Some(j) = self.jobs.get_mut(&job) {
                    let failure = Failure::ServerGone { refusals, error };
                    j.last_error = Some(JobError::Failed(failure));
                }
                return;
            }
            Event::Failed { failure, .. } => (
                JobResult::from_failure(&failure),
                Some(JobError::Failed(failure)),
            ),
            Event::Rejected { rejection, .. } => (
                JobResult::failed(false, false, format!("rejected: {rejection}")),
                Some(JobError::Rejected(rejection)),
            ),
            Event::TimedOut { deadline, .. } => (
                JobResult::failed(true, false, format!("timed out ({deadline:?})")),
                Some(JobError::TimedOut(deadline)),
            ),
            Event::Interrupted { .. } => (
                JobResult::failed(true, false, "interrupted"),
                Some(JobError::Interrupted),
            ),
            other => (
                JobResult::failed(true, false, other.to_string()),
                Some(JobError::Cancelled),
            ),
        };
        if let Some(e) = error {
            j.last_error = Some(e);
        }
        let _ = self.scheduler.handle_result(now, job, attempt, result);
    }

    /// The attempt never reached its server: it moves at once, and the server is marked down.
    pub(super) fn unreached(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
        s: usize,
        e: TransportError,
    ) {
        let text = e.to_string();
        if let Some(j) = self.jobs.get_mut(&job) {
            j.last_error = Some(JobError::Failed(Failure::Unreachable(e.clone())));
        }
        self.unreachable(now, s, e);
        let _ = self.scheduler.handle_unreached(now, job, attempt, text);
    }

    /// `server` answered: it can be reached.
    pub(super) fn reachable(&mut self, s: usize) {
        if let Some(d) = self.down.get_mut(s) {
            *d = None;
        }
    }

    /// `server` could not be reached.
    pub(super) fn unreachable(&mut self, now: Duration, s: usize, e: TransportError) {
        if let Some(d) = self.down.get_mut(s) {
            let since = d.as_ref().map_or(now, |(t, _)| *t);
            *d = Some((since, e));
        }
    }

    pub(super) fn queue_http(
        &mut self,
        now: Duration,
        s: usize,
        request: HttpRequest,
        exchange: Exchange,
    ) {
        self.next_http += 1;
        let id = HttpId(self.next_http);
        let deadline = now.saturating_add(self.settings.http_timeout);
        self.exchanges.insert(id, (s, deadline, exchange));
        self.io.push_back(Io::Http {
            server: ServerId(s),
            id,
            request,
            deadline,
        });
    }

    /// A fresh random-looking number from the seed.
    pub(super) fn random(&mut self) -> u128 {
        let mut next = || {
            self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (u128::from(next()) << 64) | u128::from(next())
    }

    pub(super) fn emit(&mut self, event: PoolEvent) {
        if !self.settings.events.shows(&event) {
            return;
        }
        if matches!(event, PoolEvent::Progress { .. }) {
            if self.progress_held >= self.settings.max_progress {
                self.dropped += 1;
                return;
            }
            self.progress_held += 1;
        }
        self.events.push_back(event);
    }

    /// Ends a job the scheduler does not hold (never routed, or the pool is aborting).
    pub(super) fn finish_now(&mut self, now: Duration, job: JobId, error: JobError) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.done {
            return;
        }
        j.last_error = Some(error);
        let outcome = JobOutcome::Failed {
            error: String::new(),
            attempts: j.attempts,
        };
        let held = std::mem::replace(&mut j.held, false);
        if held {
            self.held -= 1;
        } else {
            // The scheduler still counts it; its own Finished will be ignored.
            let _ = self.scheduler.abort_queued(job, "cancelled");
        }
        self.report(now, job, outcome);
    }

    /// Builds and emits the job's one report.
    pub(super) fn report(&mut self, now: Duration, job: JobId, outcome: JobOutcome) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.done {
            return;
        }
        j.done = true;
        let attempt = j.attempt.take();
        if let Some(a) = &attempt {
            self.prompts.remove(&a.prompt);
        }
        let (server, outcome) = match outcome {
            JobOutcome::Succeeded { server, .. } => (Some(server.0), Ok(())),
            JobOutcome::Failed { error, attempts } => (
                attempt.as_ref().map(|a| a.server),
                Err(j.last_error.take().unwrap_or(JobError::GaveUp {
                    attempts,
                    reason: error,
                })),
            ),
        };
        let ok = outcome.is_ok();
        let (prompt_id, outputs, previews) = match attempt {
            Some(a) => (
                Some(a.prompt),
                if ok { a.outputs } else { Outputs::new() },
                a.previews,
            ),
            None => (None, Outputs::new(), 0),
        };
        let report = JobReport {
            job,
            server,
            address: server.map(|s| self.servers[s].clone()),
            prompt_id,
            attempts: j.attempts,
            outcome,
            outputs,
            previews,
            elapsed: now.saturating_sub(j.submitted_at),
        };
        self.events.push_back(PoolEvent::Finished(report));
    }

    /// Carries out the scheduler's actions until it has none.
    pub(super) fn pump(&mut self, now: Duration) {
        while let Some(action) = self.scheduler.poll_action(now) {
            self.act(now, action);
        }
    }

    fn act(&mut self, now: Duration, action: Action) {
        match action {
            Action::Dispatch {
                job,
                server,
                attempt,
            } => self.dispatch(now, job, server.0, attempt),
            Action::Cancel { job, attempt, .. } => self.cancel_attempt(job, attempt),
            Action::Steal {
                job,
                server,
                attempt,
                ..
            } => {
                let Some(prompt) = self.prompt_of(job, attempt) else {
                    let _ = self.scheduler.handle_steal(now, job, attempt, false);
                    return;
                };
                let request = crate::wire::http::queue_delete(&[prompt]);
                self.queue_http(
                    now,
                    server.0,
                    request,
                    Exchange::StealDelete { job, attempt },
                );
            }
            Action::HealthCheck { server } => {
                let request = crate::wire::http::system_stats();
                self.queue_http(now, server.0, request, Exchange::Health);
            }
            Action::Lookup {
                job,
                server,
                attempt,
            } => {
                let Some(prompt) = self.prompt_of(job, attempt) else {
                    let lookup = super::Lookup::Unknown;
                    let _ = self.scheduler.handle_lookup(now, job, attempt, lookup);
                    return;
                };
                let request = crate::wire::http::history(&prompt);
                self.queue_http(now, server.0, request, Exchange::History { job, attempt });
            }
            Action::Finished { job, outcome } => {
                if self.jobs.get(&job).is_some_and(|j| j.done) {
                    // Ended by the machine already (aborted): the scheduler's word is moot.
                    let _ = self.scheduler.handle_consumed(job);
                    return;
                }
                self.report(now, job, outcome);
            }
        }
    }

    pub(super) fn prompt_of(&self, job: JobId, attempt: u32) -> Option<PromptId> {
        let a = self.jobs.get(&job)?.attempt.as_ref()?;
        (a.number == attempt).then(|| a.prompt.clone())
    }

    pub(super) fn cancel_attempt(&mut self, job: JobId, attempt: u32) {
        if let Some(prompt) = self.prompt_of(job, attempt) {
            let server = self.jobs[&job].attempt.as_ref().map_or(0, |a| a.server);
            self.prompts.remove(&prompt);
            self.io.push_back(Io::Cancel {
                server: ServerId(server),
                prompt,
            });
        }
    }

    fn dispatch(&mut self, now: Duration, job: JobId, s: usize, attempt: u32) {
        let prompt = PromptId::from_random(self.random());
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if let Some(old) = j.attempt.take() {
            self.prompts.remove(&old.prompt);
        }
        j.attempts = j.attempts.max(attempt);
        let uploading = (!j.uploads.is_empty()).then(|| (0, j.workflow.clone()));
        j.attempt = Some(Attempt {
            number: attempt,
            server: s,
            prompt: prompt.clone(),
            outputs: Outputs::new(),
            previews: 0,
            uploading,
        });
        self.prompts.insert(prompt, (job, attempt));
        self.emit(PoolEvent::Dispatched {
            job,
            server: s,
            attempt,
        });
        self.next_upload(now, job, attempt);
    }

    /// Sends the attempt's next upload, or its prompt once every file is up.
    pub(super) fn next_upload(&mut self, now: Duration, job: JobId, attempt: u32) {
        let boundary = format!("comfy-proxy-{:032x}", self.random());
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(a) = j.attempt.as_mut().filter(|a| a.number == attempt) else {
            return;
        };
        let s = a.server;
        let workflow = match &a.uploading {
            Some((i, _)) if *i < j.uploads.len() => {
                let u = &j.uploads[*i];
                match crate::wire::http::upload_image(
                    &u.file_name,
                    &u.bytes,
                    None,
                    "input",
                    false,
                    &boundary,
                ) {
                    Ok(request) => {
                        self.queue_http(now, s, request, Exchange::Upload { job, attempt });
                    }
                    Err(e) => {
                        let reason = format!("upload of {}: {e}", u.file_name);
                        let result = JobResult::failed(false, false, reason);
                        let _ = self.scheduler.handle_result(now, job, attempt, result);
                    }
                }
                return;
            }
            Some((_, wf)) => wf.clone(),
            None => j.workflow.clone(),
        };
        a.uploading = None;
        let mut submission =
            Submission::new(a.prompt.clone(), workflow).with_deadlines(self.settings.deadlines);
        if j.front {
            submission = submission.in_front();
        }
        if self.settings.events != EventDetail::All {
            submission = submission.without_progress();
        }
        self.io.push_back(Io::Submit {
            server: ServerId(s),
            job,
            attempt,
            submission,
        });
    }
}
