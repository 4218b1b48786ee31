//! A pool over many servers: one [`Client`] per server, driven by the core's pure
//! [`Scheduler`]. This module only carries out the scheduler's actions and reports back.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use comfy_proxy::pool::{
    Action, JobId, JobOutcome, JobResult, Lookup, PoolConfig as SchedulerConfig, Scheduler,
    ServerId,
};
use comfy_proxy::session::{Event, Image, Submission};
use comfy_proxy::wire::http;
use comfy_proxy::workflow::ObjectInfo;
use comfy_proxy::{NodeId, PromptId, ServerAddress, Workflow};
use futures_channel::mpsc;
use futures_util::future::{Either, select};
use futures_util::{SinkExt, StreamExt};

use crate::client::{Client, ClientConfig};

mod remote;
use crate::runtime::{HttpClient, Runtime};
use remote::{lookup, upload_all};

/// Settings of a [`Pool`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// One client configuration per server (auth, headers, deadlines apply per server).
    pub servers: Vec<ClientConfig>,
    /// The scheduler's settings (jobs per server, retries, breakers, backpressure).
    pub scheduler: SchedulerConfig,
    /// Capability routing: fetch each server's `object_info` (once, and again when it comes
    /// back from an outage), validate every job against it, and send a job only to servers that
    /// can run it. A job no server can run fails at once with the validation errors. Off by
    /// default.
    pub route_by_capability: bool,
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
        Self {
            servers,
            scheduler: SchedulerConfig::default(),
            route_by_capability: false,
        }
    }
}

/// What the pool reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PoolEvent {
    /// A job was sent to a server (again, for `attempt` > 1).
    Dispatched {
        /// The job.
        job: JobId,
        /// The server's index in the pool's list.
        server: usize,
        /// The attempt number, from 1.
        attempt: u32,
    },
    /// Something happened to a job's current attempt (progress, preview, node started...).
    /// Outputs are not reported here: they come with [`PoolEvent::Finished`], once, from the
    /// attempt that succeeded.
    Progress {
        /// The job.
        job: JobId,
        /// The server.
        server: usize,
        /// The session's event.
        event: Event,
    },
    /// A job ended. Exactly one per job.
    Finished(JobReport),
}

/// How a job ended, with every image of the attempt that succeeded.
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
    /// `Ok` on success, else the last error.
    pub outcome: Result<(), String>,
    /// Output images, by node and index.
    pub outputs: Vec<(NodeId, u32, Image)>,
    /// Previews received by the final attempt.
    pub previews: usize,
    /// Wall time from submission to the end.
    pub elapsed: Duration,
}

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

enum Input {
    Submit {
        job: JobId,
        workflow: Workflow,
        uploads: Vec<Upload>,
    },
    Close,
    Attempt {
        job: JobId,
        attempt: u32,
        event: Event,
    },
    Health {
        server: usize,
        result: Result<(), String>,
    },
    Looked {
        job: JobId,
        attempt: u32,
        result: Lookup,
        outputs: Vec<(NodeId, u32, Image)>,
    },
    Stolen {
        job: JobId,
        attempt: u32,
        taken: bool,
    },
    Status {
        server: usize,
        remaining: u64,
    },
    Info {
        server: usize,
        info: Option<Arc<ObjectInfo>>,
    },
}

