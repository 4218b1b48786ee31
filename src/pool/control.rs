//! What a pool's user asks of the machine besides submitting: priority, cancelling one job,
//! statistics.

use std::time::Duration;

use crate::Workflow;

use super::caps::classes_of;
use super::machine::{Job, Pool};
use super::report::{JobError, Upload};
use super::{Handled, JobId, PoolMisuse, PoolStats};

/// How to run a job: the files it needs uploaded, and its priority.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct JobOptions {
    /// Files to upload to the server that runs each attempt, before its prompt is posted.
    pub uploads: Vec<Upload>,
    /// Priority: the job waits ahead of every job without it in the pool's queue (behind
    /// earlier ones with it), and its prompt is posted to the front of its server's queue.
    pub front: bool,
}

impl JobOptions {
    /// No uploads, no priority.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the files to upload.
    pub fn uploads(mut self, uploads: Vec<Upload>) -> Self {
        self.uploads = uploads;
        self
    }

    /// Gives the job priority (see [`JobOptions::front`]).
    pub fn in_front(mut self) -> Self {
        self.front = true;
        self
    }
}

impl Pool {
    /// Queues a job under the caller's id `job` (unique among the jobs the machine holds: a job
    /// is held until its [`PoolEvent::Finished`](super::PoolEvent::Finished) was consumed).
    /// After [`Pool::close`] the job ends at once with [`JobError::PoolClosed`].
    pub fn submit_with(
        &mut self,
        now: Duration,
        job: JobId,
        workflow: Workflow,
        options: JobOptions,
    ) -> Result<(), PoolMisuse> {
        if self.jobs.contains_key(&job) {
            return Err(PoolMisuse::DuplicateJob(job));
        }
        let classes = if self.caps.is_some() {
            classes_of(&workflow)
        } else {
            Vec::new()
        };
        self.jobs.insert(
            job,
            Job {
                workflow,
                classes,
                uploads: options.uploads,
                submitted_at: now,
                held: true,
                verdicts: vec![None; self.servers.len()],
                attempt: None,
                attempts: 0,
                last_error: None,
                done: false,
                front: options.front,
            },
        );
        self.held += 1;
        if self.closed {
            self.finish_now(now, job, JobError::PoolClosed);
        } else if self.servers.is_empty() {
            let servers = Vec::new();
            self.finish_now(now, job, JobError::NoServerReachable { servers });
        } else {
            self.route(now, job);
        }
        self.pump(now);
        Ok(())
    }

    /// Cancels one job: waiting, it leaves the queue; on a server, its prompt is cancelled
    /// there ([`Io::Cancel`](super::Io::Cancel)) and its slot freed. Its report follows,
    /// failed with [`JobError::Cancelled`]. `Stale` when it has ended already.
    pub fn cancel(&mut self, now: Duration, job: JobId) -> Result<Handled, PoolMisuse> {
        let j = self.jobs.get_mut(&job).ok_or(PoolMisuse::UnknownJob(job))?;
        if j.done {
            return Ok(Handled::Stale);
        }
        if j.held {
            self.finish_now(now, job, JobError::Cancelled);
        } else {
            j.last_error = Some(JobError::Cancelled);
            let handled = self.scheduler.cancel(now, job, "cancelled")?;
            if handled == Handled::Stale {
                return Ok(handled);
            }
        }
        self.pump(now);
        Ok(Handled::Applied)
    }

    /// A snapshot at `now`: per server, jobs in flight, succeeded (done) and failed, its
    /// breaker, its busy time up to `now`; jobs waiting (in the queue, or to learn which
    /// server can run them), in flight, finished and not consumed, finished in all.
    pub fn stats(&self, now: Duration) -> PoolStats {
        let mut stats = self.scheduler.stats_at(now);
        stats.queued = stats.queued.saturating_add(self.held);
        stats
    }
}
