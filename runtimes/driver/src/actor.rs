//! The task that owns one [`Session`] and moves its bytes: the websocket, HTTP requests,
//! timers. Callers talk to it through channels; it never shares its state.
//!
//! # Waits
//!
//! The actor itself awaits only its inputs, the next frame of its websocket and the session's
//! next timer. It reads the websocket itself: each frame goes straight from the socket's
//! buffer to the session, with no task or channel between. Everything else that waits on the
//! network runs in a task of its own, bounded by the deadline the session chose
//! ([`Session::timeouts`]):
//!
//! | who | waits on | bound |
//! | --- | --- | --- |
//! | connect task | TCP, TLS, websocket handshake | `connect` |
//! | the actor | the next frame | the session's silence timer, then the connection is dropped |
//! | writer task | each write, the close handshake | `close` |
//! | HTTP task | one exchange | `http` |
//!
//! A connection is dropped by dropping its [`Conn`]: the actor reads it no more, the writer
//! closes the socket within `close`. Events go to each prompt's [`Mailbox`] without waiting,
//! so a reader that does not read never stalls the socket, other prompts or timers.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use async_tungstenite::tungstenite::{Error as WsError, Message};
use bytes::Bytes;
use comfy_proxy::session::{Event, Outbox, OutboxStats, RequestId, Session, Submission, Transmit};
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{Misuse, PromptId, ServerAddress, TransportError, TransportErrorKind};
use foldhash::HashMap;
use futures_channel::{mpsc, oneshot};
use futures_util::future::{Either, select};
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::task::AtomicWaker;
use futures_util::{Future, SinkExt};

use crate::auth::Auth;
use crate::drive::{Drive, drive};
use crate::headers::Headers;
use crate::record::Recorder;
use crate::runtime::{HttpClient, OutgoingRequest, Runtime};
use crate::tls::TlsConfig;
use crate::ws::{self, Socket, WsOptions};

/// Websocket messages queued for the writer. The session sends a hello and pings; a socket
/// whose writes back up this far is wedged and is given up.
const WRITE_QUEUE: usize = 16;

/// Everything the actor needs to reach its server.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub server: ServerAddress,
    pub auth: Auth,
    /// The auth's headers, then the user's; checked when the config was built.
    pub headers: Headers,
    pub tls: TlsConfig,
    pub max_frame_len: usize,
    pub max_body: usize,
    /// The deadline of each HTTP exchange, passed to the HTTP client with the request.
    pub http_timeout: Duration,
}

impl Endpoint {
    pub(crate) fn outgoing(&self, request: comfy_proxy::wire::HttpRequest) -> OutgoingRequest {
        let path = self.auth.apply_query(&request.path);
        OutgoingRequest {
            server: self.server.clone(),
            url: self.server.http_url(&path),
            shown_url: self.server.http_url(&self.auth.shown_query(&request.path)),
            target: format!("{}{path}", self.server.base_path()),
            request,
            headers: self.headers.clone(),
            tls: self.tls.clone(),
            max_body: self.max_body,
            timeout: self.http_timeout,
        }
    }
}

/// Awaits `future`, or gives up after `limit` (`None`: no limit) with `None`.
pub(crate) async fn bounded<T>(
    rt: &dyn Runtime,
    limit: Option<Duration>,
    future: impl Future<Output = T>,
) -> Option<T> {
    let future = std::pin::pin!(future);
    match limit {
        None => Some(future.await),
        Some(limit) => match select(future, rt.sleep(limit)).await {
            Either::Left((value, _)) => Some(value),
            Either::Right(_) => None,
        },
    }
}

/// One prompt's events between the actor and its [`PromptStream`](crate::PromptStream): the
/// core's [`Outbox`] decides what is kept; the actor pushes without waiting, the reader takes.
pub(crate) struct Mailbox {
    shared: Mutex<Shared>,
}

struct Shared {
    outbox: Outbox,
    waker: Option<Waker>,
    /// The actor will push nothing more.
    closed: bool,
    /// The actor told the session that this reader lags.
    lag_reported: bool,
}

