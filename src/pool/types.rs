//! The values the scheduler takes and gives: ids, settings, actions, results and statistics.

use std::fmt;
use std::time::Duration;

use crate::session::Failure;

/// A job, named by the driver. The scheduler never makes job ids; any `u64` will do as long as
/// no two unconsumed jobs share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A server of the pool: its index in the server list the driver built the pool from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerId(pub usize);

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How long a circuit breaker stays open: `initial` after it opens, doubled each time the
/// half-open health check fails, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerBackoff {
    /// How long a server stays out after its breaker first opens. Default: 1 s.
    pub initial: Duration,
    /// The longest it stays out between two health checks. Default: 60 s.
    pub max: Duration,
}

impl BreakerBackoff {
    /// A backoff from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }
}

impl Default for BreakerBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// Settings of a [`Scheduler`](super::Scheduler). Counts below 1 are taken as 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Jobs in flight per server at most (one running, the rest waiting in the server's queue so
    /// that it never idles between jobs). Default: 2.
    pub per_server: usize,
    /// Attempts per job in all, counting every attempt that failed, was lost or was given up
    /// on (a stolen attempt does not count). Default: 3.
    pub attempts: u32,
    /// Consecutive failures that open a server's circuit breaker. Default: 2.
    pub failure_threshold: u32,
    /// How long an open breaker keeps its server out.
    pub breaker: BreakerBackoff,
    /// Interval of health checks of servers in service; `None` for none (open breakers are
    /// always probed). Default: `None`.
    pub health_interval: Option<Duration>,
    /// How often to ask again about a job of uncertain fate while its server says it is still
    /// queued or running, or could not be reached. Default: 1 s.
    pub lookup_interval: Duration,
    /// How long a job of uncertain fate waits for its server to become reachable (or for an
    /// answer to its lookup) before it is cancelled there and dispatched elsewhere anyway: it may
    /// then run twice, but it ends once. Default: 30 s.
    pub lookup_give_up: Duration,
    /// When every server has been out for this long, queued jobs fail. Default: 120 s.
    pub all_down_give_up: Duration,
    /// Jobs finished but not yet consumed (see
    /// [`Scheduler::handle_consumed`](super::Scheduler::handle_consumed)), plus jobs in flight,
    /// at most; no job is dispatched above it. `None`: twice the number of slots
    /// (servers x `per_server` x 2). Default: `None`.
    pub max_unconsumed: Option<usize>,
    /// Let a faster server with a free slot take back a job that waits, not yet started, in a
    /// slower server's queue, when nothing else is queued. Default: on.
    pub steal: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            per_server: 2,
            attempts: 3,
            failure_threshold: 2,
            breaker: BreakerBackoff::default(),
            health_interval: None,
            lookup_interval: Duration::from_secs(1),
            lookup_give_up: Duration::from_secs(30),
            all_down_give_up: Duration::from_secs(120),
            max_unconsumed: None,
            steal: true,
        }
    }
}

