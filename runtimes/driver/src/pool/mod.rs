//! A pool over many servers: one [`Client`] per server, driven by the core's pool machine
//! ([`comfy_proxy::pool::Pool`]). This module only performs the machine's I/O (HTTP exchanges
//! raced against the deadline the machine set, submissions, cancels), feeds the results back,
//! and hands the machine's events to the consumer.
//!
//! Each [`Pool::submit`] returns a [`JobHandle`]: that job's events and report, and its cancel
//! (see the `handle` module for where events go). Dropping the [`Pool`] cancels every prompt
//! of the pool on its server and closes its sockets; dropping the [`PoolEvents`] receiver
//! cancels the jobs whose handles were dropped (nobody could learn how they end).
//!
//! # Bounds
//!
//! Submissions and queries go through a bounded queue ([`SUBMIT_QUEUE`]): `submit` waits for
//! room, `try_submit` says [`SubmitError::Full`]. Control messages (a job's cancel, its
//! handle's drop, close, abort) are sent at most once each, on a sender of their own that
//! always has room for one. Each server's status events (queue status, link changes) are
//! coalesced in constant space and never block its client's task. Events wait in bounded
//! [`EventQueue`](comfy_proxy::pool::EventQueue)s: one per handle, one for [`PoolEvents`].
//!
//! The `comfy-proxy-smol` crate's docs show a pool with handles, priority, cancel and stats.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::task::{Context, Poll};
use std::time::Duration;

use comfy_proxy::pool::{
    HttpId, Io, JobId, Pool as Machine, PoolConfig as SchedulerConfig, PoolSettings, ServerId,
};
use comfy_proxy::session::Event;
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{PromptId, ServerAddress, TransportError, TransportErrorKind, Workflow};
use futures_channel::{mpsc, oneshot};
use futures_util::future::{Either, select};
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, StreamExt};

use crate::client::{Client, ClientConfig, ClientError, PromptStream};
use crate::drive::{Drive, drive};
use crate::runtime::{BoxFuture, HttpClient, Runtime};

mod events;
mod handle;
mod status;
mod trace;
#[cfg(test)]
mod wake_count;

pub use comfy_proxy::pool::{
    BreakerState, EventDetail, JobError, JobOptions, JobReport, PoolEvent, PoolStats, ServerStats,
    Upload,
};
pub use events::PoolEvents;
pub use handle::{JobHandle, SubmitError};
pub(crate) use status::StatusSink;

/// Submissions and statistics queries waiting for the pool's task, at most (besides one per
/// waiting caller). The task takes them as fast as it runs, whatever the consumers do.
pub const SUBMIT_QUEUE: usize = 64;

/// Settings of a [`Pool`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// One client configuration per server (auth, headers, deadlines apply per server).
    pub servers: Vec<ClientConfig>,
    /// The scheduler's settings (jobs per server, retries, breakers, backpressure).
    pub scheduler: SchedulerConfig,
    /// Capability routing: learn from each server the classes a job uses
    /// (`/object_info/{class}`, cached per server, asked again after an outage), and send a
    /// job only to servers where it validates. A job no server can run fails at once with the
    /// validation errors. Off by default.
    pub route_by_capability: bool,
    /// Deadline of each HTTP exchange the pool makes itself (class fetches, health checks,
    /// lookups, steals, uploads). Default: 10 s.
    pub http_timeout: Duration,
    /// When every server has been unreachable this long, waiting jobs end with
    /// [`JobError::NoServerReachable`]. Default: 3 s.
    pub unreachable_give_up: Duration,
    /// Which events reach the [`PoolEvents`] and the [`JobHandle`]s: every one (the default),
    /// outputs and reports, or reports alone. Below [`EventDetail::All`] the servers'
    /// progress messages are not turned into events at all.
    pub events: EventDetail,
}

impl PoolConfig {
    /// A pool over `servers`, every one configured by `template` but for its address.
    pub fn new(servers: &[ServerAddress], template: &ClientConfig) -> Self {
        let servers = servers
            .iter()
            .map(|s| {
                let mut c = template.clone();
                c.server = s.clone();
                c
            })
            .collect();
        let defaults = PoolSettings::default();
        Self {
            servers,
            scheduler: SchedulerConfig::default(),
            route_by_capability: false,
            http_timeout: defaults.http_timeout,
            unreachable_give_up: defaults.unreachable_give_up,
            events: defaults.events,
        }
    }

    fn settings(&self) -> PoolSettings {
        let mut s = PoolSettings::default();
        s.scheduler = self.scheduler.clone();
        s.route_by_capability = self.route_by_capability;
        s.http_timeout = self.http_timeout;
        s.unreachable_give_up = self.unreachable_give_up;
        s.events = self.events;
        // The clients' own deadlines, where set; the pool's defaults elsewhere.
        if let Some(c) = self.servers.first() {
            let d = c.deadlines;
            s.deadlines.accept = d.accept.or(s.deadlines.accept);
            s.deadlines.idle = d.idle.or(s.deadlines.idle);
            s.deadlines.total = d.total.or(s.deadlines.total);
        }
        s
    }
}

