//! What the pool machine reports: its events, each job's report and the typed reasons a job
//! failed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::TransportError;
use crate::session::{Deadline, Event, Failure, Outputs};
use crate::wire::http::PromptRejected;
use crate::workflow::ValidationReport;
use crate::{PromptId, ServerAddress};

use super::JobId;

/// A file to upload to the server that runs a job, before its prompt is posted there.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The input it feeds, as `TARGET.INPUT` (`LoadImage.image`, `12.image`).
    pub input: String,
    /// The file name to upload under (the server may rename it; the returned name is used).
    pub file_name: String,
    /// The file's bytes.
    pub bytes: Arc<Vec<u8>>,
}

/// What the pool reports, from [`Pool::poll_event`](super::Pool::poll_event).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PoolEvent {
    /// A job's attempt was handed to a server (uploads, then the post). Not yet accepted.
    /// Attempt 2 and later are retries, or moves to a faster server.
    Dispatched {
        /// The job.
        job: JobId,
        /// The server's index in the pool's list.
        server: usize,
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// The server accepted the attempt's prompt (`POST /prompt` answered 200): it was sent.
    Accepted {
        /// The job.
        job: JobId,
        /// The server.
        server: usize,
        /// The attempt.
        attempt: u32,
    },
    /// Something happened to a job's current attempt (progress, preview, node started...).
    /// Outputs ([`Event::Output`], [`Event::File`], [`Event::NodeOutput`]) are not reported
    /// here: they come as [`PoolEvent::Output`] as they arrive, and all together in the report
    /// of [`PoolEvent::Finished`], from the attempt that succeeded. Progress and previews are
    /// dropped (and counted) when the consumer lags.
    Progress {
        /// The job.
        job: JobId,
        /// The server.
        server: usize,
        /// The session's event.
        event: Event,
    },
    /// An output of a job's current attempt, as it arrives (the session's
    /// [`Event::Output`]). Never dropped. An attempt that fails afterwards may be followed by
    /// another that sends its outputs again: the job's outputs are those of its
    /// [`PoolEvent::Finished`] report, from the attempt that succeeded.
    Output {
        /// The job.
        job: JobId,
        /// The server.
        server: usize,
        /// The attempt that made it.
        attempt: u32,
        /// The session's event.
        event: Event,
    },
    /// A job ended. Exactly one per job.
    Finished(JobReport),
}

/// Which of a pool's events reach its consumers ([`PoolSettings::events`](super::PoolSettings::events)).
///
/// ```
/// use comfy_proxy::pool::{EventDetail, PoolSettings};
/// let mut settings = PoolSettings::default();
/// assert_eq!(settings.events, EventDetail::All);
/// settings.events = EventDetail::Reports;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EventDetail {
    /// Every event: dispatches, acceptances, progress, outputs and reports. The default.
    #[default]
    All,
    /// Outputs as they arrive ([`PoolEvent::Output`]) and the reports
    /// ([`PoolEvent::Finished`]).
    Outputs,
    /// The reports alone: one event per job.
    Reports,
}

impl EventDetail {
    /// Whether `event` is reported at this level.
    pub fn shows(self, event: &PoolEvent) -> bool {
        match event {
            PoolEvent::Finished(_) => true,
            PoolEvent::Output { .. } => self != Self::Reports,
            PoolEvent::Dispatched { .. }
            | PoolEvent::Accepted { .. }
            | PoolEvent::Progress { .. } => self == Self::All,
        }
    }
}

impl PoolEvent {
    /// The job the event is about.
    pub fn job(&self) -> JobId {
        match self {
            Self::Dispatched { job, .. }
            | Self::Accepted { job, .. }
            | Self::Progress { job, .. }
            | Self::Output { job, .. } => *job,
            Self::Finished(report) => report.job,
        }
    }
}