/// A pool of servers. Submit jobs with [`Pool::submit`]; read [`PoolEvents`] for their
/// progress and their ends. Dropping the pool (or [`Pool::close`]) lets the events end once
/// every submitted job has ended.
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
    /// Starts a pool: a client (and its websocket) per server, and the scheduler's task.
    pub fn start(
        rt: Arc<dyn Runtime>,
        http: Arc<dyn HttpClient>,
        config: PoolConfig,
    ) -> (Self, PoolEvents) {
        let (control, inputs) = mpsc::unbounded();
        let (events, events_rx) = mpsc::channel(1);
        let servers: Vec<ServerAddress> = config.servers.iter().map(|c| c.server.clone()).collect();
        let clients = config
            .servers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (status_tx, mut status_rx) = mpsc::unbounded::<Event>();
                let mut c = c.clone();
                c.server_events = Some(status_tx);
                let forward = control.clone();
                rt.spawn(Box::pin(async move {
                    while let Some(event) = status_rx.next().await {
                        if let Event::QueueStatus { remaining } = event {
                            let _ = forward.unbounded_send(Input::Status {
                                server: i,
                                remaining,
                            });
                        }
                    }
                }));
                Client::connect(rt.clone(), http.clone(), c)
            })
            .collect();
        let routing = config.route_by_capability;
        let actor = PoolActor {
            rt: rt.clone(),
            scheduler: Scheduler::new(config.servers.len(), config.scheduler),
            clients,
            control: control.clone(),
            events,
            jobs: HashMap::new(),
            infos: routing.then(|| vec![None; config.servers.len()]),
            held: Vec::new(),
        };
        if routing {
            for server in 0..actor.clients.len() {
                actor.fetch_info(server);
            }
        }
        rt.spawn(Box::pin(actor.run(inputs)));
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

    /// Queues a job; it runs as soon as a server has a free slot.
    pub fn submit(&self, workflow: Workflow) -> JobId {
        self.submit_with_uploads(workflow, Vec::new())
    }

    /// Queues a job whose inputs need files: each attempt uploads them to the server it runs
    /// on, then sets the inputs to the names that server returned. (Uploading once to one
    /// server and running the job on another is a classic pitfall.)
    pub fn submit_with_uploads(&self, workflow: Workflow, uploads: Vec<Upload>) -> JobId {
        let job = JobId(self.next.fetch_add(1, Ordering::Relaxed));
        let _ = self.control.unbounded_send(Input::Submit {
            job,
            workflow,
            uploads,
        });
        job
    }

    /// Takes no more jobs; the events end once every job has ended.
    pub fn close(&self) {
        let _ = self.control.unbounded_send(Input::Close);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.close();
    }
}

/// What the pool remembers of a job until it ends.
struct JobState {
    workflow: Workflow,
    uploads: Vec<Upload>,
    submitted: Instant,
    /// The current attempt: its number, server, prompt and what it produced so far.
    attempt: Option<Attempt>,
    attempts: u32,
}

struct Attempt {
    number: u32,
    server: usize,
    prompt: PromptId,
    outputs: Vec<(NodeId, u32, Image)>,
    previews: usize,
}

struct PoolActor {
    rt: Arc<dyn Runtime>,
    scheduler: Scheduler,
    clients: Vec<Client>,
    control: mpsc::UnboundedSender<Input>,
    events: mpsc::Sender<PoolEvent>,
    jobs: HashMap<JobId, JobState>,
    /// Capability routing: each server's `object_info` once fetched (`None` inside: it could not
    /// be had, so the server is not ruled out for any job).
    infos: Option<Vec<Option<Option<Arc<ObjectInfo>>>>>,
    /// Jobs waiting for every server's `object_info` before they are validated and queued.
    held: Vec<JobId>,
}

