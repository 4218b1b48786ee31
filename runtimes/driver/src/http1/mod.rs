//! The HTTP/1.1 client both runtime crates send requests with: ureq-proto's sans-IO protocol
//! over the runtime's TCP (and rustls for `https`), with keep-alive.
//!
//! How it works: each request takes an idle connection to its server, or opens one; ureq-proto
//! writes the request and reads the response (`exchange.rs`), and says whether the connection
//! can serve another request; if so it goes back to a small pool per server
//! ([`Http1Config::max_idle_per_server`]) for at most [`Http1Config::idle_timeout`]. A `GET`
//! that fails on a reused connection before any byte of its response came back (the server
//! closed it while idle) is sent once more on a fresh connection; a `POST` is not (the server
//! may have acted on it). One deadline, [`OutgoingRequest::timeout`], covers the whole exchange:
//! connect, TLS, write and read.
//!
//! hyper 1 (and surf's own HTTP/1 backend, through deadpool) depend on the `tokio` crate, which
//! this project keeps out of its tree; this client needs futures-io, rustls and ureq-proto.

mod exchange;
mod idle;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use comfy_proxy::wire::{HttpResponse, Method};
use comfy_proxy::{TransportError, TransportErrorKind};
use futures_util::future::{Either, select};

use crate::runtime::{BoxFuture, HttpClient, OutgoingRequest, Runtime};
#[cfg(test)]
pub(crate) use exchange::encode_request;
use exchange::{Conn, Failed, exchange};
use idle::IdlePool;

/// Settings of [`Http1`]'s connection reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Http1Config {
    /// Idle keep-alive connections kept per server (0: a new connection per request).
    pub max_idle_per_server: usize,
    /// How long an idle connection is kept. Below the servers' own keep-alive timeout (aiohttp,
    /// behind ComfyUI, closes idle connections after 75 s), so that a kept connection is rarely
    /// one the server has already closed.
    pub idle_timeout: Duration,
}

impl Default for Http1Config {
    fn default() -> Self {
        Self {
            max_idle_per_server: 8,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Http1Config {
    /// Sets [`Http1Config::max_idle_per_server`].
    pub fn max_idle_per_server(mut self, n: usize) -> Self {
        self.max_idle_per_server = n;
        self
    }

    /// Sets [`Http1Config::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
}

/// HTTP/1.1 over the runtime's TCP (and rustls for `https`), connections kept alive and reused.
/// Clones share their idle connections.
#[derive(Clone)]
pub struct Http1 {
    rt: Arc<dyn Runtime>,
    // Locked only to take or return a connection, never across an await.
    idle: Arc<Mutex<IdlePool<Conn>>>,
}

impl Http1 {
    /// A client that connects with `rt`, with the default [`Http1Config`].
    pub fn new(rt: Arc<dyn Runtime>) -> Self {
        Self::with_config(rt, Http1Config::default())
    }

    /// A client that connects with `rt` and reuses connections as `config` says.
    pub fn with_config(rt: Arc<dyn Runtime>, config: Http1Config) -> Self {
        Self {
            rt,
            idle: Arc::new(Mutex::new(IdlePool::new(
                config.max_idle_per_server,
                config.idle_timeout,
            ))),
        }
    }

    fn take(&self, key: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.take(key, self.rt.now())
    }

    fn put(&self, key: &str, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection the pool has no room for is closed here, outside the lock's users.
        let refused = idle.put(key, conn, self.rt.now());
        drop(idle);
        drop(refused);
    }

    /// Opens a connection to `o`'s server: TCP, then TLS for `https`.
    async fn open(&self, o: &OutgoingRequest) -> Result<Conn, TransportError> {
        let server = &o.server;
        let tcp = self
            .rt
            .connect(server.host(), server.port())
            .await
            .map_err(|e| TransportError::from_io("", e))?;
        if !server.tls() {
            return Ok(Conn::new(tcp));
        }
        let tls = o
            .tls
            .connect(server.host(), tcp)
            .await
            .map_err(|e| TransportError::new(TransportErrorKind::Tls, "").with_source(e))?;
        Ok(Conn::new(tls))
    }

    /// The exchange, on a kept connection if there is one, tried once more on a fresh one when
    /// that is safe.
    async fn run(&self, o: &OutgoingRequest) -> Result<HttpResponse, TransportError> {
        // TLS connections are kept apart by the TLS settings they were opened with (roots,
        // verification): one client's connection never serves another's settings.
        let key = if o.server.tls() {
            let tls = Arc::as_ptr(o.tls.rustls()) as usize;
            format!("{}#{tls:x}", o.server.http_url(""))
        } else {
            o.server.http_url("")
        };
        let mut kept = self.take(&key);
        loop {
            let reused = kept.is_some();
            let mut conn = match kept.take() {
                Some(conn) => conn,
                None => self.open(o).await?,
            };
            match exchange(&mut conn, o).await {
                Ok((response, reusable)) => {
                    if reusable {
                        self.put(&key, conn);
                    }
                    return Ok(response);
                }
                Err(Failed {
                    nothing_back: true, ..
                }) if reused && o.request.method == Method::Get => continue,
                Err(failed) => return Err(failed.error),
            }
        }
    }
}

impl std::fmt::Debug for Http1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http1")
    }
}

impl HttpClient for Http1 {
    fn send(&self, o: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, TransportError>> {
        let this = self.clone();
        Box::pin(async move {
            let limit = o.timeout;
            // On the deadline the exchange is dropped, and its connection with it.
            let result = match select(Box::pin(this.run(&o)), this.rt.sleep(limit)).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => {
                    Err(TransportError::new(TransportErrorKind::TimedOut(limit), ""))
                }
            };
            result.map_err(|mut e| {
                // Named only when it failed.
                e.what = format!("{} {}", o.request.method.as_str(), o.shown_url);
                e
            })
        })
    }
}

#[cfg(test)]
mod tests;
