//! The task that owns one [`Session`] and moves its bytes: the websocket, HTTP requests,
//! timers. Callers talk to it through channels; it never shares its state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use bytes::Bytes;
use comfy_proxy::session::{Event, RequestId, Session, Submission, Transmit};
use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{Misuse, PromptId, ServerAddress, TransportError, TransportErrorKind};
use futures_channel::{mpsc, oneshot};
use futures_util::SinkExt;
use futures_util::future::{Either, select};
use futures_util::stream::{SplitSink, StreamExt};

use crate::auth::Auth;
use crate::headers::Headers;
use crate::record::Recorder;
use crate::runtime::{HttpClient, OutgoingRequest, Runtime};
use crate::tls::TlsConfig;
use crate::ws::{self, Socket, WsOptions};

/// How long one websocket write, connect or HTTP exchange may take before it counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub write: Duration,
    pub http: Duration,
}

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
    pub timeouts: Timeouts,
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
            timeout: self.timeouts.http,
        }
    }
}

/// Where the actor sends events.
pub(crate) enum Route {
    /// Each prompt's events to its own channel; events of no prompt to `others`, if set.
    PerPrompt(
        HashMap<PromptId, mpsc::Sender<Event>>,
        Option<mpsc::UnboundedSender<Event>>,
    ),
}

/// What reaches the actor.
pub(crate) enum Input {
    Submit {
        submission: Submission,
        events: Option<mpsc::Sender<Event>>,
        ack: oneshot::Sender<Result<(), Misuse>>,
    },
    Cancel(PromptId),
    Close,
    Opened {
        generation: u64,
        sink: SplitSink<Socket, Message>,
    },
    Frame {
        generation: u64,
        frame: Frame,
    },
    Http {
        id: RequestId,
        result: Result<HttpResponse, TransportError>,
    },
}

/// A websocket frame, or the socket's end.
pub(crate) enum Frame {
    Text(String),
    Binary(Bytes),
    Closed(String),
    /// The websocket could not be opened (refused, timed out, TLS, handshake).
    ConnectFailed(TransportError),
}

pub(crate) struct Actor {
    pub rt: Arc<dyn Runtime>,
    pub http: Arc<dyn HttpClient>,
    pub endpoint: Endpoint,
    pub session: Session,
    pub route: Route,
    /// Inputs from handles, HTTP tasks and connect tasks.
    pub control: mpsc::UnboundedSender<Input>,
    /// Frames from the reader task; bounded, so a slow actor slows the socket.
    pub frames: mpsc::Sender<Input>,
    /// Writes the traffic as a transcript, when asked to.
    pub recorder: Option<Recorder>,
    /// Requests awaiting their response, kept for the recorder.
    pub recorded: HashMap<RequestId, comfy_proxy::wire::HttpRequest>,
    /// The websocket path last asked for, for the recorder.
    pub ws_path: String,
}

