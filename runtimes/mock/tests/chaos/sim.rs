//! The chaos simulation: the mock servers, their sessions and the pool machine on one
//! simulated clock, with the network and the consumer played in between (see the test's
//! module docs in `chaos.rs`).

use std::collections::HashMap;
use std::time::Duration;

use comfy_proxy::pool::{Io, JobError, JobId, JobReport, Pool, PoolEvent, PoolSettings, ServerId};
use comfy_proxy::session::{Backoff, Deadlines, Event, Failure, Session, SessionConfig, Transmit};
use comfy_proxy::wire::{HttpRequest, HttpResponse};
use comfy_proxy::{ClientId, ServerAddress, TransportError, TransportErrorKind};
use comfy_proxy_mock::{ConnId, Fault, Faults, Frame, MockConfig, MockOutput, MockServer};
use comfy_proxy_testkit::rng::SplitMix64 as Rng;
use comfy_proxy_testkit::sim::Timeline;

use super::{
    Asker, CONNECT_TIMEOUT, Ev, HTTP_TIMEOUT, Job, MAX_BATCH, MAX_FRAME, SERVERS, Server, Stamp,
    Stats, graph, label, ms, seed_of,
};

pub(super) struct Sim {
    rng: Rng,
    pub(super) now: Duration,
    seq: u64,
    events: Timeline<Duration, Ev>,
    pub(super) servers: Vec<Server>,
    pool: Pool,
    /// Outstanding HTTP requests: token -> asker.
    http: HashMap<u64, (usize, Asker)>,
    pub(super) jobs: Vec<Job>,
    next_conn: u64,
    /// Every prompt the pool submitted: its job and attempt.
    prompts: HashMap<String, (JobId, u32)>,
    /// Images held for jobs not yet consumed (those of their current attempts).
    buffered: usize,
    /// When each prompt was submitted to its session.
    pub(super) dispatched: HashMap<String, Duration>,
    /// When the last job was consumed.
    pub(super) jobs_done_at: Duration,
    /// Terminal events per prompt.
    pub(super) terminals: HashMap<String, u32>,
    pub(super) stats: Stats,
    deadlines: Deadlines,
    attempts: u32,
}