enum Input {
    Submit {
        job: JobId,
        workflow: Workflow,
        options: JobOptions,
        slot: Arc<handle::Slot>,
    },
    Cancel(JobId),
    /// The job's handle was dropped, with what it did not read.
    Detached(JobId, Arc<handle::Slot>),
    Stats(oneshot::Sender<PoolStats>),
    Close,
    Abort,
}

/// A pool of servers. Submit jobs with [`Pool::submit`] and follow each with its
/// [`JobHandle`]; jobs whose handle was dropped report to [`PoolEvents`]. [`Pool::close`] lets
/// the jobs end and then stops the pool; [`Pool::abort`], or dropping the pool, cancels every
/// job instead.
pub struct Pool {
    /// Submissions and queries, bounded; its lock keeps job ids in the order sent.
    submissions: futures_util::lock::Mutex<mpsc::Sender<Input>>,
    /// The same queue, cloned for each control message (a fresh sender has room for one).
    control: mpsc::Sender<Input>,
    next: Arc<AtomicU64>,
    closed: AtomicBool,
    aborted: AtomicBool,
    servers: Vec<ServerAddress>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("servers", &self.servers)
            .finish()
    }
}

impl Pool {
    /// Starts a pool: a client (and its websocket) per server, and the machine's task.
    pub fn start(
        rt: Arc<dyn Runtime>,
        http: Arc<dyn HttpClient>,
        config: PoolConfig,
    ) -> (Self, PoolEvents) {
        // The machine's backpressure bounds what is dispatched, and the consumer's pace what
        // is reported.
        let (control, inputs) = mpsc::channel(SUBMIT_QUEUE);
        let servers: Vec<ServerAddress> = config.servers.iter().map(|c| c.server.clone()).collect();
        let mut streams: SelectAll<BoxStream<'static, (usize, Event)>> = SelectAll::new();
        let clients = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (status_tx, status_rx) = status::status();
                let mut c = c.clone();
                c.server_events = Some(status_tx);
                streams.push(status_rx.map(move |e| (i, e)).boxed());
                Client::connect(rt.clone(), http.clone(), c)
            })
            .collect();
        let settings = config.settings();
        let handles = handle::Handles::new();
        let (feed, events) = events::Feed::new(settings.max_progress);
        let machine = Machine::new(servers.clone(), settings, fastrand::u64(..));
        for (i, s) in servers.iter().enumerate() {
            log::debug!(target: "comfy_proxy::pool", "server {i} is {s}");
        }
        let driver = Driver {
            handles,
            rt: rt.clone(),
            clients,
            machine,
            inputs,
            feed,
            pending: FuturesUnordered::new(),
            streams,
            watch: trace::Watch::default(),
        };
        rt.spawn(Box::pin(driver.run()));
        (
            Self {
                submissions: futures_util::lock::Mutex::new(control.clone()),
                control,
                next: Arc::new(AtomicU64::new(0)),
                closed: AtomicBool::new(false),
                aborted: AtomicBool::new(false),
                servers,
            },
            events,
        )
    }

    /// The servers, in the order their indexes refer to.
    pub fn servers(&self) -> &[ServerAddress] {
        &self.servers
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.abort();
    }
}

/// What woke the driver.
enum Wake {
    Input(Option<Input>),
    Http(HttpId, Result<HttpResponse, TransportError>),
    Submitted(usize, PromptId, Result<PromptStream, ClientError>),
    Event(usize, Event),
    /// Reports the consumer of [`PoolEvents`] has read, and whether it is gone.
    Consumed(Vec<JobId>, bool),
}

struct Driver {
    handles: handle::Handles,
    rt: Arc<dyn Runtime>,
    clients: Vec<Client>,
    machine: Machine,
    inputs: mpsc::Receiver<Input>,
    /// The pool-wide events' queue.
    feed: Arc<events::Feed>,
    pending: FuturesUnordered<BoxFuture<'static, Wake>>,
    streams: SelectAll<BoxStream<'static, (usize, Event)>>,
    watch: trace::Watch,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The receiver reads what is queued, then its end.
        self.feed.end();
    }
}

/// The longest the driver sleeps without a turn: a backstop, since the consumer's reads and
/// its drop wake the driver ([`events`]).
const TICK: Duration = Duration::from_secs(1);

impl Driver {
    async fn run(mut self) {
        let rt = self.rt.clone();
        drive(rt.as_ref(), &mut self).await;
    }

    /// Cancels every prompt on its server and stops; dropping the clients closes the sockets.
    fn abort(&mut self, now: Duration) {
        log::info!(target: "comfy_proxy::pool", "aborting: cancelling every unfinished job");
        self.machine.abort(now);
        self.perform_io(now);
    }

