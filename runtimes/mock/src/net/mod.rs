//! The mock ComfyUI server over real sockets: the sans-IO [`MockServer`] decides what to send
//! and when; this module accepts connections, speaks HTTP/1.1 and the websocket, renders
//! pictures and keeps time.

mod http1;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::Role;
use bytes::Bytes;
use comfy_proxy_driver::{Runtime, Stream};
use futures_channel::{mpsc, oneshot};
use futures_util::future::{Either, select};
use futures_util::{SinkExt, StreamExt};

use crate::render::{self, Picture};
use crate::server::{
    ConnId, Frame, ImageSpec, MockConfig, MockOutput, MockResponse, MockServer, Renderer,
};

/// Draws the mock's pictures with [`render`].
struct Pictures;

fn picture(spec: &ImageSpec) -> Picture {
    Picture {
        width: spec.width,
        height: spec.height,
        seed: spec.seed,
        index: spec.index,
        step: spec.step,
    }
}

impl Renderer for Pictures {
    fn png(&self, spec: &ImageSpec) -> Bytes {
        render::png(&picture(spec))
    }

    fn jpeg(&self, spec: &ImageSpec) -> Bytes {
        render::jpeg(&picture(spec))
    }
}

enum WsOut {
    Frame(Frame),
    Close,
    /// `stall-ws`: stop reading and writing; hold the socket until the client closes it.
    Silence,
}

enum Input {
    Request {
        method: String,
        target: String,
        body: Vec<u8>,
        /// `None`: the `stall` fault struck; the request is never answered.
        reply: oneshot::Sender<Option<MockResponse>>,
    },
    /// A new connection: answered `false` when the `refuse` fault strikes.
    Accept {
        reply: oneshot::Sender<bool>,
    },
    Open {
        conn: ConnId,
        target: String,
        out: mpsc::UnboundedSender<WsOut>,
        reply: oneshot::Sender<Result<(), MockResponse>>,
    },
    Text {
        conn: ConnId,
        text: String,
    },
    Closed {
        conn: ConnId,
    },
    DropSockets,
    Stop,
}

/// A running mock server. Dropping it stops it.
#[derive(Debug)]
pub struct MockHandle {
    addr: SocketAddr,
    control: mpsc::UnboundedSender<Input>,
    accepted: Arc<AtomicU64>,
}

impl MockHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many TCP connections it has accepted so far (websockets and HTTP alike), so tests
    /// can see whether clients reuse their connections.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `host:port`, for `ServerAddress::parse`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Closes every open websocket at once, as a proxy that cuts idle sockets would. Prompts go
    /// on running; their messages are dropped until the clients reconnect.
    pub fn drop_websockets(&self) {
        let _ = self.control.unbounded_send(Input::DropSockets);
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        let _ = self.control.unbounded_send(Input::Stop);
    }
}

/// Starts a mock server on `addr` (port 0 picks a free one).
pub async fn serve(
    rt: Arc<dyn Runtime>,
    addr: SocketAddr,
    config: MockConfig,
) -> io::Result<MockHandle> {
    serve_with_renderer(rt, addr, config, Box::new(Pictures)).await
}

/// Starts a mock server on `addr` whose images come from `renderer` instead of [`render`]
/// (benchmarks use it to send images of a chosen size without encoding them).
pub async fn serve_with_renderer(
    rt: Arc<dyn Runtime>,
    addr: SocketAddr,
    config: MockConfig,
    renderer: Box<dyn Renderer + Send>,
) -> io::Result<MockHandle> {
    start(rt, addr, config, renderer, None).await
}

/// Starts a mock server that speaks TLS (`https`/`wss`) with `tls`'s certificate, for testing
/// the clients' TLS and its verification.
pub async fn serve_tls(
    rt: Arc<dyn Runtime>,
    addr: SocketAddr,
    config: MockConfig,
    tls: Arc<futures_rustls::rustls::ServerConfig>,
) -> io::Result<MockHandle> {
    start(
        rt,
        addr,
        config,
        Box::new(Pictures),
        Some(futures_rustls::TlsAcceptor::from(tls)),
    )
    .await
}