impl Sim {
    pub(super) fn new(seed: u64, job_count: u64) -> Self {
        let mut rng = Rng::new(seed);
        // Server 0 is nearly healthy; the three others fail at 5-10 % per chance, but for
        // restarts (0.5 % per frame: each one wipes the queue) and slowed runs (2 %: at 10 %
        // the mock's slowed clock can stop it for good, a bug of the mock's, not the pool's).
        let scale = [0.1, 1.0, 1.0, 1.0];
        let servers = (0..SERVERS)
            .map(|i| {
                let m = scale[i];
                let faults = Faults::none()
                    .with_seed(rng.next_u64())
                    .with_oversize_len(MAX_FRAME + 1)
                    .with(Fault::Refuse, 0.05 * m)
                    .with(Fault::Stall, 0.05 * m)
                    .with(Fault::Http500, 0.08 * m)
                    .with(Fault::Restart, 0.005 * m)
                    .with(Fault::DropWs, 0.05 * m)
                    .with(Fault::Slow, 0.02 * m)
                    .with(Fault::Oversize, 0.05 * m)
                    .with(Fault::Truncated, 0.05 * m)
                    .with(Fault::BadJson, 0.05 * m)
                    .with(Fault::BadUtf8, 0.05 * m)
                    .with(Fault::UnknownType, 0.05 * m)
                    .with(Fault::WrongId, 0.05 * m);
                let mut config = MockConfig::default();
                config.step = ms([2, 4, 8, 5][i]);
                config.job = ms([10, 20, 40, 15][i]);
                config.previews = i % 2 == 0;
                config.seed = i as u64 + 1;
                config.faults = faults;
                let session = SessionConfig::default()
                    .with_feature_flags(i != 1)
                    .with_max_frame_len(MAX_FRAME)
                    .with_keepalive(None)
                    .with_backoff(Backoff::new(ms(50), ms(1000), 6));
                Server {
                    mock: MockServer::new(config, Box::new(Stamp)),
                    session: Session::new(ClientId::new(format!("chaos-{i}")), session),
                    conn: None,
                    connecting: None,
                }
            })
            .collect();
        let deadlines = Deadlines::none()
            .accept(Duration::from_secs(3))
            .idle(Duration::from_secs(2))
            .total(Duration::from_secs(15));
        let mut settings = PoolSettings::default();
        settings.route_by_capability = true;
        settings.http_timeout = HTTP_TIMEOUT;
        settings.deadlines = deadlines;
        let config = &mut settings.scheduler;
        config.per_server = 2;
        config.attempts = 4;
        config.failure_threshold = 3;
        config.breaker = comfy_proxy::pool::BreakerBackoff::new(ms(250), ms(4000));
        config.lookup_interval = ms(200);
        config.lookup_give_up = Duration::from_secs(5);
        config.all_down_give_up = Duration::from_secs(30);
        config.health_interval = Some(Duration::from_secs(2));
        let attempts = config.attempts;
        let addresses = (0..SERVERS)
            .map(|i| ServerAddress::parse(&format!("127.0.0.1:{}", 8188 + i)).unwrap())
            .collect();
        let mut pool = Pool::new(addresses, settings, seed);
        let mut jobs = Vec::new();
        for n in 0..job_count {
            let (batch, broken) = (rng.range(1, MAX_BATCH), rng.chance(0.02));
            let workflow = graph(n, n % 3, batch, broken);
            let id = pool.submit(Duration::ZERO, workflow, Vec::new());
            assert_eq!(id, JobId(n), "the pool numbers jobs in submission order");
            jobs.push(Job {
                batch,
                broken,
                attempt: None,
                held: 0,
                first_dispatch: None,
                ended: None,
                consumed: false,
            });
        }
        pool.close();
        Self {
            rng,
            now: Duration::ZERO,
            seq: 0,
            events: Timeline::new(),
            servers,
            pool,
            http: HashMap::new(),
            jobs,
            next_conn: 0,
            prompts: HashMap::new(),
            buffered: 0,
            dispatched: HashMap::new(),
            terminals: HashMap::new(),
            jobs_done_at: Duration::ZERO,
            stats: Stats::default(),
            deadlines,
            attempts,
        }
    }

    fn at(&mut self, when: Duration, ev: Ev) {
        self.events.at(when, ev);
    }

    fn latency(&mut self) -> Duration {
        ms(self.rng.range(1, 20))
    }

    // -----------------------------------------------------------------------------------------
    // The network
    // -----------------------------------------------------------------------------------------

    fn send_http(&mut self, server: usize, asker: Asker, request: HttpRequest, deadline: Duration) {
        self.seq += 1;
        let token = self.seq;
        self.http.insert(token, (server, asker));
        let arrive = self.now + self.latency();
        self.at(
            arrive,
            Ev::Arrive {
                server,
                token,
                request,
            },
        );
        let after = deadline.saturating_sub(self.now);
        self.at(deadline, Ev::HttpTimeout { token, after });
    }

    fn arrive(&mut self, server: usize, token: u64, request: HttpRequest) {
        let now = self.now;
        let mock = &mut self.servers[server].mock;
        if mock.should_refuse(now) {
            let back = now + self.latency();
            let what = format!("{} {}", request.method.as_str(), request.path);
            let result = Err(TransportError::new(TransportErrorKind::Refused, what));
            self.at(back, Ev::Reply { token, result });
            return;
        }
        let stalled = mock.should_stall(now);
        if stalled && self.rng.chance(0.5) {
            self.stats.count("net: stalled before the server");
            return; // the deadline answers
        }
        let body = request.body.map(|b| b.bytes).unwrap_or_default();
        let resp = self.servers[server].mock.handle_request(
            now,
            request.method.as_str(),
            &request.path,
            &body,
        );
        if stalled {
            self.stats.count("net: stalled after the server answered");
            return;
        }
        let back = now + self.latency();
        let result = Ok(HttpResponse::new(resp.status, resp.body));
        self.at(back, Ev::Reply { token, result });
    }

