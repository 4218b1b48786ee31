//! A pool over many servers: one [`Client`] per server, driven by the core's pool machine
//! ([`comfy_proxy::pool::Pool`]). This module only performs the machine's I/O (HTTP exchanges
//! raced against the deadline the machine set, submissions, cancels), feeds the results back,
//! and hands the machine's events to the consumer.
//!
//! Dropping the [`Pool`], or the [`PoolEvents`] receiver, cancels every prompt of the pool on
//! its server and closes its sockets.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use comfy_proxy::pool::{
    HttpId, Io, JobId, Pool as Machine, PoolConfig as SchedulerConfig, PoolSettings, ServerId,
};
use comfy_proxy::session::Event;
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{PromptId, ServerAddress, TransportError, TransportErrorKind, Workflow};
use futures_channel::mpsc;
use futures_util::future::{Either, select};
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{Sink, StreamExt};

use crate::alarm::Alarm;
use crate::client::{Client, ClientConfig, ClientError, PromptStream};
use crate::runtime::{BoxFuture, HttpClient, Runtime};

pub use comfy_proxy::pool::{JobError, JobReport, PoolEvent, Upload};

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
        }
    }

    fn settings(&self) -> PoolSettings {
        let mut s = PoolSettings::default();
        s.scheduler = self.scheduler.clone();
        s.route_by_capability = self.route_by_capability;
        s.http_timeout = self.http_timeout;
        s.unreachable_give_up = self.unreachable_give_up;
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
        workflow: Workflow,
        uploads: Vec<Upload>,
    },
    Close,
    Abort,
}

/// A pool of servers. Submit jobs with [`Pool::submit`]; read [`PoolEvents`] for their
/// progress and their ends. [`Pool::close`] lets the events end once every submitted job has
/// ended; dropping the pool (or the events receiver) cancels every job instead.
pub struct Pool {
    control: mpsc::UnboundedSender<Input>,
    next: Arc<AtomicU64>,
    servers: Vec<ServerAddress>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("servers", &self.servers)
            .finish()
    }
}

/// The stream of a pool's events.
pub type PoolEvents = mpsc::Receiver<PoolEvent>;

impl Pool {
    /// Starts a pool: a client (and its websocket) per server, and the machine's task.
    pub fn start(
        rt: Arc<dyn Runtime>,
        http: Arc<dyn HttpClient>,
        config: PoolConfig,
    ) -> (Self, PoolEvents) {
        // Submissions come from a synchronous call; the machine's backpressure bounds what is
        // dispatched, and the consumer's pace bounds what is reported.
        let (control, inputs) = mpsc::unbounded();
        let (events, events_rx) = mpsc::channel(1);
        let servers: Vec<ServerAddress> = config.servers.iter().map(|c| c.server.clone()).collect();
        let mut streams: SelectAll<BoxStream<'static, (usize, Event)>> = SelectAll::new();
        let clients = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (status_tx, status_rx) = mpsc::unbounded::<Event>();
                let mut c = c.clone();
                c.server_events = Some(status_tx);
                streams.push(status_rx.map(move |e| (i, e)).boxed());
                Client::connect(rt.clone(), http.clone(), c)
            })
            .collect();
        let machine = Machine::new(servers.clone(), config.settings(), fastrand::u64(..));
        let driver = Driver {
            rt: rt.clone(),
            clients,
            machine,
            epoch: Instant::now(),
            pending: FuturesUnordered::new(),
            streams,
        };
        rt.spawn(Box::pin(driver.run(inputs, events)));
        (
            Self {
                control,
                next: Arc::new(AtomicU64::new(0)),
                servers,
            },
            events_rx,
        )
    }

    /// The servers, in the order their indexes refer to.
    pub fn servers(&self) -> &[ServerAddress] {
        &self.servers
    }

    /// Queues a job; it runs as soon as a server that can run it has a free slot.
    pub fn submit(&self, workflow: Workflow) -> JobId {
        self.submit_with_uploads(workflow, Vec::new())
    }

    /// Queues a job whose inputs need files: each attempt uploads them to the server it runs
    /// on, then sets the inputs to the names that server returned. (Uploading once to one
    /// server and running the job on another is a classic pitfall.)
    pub fn submit_with_uploads(&self, workflow: Workflow, uploads: Vec<Upload>) -> JobId {
        // The machine numbers jobs in the order it receives them, as this counter does.
        let job = JobId(self.next.fetch_add(1, Ordering::Relaxed));
        let _ = self
            .control
            .unbounded_send(Input::Submit { workflow, uploads });
        job
    }

    /// Takes no more jobs; the events end once every job has ended.
    pub fn close(&self) {
        let _ = self.control.unbounded_send(Input::Close);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.control.unbounded_send(Input::Abort);
    }
}