impl Mailbox {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            shared: Mutex::new(Shared {
                outbox: Outbox::new(cap),
                waker: None,
                closed: false,
                lag_reported: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Nothing panics while holding the lock; a poisoned one still holds a sound queue.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event; `true` when the reader has just started to lag.
    fn push(&self, event: Event) -> bool {
        let (report, waker) = {
            let mut s = self.lock();
            s.outbox.push(event);
            let report = s.outbox.is_lagging() && !s.lag_reported;
            s.lag_reported |= report;
            (report, s.waker.take())
        };
        // Woken after the lock is let go: the reader may run at once on another thread.
        if let Some(w) = waker {
            w.wake();
        }
        report
    }

    fn close(&self) {
        let waker = {
            let mut s = self.lock();
            s.closed = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next event, `None` once the actor closed it and it is empty; and whether the reader
    /// has just caught up after a reported lag.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> (Poll<Option<Event>>, bool) {
        let mut s = self.lock();
        match s.outbox.pop() {
            Some(event) => {
                let caught_up = s.lag_reported && !s.outbox.is_lagging();
                if caught_up {
                    s.lag_reported = false;
                }
                (Poll::Ready(Some(event)), caught_up)
            }
            None if s.closed => (Poll::Ready(None), false),
            None => {
                s.waker = Some(cx.waker().clone());
                (Poll::Pending, false)
            }
        }
    }

    pub(crate) fn stats(&self) -> OutboxStats {
        self.lock().outbox.stats()
    }
}

/// The actor's end of a [`Mailbox`]: dropping it tells the reader nothing more comes.
struct MailboxTx(Arc<Mailbox>);

impl Drop for MailboxTx {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What reaches the actor.
pub(crate) enum Input {
    Submit {
        submission: Submission,
        events: Option<Arc<Mailbox>>,
        ack: oneshot::Sender<Result<(), Misuse>>,
    },
    Cancel(PromptId),
    Close,
    /// The reader of a prompt took its mailbox down after a reported lag.
    CaughtUp(PromptId),
    Opened {
        generation: u64,
        writer: mpsc::Sender<Message>,
        stream: SplitStream<Socket>,
    },
    ConnectFailed {
        generation: u64,
        error: TransportError,
    },
    /// The writer of that connection failed or timed out.
    WriteFailed {
        generation: u64,
    },
    Http {
        id: RequestId,
        result: Result<HttpResponse, TransportError>,
    },
}

/// An open websocket: dropping it stops reading it and closes it.
struct Conn {
    writer: mpsc::Sender<Message>,
    /// Read by the actor itself, when it has no input to handle.
    stream: SplitStream<Socket>,
    /// Whether the stream may have something new.
    wake: Arc<SocketWake>,
}

impl Conn {
    fn new(writer: mpsc::Sender<Message>, stream: SplitStream<Socket>) -> Self {
        let wake = Arc::new(SocketWake {
            // Polled once before anything woke it: that poll registers its waker.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            writer,
            stream,
            wake,
        }
    }

    /// The next frame, polled only if the socket woke (or last gave a frame) since the last
    /// `Pending`: the actor wakes for many other inputs, and a poll of an idle socket costs
    /// tungstenite a read system call and the zeroing of its read buffer.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, WsError>>> {
        self.wake.task.register(cx.waker());
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.wake.clone());
        let next = ready!(
            self.stream
                .poll_next_unpin(&mut Context::from_waker(&waker))
        );
        // More frames may wait in tungstenite's buffer, and no wake-up would tell of them.
        self.wake.woken.store(true, Ordering::Release);
        Poll::Ready(next)
    }
}

/// The waker the socket is polled with: it notes that the socket woke, then wakes the actor.
struct SocketWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for SocketWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

pub(crate) struct Actor {
    rt: Arc<dyn Runtime>,
    http: Arc<dyn HttpClient>,
    endpoint: Endpoint,
    session: Session,
    /// Each prompt's mailbox.
    routes: HashMap<PromptId, MailboxTx>,
    /// Where events of no prompt go, if anywhere.
    others: Option<crate::pool::StatusSink>,
    /// Inputs from handles, HTTP tasks, connect and writer tasks.
    control: mpsc::UnboundedSender<Input>,
    /// Writes the traffic as a transcript, when asked to.
    recorder: Option<Recorder>,
    /// Requests awaiting their response, kept for the recorder.
    recorded: HashMap<RequestId, comfy_proxy::wire::HttpRequest>,
    /// The websocket path last asked for, for the recorder.
    ws_path: String,
    /// The connection whose frames count; older ones' reports are ignored.
    generation: u64,
    conn: Option<Conn>,
    /// Websockets opened so far: after the first, an open is a reconnect.
    opened: u32,
    /// Closed by its clients, every prompt ended: the socket closes for good.
    closed: bool,
}

/// The target of the client's log lines.
const LOG: &str = "comfy_proxy::client";

impl Actor {
    /// An actor for `session`; run it with [`Actor::run`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rt: Arc<dyn Runtime>,
        http: Arc<dyn HttpClient>,
        endpoint: Endpoint,
        session: Session,
        others: Option<crate::pool::StatusSink>,
        control: mpsc::UnboundedSender<Input>,
        recorder: Option<Recorder>,
    ) -> Self {
        Self {
            rt,
            http,
            endpoint,
            session,
            routes: HashMap::default(),
            others,
            control,
            recorder,
            recorded: HashMap::default(),
            ws_path: String::new(),
            generation: 0,
            conn: None,
            opened: 0,
            closed: false,
        }
    }

    /// Runs until closed and every prompt in flight has ended.
    pub(crate) async fn run(self, control: mpsc::UnboundedReceiver<Input>) {
        let rt = self.rt.clone();
        let mut running = Running {
            actor: self,
            inputs: control,
            closing: false,
        };
        drive(rt.as_ref(), &mut running).await;
    }

    /// Drains the session until both queues are empty: routing an event may cancel a prompt,
    /// which queues transmits.
    fn drain(&mut self, now: Duration) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.session.poll_transmit() {
                progressed = true;
                self.transmit(t, now);
            }
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                self.route(now, event);
            }
            if !progressed {
                break;
            }
        }
    }

    fn handle(&mut self, now: Duration, input: Input) {
        match input {
            Input::Close | Input::Submit { .. } => {}
            Input::Cancel(id) => drop(self.session.cancel(now, &id)),
            Input::CaughtUp(id) => self.session.handle_reader_lag(now, &id, false),
            Input::Opened {
                generation,
                writer,
                stream,
            } => {
                if generation == self.generation {
                    let server = &self.endpoint.server;
                    match self.opened {
                        0 => log::info!(target: LOG, "connected to {server}"),
                        _ => log::info!(target: LOG, "reconnected to {server}"),
                    }
                    self.opened = self.opened.saturating_add(1);
                    if let Some(r) = &mut self.recorder {
                        r.ws_open(&self.ws_path);
                    }
                    self.conn = Some(Conn::new(writer, stream));
                    self.session.handle_connected(now);
                }
            }
            Input::ConnectFailed { generation, error } => {
                if generation == self.generation {
                    log::warn!(target: LOG, "cannot connect to {}: {error}", self.endpoint.server);
                    self.session.handle_connect_failed(now, error);
                }
            }
            Input::WriteFailed { generation } => {
                if generation == self.generation {
                    self.closed_by("a websocket write failed or timed out", now);
                }
            }
            Input::Http { id, result } => {
                if let (Some(r), Some(request)) = (&mut self.recorder, self.recorded.remove(&id)) {
                    let shown = result.as_ref().map_err(ToString::to_string);
                    r.http(&request, shown.as_ref().map_err(String::as_str).copied());
                }
                match result {
                    Ok(response) => self.session.handle_response(now, id, response),
                    Err(error) => self.session.handle_http_error(now, id, error),
                }
            }
        }
    }

    /// What the current connection gave: a frame, its failure, or (`None`) its end.
    fn frame(&mut self, now: Duration, next: Option<Result<Message, WsError>>) {
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => return self.closed_by(&e.to_string(), now),
            None => return self.closed_by("connection ended", now),
        };
        if let Some(r) = &mut self.recorder {
            match &message {
                Message::Text(text) => r.ws_text(text.as_str()),
                Message::Binary(data) => r.ws_binary(data),
                _ => {}
            }
        }
        match message {
            // A frame the core cannot decode changes nothing; the core has already failed any
            // prompt whose output it damaged.
            Message::Text(text) => drop(self.session.handle_text(now, text.as_str())),
            Message::Binary(data) => drop(self.session.handle_binary(now, data)),
            Message::Pong(_) | Message::Ping(_) => self.session.handle_pong(now),
            Message::Close(close) => {
                self.closed_by(&format!("closed by the server: {close:?}"), now);
            }
            Message::Frame(_) => {}
        }
    }

    /// The current connection ended: the session hears of it at once.
    fn closed_by(&mut self, reason: &str, now: Duration) {
        if let Some(r) = &mut self.recorder {
            r.ws_close(reason, "server");
        }
        let server = &self.endpoint.server;
        log::warn!(target: LOG, "websocket to {server} ended: {reason}");
        self.drop_conn();
        self.session.handle_disconnect(now);
    }

    /// Forgets the current connection: it is read no more, its writer closes it within the close
    /// deadline, and its late reports are ignored.
    fn drop_conn(&mut self) {
        self.conn = None;
        self.generation += 1;
    }

    fn transmit(&mut self, t: Transmit, now: Duration) {
        let message = match t {
            Transmit::Connect { path } => {
                let path_only = path.split('?').next().unwrap_or_default();
                log::debug!(target: LOG, "connecting to {}{path_only}", self.endpoint.server);
                self.drop_conn();
                self.ws_path = path.clone();
                self.spawn_connect(self.generation, path);
                return;
            }
            Transmit::Http { id, request } => {
                if self.recorder.is_some() {
                    self.recorded.insert(id, request.clone());
                }
                self.spawn_http(id, request);
                return;
            }
            Transmit::Close => {
                let server = &self.endpoint.server;
                match (self.conn.is_some(), self.closed) {
                    (true, true) => log::debug!(target: LOG, "closing the websocket to {server}"),
                    // Before the close, the session gives up an open socket that went silent.
                    (true, false) => log::warn!(target: LOG,
                        "the websocket to {server} went silent: closing it to reconnect"),
                    (false, _) => {}
                }
                return self.drop_conn();
            }
            Transmit::Text(text) => {
                if let Some(r) = &mut self.recorder {
                    r.ws_send_text(&text);
                }
                Message::text(text)
            }
            Transmit::Ping => Message::Ping(Bytes::new()),
            _ => return,
        };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.writer.try_send(message).is_err() {
            // The writer is gone or wedged: the socket is as good as closed.
            self.drop_conn();
            self.session.handle_disconnect(now);
        }
    }

    fn spawn_connect(&self, generation: u64, path: String) {
        let rt = self.rt.clone();
        let endpoint = self.endpoint.clone();
        let control = self.control.clone();
        let timeouts = *self.session.timeouts();
        self.rt.spawn(Box::pin(async move {
            let options = WsOptions {
                server: &endpoint.server,
                auth: &endpoint.auth,
                headers: &endpoint.headers,
                tls: &endpoint.tls,
                max_frame_len: endpoint.max_frame_len,
            };
            let opened = bounded(
                rt.as_ref(),
                timeouts.connect,
                ws::open(rt.as_ref(), &options, &path),
            )
            .await;
            let socket = match opened {
                Some(Ok(socket)) => socket,
                Some(Err(error)) => {
                    let _ = control.unbounded_send(Input::ConnectFailed { generation, error });
                    return;
                }
                None => {
                    let kind = TransportErrorKind::TimedOut(timeouts.connect.unwrap_or_default());
                    let what = format!("connect to {}", endpoint.server.authority());
                    let error = TransportError::new(kind, what);
                    let _ = control.unbounded_send(Input::ConnectFailed { generation, error });
                    return;
                }
            };
            let (sink, stream) = StreamExt::split(socket);
            let (writer, queue) = mpsc::channel(WRITE_QUEUE);
            rt.spawn(Box::pin(write(
                rt.clone(),
                sink,
                queue,
                timeouts.close,
                control.clone(),
                generation,
            )));
            let _ = control.unbounded_send(Input::Opened {
                generation,
                writer,
                stream,
            });
        }));
    }

    fn spawn_http(&self, id: RequestId, request: comfy_proxy::wire::HttpRequest) {
        let http = self.http.clone();
        let mut outgoing = self.endpoint.outgoing(request);
        // The client holds its exchange to the session's deadline (no limit: none it can
        // reach), as `HttpClient::send` promises; the session's own timer for the request,
        // a second later, is the backstop. No second timer here: each costs the reactor a
        // wake-up, and this runs once per prompt.
        outgoing.timeout = self.session.timeouts().http.unwrap_or(Duration::MAX);
        let control = self.control.clone();
        self.rt.spawn(Box::pin(async move {
            // Formatted only for a line that shows: this runs for every post.
            let what = log::log_enabled!(target: LOG, log::Level::Debug).then(|| {
                let what = format!(
                    "{} {}",
                    outgoing.request.method.as_str(),
                    outgoing.shown_url
                );
                log::debug!(target: LOG, "{what}");
                what
            });
            let result = http.send(outgoing).await;
            match (&what, &result) {
                (Some(what), Ok(r)) => log::debug!(target: LOG, "{what}: {}", r.status),
                (Some(what), Err(e)) => log::debug!(target: LOG, "{what}: {e}"),
                (None, _) => {}
            }
            let _ = control.unbounded_send(Input::Http { id, result });
        }));
    }

    fn route(&mut self, now: Duration, event: Event) {
        let Some(id) = event.prompt().cloned() else {
            if let Some(others) = &self.others {
                others.push(&event);
            }
            return;
        };
        let terminal = event.is_terminal();
        let Some(mailbox) = self.routes.get(&id) else {
            return;
        };
        if mailbox.0.push(event) {
            self.session.handle_reader_lag(now, &id, true);
        }
        if terminal {
            self.routes.remove(&id);
        }
    }
}

