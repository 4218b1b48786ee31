//! What a runtime crate supplies: spawn, timers and the clock, TCP connect, and an HTTP client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant};

use comfy_proxy::TransportError;
use comfy_proxy::wire::{HttpRequest, HttpResponse};
use futures_util::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream to a server: what [`Runtime::connect`] returns.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The runtime: spawn, sleep, connect and the clock, in the manner of quinn's `Runtime`.
///
/// The driver reads the time only through [`Runtime::now`] and waits only through
/// [`Runtime::sleep`], so a runtime whose clock a test moves drives every deadline of the client
/// and the pool without waiting real time.
pub trait Runtime: Send + Sync + 'static {
    /// Runs a future in the background until it completes.
    fn spawn(&self, future: BoxFuture<'static, ()>);
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// Opens a TCP connection to `host:port`.
    fn connect(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Box<dyn Stream>>>;
    /// The current time, on the clock [`Runtime::sleep`] counts on. Default: the system's
    /// monotonic clock.
    fn now(&self) -> Instant {
        #[allow(clippy::disallowed_methods)] // The one place the driver reads the system clock.
        Instant::now()
    }
}

/// One HTTP request to a server, with everything the adapter adds to the core's description.
/// Its `Debug` shows no secret: the URL with the query token redacted, secret headers redacted.
#[derive(Clone)]
pub struct OutgoingRequest {
    /// The server.
    pub server: comfy_proxy::ServerAddress,
    /// The full URL (scheme, authority, base path, path and query, auth query token). It may
    /// carry a secret: send it, never show it; messages use `shown_url`.
    pub url: String,
    /// `url` with the auth query token replaced by `<redacted>`: for errors and logs.
    pub shown_url: String,
    /// The request target in origin form: base path, path and query, auth query token. Like
    /// `url`, never shown.
    pub target: String,
    /// The core's request (method, path, body).
    pub request: HttpRequest,
    /// Headers to add (auth, user headers), checked when the config was built; secret values
    /// are marked sensitive.
    pub headers: crate::headers::Headers,
    /// The client's TLS settings (shared, built once per client).
    pub tls: crate::tls::TlsConfig,
    /// The largest response body to accept.
    pub max_body: usize,
    /// One deadline for the whole exchange: connect, TLS, writing the request, reading the
    /// response. Past it the exchange fails with [`TransportErrorKind::TimedOut`].
    ///
    /// [`TransportErrorKind::TimedOut`]: comfy_proxy::TransportErrorKind::TimedOut
    pub timeout: Duration,
}

impl std::fmt::Debug for OutgoingRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingRequest")
            .field("method", &self.request.method.as_str())
            .field("url", &self.shown_url)
            .field("headers", &self.headers)
            .field("body", &self.request.body.as_ref().map(|b| b.bytes.len()))
            .field("tls", &self.tls)
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// The HTTP seam: both runtime crates use the driver's HTTP/1.1 client; a program may supply
/// its own.
pub trait HttpClient: Send + Sync + 'static {
    /// Sends a request and reads the whole response. A transport failure (refused, reset, a body
    /// over the limit) is a typed [`TransportError`] whose `what` names the method and URL.
    fn send(
        &self,
        request: OutgoingRequest,
    ) -> BoxFuture<'static, Result<HttpResponse, TransportError>>;
}