    fn reply(&mut self, token: u64, result: Result<HttpResponse, TransportError>) {
        let Some((server, asker)) = self.http.remove(&token) else {
            return; // timed out already
        };
        let now = self.now;
        match asker {
            Asker::Session(id) => {
                let session = &mut self.servers[server].session;
                match result {
                    Ok(resp) => session.handle_response(now, id, resp),
                    Err(e) => session.handle_http_error(now, id, e),
                }
            }
            Asker::Pool(id) => self.pool.handle_http(now, id, result),
        }
    }

    fn connect(&mut self, server: usize, path: String) {
        let now = self.now;
        if let Some(old) = self.servers[server].conn.take() {
            self.servers[server].mock.handle_ws_close(now, old);
        }
        self.seq += 1;
        let token = self.seq;
        self.servers[server].connecting = Some(token);
        let arrive = now + self.latency();
        self.at(
            arrive,
            Ev::WsArrive {
                server,
                token,
                path,
            },
        );
        self.at(now + CONNECT_TIMEOUT, Ev::WsTimeout { server, token });
    }

    fn ws_arrive(&mut self, server: usize, token: u64, path: &str) {
        let now = self.now;
        let s = &mut self.servers[server];
        if s.connecting != Some(token) {
            return;
        }
        if s.mock.should_refuse(now) {
            s.connecting = None;
            s.session.handle_disconnect(now);
            return;
        }
        if s.mock.should_stall(now) {
            return; // the connect timeout fails it
        }
        s.connecting = None;
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        match s.mock.handle_ws_open(now, conn, path) {
            Ok(()) => {
                s.conn = Some(conn);
                s.session.handle_connected(now);
            }
            Err(_) => s.session.handle_disconnect(now),
        }
    }

    fn ws_timeout(&mut self, server: usize, token: u64) {
        let s = &mut self.servers[server];
        if s.connecting == Some(token) {
            s.connecting = None;
            s.session.handle_disconnect(self.now);
        }
    }

    fn transmit(&mut self, server: usize, t: Transmit) {
        let now = self.now;
        match t {
            Transmit::Connect { path } => self.connect(server, path),
            Transmit::Text(text) => {
                let s = &mut self.servers[server];
                if let Some(conn) = s.conn {
                    s.mock.handle_ws_text(now, conn, &text);
                }
            }
            Transmit::Http { id, request } => {
                let deadline = now + HTTP_TIMEOUT;
                self.send_http(server, Asker::Session(id), request, deadline);
            }
            Transmit::Close => {
                let s = &mut self.servers[server];
                if let Some(conn) = s.conn.take() {
                    s.mock.handle_ws_close(now, conn);
                }
            }
            _ => {}
        }
    }

    fn mock_output(&mut self, server: usize, out: MockOutput) {
        let now = self.now;
        let s = &mut self.servers[server];
        match out {
            MockOutput::Send { conn, frame } if s.conn == Some(conn) => {
                let result = match frame {
                    Frame::Text(text) => s.session.handle_text(now, &text),
                    Frame::Binary(data) => s.session.handle_binary(now, data),
                    _ => Ok(()),
                };
                if result.is_err() {
                    self.stats.count("session: frames refused as damaged");
                }
            }
            MockOutput::Close { conn } if s.conn == Some(conn) => {
                s.conn = None;
                s.session.handle_disconnect(now);
            }
            _ => {}
        }
    }

    // -----------------------------------------------------------------------------------------
    // The pool machine's I/O, as the driver performs it
    // -----------------------------------------------------------------------------------------

