//! The blocking pool: the async pool on the background thread, its handles waited on from
//! plain threads.

use std::time::{Duration, Instant};

use comfy_proxy::pool::JobId;
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_driver::pool as async_pool;

use super::{
    JobOptions, JobReport, PoolConfig, PoolEvent, PoolStats, RecvTimeoutError, SubmitError,
    TryRecvError, Upload, deadline_in, next_until, runtime, try_next,
};

/// A blocking pool over many servers: the async [`Pool`](comfy_proxy_driver::pool::Pool) on
/// the background thread. Submit jobs from any thread; each submission returns a
/// [`JobHandle`] to wait on. Jobs whose handle was dropped report to the [`PoolEvents`] (read
/// from this thread or another).
///
/// [`Pool::close`] lets the jobs end, then the events end; [`Pool::abort`], or dropping the
/// pool, cancels every job instead (dropping the events cancels the jobs whose handles were
/// dropped).
///
/// ```no_run
/// use std::time::Duration;
/// use comfy_proxy::{ServerAddress, Workflow};
/// use comfy_proxy_smol::blocking::{ClientConfig, JobOptions, Pool, PoolConfig, PoolEvent};
///
/// let servers = [
///     ServerAddress::parse("127.0.0.1:8188").unwrap(),
///     ServerAddress::parse("127.0.0.1:8189").unwrap(),
/// ];
/// let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
/// let (pool, mut events) = Pool::start(config);
/// let graph = Workflow::from_json(r#"{"1":{"class_type":"EmptyImage","inputs":{}}}"#).unwrap();
/// // Follow one job with its handle...
/// let urgent = pool.submit_with(graph.clone(), JobOptions::new().in_front()).unwrap();
/// // ...and read the others' reports from the pool's events.
/// for _ in 0..20 {
///     drop(pool.submit(graph.clone()).unwrap());
/// }
/// pool.close();
/// let report = urgent.result_timeout(Duration::from_secs(600)).unwrap();
/// println!("urgent: {:?}", report.outcome);
/// for event in &mut events {
///     if let PoolEvent::Finished(report) = event {
///         println!("job {:?}: {:?}", report.job, report.outcome);
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Pool {
    inner: async_pool::Pool,
}

impl Pool {
    /// Starts a pool: a client (and its websocket) per server, and the scheduler's task, all on
    /// the background thread. Returns at once.
    pub fn start(config: PoolConfig) -> (Self, PoolEvents) {
        let (rt, http) = runtime();
        let (inner, events) = async_pool::Pool::start(rt, http, config);
        (Self { inner }, PoolEvents { inner: events })
    }

    /// The async pool behind this one.
    pub fn as_async(&self) -> &async_pool::Pool {
        &self.inner
    }

    /// The servers, in the order their indexes refer to.
    pub fn servers(&self) -> &[ServerAddress] {
        self.inner.servers()
    }

    /// Queues a job and returns its handle; it runs as soon as a server that can run it has a
    /// free slot. Waits only while the pool's submission queue is full (as long as the pool's
    /// task takes to catch up, never on a consumer). [`SubmitError::Closed`] after
    /// [`Pool::close`] or [`Pool::abort`].
    pub fn submit(&self, workflow: Workflow) -> Result<JobHandle, SubmitError> {
        self.submit_with(workflow, JobOptions::new())
    }

    /// Queues a job whose inputs need files, uploaded to the server each attempt runs on. See
    /// [`Pool::submit_with_uploads`](comfy_proxy_driver::pool::Pool::submit_with_uploads).
    pub fn submit_with_uploads(
        &self,
        workflow: Workflow,
        uploads: Vec<Upload>,
    ) -> Result<JobHandle, SubmitError> {
        self.submit_with(workflow, JobOptions::new().uploads(uploads))
    }

    /// Queues a job with [`JobOptions`] (uploads, priority).
    pub fn submit_with(
        &self,
        workflow: Workflow,
        options: JobOptions,
    ) -> Result<JobHandle, SubmitError> {
        // Polled on this thread: it only waits for room in a queue the background thread
        // empties.
        let inner = smol::block_on(self.inner.submit_with(workflow, options))?;
        Ok(JobHandle { inner })
    }

