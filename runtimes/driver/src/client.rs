//! A client for one ComfyUI server: one persistent websocket, announced before any prompt is
//! posted, reused across prompts.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use comfy_proxy::session::{
    Deadline, Deadlines, Event, Failure, OutboxStats, Outputs, Session, SessionConfig, Submission,
};
use comfy_proxy::wire::http::UploadError;
use comfy_proxy::wire::http::{self, PromptRejected, UploadedFile};
use comfy_proxy::{
    ClientId, Misuse, PromptId, ProtocolError, ServerAddress, TransportError, TransportErrorKind,
    Workflow, WorkflowError,
};
use futures_channel::{mpsc, oneshot};
use futures_util::stream::{Stream, StreamExt};

use crate::actor::{Actor, Endpoint, Input, Mailbox, bounded};
use crate::auth::{Auth, ConfigError, Redactor};
use crate::headers::Headers;
use crate::runtime::{HttpClient, Runtime};
use crate::tls::TlsConfig;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server.
    pub server: ServerAddress,
    /// Authentication, for HTTP and the websocket alike (see [`ClientConfig::with_auth`]).
    auth: Auth,
    /// The headers `auth` adds, checked when it was set.
    auth_headers: Headers,
    /// Extra headers, for HTTP and the websocket alike, checked when they were added.
    headers: Headers,
    /// TLS for `https`/`wss`: built once, shared by every connection of the client. Verifies
    /// certificates against webpki's roots by default; see [`ClientConfig::with_root_ca_pem`]
    /// and [`ClientConfig::danger_accept_invalid_certs`].
    pub tls: TlsConfig,
    /// The core session's settings (feature flags, file fetching, frame limit, reconnects).
    pub session: SessionConfig,
    /// Deadlines applied to every prompt. Default: [`Deadlines::default`] (accept and idle;
    /// no total). [`Deadlines::none`] turns them off.
    pub deadlines: Deadlines,
    /// Events a prompt's reader may leave unread before it counts as lagging: then its
    /// progress is coalesced, its previews dropped (and counted), and its `/view` downloads
    /// wait until it catches up; other prompts go on. See
    /// [`Outbox`](comfy_proxy::session::Outbox) for the bounds. Default: 64.
    pub events_buffer: usize,
    /// The largest HTTP response body accepted (file outputs). Default 512 MiB.
    pub max_body: usize,
    /// Deadline of opening the websocket (TCP, TLS and handshake). Default 10 s. It sets the
    /// session's [`Timeouts::connect`](comfy_proxy::session::Timeouts::connect).
    pub connect_timeout: Duration,
    /// Deadline of one HTTP exchange. Default 120 s. It sets the session's
    /// [`Timeouts::http`](comfy_proxy::session::Timeouts::http) (the bound of `/view`
    /// downloads) and bounds [`Client::request`] and [`Client::upload_image`]. A prompt's small
    /// exchanges (`POST /prompt`, lookups, cancels) are bounded by the shorter
    /// [`Timeouts::exchange`](comfy_proxy::session::Timeouts::exchange), 10 s unless
    /// [`ClientConfig::session`] says otherwise.
    pub http_timeout: Duration,
    /// Record the traffic in `comfy-transcript/1` files in this folder, one per connection.
    pub record: Option<std::path::PathBuf>,
    /// Where events that name no prompt go (queue status, link changes), coalesced; the pool
    /// uses it.
    pub(crate) server_events: Option<crate::pool::StatusSink>,
}

impl ClientConfig {
    /// Defaults for `server`.
    pub fn new(server: ServerAddress) -> Self {
        Self {
            server,
            auth: Auth::None,
            auth_headers: Headers::new(),
            headers: Headers::new(),
            tls: TlsConfig::default(),
            session: SessionConfig::default(),
            deadlines: Deadlines::default(),
            events_buffer: 64,
            max_body: 512 << 20,
            connect_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(120),
            record: None,
            server_events: None,
        }
    }

    /// Records the traffic in `comfy-transcript/1` files in `dir`, one per connection, named
    /// after the server and the client id. `comfy-proxy replay` reads them.
    pub fn with_recording(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.record = Some(dir.into());
        self
    }

    /// Sets the authentication, for HTTP and the websocket alike. A token or header that
    /// cannot go in a header (CR, LF, control bytes, non-ASCII) is refused here, naming the
    /// header and never the secret.
    pub fn with_auth(mut self, auth: Auth) -> Result<Self, ConfigError> {
        self.auth_headers = auth.headers()?;
        self.auth = auth;
        Ok(self)
    }