    fn perform(&mut self, io: Io) {
        let now = self.now;
        if std::env::var("CHAOS_TRACE").is_ok() {
            eprintln!("{now:?} {io:?}");
        }
        match io {
            Io::Submit {
                server,
                job,
                attempt,
                submission,
            } => {
                self.stats.count("pool: submissions");
                let j = &mut self.jobs[job.0 as usize];
                assert!(j.ended.is_none(), "job {job} submitted after it ended");
                j.first_dispatch.get_or_insert(now);
                self.buffered -= j.held;
                j.held = 0;
                j.attempt = Some((attempt, server.0));
                let prompt = submission.prompt_id.clone();
                let fresh = self.prompts.insert(prompt.to_string(), (job, attempt));
                assert!(fresh.is_none(), "prompt id {prompt} used twice");
                self.dispatched.insert(prompt.to_string(), now);
                if let Err(e) = self.servers[server.0].session.submit(now, submission) {
                    let failure = Failure::Transport {
                        context: "submit",
                        error: TransportError::new(TransportErrorKind::Io, "submit")
                            .with_detail(e.to_string()),
                    };
                    let event = Event::Failed { prompt, failure };
                    self.pool.handle_event(now, server, event);
                }
            }
            Io::Cancel { server, prompt } => {
                self.stats.count("pool: cancels");
                let _ = self.servers[server.0].session.cancel(now, &prompt);
            }
            Io::Http {
                server,
                id,
                request,
                deadline,
            } => {
                let kind = request.path.split('/').nth(1).unwrap_or_default();
                self.stats.count(format!("pool: HTTP /{kind}"));
                self.send_http(server.0, Asker::Pool(id), request, deadline);
            }
            other => panic!("unexpected I/O {other:?}"),
        }
    }

    fn pool_event(&mut self, event: PoolEvent) {
        match event {
            PoolEvent::Finished(report) => self.finished(report),
            PoolEvent::Dispatched { .. } => self.stats.count("pool: dispatched"),
            PoolEvent::Accepted { .. } => self.stats.count("pool: accepted"),
            _ => {}
        }
    }

    fn finished(&mut self, report: JobReport) {
        let now = self.now;
        let job = report.job;
        let j = &mut self.jobs[job.0 as usize];
        assert!(j.ended.is_none(), "job {job} ended twice: {report:?}");
        j.ended = Some(now);
        let from = j.first_dispatch.unwrap_or(now);
        self.stats.max_job_latency = self.stats.max_job_latency.max(now - from);
        match &report.outcome {
            Ok(()) => {
                assert!(
                    !j.broken,
                    "job {job} succeeded with a graph the server refuses"
                );
                let (number, server) = j.attempt.expect("a succeeded job has an attempt");
                assert_eq!(report.server, Some(server), "job {job}");
                assert_eq!(report.attempts, number, "job {job}");
                let mut got: Vec<(u32, u32)> = Vec::new();
                for output in &report.outputs {
                    let node = &output.node;
                    assert_eq!(node.as_str(), "9", "job {job}: output of node {node}");
                    let (seed, i, last) = label(output.bytes()).expect("a stamped PNG");
                    assert_eq!(seed, seed_of(job.0), "job {job} got another job's image");
                    assert!(last, "job {job}: a preview delivered as an output");
                    got.push((output.index, i));
                }
                let want: Vec<(u32, u32)> = (0..j.batch as u32).map(|i| (i, i)).collect();
                assert_eq!(got, want, "job {job}: images of its batch of {}", j.batch);
                self.stats.count("jobs: succeeded");
                self.stats
                    .count(format!("jobs: succeeded at attempt {number}"));
            }
            Err(error) => {
                let why = match error {
                    JobError::Rejected(_) if j.broken => "refused graph",
                    _ if report.attempts >= self.attempts => "retries spent",
                    JobError::NoServerReachable { .. } => "no server reachable",
                    JobError::GaveUp { reason, .. } if reason.contains("every server") => {
                        "every server out"
                    }
                    _ => panic!(
                        "job {job} failed after {} of {} attempts: {error}",
                        report.attempts, self.attempts
                    ),
                };
                assert!(report.outputs.is_empty(), "a failed job carries no images");
                self.stats.count(format!("jobs: failed ({why})"));
            }
        }
        let delay = ms(self.rng.range(0, 30));
        self.at(now + delay, Ev::Consume(job));
    }