/// What woke the driver.
enum Wake {
    Input(Option<Input>),
    Http(HttpId, Result<HttpResponse, TransportError>),
    Submitted(usize, PromptId, Result<PromptStream, ClientError>),
    Event(usize, Event),
    CanSend,
    Gone,
    Timer,
}

struct Driver {
    rt: Arc<dyn Runtime>,
    clients: Vec<Client>,
    machine: Machine,
    epoch: Instant,
    pending: FuturesUnordered<BoxFuture<'static, Wake>>,
    streams: SelectAll<BoxStream<'static, (usize, Event)>>,
}

/// The longest the driver sleeps without looking whether its consumer went away.
const TICK: Duration = Duration::from_secs(1);

impl Driver {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(
        mut self,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut events: mpsc::Sender<PoolEvent>,
    ) {
        // One timer, kept while the next deadline only moves later (the tick moves with the
        // clock): no timer registered and dropped per turn.
        let mut alarm = Alarm::new();
        loop {
            self.perform();
            if self.machine.is_done() {
                return;
            }
            if events.is_closed() {
                self.abort();
                return;
            }
            let now = self.now();
            let wait = self
                .machine
                .poll_timeout()
                .map_or(TICK, |t| t.saturating_sub(now).min(TICK));
            let deadline = Some(self.epoch + now + wait);
            let rt = self.rt.clone();
            let has_event = self.machine.has_event();
            let wake = futures_util::future::poll_fn(|cx| {
                if let Poll::Ready(input) = inputs.poll_next_unpin(cx) {
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
                if has_event {
                    match Sink::poll_ready(std::pin::Pin::new(&mut events), cx) {
                        Poll::Ready(Ok(())) => return Poll::Ready(Wake::CanSend),
                        Poll::Ready(Err(_)) => return Poll::Ready(Wake::Gone),
                        Poll::Pending => {}
                    }
                }
                if alarm.poll(rt.as_ref(), cx, deadline).is_ready() {
                    return Poll::Ready(Wake::Timer);
                }
                Poll::Pending
            })
            .await;
            let now = self.now();
            match wake {
                Wake::Input(Some(Input::Submit { workflow, uploads })) => {
                    let _ = self.machine.submit(now, workflow, uploads);
                }
                Wake::Input(Some(Input::Close)) => self.machine.close(),
                Wake::Input(Some(Input::Abort) | None) | Wake::Gone => {
                    self.abort();
                    return;
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
                Wake::CanSend => {
                    if let Some(event) = self.machine.poll_event() {
                        let finished = match &event {
                            PoolEvent::Finished(r) => Some(r.job),
                            _ => None,
                        };
                        if Sink::start_send(std::pin::Pin::new(&mut events), event).is_err() {
                            self.abort();
                            return;
                        }
                        // The channel holds one report: a consumer that does not read stops
                        // the pool from dispatching more (the scheduler counts it unconsumed).
                        if let Some(job) = finished {
                            self.machine.handle_consumed(now, job);
                        }
                    }
                }
                Wake::Timer => {
                    if self.machine.poll_timeout().is_some_and(|t| t <= now) {
                        self.machine.handle_timeout(now);
                    }
                }
            }
        }
    }

    /// Cancels every prompt on its server and stops; dropping the clients closes the sockets.
    fn abort(&mut self) {
        let now = self.now();
        self.machine.abort(now);
        self.perform();
    }

    /// Performs every I/O the machine asks for.
    fn perform(&mut self) {
        let now = self.now();
        while let Some(io) = self.machine.poll_io() {
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
                    self.pending.push(Box::pin(async move {
                        let result = client.submit_with(submission).await;
                        Wake::Submitted(server.0, prompt, result)
                    }));
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