    /// Performs every I/O the machine asks for.
    fn perform_io(&mut self, now: Duration) {
        while let Some(io) = self.machine.poll_io() {
            trace::io(&io, self.machine.servers());
            match io {
                Io::Http {
                    server,
                    id,
                    request,
                    deadline,
                } => {
                    let Some(client) = self.clients.get(server.0).cloned() else {
                        continue;
                    };
                    let wait = deadline.saturating_sub(now);
                    let sleep = self.rt.sleep(wait);
                    self.pending.push(Box::pin(async move {
                        let request = client.request(request);
                        let result = match select(Box::pin(request), sleep).await {
                            Either::Left((r, _)) => r.map_err(|e| transport_error(&client, e)),
                            Either::Right(_) => Err(TransportError::new(
                                TransportErrorKind::TimedOut(wait),
                                format!("request to {}", client.server()),
                            )),
                        };
                        Wake::Http(id, result)
                    }));
                }
                Io::Submit {
                    server, submission, ..
                } => {
                    let Some(client) = self.clients.get(server.0).cloned() else {
                        continue;
                    };
                    let prompt = submission.prompt_id.clone();
                    let mut submit: BoxFuture<'static, Wake> = Box::pin(async move {
                        let result = client.submit_with(submission).await;
                        Wake::Submitted(server.0, prompt, result)
                    });
                    // The first poll hands the prompt to the client's task at once, so that a
                    // cancel the machine asks for later reaches that task after it.
                    let waker = std::task::Waker::noop();
                    if let Poll::Ready(wake) = submit.poll_unpin(&mut Context::from_waker(waker)) {
                        submit = Box::pin(std::future::ready(wake));
                    }
                    self.pending.push(submit);
                }
                Io::Cancel { server, prompt } => {
                    if let Some(client) = self.clients.get(server.0) {
                        client.cancel(&prompt);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Drive for Driver {
    type Wake = Wake;

    fn perform(&mut self, now: Duration) {
        self.settle(now);
        self.feed.set_wanted(self.machine.waits_on_consumer());
        let machine = &self.machine;
        self.watch
            .look(|| machine.scheduler().stats(), machine.servers());
    }

    fn finished(&mut self, now: Duration) -> bool {
        if self.machine.is_done() {
            return true;
        }
        if self.feed.is_gone() {
            self.events_gone(now);
        }
        self.machine.is_done()
    }

    fn poll_timeout(&self, now: Duration) -> Option<Duration> {
        let tick = now.saturating_add(TICK);
        Some(self.machine.poll_timeout().map_or(tick, |t| t.min(tick)))
    }

    fn handle_timeout(&mut self, now: Duration) {
        if self.machine.poll_timeout().is_some_and(|t| t <= now) {
            self.machine.handle_timeout(now);
        }
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if let Poll::Ready(input) = self.inputs.poll_next_unpin(cx) {
            return Poll::Ready(Wake::Input(input));
        }
        if !self.pending.is_empty()
            && let Poll::Ready(Some(w)) = self.pending.poll_next_unpin(cx)
        {
            return Poll::Ready(w);
        }
        if !self.streams.is_empty()
            && let Poll::Ready(Some((s, e))) = self.streams.poll_next_unpin(cx)
        {
            return Poll::Ready(Wake::Event(s, e));
        }
        if !self.handles.events_gone {
            let (consumed, gone) = self.feed.take_consumed(cx);
            if gone || !consumed.is_empty() {
                return Poll::Ready(Wake::Consumed(consumed, gone));
            }
        }
        Poll::Pending
    }

    fn handle(&mut self, now: Duration, wake: Wake) -> ControlFlow<()> {
        match wake {
            Wake::Input(Some(input)) => self.on_input(now, input),
            Wake::Input(None) => {
                self.abort(now);
                return ControlFlow::Break(());
            }
            Wake::Http(id, result) => self.machine.handle_http(now, id, result),
            Wake::Submitted(s, _, Ok(stream)) => {
                self.streams.push(stream.map(move |e| (s, e)).boxed());
            }
            Wake::Submitted(s, prompt, Err(e)) => {
                let failure = e.into_failure("submit");
                let event = Event::Failed { prompt, failure };
                self.machine.handle_event(now, ServerId(s), event);
            }
            Wake::Event(s, event) => self.machine.handle_event(now, ServerId(s), event),
            Wake::Consumed(jobs, gone) => {
                for job in jobs {
                    self.consumed(now, job);
                }
                if gone {
                    self.events_gone(now);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// The client's account of a failed exchange: its transport error as it is; anything else
/// (a misuse, a closed client) as an I/O failure naming the server.
fn transport_error(client: &Client, e: ClientError) -> TransportError {
    match e {
        ClientError::Transport(e) => e,
        other => TransportError::new(
            TransportErrorKind::Io,
            format!("request to {}", client.server()),
        )
        .with_detail(other.to_string()),
    }
}
