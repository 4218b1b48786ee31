//! Inputs of the scheduler added for the pool machine: an attempt that never reached its
//! server, and a waiting job ended from outside.

use std::time::Duration;

use super::Scheduler;
use super::engine::State;
use super::types::{Handled, JobId, JobOutcome, PoolMisuse};

impl Scheduler {
    /// The attempt never reached its server: the connection was refused, or an upload or the
    /// post could not be made before anything ran there. It is certain not to have run, so the
    /// job goes back in front of the queue at once, avoiding that server, without a lookup and
    /// without counting against its attempts. The failure counts against the server's breaker.
    pub fn handle_unreached(
        &mut self,
        now: Duration,
        job: JobId,
        attempt: u32,
        error: impl Into<String>,
    ) -> Result<Handled, PoolMisuse> {
        let Some((run, _)) = self.current(job, attempt)? else {
            return Ok(Handled::Stale);
        };
        let s = run.server;
        self.release(now, job, &run);
        self.servers[s].failed += 1;
        let error = error.into();
        self.server_failure(now, s, error.clone());
        if let Some(j) = self.jobs.get_mut(&job) {
            j.state = State::Queued;
            j.avoid = Some(s);
            j.last_error = Some(error);
        }
        self.queue.push_front(job);
        Ok(Handled::Applied)
    }

    /// Ends a job that waits in the queue (on no server) with `error`: its one
    /// [`Action::Finished`](super::Action::Finished) follows. `Stale` when the job is on a
    /// server or has ended.
    pub fn abort_queued(
        &mut self,
        job: JobId,
        error: impl Into<String>,
    ) -> Result<Handled, PoolMisuse> {
        let j = self.jobs.get(&job).ok_or(PoolMisuse::UnknownJob(job))?;
        if !matches!(j.state, State::Queued) {
            return Ok(Handled::Stale);
        }
        let attempts = j.attempt;
        self.queue.retain(|q| *q != job);
        self.end(
            job,
            JobOutcome::Failed {
                error: error.into(),
                attempts,
            },
        );
        Ok(Handled::Applied)
    }

    /// Queues a job with priority: ahead of every job submitted without, behind those
    /// submitted with it before (and behind retries, which always go first).
    pub fn submit_in_front(&mut self, now: Duration, job: JobId) -> Result<(), PoolMisuse> {
        self.submit(now, job)?;
        self.queue.retain(|q| *q != job);
        let at = self
            .queue
            .iter()
            .rposition(|q| self.jobs.get(q).is_some_and(|j| j.front))
            .map_or(0, |i| i + 1);
        if let Some(j) = self.jobs.get_mut(&job) {
            j.front = true;
        }
        self.queue.insert(at, job);
        Ok(())
    }

    /// The caller cancelled the job: one that waits leaves the queue; one on a server (running,
    /// or of uncertain fate) is cancelled there with an [`Action::Cancel`](super::Action::Cancel)
    /// and frees its slot, counting as neither a success nor a failure of the server. Either way
    /// its one [`Action::Finished`](super::Action::Finished) follows, failed with `error`.
    /// `Stale` when it has ended already.
    pub fn cancel(
        &mut self,
        now: Duration,
        job: JobId,
        error: impl Into<String>,
    ) -> Result<Handled, PoolMisuse> {
        let j = self.jobs.get(&job).ok_or(PoolMisuse::UnknownJob(job))?;
        let run = match &j.state {
            State::Done => return Ok(Handled::Stale),
            State::Queued => return self.abort_queued(job, error),
            State::Running(run) | State::Uncertain(run, _) => *run,
        };
        let attempts = j.attempt;
        self.actions.push_back(super::Action::Cancel {
            job,
            server: super::ServerId(run.server),
            attempt: run.attempt,
        });
        self.release(now, job, &run);
        self.end(
            job,
            JobOutcome::Failed {
                error: error.into(),
                attempts,
            },
        );
        Ok(Handled::Applied)
    }

    /// Jobs waiting for a server.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}