/// What the scheduler asks the driver to do, from [`Scheduler::poll_action`](super::Scheduler::poll_action).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Submit the job's prompt to `server`. Report what becomes of it with `handle_accepted`,
    /// `handle_started` and `handle_result`, quoting `attempt`.
    Dispatch {
        /// The job.
        job: JobId,
        /// Where to run it.
        server: ServerId,
        /// This attempt's number (1 for the first dispatch of the job).
        attempt: u32,
    },
    /// Stop this attempt on its server (delete it from the queue, or interrupt it): the job has
    /// moved on and anything it still reports is stale. Best effort: nothing needs reporting.
    Cancel {
        /// The job.
        job: JobId,
        /// Where the abandoned attempt was sent.
        server: ServerId,
        /// The abandoned attempt.
        attempt: u32,
    },
    /// Take this attempt back from `server` if it has not started: delete it from the server's
    /// queue and make sure it is gone (neither pending nor running in `/queue`), then report
    /// [`Scheduler::handle_steal`](super::Scheduler::handle_steal). If it took the job back,
    /// the scheduler dispatches it anew on the faster server `to`.
    Steal {
        /// The job.
        job: JobId,
        /// The slower server where it waits.
        server: ServerId,
        /// The attempt waiting there.
        attempt: u32,
        /// The faster server that will run it.
        to: ServerId,
    },
    /// Check the server's health (`GET /system_stats`) and report with `handle_health`.
    HealthCheck {
        /// The server.
        server: ServerId,
    },
    /// Find out what became of this attempt on its server (`/history/{id}`, then `/queue`) and
    /// report with `handle_lookup`. Unanswered for [`PoolConfig::lookup_give_up`], the job moves
    /// on without the answer.
    Lookup {
        /// The job.
        job: JobId,
        /// The server the attempt was sent to.
        server: ServerId,
        /// The attempt.
        attempt: u32,
    },
    /// The job has ended; this is said exactly once per job. Deliver it, and call
    /// `handle_consumed` when the consumer has taken it.
    Finished {
        /// The job.
        job: JobId,
        /// How it ended.
        outcome: JobOutcome,
    },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// This attempt, on this server, ran it to success: its outputs are the job's.
    Succeeded {
        /// The server.
        server: ServerId,
        /// The attempt.
        attempt: u32,
    },
    /// It failed for good.
    Failed {
        /// The last error.
        error: String,
        /// Attempts dispatched (0 when it never reached a server).
        attempts: u32,
    },
}

/// What the driver saw become of an attempt, for
/// [`Scheduler::handle_result`](super::Scheduler::handle_result).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobResult {
    /// It ran to success and its outputs were received.
    Success,
    /// It failed.
    Failed {
        /// Running it again (elsewhere) may succeed. A node that raised, or a rejected graph,
        /// is not retryable: the job ends at once.
        retryable: bool,
        /// It may have run on the server anyway (the connection was lost after the prompt was
        /// posted): the server is asked before the job runs again.
        uncertain: bool,
        /// What happened.
        error: String,
    },
}

impl JobResult {
    /// A failed attempt.
    pub fn failed(retryable: bool, uncertain: bool, error: impl Into<String>) -> Self {
        Self::Failed {
            retryable,
            uncertain,
            error: error.into(),
        }
    }

    /// The result a session [`Failure`] stands for. Lost connections and failed requests leave
    /// the prompt's fate uncertain; node errors are final; the rest may be retried.
    pub fn from_failure(failure: &Failure) -> Self {
        let (retryable, uncertain) = match failure {
            Failure::Execution(_) => (false, false),
            Failure::Transport { .. } | Failure::Disconnected { .. } => (true, true),
            Failure::Protocol(_)
            | Failure::Unreachable(_)
            | Failure::LostOutputs { .. }
            | Failure::NotOnServer
            | Failure::NoHistory { .. }
            | Failure::ServerGone { .. }
            | Failure::FileFetch { .. } => (true, false),
        };
        Self::failed(retryable, uncertain, failure.to_string())
    }
}

/// What the server knows of an attempt, for
/// [`Scheduler::handle_lookup`](super::Scheduler::handle_lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lookup {
    /// `/history` has it: it ran, to success (`ok`; its outputs can be fetched from the
    /// history) or not.
    Finished {
        /// It succeeded.
        ok: bool,
    },
    /// `/queue` has it, waiting or running: the scheduler asks again later.
    Pending,
    /// The server knows nothing of it: it never ran there (or the server restarted).
    Unknown,
    /// The server could not be asked. Counts as one failure of the server.
    Unreachable,
}

impl Lookup {
    /// The verdict of a `/history` entry for an attempt of `workflow`: a run that failed or was
    /// interrupted did not succeed; nor did one whose images went over the websocket only
    /// (`SaveImageWebsocket`), since nobody was listening and the history cannot give them
    /// back. A success whose outputs are all files still needs them fetched with `/view`; if
    /// one cannot be, the run counts as failed too.
    pub fn from_history(
        entry: &crate::wire::http::HistoryEntry,
        workflow: &crate::Workflow,
    ) -> Self {
        let ws_outputs = !workflow
            .nodes_of_class(crate::session::SAVE_IMAGE_WEBSOCKET)
            .is_empty();
        Self::Finished {
            ok: entry.succeeded() && !ws_outputs,
        }
    }