async fn start(
    rt: Arc<dyn Runtime>,
    addr: SocketAddr,
    config: MockConfig,
    renderer: Box<dyn Renderer + Send>,
    tls: Option<futures_rustls::TlsAcceptor>,
) -> io::Result<MockHandle> {
    // async-net's listener runs on async-io's reactor, which serves smol and async-std alike:
    // the driver's `Runtime` stays client-only.
    let listener = async_net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (control, inputs) = mpsc::unbounded();
    let server = MockServer::new(config, renderer);
    rt.spawn(Box::pin(run(rt.clone(), server, inputs)));
    let accept_control = control.clone();
    let accept_rt = rt.clone();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    rt.spawn(Box::pin(async move {
        let mut next_conn = 0u64;
        loop {
            let stream = match listener_accept(&listener, &accept_control).await {
                Some(Ok(stream)) => stream,
                Some(Err(_)) => continue,
                None => return,
            };
            next_conn += 1;
            counter.fetch_add(1, Ordering::Relaxed);
            let control = accept_control.clone();
            let conn = ConnId(next_conn);
            match tls.clone() {
                None => accept_rt.spawn(Box::pin(connection(stream, conn, control))),
                Some(acceptor) => accept_rt.spawn(Box::pin(async move {
                    // A client that refuses the certificate ends the handshake: nothing to serve.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        connection(Box::new(stream), conn, control).await;
                    }
                })),
            }
        }
    }));
    Ok(MockHandle {
        addr,
        control,
        accepted,
    })
}

/// The next connection, or `None` once the server has stopped.
async fn listener_accept(
    listener: &async_net::TcpListener,
    control: &mpsc::UnboundedSender<Input>,
) -> Option<io::Result<Box<dyn Stream>>> {
    if control.is_closed() {
        return None;
    }
    Some(listener.accept().await.and_then(|(tcp, _)| {
        tcp.set_nodelay(true)?;
        Ok(Box::new(tcp) as Box<dyn Stream>)
    }))
}

/// The task that owns the sans-IO mock server.
async fn run(
    rt: Arc<dyn Runtime>,
    mut server: MockServer,
    mut inputs: mpsc::UnboundedReceiver<Input>,
) {
    // The socket layer keeps the mock's time: the server logic only ever sees `epoch.elapsed()`.
    #[allow(clippy::disallowed_methods)]
    let epoch = Instant::now();
    let mut conns: HashMap<ConnId, mpsc::UnboundedSender<WsOut>> = HashMap::new();
    loop {
        let now = epoch.elapsed();
        server.handle_timeout(now);
        while let Some(output) = server.poll_output(now) {
            match output {
                MockOutput::Send { conn, frame } => {
                    if let Some(out) = conns.get(&conn) {
                        let _ = out.unbounded_send(WsOut::Frame(frame));
                    }
                }
                MockOutput::Close { conn } => {
                    if let Some(out) = conns.remove(&conn) {
                        let _ = out.unbounded_send(WsOut::Close);
                    }
                }
                MockOutput::Silence { conn } => {
                    if let Some(out) = conns.remove(&conn) {
                        let _ = out.unbounded_send(WsOut::Silence);
                    }
                }
            }
        }
        let input = match server.poll_timeout() {
            Some(at) => {
                match select(inputs.next(), rt.sleep(at.saturating_sub(epoch.elapsed()))).await {
                    Either::Left((input, _)) => input,
                    Either::Right(_) => continue,
                }
            }
            None => inputs.next().await,
        };
        let now = epoch.elapsed();
        match input {
            None | Some(Input::Stop) => {
                inputs.close();
                return;
            }
            Some(Input::Request {
                method,
                target,
                body,
                reply,
            }) => {
                let response = if server.should_stall_request(now, &method, &target) {
                    None
                } else {
                    Some(server.handle_request(now, &method, &target, &body))
                };
                let _ = reply.send(response);
            }
            Some(Input::Accept { reply }) => {
                let _ = reply.send(!server.should_refuse(now));
            }
            Some(Input::Open {
                conn,
                target,
                out,
                reply,
            }) => {
                let result = server.handle_ws_open(now, conn, &target);
                if result.is_ok() {
                    conns.insert(conn, out);
                }
                let _ = reply.send(result);
            }
            Some(Input::Text { conn, text }) => server.handle_ws_text(now, conn, &text),
            Some(Input::Closed { conn }) => {
                conns.remove(&conn);
                server.handle_ws_close(now, conn);
            }
            Some(Input::DropSockets) => {
                for (conn, out) in conns.drain() {
                    let _ = out.unbounded_send(WsOut::Close);
                    server.handle_ws_close(now, conn);
                }
            }
        }
    }
}