    /// The authentication.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The extra headers (without the ones the auth adds).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Every header sent with each request and the websocket handshake: the auth's, then the
    /// extra ones.
    pub fn all_headers(&self) -> Headers {
        let mut all = self.auth_headers.clone();
        all.extend(&self.headers);
        all
    }

    /// Scrubs this config's secrets (tokens, passwords, secret header values) from text.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(
            self.auth
                .secrets()
                .into_iter()
                .chain(self.headers.secret_values().map(str::to_owned)),
        )
    }

    /// Sets the deadlines of every prompt.
    pub fn with_deadlines(mut self, deadlines: Deadlines) -> Self {
        self.deadlines = deadlines;
        self
    }

    /// Sets the session settings.
    pub fn with_session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Adds a header to every request and the websocket handshake. The name and value are
    /// checked now (see [`crate::headers::check`]): CR, LF, control bytes and non-ASCII are
    /// refused, as are headers the client writes itself (`Host`, `Content-Length`...). Values
    /// of secret-looking headers (`Authorization`, `Cookie`, `X-Api-Key`, `*token*`...) are
    /// redacted wherever the config is shown.
    pub fn with_header(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        self.headers.push(name, value)?;
        Ok(self)
    }

    /// Like [`ClientConfig::with_header`], the value redacted whatever the header's name.
    pub fn with_secret_header(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        self.headers.push_secret(name, value)?;
        Ok(self)
    }

    /// Accepts any TLS certificate. Only for servers trusted by other means; prefer
    /// [`ClientConfig::with_root_ca_pem`] for a private CA.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.tls = self.tls.danger_accept_invalid_certs();
        self
    }

    /// Trusts the root CAs in `pem` (one or more `CERTIFICATE` sections) besides webpki's, for
    /// servers with certificates from a private CA. Certificates stay verified.
    pub fn with_root_ca_pem(mut self, pem: &[u8]) -> Result<Self, ConfigError> {
        self.tls = self.tls.with_root_ca_pem("PEM bytes", pem)?;
        Ok(self)
    }

    /// Like [`ClientConfig::with_root_ca_pem`], reading the PEM file at `path`.
    pub fn with_root_ca_file(
        mut self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|source| ConfigError::ReadCaFile {
            path: path.to_owned(),
            source,
        })?;
        self.tls = self
            .tls
            .with_root_ca_pem(&path.display().to_string(), &pem)?;
        Ok(self)
    }

    /// The settings for HTTP exchanges outside a session (lookups, health checks).
    pub(crate) fn endpoint(&self) -> Endpoint {
        Endpoint {
            server: self.server.clone(),
            auth: self.auth.clone(),
            headers: self.all_headers(),
            tls: self.tls.clone(),
            max_frame_len: self.session.max_frame_len,
            max_body: self.max_body,
            http_timeout: self.http_timeout,
        }
    }
}

/// The request `request` as sent to `config`'s server (auth, headers and TLS applied), for
/// exchanges made without a [`Client`].
pub fn outgoing(
    config: &ClientConfig,
    request: comfy_proxy::wire::HttpRequest,
) -> crate::runtime::OutgoingRequest {
    config.endpoint().outgoing(request)
}

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientError {
    /// The API was misused (a duplicate prompt id, a closed client).
    Misuse(Misuse),
    /// The client's task has stopped.
    Closed,
    /// The server refused the prompt (HTTP 400).
    Rejected(Box<PromptRejected>),
    /// The prompt failed.
    Failed(Failure),
    /// The prompt was interrupted on the server.
    Interrupted,
    /// A deadline expired.
    TimedOut(Deadline),
    /// The prompt was cancelled.
    Cancelled,
    /// An HTTP exchange failed in transport.
    Transport(TransportError),
    /// The server answered outside the protocol.
    Protocol(ProtocolError),
    /// The upload could not be encoded (bad file name).
    Upload(UploadError),
    /// An uploaded file's name could not be set on the workflow (no such input).
    Workflow(WorkflowError),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misuse(m) => write!(f, "{m}"),
            Self::Closed => f.write_str("the client has stopped"),
            Self::Rejected(r) => write!(f, "rejected by the server: {r}"),
            Self::Failed(x) => write!(f, "{x}"),
            Self::Interrupted => f.write_str("interrupted on the server"),
            Self::TimedOut(d) => write!(f, "timed out ({d:?} deadline)"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Transport(e) => write!(f, "{e}"),
            Self::Protocol(e) => write!(f, "{e}"),
            Self::Upload(e) => write!(f, "cannot upload: {e}"),
            Self::Workflow(e) => write!(f, "cannot use the upload: {e}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Misuse(e) => Some(e),
            Self::Failed(e) => Some(e),
            Self::Transport(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Upload(e) => Some(e),
            Self::Workflow(e) => Some(e),
            _ => None,
        }
    }
}

impl ClientError {
    /// The error a terminal event stands for, if it is not a success.
    pub fn from_terminal(event: &Event) -> Option<Self> {
        Some(match event {
            Event::Rejected { rejection, .. } => Self::Rejected(rejection.clone()),
            Event::Failed { failure, .. } => Self::Failed(failure.clone()),
            Event::Interrupted { .. } => Self::Interrupted,
            Event::TimedOut { deadline, .. } => Self::TimedOut(*deadline),
            Event::Cancelled { .. } => Self::Cancelled,
            _ => return None,
        })
    }

    /// The failure of a prompt that this error kept from being submitted (an upload that
    /// failed, a client that stopped).
    pub fn into_failure(self, context: &'static str) -> Failure {
        match self {
            Self::Failed(failure) => failure,
            Self::Protocol(e) => Failure::Protocol(e),
            Self::Transport(error) => Failure::Transport { context, error },
            other => Failure::Transport {
                context,
                error: TransportError::new(TransportErrorKind::Io, context)
                    .with_detail(other.to_string()),
            },
        }
    }
}

/// Sends `Close` when the last handle of a client is dropped.
struct CloseOnDrop(mpsc::UnboundedSender<Input>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.unbounded_send(Input::Close);
    }
}

