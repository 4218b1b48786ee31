//! What a pool's user holds: a [`JobHandle`] per job (its events, its report, its cancel), and
//! the [`Pool`]'s submissions, statistics, close and abort. The driver's side of it (where
//! each event goes) is here too, apart from the drive loop.
//!
//! # Where a job's events go
//!
//! To its [`JobHandle`] while the handle lives, each handle's events waiting in a bounded
//! [`EventQueue`] (progress coalesced, previews dropped when its reader lags, outputs and the
//! report kept): a handle nobody reads never holds up other jobs or the pool. Once a handle
//! is dropped, its job is *detached*: it runs on, and its events go to the pool-wide
//! [`PoolEvents`](super::PoolEvents) instead, as they do for every job of a program that only
//! reads that stream. A report delivered to a handle no longer counts against the pool's
//! backpressure (the handle holds it); one bound for `PoolEvents` counts until it is read.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use comfy_proxy::Workflow;
use comfy_proxy::pool::{EventQueue, JobId, JobOptions, PoolStats};
use futures_channel::{mpsc, oneshot};
use futures_util::{SinkExt, Stream, StreamExt};

use super::{Driver, Input, Pool};
use crate::pool::{JobError, JobReport, PoolEvent, Upload};

/// Progress events a handle holds for a reader that lags before more are dropped.
const HANDLE_PROGRESS: usize = 64;