/// The actor in the [drive loop](crate::drive): its inputs, and whether it was told to close.
struct Running {
    actor: Actor,
    inputs: mpsc::UnboundedReceiver<Input>,
    closing: bool,
}

/// What woke the actor.
enum Wake {
    /// An input; `None` once every sender is gone.
    Input(Option<Input>),
    /// What the current connection gave: a frame, its failure, or (`None`) its end.
    Frame(Option<Result<Message, WsError>>),
}

impl Drive for Running {
    type Wake = Wake;

    fn perform(&mut self, now: Duration) {
        self.actor.drain(now);
    }

    fn finished(&mut self, now: Duration) -> bool {
        let actor = &mut self.actor;
        if !self.closing
            || actor.session.in_flight().next().is_some()
            || actor.session.is_stopping()
        {
            return false;
        }
        actor.closed = true;
        actor.session.close(now);
        actor.drain(now);
        actor.conn = None;
        true
    }

    fn poll_timeout(&self, _now: Duration) -> Option<Duration> {
        self.actor.session.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Duration) {
        self.actor.session.handle_timeout(now);
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if let Poll::Ready(input) = self.inputs.poll_next_unpin(cx) {
            return Poll::Ready(Wake::Input(input));
        }
        // The socket is read only when the actor has caught up with its inputs: a server
        // that sends faster than the session takes its frames waits in TCP.
        let Some(conn) = &mut self.actor.conn else {
            return Poll::Pending;
        };
        conn.poll_frame(cx).map(Wake::Frame)
    }