/// How a job ended, with every output of the attempt that succeeded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JobReport {
    /// The job.
    pub job: JobId,
    /// The server that ran the final attempt, if any ran.
    pub server: Option<usize>,
    /// That server's address.
    pub address: Option<ServerAddress>,
    /// The prompt id of the final attempt.
    pub prompt_id: Option<PromptId>,
    /// Attempts made.
    pub attempts: u32,
    /// `Ok` on success, else why it failed.
    pub outcome: Result<(), JobError>,
    /// Every output of the attempt that succeeded (empty when the job failed): images from
    /// the websocket and from files, animated images, video, audio, 3D and other files, texts,
    /// and each output node's `ui` data ([`Outputs::ui`]), also for nodes the server took from
    /// its cache. Previews are not in it (websocket previews are counted in `previews`;
    /// `temp` files such as `PreviewImage`'s are not fetched and show only in the `ui` data).
    pub outputs: Outputs,
    /// Previews received by the final attempt.
    pub previews: usize,
    /// Time from submission to the end.
    pub elapsed: Duration,
}

impl JobReport {
    /// The report of a job that ended without running (for a driver that has to end a job the
    /// machine never took, e.g. once the pool's task has stopped).
    pub fn not_run(job: JobId, error: JobError) -> Self {
        Self {
            job,
            server: None,
            address: None,
            prompt_id: None,
            attempts: 0,
            outcome: Err(error),
            outputs: Default::default(),
            previews: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// Why a job failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum JobError {
    /// The server refused the graph (HTTP 400).
    Rejected(Box<PromptRejected>),
    /// The last attempt failed (a node raised, the connection was lost, ...).
    Failed(Failure),
    /// No server can run it: its `object_info` lacks a class, input or model file the graph
    /// needs. The report is that of `server`.
    Unrunnable {
        /// A server that refused it.
        server: ServerAddress,
        /// Its validation errors.
        report: Box<ValidationReport>,
    },
    /// No server could be reached: every address, with why.
    NoServerReachable {
        /// Each server and the error that last kept it out.
        servers: Vec<(ServerAddress, TransportError)>,
    },
    /// A deadline expired.
    TimedOut(Deadline),
    /// The prompt was interrupted on its server (by someone else).
    Interrupted,
    /// The job was cancelled: by its handle, by the pool's abort, or because the pool (or the
    /// events receiver its report was going to) was dropped.
    Cancelled,
    /// The pool was closed (or had stopped) when the job was submitted: it never ran.
    PoolClosed,
    /// The scheduler gave up: attempts spent, or every server out of service too long.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The scheduler's account.
        reason: String,
    },
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => write!(f, "rejected: {r}"),
            Self::Failed(failure) => write!(f, "{failure}"),
            Self::Unrunnable { server, report } => {
                write!(f, "no server can run this job: {server}: {report}")
            }
            Self::NoServerReachable { servers } => {
                f.write_str("no server reachable")?;
                for (i, (address, error)) in servers.iter().enumerate() {
                    let sep = if i == 0 { ": " } else { "; " };
                    write!(f, "{sep}{address}: {}", error.kind)?;
                    if let Some(detail) = &error.detail {
                        write!(f, " ({detail})")?;
                    }
                }
                Ok(())
            }
            Self::TimedOut(deadline) => write!(f, "timed out ({deadline:?} deadline)"),
            Self::Interrupted => f.write_str("interrupted on the server"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::PoolClosed => f.write_str("the pool was closed: job not run"),
            Self::GaveUp { attempts, reason } => {
                write!(f, "gave up after {attempts} attempt(s): {reason}")
            }
        }
    }
}

impl std::error::Error for JobError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected(r) => Some(r.as_ref()),
            Self::NoServerReachable { servers } => servers
                .first()
                .map(|(_, e)| e as &(dyn std::error::Error + 'static)),
            Self::Failed(Failure::Unreachable(e)) => Some(e),
            _ => None,
        }
    }
}