impl Actor {
    /// Runs until closed and every prompt in flight has ended.
    pub(crate) async fn run(
        mut self,
        control: mpsc::UnboundedReceiver<Input>,
        frames: mpsc::Receiver<Input>,
    ) {
        let epoch = Instant::now();
        let mut inputs = futures_util::stream::select(control, frames);
        let mut generation = 0u64;
        let mut sink: Option<SplitSink<Socket, Message>> = None;
        let mut closing = false;
        loop {
            let now = epoch.elapsed();
            // Drain until both queues are empty: routing an event may cancel a prompt, which
            // queues transmits.
            loop {
                let mut progressed = false;
                while let Some(t) = self.session.poll_transmit() {
                    progressed = true;
                    self.transmit(t, now, &mut generation, &mut sink).await;
                }
                while let Some(event) = self.session.poll_event() {
                    progressed = true;
                    self.route(now, event).await;
                }
                if !progressed {
                    break;
                }
            }
            if closing && self.session.in_flight().next().is_none() {
                self.session.close(now);
                if let Some(mut s) = sink.take() {
                    let _ = s.close().await;
                }
                return;
            }
            let next = match self.session.poll_timeout() {
                Some(at) => {
                    let wait = at.saturating_sub(epoch.elapsed());
                    match select(inputs.next(), self.rt.sleep(wait)).await {
                        Either::Left((input, _)) => input,
                        Either::Right(_) => {
                            self.session.handle_timeout(epoch.elapsed());
                            continue;
                        }
                    }
                }
                None => inputs.next().await,
            };
            let now = epoch.elapsed();
            let Some(input) = next else { return };
            match input {
                Input::Submit {
                    submission,
                    events,
                    ack,
                } => {
                    let id = submission.prompt_id.clone();
                    let result = if closing {
                        Err(Misuse::Closed)
                    } else {
                        self.session.submit(now, submission)
                    };
                    if let (true, Route::PerPrompt(routes, _), Some(events)) =
                        (result.is_ok(), &mut self.route, events)
                    {
                        routes.insert(id, events);
                    }
                    let _ = ack.send(result);
                }
                Input::Cancel(id) => {
                    let _ = self.session.cancel(now, &id);
                }
                Input::Close => closing = true,
                Input::Opened {
                    generation: g,
                    sink: s,
                } => {
                    if g == generation {
                        if let Some(r) = &mut self.recorder {
                            r.ws_open(&self.ws_path);
                        }
                        sink = Some(s);
                        self.session.handle_connected(now);
                    }
                }
                Input::Frame {
                    generation: g,
                    frame,
                } => {
                    if g != generation {
                        continue;
                    }
                    if let Some(r) = &mut self.recorder {
                        match &frame {
                            Frame::Text(text) => r.ws_text(text),
                            Frame::Binary(data) => r.ws_binary(data),
                            Frame::Closed(reason) => r.ws_close(reason, "server"),
                            Frame::ConnectFailed(e) => r.ws_close(&e.to_string(), "server"),
                        }
                    }
                    match frame {
                        // A frame the core cannot decode changes nothing; the core has already
                        // failed any prompt whose output it damaged.
                        Frame::Text(text) => drop(self.session.handle_text(now, &text)),
                        Frame::Binary(data) => drop(self.session.handle_binary(now, data)),
                        Frame::Closed(_) | Frame::ConnectFailed(_) => {
                            sink = None;
                            self.session.handle_disconnect(now);
                        }
                    }
                }
                Input::Http { id, result } => {
                    if let (Some(r), Some(request)) =
                        (&mut self.recorder, self.recorded.remove(&id))
                    {
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
    }

    async fn transmit(
        &mut self,
        t: Transmit,
        now: Duration,
        generation: &mut u64,
        sink: &mut Option<SplitSink<Socket, Message>>,
    ) {
        let message = match t {
            Transmit::Connect { path } => {
                if let Some(mut old) = sink.take() {
                    let _ = old.close().await;
                }
                *generation += 1;
                self.ws_path = path.clone();
                self.spawn_connect(*generation, path);
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
                if let Some(mut s) = sink.take() {
                    let _ = s.close().await;
                }
                return;
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
        let Some(s) = sink.as_mut() else { return };
        let write = select(s.send(message), self.rt.sleep(self.endpoint.timeouts.write)).await;
        if !matches!(write, Either::Left((Ok(()), _))) {
            *sink = None;
            self.session.handle_disconnect(now);
        }
    }

    fn spawn_connect(&self, generation: u64, path: String) {
        let rt = self.rt.clone();
        let endpoint = self.endpoint.clone();
        let control = self.control.clone();
        let frames = self.frames.clone();
        self.rt.spawn(Box::pin(async move {
            let options = WsOptions {
                server: &endpoint.server,
                auth: &endpoint.auth,
                headers: &endpoint.headers,
                tls: &endpoint.tls,
                max_frame_len: endpoint.max_frame_len,
            };
            let opened = select(
                Box::pin(ws::open(rt.as_ref(), &options, &path)),
                rt.sleep(endpoint.timeouts.connect),
            )
            .await;
            let socket = match opened {
                Either::Left((Ok(socket), _)) => socket,
                Either::Left((Err(e), _)) => {
                    return report(frames, generation, Frame::ConnectFailed(e)).await;
                }
                Either::Right(_) => {
                    let e = TransportError::new(
                        TransportErrorKind::TimedOut(endpoint.timeouts.connect),
                        format!("connect to {}", endpoint.server.authority()),
                    );
                    return report(frames, generation, Frame::ConnectFailed(e)).await;
                }
            };
            let (sink, mut stream) = StreamExt::split(socket);
            if control
                .unbounded_send(Input::Opened { generation, sink })
                .is_err()
            {
                return;
            }
            let mut frames = frames;
            let reason = loop {
                let frame = match stream.next().await {
                    Some(Ok(Message::Text(text))) => Frame::Text(text.as_str().to_owned()),
                    Some(Ok(Message::Binary(data))) => Frame::Binary(data),
                    Some(Ok(Message::Close(close))) => {
                        break format!("closed by the server: {close:?}");
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break e.to_string(),
                    None => break "connection ended".to_owned(),
                };
                if frames
                    .send(Input::Frame { generation, frame })
                    .await
                    .is_err()
                {
                    return;
                }
            };
            report(frames, generation, Frame::Closed(reason)).await;
        }));
    }

    fn spawn_http(&self, id: RequestId, request: comfy_proxy::wire::HttpRequest) {
        let rt = self.rt.clone();
        let http = self.http.clone();
        let outgoing = self.endpoint.outgoing(request);
        let limit = self.endpoint.timeouts.http;
        let control = self.control.clone();
        self.rt.spawn(Box::pin(async move {
            let what = format!(
                "{} {}",
                outgoing.request.method.as_str(),
                outgoing.shown_url
            );
            let result = match select(http.send(outgoing), rt.sleep(limit)).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(TransportError::new(
                    TransportErrorKind::TimedOut(limit),
                    what,
                )),
            };
            let _ = control.unbounded_send(Input::Http { id, result });
        }));
    }

    async fn route(&mut self, now: Duration, event: Event) {
        match &mut self.route {
            Route::PerPrompt(routes, others) => {
                let Some(id) = event.prompt().cloned() else {
                    if let Some(others) = others {
                        let _ = others.unbounded_send(event);
                    }
                    return;
                };
                let terminal = event.is_terminal();
                let Some(tx) = routes.get_mut(&id) else {
                    return;
                };
                if tx.send(event).await.is_err() {
                    // The caller dropped the stream: stop the prompt on the server.
                    routes.remove(&id);
                    let _ = self.session.cancel(now, &id);
                } else if terminal {
                    routes.remove(&id);
                }
            }
        }
    }
}

async fn report(mut frames: mpsc::Sender<Input>, generation: u64, frame: Frame) {
    let _ = frames.send(Input::Frame { generation, frame }).await;
}