impl PoolActor {
    async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>) {
        let epoch = Instant::now();
        let mut closing = false;
        loop {
            let now = epoch.elapsed();
            while let Some(action) = self.scheduler.poll_action(now) {
                self.act(now, action).await;
            }
            if closing && self.scheduler.is_idle() && self.jobs.is_empty() {
                return;
            }
            let input = match self.scheduler.poll_timeout() {
                Some(at) => match select(
                    inputs.next(),
                    self.rt.sleep(at.saturating_sub(epoch.elapsed())),
                )
                .await
                {
                    Either::Left((input, _)) => input,
                    Either::Right(_) => {
                        self.scheduler.handle_timeout(epoch.elapsed());
                        continue;
                    }
                },
                None => inputs.next().await,
            };
            let now = epoch.elapsed();
            let Some(input) = input else { return };
            match input {
                Input::Submit {
                    job,
                    workflow,
                    uploads,
                } => {
                    if closing {
                        continue;
                    }
                    self.jobs.insert(
                        job,
                        JobState {
                            workflow,
                            uploads,
                            submitted: Instant::now(),
                            attempt: None,
                            attempts: 0,
                        },
                    );
                    if self.infos_ready() {
                        self.queue_job(now, job).await;
                    } else {
                        self.held.push(job);
                    }
                }
                Input::Close => closing = true,
                Input::Attempt {
                    job,
                    attempt,
                    event,
                } => self.on_attempt(now, job, attempt, event).await,
                Input::Health { server, result } => {
                    // A server back from an outage may have restarted with other nodes or
                    // models: with routing on, ask it again what it can run.
                    if result.is_ok() && self.infos.is_some() {
                        self.fetch_info(server);
                    }
                    drop(self.scheduler.handle_health(now, ServerId(server), result))
                }
                Input::Info { server, info } => self.on_info(now, server, info).await,
                Input::Looked {
                    job,
                    attempt,
                    result,
                    outputs,
                } => {
                    if let Some(a) = self.current(job, attempt) {
                        a.outputs = outputs;
                    }
                    let _ = self.scheduler.handle_lookup(now, job, attempt, result);
                }
                Input::Stolen {
                    job,
                    attempt,
                    taken,
                } => {
                    if taken {
                        self.cancel_attempt(job, attempt);
                    }
                    let _ = self.scheduler.handle_steal(now, job, attempt, taken);
                }
                Input::Status { server, remaining } => drop(
                    self.scheduler
                        .handle_queue_status(ServerId(server), remaining),
                ),
            }
        }
    }

    /// Asks `server` for its `object_info`; the answer comes back as `Input::Info`.
    fn fetch_info(&self, server: usize) {
        let client = self.clients[server].clone();
        let control = self.control.clone();
        self.rt.spawn(Box::pin(async move {
            let info = match client.request(http::object_info(None)).await {
                Ok(r) => http::decode_object_info(&r)
                    .ok()
                    .and_then(|v| ObjectInfo::from_value(&v).ok())
                    // No real server lists no node at all: an empty document says nothing
                    // about what the server can run, so it rules nothing out.
                    .filter(|info| !info.is_empty())
                    .map(Arc::new),
                Err(_) => None,
            };
            let _ = control.unbounded_send(Input::Info { server, info });
        }));
    }

    /// Whether every server's `object_info` has been asked for and answered (or routing is off).
    fn infos_ready(&self) -> bool {
        self.infos
            .as_ref()
            .is_none_or(|infos| infos.iter().all(Option::is_some))
    }

    async fn on_info(&mut self, now: Duration, server: usize, info: Option<Arc<ObjectInfo>>) {
        let Some(infos) = &mut self.infos else { return };
        let first = infos[server].is_none();
        infos[server] = Some(info);
        if !self.infos_ready() {
            return;
        }
        if first {
            for job in std::mem::take(&mut self.held) {
                self.queue_job(now, job).await;
            }
        } else {
            // Re-checked after an outage: jobs still waiting get the new verdicts.
            let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
            for job in jobs {
                if let Some(Ok(servers)) = self.eligible(job) {
                    let _ = self.scheduler.set_eligible(job, &servers);
                }
            }
        }
    }

    /// The servers that can run `job` by their `object_info`, or the validation errors of one
    /// that cannot when none can. `None` when routing is off.
    fn eligible(&self, job: JobId) -> Option<Result<Vec<ServerId>, String>> {
        let infos = self.infos.as_ref()?;
        let workflow = &self.jobs.get(&job)?.workflow;
        let mut servers = Vec::new();
        let mut refusal = None;
        for (i, info) in infos.iter().enumerate() {
            match info {
                Some(Some(info)) => {
                    let report = comfy_proxy::workflow::validate(workflow, info);
                    if report.is_valid() {
                        servers.push(ServerId(i));
                    } else if refusal.is_none() {
                        refusal = Some(format!("{}: {report}", self.clients[i].server()));
                    }
                }
                // Unknown capabilities: the server itself will say.
                _ => servers.push(ServerId(i)),
            }
        }
        Some(if servers.is_empty() {
            Err(format!(
                "no server can run this job: {}",
                refusal.unwrap_or_default()
            ))
        } else {
            Ok(servers)
        })
    }

    /// Validates a job against the servers (when routing) and hands it to the scheduler, or
    /// ends it at once if no server can run it.
    async fn queue_job(&mut self, now: Duration, job: JobId) {
        let eligible = self.eligible(job);
        let refused = match &eligible {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        };
        let submitted = match refused {
            Some(e) => Err(e),
            None => self.scheduler.submit(now, job).map_err(|e| e.to_string()),
        };
        match submitted {
            Ok(()) => {
                if let Some(Ok(servers)) = eligible
                    && servers.len() < self.clients.len()
                {
                    let _ = self.scheduler.set_eligible(job, &servers);
                }
            }
            Err(e) => {
                let elapsed = self
                    .jobs
                    .remove(&job)
                    .map_or(Duration::ZERO, |j| j.submitted.elapsed());
                let report = JobReport {
                    job,
                    server: None,
                    address: None,
                    prompt_id: None,
                    attempts: 0,
                    outcome: Err(e),
                    outputs: Vec::new(),
                    previews: 0,
                    elapsed,
                };
                let _ = self.events.send(PoolEvent::Finished(report)).await;
            }
        }
    }

    fn current(&mut self, job: JobId, attempt: u32) -> Option<&mut Attempt> {
        self.jobs
            .get_mut(&job)?
            .attempt
            .as_mut()
            .filter(|a| a.number == attempt)
    }

    fn cancel_attempt(&self, job: JobId, attempt: u32) {
        if let Some(a) = self
            .jobs
            .get(&job)
            .and_then(|j| j.attempt.as_ref())
            .filter(|a| a.number == attempt)
        {
            self.clients[a.server].cancel(&a.prompt);
        }
    }

    async fn on_attempt(&mut self, now: Duration, job: JobId, attempt: u32, event: Event) {
        let Some(a) = self.current(job, attempt) else {
            return;
        };
        let server = a.server;
        match &event {
            Event::Accepted { .. } => drop(self.scheduler.handle_accepted(now, job, attempt)),
            Event::Started { .. } => drop(self.scheduler.handle_started(now, job, attempt)),
            Event::Output {
                node, index, image, ..
            } => {
                a.outputs.push((node.clone(), *index, image.clone()));
                return;
            }
            Event::Preview { .. } => a.previews += 1,
            _ => {}
        }
        if event.is_terminal() {
            let result = match &event {
                Event::Completed { .. } => JobResult::Success,
                Event::Failed { failure, .. } => JobResult::from_failure(failure),
                Event::Rejected { rejection, .. } => {
                    JobResult::failed(false, false, format!("rejected: {rejection}"))
                }
                other => JobResult::failed(true, false, other.to_string()),
            };
            let _ = self.scheduler.handle_result(now, job, attempt, result);
            return;
        }
        let _ = self
            .events
            .send(PoolEvent::Progress { job, server, event })
            .await;
    }

    async fn act(&mut self, now: Duration, action: Action) {
        match action {
            Action::Dispatch {
                job,
                server,
                attempt,
            } => self.dispatch(job, server.0, attempt).await,
            Action::Cancel { job, attempt, .. } => self.cancel_attempt(job, attempt),
            Action::Steal {
                job,
                server,
                attempt,
                ..
            } => {
                let Some(a) = self.current(job, attempt) else {
                    return;
                };
                let prompt = a.prompt.clone();
                let client = self.clients[server.0].clone();
                let control = self.control.clone();
                self.rt.spawn(Box::pin(async move {
                    let _ = client
                        .request(http::queue_delete(std::slice::from_ref(&prompt)))
                        .await;
                    let taken = match client
                        .request(http::queue())
                        .await
                        .map(|r| http::decode_queue(&r))
                    {
                        Ok(Ok(queue)) => queue.contains(&prompt).is_none(),
                        _ => false,
                    };
                    let _ = control.unbounded_send(Input::Stolen {
                        job,
                        attempt,
                        taken,
                    });
                }));
            }
            Action::HealthCheck { server } => {
                let client = self.clients[server.0].clone();
                let control = self.control.clone();
                self.rt.spawn(Box::pin(async move {
                    let result = match client.request(http::system_stats()).await {
                        Ok(r) => http::decode_system_stats(&r)
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = control.unbounded_send(Input::Health {
                        server: server.0,
                        result,
                    });
                }));
            }
            Action::Lookup {
                job,
                server,
                attempt,
            } => {
                let Some(a) = self.current(job, attempt) else {
                    return;
                };
                let prompt = a.prompt.clone();
                let workflow = self.jobs[&job].workflow.clone();
                let client = self.clients[server.0].clone();
                let control = self.control.clone();
                self.rt.spawn(Box::pin(async move {
                    let (result, outputs) = lookup(&client, &prompt, &workflow).await;
                    let _ = control.unbounded_send(Input::Looked {
                        job,
                        attempt,
                        result,
                        outputs,
                    });
                }));
            }
            Action::Finished { job, outcome } => {
                let Some(state) = self.jobs.remove(&job) else {
                    return;
                };
                let attempt = state.attempt;
                let (server, outcome) = match outcome {
                    JobOutcome::Succeeded { server, .. } => (Some(server.0), Ok(())),
                    JobOutcome::Failed { error, .. } => {
                        (attempt.as_ref().map(|a| a.server), Err(error))
                    }
                    other => (None, Err(format!("{other:?}"))),
                };
                let report = JobReport {
                    job,
                    server,
                    address: server.map(|s| self.clients[s].server().clone()),
                    prompt_id: attempt.as_ref().map(|a| a.prompt.clone()),
                    attempts: state.attempts,
                    outputs: if outcome.is_ok() {
                        attempt
                            .as_ref()
                            .map(|a| a.outputs.clone())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    previews: attempt.as_ref().map_or(0, |a| a.previews),
                    outcome,
                    elapsed: state.submitted.elapsed(),
                };
                // The channel holds one report: a consumer that does not read stops the pool
                // from dispatching more (the scheduler counts unconsumed jobs).
                if self.events.send(PoolEvent::Finished(report)).await.is_ok() {
                    let _ = self.scheduler.handle_consumed(job);
                }
                let _ = now;
            }
            _ => {}
        }
    }

    async fn dispatch(&mut self, job: JobId, server: usize, attempt: u32) {
        let Some(state) = self.jobs.get_mut(&job) else {
            return;
        };
        let prompt = PromptId::from_random(fastrand::u128(..));
        let client = self.clients[server].clone();
        let mut workflow = state.workflow.clone();
        let uploads = state.uploads.clone();
        let deadlines = client.config().deadlines;
        state.attempts = state.attempts.max(attempt);
        state.attempt = Some(Attempt {
            number: attempt,
            server,
            prompt: prompt.clone(),
            outputs: Vec::new(),
            previews: 0,
        });
        let control = self.control.clone();
        self.rt.spawn(Box::pin(async move {
            let submitted = match upload_all(&client, &mut workflow, &uploads).await {
                Ok(()) => {
                    let submission = Submission::new(prompt, workflow).with_deadlines(deadlines);
                    client.submit_with(submission).await
                }
                Err(e) => Err(e),
            };
            match submitted {
                Ok(mut stream) => {
                    while let Some(event) = stream.next().await {
                        if control
                            .unbounded_send(Input::Attempt {
                                job,
                                attempt,
                                event,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let failure = e.into_failure("submit");
                    let event = Event::Failed {
                        prompt: PromptId::from("-"),
                        failure,
                    };
                    let _ = control.unbounded_send(Input::Attempt {
                        job,
                        attempt,
                        event,
                    });
                }
            }
        }));
        let _ = self
            .events
            .send(PoolEvent::Dispatched {
                job,
                server,
                attempt,
            })
            .await;
    }
}