/// Why a job could not be submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError {
    /// [`Pool::close`] or [`Pool::abort`] was called, or the pool has stopped: it takes no
    /// more jobs.
    Closed,
    /// From [`Pool::try_submit`] only: the pool's submission queue is full right now (the
    /// pool's task takes submissions as fast as it runs; try again, or `submit().await`).
    Full,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("the pool is closed: it takes no more jobs"),
            Self::Full => f.write_str("the pool's submission queue is full"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// One job's events between the driver, which pushes without waiting, and its handle.
pub(super) struct Slot {
    state: Mutex<SlotState>,
}

struct SlotState {
    queue: EventQueue,
    /// The driver will push nothing more.
    ended: bool,
    /// The handle was dropped.
    detached: bool,
    /// The handle asked for a cancel.
    cancelled: bool,
    /// The handle waits for the report alone ([`JobHandle::result`]): other events are
    /// queued without waking it.
    report_only: bool,
    waker: Option<Waker>,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState {
                queue: EventQueue::new(HANDLE_PROGRESS),
                ended: false,
                detached: false,
                cancelled: false,
                report_only: false,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Nothing panics while holding the lock; a poisoned one still holds a sound queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands an event to the handle.
    fn push(&self, event: PoolEvent) {
        let waker = {
            let mut s = self.lock();
            let wake = !s.report_only || matches!(event, PoolEvent::Finished(_));
            s.queue.push(event);
            if wake { s.waker.take() } else { None }
        };
        // Woken after the lock is let go: the handle's reader may run at once elsewhere.
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The events the handle did not read.
    fn unread(&self) -> Vec<PoolEvent> {
        let mut s = self.lock();
        std::iter::from_fn(|| s.queue.pop()).collect()
    }

    fn end(&self) {
        let waker = {
            let mut s = self.lock();
            s.ended = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_detached(&self) -> bool {
        self.lock().detached
    }

    fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }
}

/// The driver's account of every job it has not yet forgotten.
pub(super) struct Handles {
    /// Each job until its report was delivered: its handle's slot, or `None` once detached.
    jobs: foldhash::HashMap<JobId, Option<Arc<Slot>>>,
    /// The pool-wide stream's receiver was dropped (and the driver has acted on it).
    pub(super) events_gone: bool,
}

impl Handles {
    pub(super) fn new() -> Self {
        Self {
            jobs: foldhash::HashMap::default(),
            events_gone: false,
        }
    }
}

impl Drop for Handles {
    fn drop(&mut self) {
        // The driver stops: handles still waiting learn that nothing more comes.
        for slot in self.jobs.values().flatten() {
            slot.end();
        }
    }
}

impl Driver {
    /// Performs the machine's I/O and delivers its events, until it has neither.
    pub(super) fn settle(&mut self, now: Duration) {
        loop {
            self.perform_io(now);
            let mut again = false;
            while let Some(event) = self.machine.poll_event() {
                super::trace::event(&event, self.machine.servers());
                again |= self.deliver(now, event);
            }
            if !again {
                return;
            }
        }
    }

    /// Sends an event to its job's handle, else to the pool-wide stream. Returns whether the
    /// machine was told a report was consumed (it may then have more to do).
    fn deliver(&mut self, now: Duration, event: PoolEvent) -> bool {
        let job = event.job();
        let finished = matches!(event, PoolEvent::Finished(_));
        if let Some(slot) = self.handles.jobs.get(&job).cloned().flatten() {
            slot.push(event);
            if finished {
                slot.end();
                return self.consumed(now, job);
            }
            return false;
        }
        self.send_pool_wide(now, event)
    }

    /// Queues an event of a detached job for the pool-wide stream; with nobody to read it, a
    /// report is consumed at once. Returns whether one was.
    fn send_pool_wide(&mut self, now: Duration, event: PoolEvent) -> bool {
        let Some(event) = self.feed.push(event) else {
            return false;
        };
        match event {
            PoolEvent::Finished(r) => self.consumed(now, r.job),
            _ => false,
        }
    }

    /// The job's report reached its reader: the machine forgets it.
    pub(super) fn consumed(&mut self, now: Duration, job: JobId) -> bool {
        self.handles.jobs.remove(&job);
        self.machine.handle_consumed(now, job);
        true
    }

    /// The pool-wide receiver was dropped: nobody can learn how detached jobs end, so they
    /// are cancelled; jobs with a handle go on.
    pub(super) fn events_gone(&mut self, now: Duration) {
        if self.handles.events_gone {
            return;
        }
        self.handles.events_gone = true;
        let mut detached: Vec<JobId> = self
            .handles
            .jobs
            .iter()
            .filter(|(_, slot)| slot.is_none())
            .map(|(job, _)| *job)
            .collect();
        // Newest first: waiting jobs go before the slots of running ones free up for them.
        detached.sort_unstable_by(|a, b| b.cmp(a));
        for job in detached {
            let _ = self.machine.cancel(now, job);
        }
        for event in self.feed.drain() {
            if let PoolEvent::Finished(r) = event {
                self.consumed(now, r.job);
            }
        }
        self.settle(now);
    }

    /// An input from the pool's user (its end, when every sender is gone, is the loop's).
    pub(super) fn on_input(&mut self, now: Duration, input: Input) {
        match input {
            Input::Submit {
                job,
                workflow,
                options,
                slot,
            } => {
                let detached = slot.is_detached();
                let cancelled = slot.is_cancelled();
                self.handles
                    .jobs
                    .insert(job, (!detached).then(|| slot.clone()));
                if self
                    .machine
                    .submit_with(now, job, workflow, options)
                    .is_err()
                {
                    // Ids come from one counter: never taken twice.
                    let report = JobReport::not_run(job, JobError::Cancelled);
                    slot.push(PoolEvent::Finished(report));
                    slot.end();
                    self.handles.jobs.remove(&job);
                    return;
                }
                if cancelled || (detached && self.handles.events_gone) {
                    let _ = self.machine.cancel(now, job);
                }
            }
            Input::Cancel(job) => drop(self.machine.cancel(now, job)),
            Input::Detached(job, slot) => {
                // What the handle left unread goes first, then what comes later.
                for event in slot.unread() {
                    self.send_pool_wide(now, event);
                }
                if let Some(entry) = self.handles.jobs.get_mut(&job) {
                    *entry = None;
                    if self.handles.events_gone {
                        let _ = self.machine.cancel(now, job);
                    }
                }
            }
            Input::Stats(answer) => drop(answer.send(self.machine.stats(now))),
            Input::Close => self.machine.close(),
            Input::Abort => {
                log::info!(target: "comfy_proxy::pool", "aborting: cancelling every unfinished job");
                self.machine.abort(now);
                // Every cancel goes to its client before the clients go: each closes its
                // socket once its cancels are out.
                self.settle(now);
                self.clients.clear();
            }
        }
    }
}

/// A job of a [`Pool`]: a [`Stream`] of its events (the server each attempt went to, its
/// acceptance, progress and previews, outputs as they arrive, retries as new attempts),
/// ending with its [`PoolEvent::Finished`] report; [`JobHandle::result`] waits for the report
/// alone.
///
/// Dropping the handle detaches the job: it runs on, and the events the handle did not read,
/// then the rest, go to the pool's [`PoolEvents`](super::PoolEvents). [`JobHandle::cancel`]
/// cancels it.
pub struct JobHandle {
    job: JobId,
    slot: Arc<Slot>,
    control: mpsc::Sender<Input>,
}

impl fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle").field("job", &self.job).finish()
    }
}

impl JobHandle {
    /// The job's id, as its events and report name it.
    pub fn id(&self) -> JobId {
        self.job
    }

    /// Cancels the job: waiting, it leaves the pool's queue; on a server, its prompt is
    /// deleted there or interrupted. Its report follows, failed with [`JobError::Cancelled`]
    /// (unless it had ended already). Returns at once; a second call does nothing.
    pub fn cancel(&self) {
        {
            let mut s = self.slot.lock();
            if s.cancelled || s.ended {
                return;
            }
            s.cancelled = true;
        }
        // A fresh sender always has room for one message: a cancel is never lost to a full
        // queue, and each handle sends at most one.
        let _ = self.control.clone().try_send(Input::Cancel(self.job));
    }

    /// Waits for the job's report, skipping the events before it. If the pool stopped
    /// without reporting it (its task ended), the report says [`JobError::Cancelled`].
    pub async fn result(mut self) -> JobReport {
        // Each wake-up of the caller's task can cross threads: only the report needs one.
        self.slot.lock().report_only = true;
        while let Some(event) = self.next().await {
            if let PoolEvent::Finished(report) = event {
                return report;
            }
        }
        JobReport::not_run(self.job, JobError::Cancelled)
    }

    /// Progress events dropped (or replaced by a later one) because this handle's reader
    /// lagged.
    pub fn dropped_events(&self) -> u64 {
        let s = self.slot.lock();
        s.queue.dropped() + s.queue.coalesced()
    }
}

impl Stream for JobHandle {
    type Item = PoolEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        let mut s = self.slot.lock();
        if let Some(event) = s.queue.pop() {
            return Poll::Ready(Some(event));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        let done = {
            let mut s = self.slot.lock();
            s.detached = true;
            s.ended && s.queue.is_empty()
        };
        // At most once per handle, on a fresh sender (always room for one).
        if !done {
            let message = Input::Detached(self.job, self.slot.clone());
            let _ = self.control.clone().try_send(message);
        }
    }
}

impl Pool {
    /// Queues a job, waiting while the pool's submission queue is full (only as long as the
    /// pool's task takes to catch up: it never waits on a consumer), and returns its handle.
    /// It runs as soon as a server that can run it has a free slot. [`SubmitError::Closed`]
    /// after [`Pool::close`] or [`Pool::abort`].
    pub async fn submit(&self, workflow: Workflow) -> Result<JobHandle, SubmitError> {
        self.submit_with(workflow, JobOptions::new()).await
    }

    /// Queues a job whose inputs need files: each attempt uploads them to the server it runs
    /// on, then sets the inputs to the names that server returned. (Uploading once to one
    /// server and running the job on another is a classic pitfall.)
    pub async fn submit_with_uploads(
        &self,
        workflow: Workflow,
        uploads: Vec<Upload>,
    ) -> Result<JobHandle, SubmitError> {
        self.submit_with(workflow, JobOptions::new().uploads(uploads))
            .await
    }

    /// Queues a job with [`JobOptions`]: uploads, and priority
    /// ([`JobOptions::in_front`]: ahead of every job without it, and posted to the front of
    /// its server's queue).
    pub async fn submit_with(
        &self,
        workflow: Workflow,
        options: JobOptions,
    ) -> Result<JobHandle, SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        let mut tx = self.submissions.lock().await;
        let (input, handle) = self.job(workflow, options);
        tx.send(input).await.map_err(|_| SubmitError::Closed)?;
        Ok(handle)
    }

    /// Queues a job without waiting: [`SubmitError::Full`] when the submission queue is full
    /// (or another submission is waiting for room), for a caller that must not wait.
    pub fn try_submit(
        &self,
        workflow: Workflow,
        options: JobOptions,
    ) -> Result<JobHandle, SubmitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubmitError::Closed);
        }
        let mut tx = self.submissions.try_lock().ok_or(SubmitError::Full)?;
        let (input, handle) = self.job(workflow, options);
        tx.try_send(input).map_err(|e| {
            if e.is_full() {
                SubmitError::Full
            } else {
                SubmitError::Closed
            }
        })?;
        Ok(handle)
    }

    /// A new job's submission and its handle. Called with the submissions' lock held, so that
    /// ids follow the order the pool receives jobs in.
    fn job(&self, workflow: Workflow, options: JobOptions) -> (Input, JobHandle) {
        let job = JobId(self.next.fetch_add(1, Ordering::Relaxed));
        let slot = Slot::new();
        let input = Input::Submit {
            job,
            workflow,
            options,
            slot: slot.clone(),
        };
        let handle = JobHandle {
            job,
            slot,
            control: self.control.clone(),
        };
        (input, handle)
    }

    /// A snapshot of the pool, answered by its task: per server, jobs in flight, succeeded,
    /// failed, its circuit breaker and its busy time; jobs waiting. `None` once the pool has
    /// stopped.
    pub async fn stats(&self) -> Option<PoolStats> {
        let (answer, rx) = oneshot::channel();
        {
            let mut tx = self.submissions.lock().await;
            tx.send(Input::Stats(answer)).await.ok()?;
        }
        rx.await.ok()
    }

    /// Takes no more jobs: jobs submitted before run to their end, then the pool stops (its
    /// events end, its sockets close). Returns at once.
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // After every submission already sent: the same queue, and a fresh sender always
            // has room for one message.
            let _ = self.control.clone().try_send(Input::Close);
        }
    }

    /// Cancels every job: waiting ones leave the queue, the others are cancelled on their
    /// servers; each ends with [`JobError::Cancelled`], and the pool stops once those reports
    /// are delivered. Takes no more jobs. Returns at once.
    pub fn abort(&self) {
        self.closed.store(true, Ordering::Release);
        if !self.aborted.swap(true, Ordering::AcqRel) {
            let _ = self.control.clone().try_send(Input::Abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::wake_count::WakeCount;

    #[test]
    fn a_handle_waiting_for_its_report_alone_is_woken_for_the_report_alone() {
        let slot = Slot::new();
        let count = Arc::new(WakeCount::default());
        let waker = Waker::from(count.clone());
        let park = |slot: &Slot| slot.lock().waker = Some(waker.clone());
        let job = JobId(1);
        let dispatched = PoolEvent::Dispatched {
            job,
            server: 0,
            attempt: 1,
        };
        park(&slot);
        slot.push(dispatched.clone());
        assert_eq!(count.get(), 1, "a stream reader sees each event");

        slot.lock().report_only = true;
        park(&slot);
        slot.push(dispatched);
        assert_eq!(count.get(), 1, "not woken for a dispatch");
        slot.push(PoolEvent::Finished(JobReport::not_run(
            job,
            JobError::Cancelled,
        )));
        assert_eq!(count.get(), 2, "woken for the report");
        assert_eq!(slot.unread().len(), 3, "every event was kept");
    }
}