    /// Queues a job without waiting: [`SubmitError::Full`] when the submission queue is full.
    pub fn try_submit(
        &self,
        workflow: Workflow,
        options: JobOptions,
    ) -> Result<JobHandle, SubmitError> {
        let inner = self.inner.try_submit(workflow, options)?;
        Ok(JobHandle { inner })
    }

    /// A snapshot of the pool (see [`PoolStats`]); `None` once the pool has stopped.
    pub fn stats(&self) -> Option<PoolStats> {
        smol::block_on(self.inner.stats())
    }

    /// Takes no more jobs; running and waiting jobs run to their end, then the events end.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Cancels every job, on its server if it runs there; each ends with
    /// [`JobError::Cancelled`](super::JobError::Cancelled).
    pub fn abort(&self) {
        self.inner.abort();
    }
}

/// One job of a blocking [`Pool`]: its events ([`recv`](Self::recv), an [`Iterator`]), ending
/// with its report; [`result`](Self::result) waits for the report alone. Dropping it detaches
/// the job (its events then go to the pool's [`PoolEvents`]).
#[derive(Debug)]
pub struct JobHandle {
    inner: async_pool::JobHandle,
}

impl JobHandle {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.inner.id()
    }

    /// Cancels the job (see [`JobHandle::cancel`](comfy_proxy_driver::pool::JobHandle::cancel)).
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// The next event, waiting as long as it takes; `None` after the report.
    pub fn recv(&mut self) -> Option<PoolEvent> {
        next_until(&mut self.inner, None).ok()
    }

    /// The next event, waiting `timeout` at most.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<PoolEvent, RecvTimeoutError> {
        next_until(&mut self.inner, deadline_in(timeout))
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<PoolEvent, TryRecvError> {
        try_next(&mut self.inner)
    }

    /// Waits for the job's report (as long as the pool's deadlines allow).
    pub fn result(self) -> JobReport {
        smol::block_on(self.inner.result())
    }

    /// Waits for the job's report until `timeout` at most; the handle comes back on a timeout.
    pub fn result_timeout(mut self, timeout: Duration) -> Result<JobReport, Self> {
        let deadline = deadline_in(timeout);
        loop {
            match next_until(&mut self.inner, deadline) {
                Ok(PoolEvent::Finished(report)) => return Ok(report),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(self),
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(smol::block_on(self.inner.result()));
                }
            }
        }
    }
}

impl Iterator for JobHandle {
    type Item = PoolEvent;

    fn next(&mut self) -> Option<PoolEvent> {
        self.recv()
    }
}

/// A pool's events for the jobs whose handles were dropped: an [`Iterator`] that blocks, with
/// [`recv_timeout`](Self::recv_timeout) for a bounded wait. It ends once the pool has stopped
/// (after [`Pool::close`], once every job has ended). Dropping it cancels the jobs whose
/// handles were dropped.
#[derive(Debug)]
pub struct PoolEvents {
    inner: async_pool::PoolEvents,
}

impl PoolEvents {
    /// The next event, waiting as long as it takes; `None` once the pool has ended.
    pub fn recv(&mut self) -> Option<PoolEvent> {
        next_until(&mut self.inner, None).ok()
    }

    /// The next event, waiting `timeout` at most: [`RecvTimeoutError::Timeout`] when none came,
    /// [`RecvTimeoutError::Disconnected`] once the pool has ended.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<PoolEvent, RecvTimeoutError> {
        next_until(&mut self.inner, deadline_in(timeout))
    }

    /// The next event, waiting until `deadline` at most.
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<PoolEvent, RecvTimeoutError> {
        next_until(&mut self.inner, Some(deadline))
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<PoolEvent, TryRecvError> {
        try_next(&mut self.inner)
    }
}

impl Iterator for PoolEvents {
    type Item = PoolEvent;

    fn next(&mut self) -> Option<PoolEvent> {
        self.recv()
    }
}