    /// The verdict of `/queue` for a prompt `/history` did not know: waiting or running there,
    /// or unknown to the server.
    pub fn from_queue(queue: &crate::wire::http::QueueState, prompt: &crate::PromptId) -> Self {
        if queue.contains(prompt).is_some() {
            Self::Pending
        } else {
            Self::Unknown
        }
    }
}

/// Whether a report changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handled {
    /// It was taken into account.
    Applied,
    /// It was about an attempt that is no longer current (the job moved, or ended) and was
    /// ignored. If that attempt may still be on its server, the driver can cancel it there.
    Stale,
}

/// The driver used the scheduler in a way it does not allow. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PoolMisuse {
    /// A job with this id was submitted and has not been consumed yet.
    DuplicateJob(JobId),
    /// No such job (never submitted, or already consumed).
    UnknownJob(JobId),
    /// The job has not finished, so it cannot be consumed.
    NotFinished(JobId),
    /// No such server.
    UnknownServer(ServerId),
    /// The attempt was never dispatched.
    UnknownAttempt {
        /// The job.
        job: JobId,
        /// The attempt named.
        attempt: u32,
    },
    /// The pool has no servers, so it takes no jobs.
    NoServers,
}

impl fmt::Display for PoolMisuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateJob(job) => write!(f, "job {job} was already submitted"),
            Self::UnknownJob(job) => write!(f, "job {job} is not in the pool"),
            Self::NotFinished(job) => write!(f, "job {job} has not finished"),
            Self::UnknownServer(server) => write!(f, "server {server} is not in the pool"),
            Self::UnknownAttempt { job, attempt } => {
                write!(f, "attempt {attempt} of job {job} was never dispatched")
            }
            Self::NoServers => f.write_str("the pool has no servers"),
        }
    }
}

impl std::error::Error for PoolMisuse {}

/// The state of a server's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// In service.
    Closed,
    /// Out of service until its backoff ends.
    Open,
    /// Out of service, waiting for the one health check that decides.
    HalfOpen,
}

/// A snapshot of one server, from [`Scheduler::stats`](super::Scheduler::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Attempts dispatched to it.
    pub dispatched: u64,
    /// Attempts that succeeded there.
    pub succeeded: u64,
    /// Attempts that failed there, were lost there or were given up on.
    pub failed: u64,
    /// Attempts taken back from it by a faster server.
    pub stolen: u64,
    /// Its circuit breaker.
    pub state: BreakerState,
    /// Mean duration of its successful jobs (moving average), once one was measured.
    pub mean_job_time: Option<Duration>,
    /// Our jobs on it now (in flight, or of uncertain fate).
    pub in_flight: usize,
    /// Other clients' prompts in its queue, as last estimated.
    pub external_load: u64,
    /// How long it has held at least one of our jobs (from dispatch to the job's end there),
    /// in all. [`Scheduler::stats`](super::Scheduler::stats) counts the intervals that have
    /// ended; [`Scheduler::stats_at`](super::Scheduler::stats_at) and the pool machine's
    /// [`stats`](super::Pool::stats) count the current one up to `now`.
    pub busy: Duration,
}

/// A snapshot of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Per server, in server order.
    pub servers: Vec<ServerStats>,
    /// Jobs waiting for a server (for the pool machine, also those waiting to learn which
    /// server can run them).
    pub queued: usize,
    /// Jobs on a server (in flight, or of uncertain fate).
    pub in_flight: usize,
    /// Jobs finished and not yet consumed.
    pub unconsumed: usize,
    /// Jobs finished so far.
    pub finished: u64,
}