    fn handle(&mut self, now: Duration, wake: Wake) -> ControlFlow<()> {
        let input = match wake {
            Wake::Input(Some(input)) => input,
            Wake::Input(None) => return ControlFlow::Break(()),
            Wake::Frame(frame) => {
                self.actor.frame(now, frame);
                return ControlFlow::Continue(());
            }
        };
        match input {
            Input::Close => self.closing = true,
            Input::Submit {
                submission,
                events,
                ack,
            } => {
                let id = submission.prompt_id.clone();
                let result = if self.closing {
                    Err(Misuse::Closed)
                } else {
                    self.actor.session.submit(now, submission)
                };
                if let (true, Some(events)) = (result.is_ok(), events) {
                    self.actor.routes.insert(id, MailboxTx(events));
                }
                let _ = ack.send(result);
            }
            other => self.actor.handle(now, other),
        }
        ControlFlow::Continue(())
    }
}

/// The writer task: sends what the actor queues, each write within `limit`; when the actor
/// drops the connection, closes the socket within `limit`.
async fn write(
    rt: Arc<dyn Runtime>,
    mut sink: SplitSink<Socket, Message>,
    mut queue: mpsc::Receiver<Message>,
    limit: Option<Duration>,
    control: mpsc::UnboundedSender<Input>,
    generation: u64,
) {
    while let Some(message) = queue.next().await {
        let sent = bounded(rt.as_ref(), limit, sink.send(message)).await;
        if !matches!(sent, Some(Ok(()))) {
            let _ = control.unbounded_send(Input::WriteFailed { generation });
            return;
        }
    }
    let _ = bounded(rt.as_ref(), limit, sink.close()).await;
}