    // -----------------------------------------------------------------------------------------
    // Session events, on their way to the pool
    // -----------------------------------------------------------------------------------------

    fn session_event(&mut self, server: usize, event: Event) {
        let now = self.now;
        if std::env::var("CHAOS_TRACE").is_ok() {
            eprintln!("{now:?} server {server}: {event}");
        }
        if let Some(&(job, attempt)) = event.prompt().and_then(|p| self.prompts.get(p.as_str())) {
            if let Event::Output { image, .. } = &event {
                // Wherever it goes, an image must be its own job's.
                let (seed, _, _) = label(&image.data).expect("a stamped PNG");
                assert_eq!(seed, seed_of(job.0), "job {job} got another job's image");
                let j = &mut self.jobs[job.0 as usize];
                if j.ended.is_none() && j.attempt.is_some_and(|(n, _)| n == attempt) {
                    j.held += 1;
                    self.buffered += 1;
                }
            }
            if event.is_terminal() {
                let prompt = event.prompt().map(ToString::to_string).unwrap_or_default();
                *self.terminals.entry(prompt).or_default() += 1;
                let kind = match &event {
                    Event::Failed { failure, .. } => {
                        let text = failure.to_string();
                        format!("failed: {}", text.split(':').next().unwrap_or_default())
                    }
                    other => other.to_string().split(' ').next().unwrap().to_owned(),
                };
                self.stats.count(format!("session end: {kind}"));
            }
        }
        self.pool.handle_event(now, ServerId(server), event);
    }

    // -----------------------------------------------------------------------------------------
    // The loop
    // -----------------------------------------------------------------------------------------