/// A client for one server. Cheap to clone; the connection closes when the last clone is dropped
/// and every prompt has ended.
#[derive(Clone)]
pub struct Client {
    control: mpsc::UnboundedSender<Input>,
    /// The runtime, for the deadlines of the server operations (`ops.rs`).
    pub(crate) rt: Arc<dyn Runtime>,
    http: Arc<dyn HttpClient>,
    config: Arc<ClientConfig>,
    _close: Arc<CloseOnDrop>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.config.server)
            .field("auth", &self.config.auth)
            .finish()
    }
}

/// Everything a finished prompt produced.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunResult {
    /// The prompt.
    pub prompt_id: Option<PromptId>,
    /// Every output in arrival order: images (websocket frames and files), animated images,
    /// video, audio, 3D and other files, texts; and each output node's `ui` data
    /// ([`Outputs::ui`]). Outputs of nodes the server took from its cache are in it too (the
    /// server announces them again). Previews are not: they are counted in `previews`.
    pub outputs: Outputs,
    /// How many previews arrived.
    pub previews: usize,
    /// How many previews were dropped because the reader lagged.
    pub previews_dropped: u64,
}

impl Client {
    /// Starts a client: its task opens the websocket at once, before any prompt is posted.
    pub fn connect(rt: Arc<dyn Runtime>, http: Arc<dyn HttpClient>, config: ClientConfig) -> Self {
        let (control, control_rx) = mpsc::unbounded();
        let client_id = ClientId::from_random(fastrand::u128(..));
        // A recording that cannot be created is not a reason to refuse to run.
        let recorder = config.record.as_ref().and_then(|dir| {
            crate::record::Recorder::create(
                dir,
                &config.server,
                client_id.as_str(),
                config.redactor(),
                rt.clone(),
            )
            .ok()
        });
        let mut session_config = config.session.clone();
        session_config.timeouts.connect = Some(config.connect_timeout);
        session_config.timeouts.http = Some(config.http_timeout);
        let session = Session::new(client_id, session_config);
        let actor = Actor::new(
            rt.clone(),
            http.clone(),
            config.endpoint(),
            session,
            config.server_events.clone(),
            control.clone(),
            recorder,
        );
        rt.spawn(Box::pin(actor.run(control_rx)));
        Self {
            _close: Arc::new(CloseOnDrop(control.clone())),
            control,
            rt,
            http,
            config: Arc::new(config),
        }
    }