/// One TCP connection: HTTP requests until it upgrades to a websocket or closes.
async fn connection(
    mut stream: Box<dyn Stream>,
    conn: ConnId,
    control: mpsc::UnboundedSender<Input>,
) {
    // The `refuse` fault: the connection is closed before a byte is read.
    let (reply, answer) = oneshot::channel();
    if control.unbounded_send(Input::Accept { reply }).is_err() || answer.await != Ok(true) {
        return;
    }
    let mut buf = Vec::new();
    loop {
        let request = match http1::read_request(&mut stream, &mut buf).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                let body = format!("{{\"error\": \"{}\"}}", e.to_string().replace('"', "'"));
                let _ =
                    http1::write_response(&mut stream, 400, "application/json", body.as_bytes())
                        .await;
                return;
            }
        };
        if let Some(key) = request.websocket_key().map(str::to_owned) {
            let (out, out_rx) = mpsc::unbounded();
            let (reply, answer) = oneshot::channel();
            let open = Input::Open {
                conn,
                target: request.target.clone(),
                out,
                reply,
            };
            if control.unbounded_send(open).is_err() {
                return;
            }
            match answer.await {
                Ok(Ok(())) => {}
                Ok(Err(response)) => {
                    let _ = http1::write_response(
                        &mut stream,
                        response.status,
                        response.content_type,
                        &response.body,
                    )
                    .await;
                    continue;
                }
                Err(_) => return,
            }
            if http1::accept_websocket(&mut stream, &key).await.is_err() {
                let _ = control.unbounded_send(Input::Closed { conn });
                return;
            }
            return websocket(stream, conn, control, out_rx).await;
        }
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (reply, answer) = oneshot::channel();
        let input = Input::Request {
            method: request.method,
            target: request.target,
            body: request.body,
            reply,
        };
        if control.unbounded_send(input).is_err() {
            return;
        }
        let response = match answer.await {
            Ok(Some(response)) => response,
            Ok(None) => {
                // Stalled: hold the connection open, answer nothing, until the client leaves.
                let mut sink = [0u8; 1024];
                while matches!(futures_util::AsyncReadExt::read(&mut stream, &mut sink).await, Ok(n) if n > 0)
                {
                }
                return;
            }
            Err(_) => return,
        };
        let content_type = if response.content_type.is_empty() {
            "text/plain"
        } else {
            response.content_type
        };
        if http1::write_response(&mut stream, response.status, content_type, &response.body)
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

async fn websocket(
    stream: Box<dyn Stream>,
    conn: ConnId,
    control: mpsc::UnboundedSender<Input>,
    mut out: mpsc::UnboundedReceiver<WsOut>,
) {
    let socket = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    let (mut sink, mut incoming) = StreamExt::split(socket);
    loop {
        match select(out.next(), incoming.next()).await {
            Either::Left((Some(WsOut::Frame(frame)), _)) => {
                let message = match frame {
                    Frame::Text(text) => Message::text(text),
                    Frame::Binary(data) => Message::binary(data),
                };
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            Either::Left((Some(WsOut::Close), _)) | Either::Left((None, _)) => {
                let _ = sink.close().await;
                break;
            }
            Either::Left((Some(WsOut::Silence), _)) => {
                // Mute: the raw bytes the client sends (pings included) are read and dropped
                // unanswered, until it gives up and closes.
                if let Ok(mut socket) = sink.reunite(incoming) {
                    let mut sink = [0u8; 4096];
                    while matches!(futures_util::AsyncReadExt::read(socket.get_mut(), &mut sink).await, Ok(n) if n > 0)
                    {
                    }
                }
                break;
            }
            Either::Right((Some(Ok(Message::Text(text))), _)) => {
                let _ = control.unbounded_send(Input::Text {
                    conn,
                    text: text.as_str().to_owned(),
                });
            }
            Either::Right((Some(Ok(Message::Close(_))), _))
            | Either::Right((None, _))
            | Either::Right((Some(Err(_)), _)) => break,
            Either::Right((Some(Ok(_)), _)) => {}
        }
    }
    let _ = control.unbounded_send(Input::Closed { conn });
}