    /// Moves everything that can move at `now`, draining every output after each input.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(io) = self.pool.poll_io() {
                moved = true;
                self.perform(io);
            }
            while let Some(event) = self.pool.poll_event() {
                moved = true;
                self.pool_event(event);
            }
            for s in 0..SERVERS {
                while let Some(t) = self.servers[s].session.poll_transmit() {
                    moved = true;
                    self.transmit(s, t);
                }
                while let Some(out) = self.servers[s].mock.poll_output(self.now) {
                    moved = true;
                    self.mock_output(s, out);
                }
                let mut drained = 0;
                while let Some(e) = self.servers[s].session.poll_event() {
                    moved = true;
                    drained += 1;
                    self.session_event(s, e);
                }
                self.stats.max_events_per_drain = self.stats.max_events_per_drain.max(drained);
            }
            if !moved {
                break;
            }
        }
        self.check_bounds();
    }

    fn check_bounds(&mut self) {
        let buffered = self.buffered;
        let scheduler = self.pool.scheduler();
        let limit = scheduler.unconsumed_limit() * MAX_BATCH as usize;
        assert!(
            buffered <= limit,
            "{buffered} images buffered, over {limit}"
        );
        let stats = scheduler.stats();
        assert!(stats.in_flight + stats.unconsumed <= scheduler.unconsumed_limit());
        // Prompts in a session: the current attempts of unfinished jobs, and attempts the pool
        // moved on from without a cancel, which their total deadline ends.
        let total = self.deadlines.total.unwrap();
        let mut prompts = 0;
        let mut abandoned = 0;
        for s in &self.servers {
            let mut here = 0;
            for p in s.session.in_flight() {
                here += 1;
                let (job, attempt) = self.prompts[p.as_str()];
                let j = &self.jobs[job.0 as usize];
                let current = j.ended.is_none() && j.attempt.is_some_and(|(n, _)| n == attempt);
                if !current {
                    abandoned += 1;
                }
                let age = self.now - self.dispatched[p.as_str()];
                assert!(age <= total, "{p} still in its session after {age:?}");
            }
            prompts = prompts.max(here);
        }
        let st = &mut self.stats;
        st.max_buffered_images = st.max_buffered_images.max(buffered);
        st.max_session_prompts = st.max_session_prompts.max(prompts);
        st.max_abandoned = st.max_abandoned.max(abandoned);
        st.max_in_transit = st.max_in_transit.max(self.events.len());
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive {
                server,
                token,
                request,
            } => self.arrive(server, token, request),
            Ev::Reply { token, result } => self.reply(token, result),
            Ev::HttpTimeout { token, after } => {
                if self.http.contains_key(&token) {
                    self.stats.count("net: HTTP timeouts");
                }
                let e = TransportError::new(TransportErrorKind::TimedOut(after), "request");
                self.reply(token, Err(e));
            }
            Ev::WsArrive {
                server,
                token,
                path,
            } => self.ws_arrive(server, token, &path),
            Ev::WsTimeout { server, token } => self.ws_timeout(server, token),
            Ev::Consume(job) => {
                self.pool.handle_consumed(self.now, job);
                let j = &mut self.jobs[job.0 as usize];
                j.consumed = true;
                self.buffered -= j.held;
                j.held = 0;
            }
        }
    }

    fn next_time(&self) -> Option<Duration> {
        let timers = self
            .servers
            .iter()
            .flat_map(|s| [s.session.poll_timeout(), s.mock.poll_timeout()]);
        let heap = self.events.next_time().copied();
        timers
            .chain([self.pool.poll_timeout(), heap])
            .flatten()
            .min()
    }

    /// Runs until every job was consumed, then until every session has ended every prompt.
    pub(super) fn run(&mut self, limit: Duration) {
        self.settle();
        while !self.jobs.iter().all(|j| j.consumed) {
            self.step(limit);
        }
        self.jobs_done_at = self.now;
        assert!(
            self.pool.is_done(),
            "every job was consumed: the pool is done"
        );
        while self
            .servers
            .iter()
            .any(|s| s.session.in_flight().count() > 0)
        {
            self.step(limit);
        }
    }

    /// Advances the clock to the next timer or arrival and fires everything due then.
    fn step(&mut self, limit: Duration) {
        self.stats.steps += 1;
        let next = self
            .next_time()
            .expect("work is left, yet nothing is scheduled");
        if next > limit {
            let stuck: Vec<String> = self
                .jobs
                .iter()
                .enumerate()
                .filter(|(_, j)| !j.consumed)
                .take(5)
                .map(|(n, j)| format!("job {n}: attempt {:?} ended {:?}", j.attempt, j.ended))
                .collect();
            let sessions: Vec<Vec<String>> = self
                .servers
                .iter()
                .map(|s| s.session.in_flight().map(ToString::to_string).collect())
                .collect();
            let mine: Vec<_> = self
                .prompts
                .iter()
                .filter(|(_, (j, _))| !self.jobs[j.0 as usize].consumed)
                .take(12)
                .collect();
            panic!(
                "still running at {next:?}: a hang; {:?}; {stuck:?}; sessions {sessions:?}; \
                 prompts {mine:?}; counts {:?}",
                self.pool.scheduler().stats(),
                self.stats.counts
            );
        }
        self.now = self.now.max(next);
        while let Some((_, ev)) = self.events.pop_due(&self.now) {
            self.handle(ev);
            self.settle();
        }
        let now = self.now;
        if self.pool.poll_timeout().is_some_and(|t| t <= now) {
            self.pool.handle_timeout(now);
        }
        for s in &mut self.servers {
            if s.session.poll_timeout().is_some_and(|t| t <= now) {
                s.session.handle_timeout(now);
            }
            if s.mock.poll_timeout().is_some_and(|t| t <= now) {
                s.mock.handle_timeout(now);
            }
        }
        self.settle();
    }
}