    /// Sends a request to this client's server within [`ClientConfig::http_timeout`].
    pub(crate) async fn send(
        &self,
        request: comfy_proxy::wire::HttpRequest,
    ) -> Result<comfy_proxy::wire::HttpResponse, ClientError> {
        let outgoing = self.config.endpoint().outgoing(request);
        let what = format!(
            "{} {}",
            outgoing.request.method.as_str(),
            outgoing.shown_url
        );
        let limit = self.config.http_timeout;
        bounded(self.rt.as_ref(), Some(limit), self.http.send(outgoing))
            .await
            .unwrap_or_else(|| {
                Err(TransportError::new(
                    TransportErrorKind::TimedOut(limit),
                    what,
                ))
            })
            .map_err(ClientError::Transport)
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Sends one HTTP request to this client's server, outside any prompt, within
    /// [`ClientConfig::http_timeout`].
    pub async fn request(
        &self,
        request: comfy_proxy::wire::HttpRequest,
    ) -> Result<comfy_proxy::wire::HttpResponse, ClientError> {
        self.send(request).await
    }

    /// The server this client talks to.
    pub fn server(&self) -> &ServerAddress {
        &self.config.server
    }

    /// Submits a workflow and returns the stream of its events: progress, previews and outputs
    /// as they arrive, ending with one terminal event. Dropping the stream before that cancels
    /// the prompt on the server.
    pub async fn submit(&self, workflow: Workflow) -> Result<PromptStream, ClientError> {
        let id = PromptId::from_random(fastrand::u128(..));
        let submission =
            Submission::new(id.clone(), workflow).with_deadlines(self.config.deadlines);
        self.submit_with(submission).await
    }

    /// Submits a prepared [`Submission`] (own prompt id, extra data, front, deadlines).
    pub async fn submit_with(&self, submission: Submission) -> Result<PromptStream, ClientError> {
        let id = submission.prompt_id.clone();
        let mailbox = Mailbox::new(self.config.events_buffer);
        let (ack, ack_rx) = oneshot::channel();
        self.control
            .unbounded_send(Input::Submit {
                submission,
                events: Some(mailbox.clone()),
                ack,
            })
            .map_err(|_| ClientError::Closed)?;
        ack_rx
            .await
            .map_err(|_| ClientError::Closed)?
            .map_err(ClientError::Misuse)?;
        Ok(PromptStream {
            id,
            mailbox,
            control: self.control.clone(),
            done: false,
        })
    }

    /// Runs a workflow to its end and returns all its outputs, or the reason it failed.
    pub async fn run(&self, workflow: Workflow) -> Result<RunResult, ClientError> {
        let mut stream = self.submit(workflow).await?;
        let mut result = RunResult {
            prompt_id: Some(stream.prompt_id().clone()),
            ..RunResult::default()
        };
        while let Some(event) = stream.next().await {
            if result.outputs.handle_event(&event) {
                continue;
            }
            match event {
                Event::Preview { .. } => result.previews += 1,
                Event::Completed { .. } => {
                    result.previews_dropped = stream.stats().previews_dropped;
                    return Ok(result);
                }
                other => {
                    if let Some(e) = ClientError::from_terminal(&other) {
                        return Err(e);
                    }
                }
            }
        }
        Err(ClientError::Closed)
    }

    /// Cancels a prompt: removed from the queue, or interrupted if it runs.
    pub fn cancel(&self, prompt: &PromptId) {
        let _ = self.control.unbounded_send(Input::Cancel(prompt.clone()));
    }

    /// Uploads an image to this server's input folder, for a job that runs on this server. Use
    /// the returned name: the server renames on a clash.
    pub async fn upload_image(
        &self,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<UploadedFile, ClientError> {
        let boundary = format!("comfy-proxy-{:032x}", fastrand::u128(..));
        let request = http::upload_image(file_name, bytes, None, "input", false, &boundary)
            .map_err(ClientError::Upload)?;
        let response = self.send(request).await?;
        http::decode_upload(&response).map_err(ClientError::Protocol)
    }
}

/// The events of one prompt, ending after its terminal event. Dropping it early cancels the
/// prompt on the server.
///
/// Not reading it never holds up the client's other prompts: while it lags, its progress is
/// coalesced, its previews are dropped and counted ([`PromptStream::stats`]), and its file
/// outputs wait to be downloaded until it catches up. Outputs are never dropped.
pub struct PromptStream {
    id: PromptId,
    mailbox: Arc<Mailbox>,
    control: mpsc::UnboundedSender<Input>,
    done: bool,
}

impl PromptStream {
    /// The prompt's id.
    pub fn prompt_id(&self) -> &PromptId {
        &self.id
    }

    /// What was dropped or coalesced while the reader lagged, and the most events that waited.
    pub fn stats(&self) -> OutboxStats {
        self.mailbox.stats()
    }

    /// Cancels the prompt; the stream ends with [`Event::Cancelled`].
    pub fn cancel(&self) {
        let _ = self.control.unbounded_send(Input::Cancel(self.id.clone()));
    }
}

impl fmt::Debug for PromptStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptStream")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl Stream for PromptStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        let (next, caught_up) = self.mailbox.poll_pop(cx);
        if caught_up {
            let _ = self
                .control
                .unbounded_send(Input::CaughtUp(self.id.clone()));
        }
        match next {
            Poll::Ready(Some(event)) => {
                if event.is_terminal() {
                    self.done = true;
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for PromptStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.control.unbounded_send(Input::Cancel(self.id.clone()));
        }
    }
}
