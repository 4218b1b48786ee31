//! comfy-proxy on [async-std], for programs already on that stack: spawn, timers and TCP from
//! async-std; HTTP/1.1 (with keep-alive), the websocket and TLS (`wss`, `https`) from the shared
//! driver.
//!
//! A program that already sends its HTTP through a configured `surf::Client` (its middleware,
//! proxy, backend) can hand that client to comfy-proxy as the transport: turn on the `surf`
//! feature and use `SurfClient`. Without the feature, surf is not in the dependency tree.
//!
//! async-std is discontinued upstream (RUSTSEC-2025-0052) and surf is unmaintained
//! (RUSTSEC-2025-0036); new programs should prefer `comfy-proxy-smol`.
//!
//! It re-exports what a program needs, as `comfy-proxy-smol` does: a [`Client`] for one
//! server ([`connect`]), a [`Pool`] over many ([`pool`]), their settings and events, and the
//! sans-IO core as [`core`].
//!
//! ```no_run
//! use comfy_proxy_async_std::core::workflow::QwenParams;
//! use comfy_proxy_async_std::{ClientConfig, connect};
//!
//! async_std::task::block_on(async {
//!     let client = connect(ClientConfig::new("127.0.0.1:8188".parse().unwrap()));
//!     let graph = QwenParams::new("a tea house in the rain", 3).build().unwrap();
//!     let result = client.run(graph).await.unwrap();
//!     for output in &result.outputs {
//!         // `image`, `video`, `text`...; `extension` fits the content (png, mp4, txt).
//!         println!("node {} {}: {} bytes", output.node, output.kind, output.bytes().len());
//!     }
//!     for (node, text) in result.outputs.texts() {
//!         println!("node {node} says {text:?}");
//!     }
//! });
//! ```

use std::io;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::wire::{HttpRequest, HttpResponse};
pub use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{BoxFuture, HttpClient, Runtime, Stream};

#[cfg(feature = "surf")]
mod surf_client;
#[cfg(feature = "surf")]
pub use surf_client::{SurfClient, connect_with_surf};

/// The sans-IO core (`comfy-proxy`): workflows, addresses, wire types, the session's events.
pub use comfy_proxy as core;
/// Every output of a prompt ([`RunResult::outputs`], [`JobReport::outputs`]): one [`Output`]
/// per image, animated image, video, audio, 3D or other file and text, told apart by
/// [`OutputKind`].
pub use comfy_proxy::session::{Output, OutputBody, OutputKind, Outputs};
pub use comfy_proxy_driver::pool::{
    BreakerState, EventDetail, JobError, JobHandle, JobOptions, JobReport, Pool, PoolConfig,
    PoolEvent, PoolEvents, PoolStats, ServerStats, SubmitError, Upload,
};
pub use comfy_proxy_driver::{
    Auth, Client, ClientConfig, ClientError, PromptStream, RunResult, UploadOptions,
};

/// The async-std runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        async_std::task::spawn(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async_std::task::sleep(duration))
    }

    fn connect(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let tcp = async_std::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as Box<dyn Stream>)
        })
    }
}

/// The shared HTTP/1.1 client (keep-alive, futures-rustls for `https`) over async-std's TCP.
pub fn http_client() -> Http1 {
    Http1::new(Arc::new(AsyncStd))
}

/// A client for one server on async-std, with the shared HTTP/1.1 client.
pub fn connect(config: ClientConfig) -> Client {
    Client::connect(Arc::new(AsyncStd), Arc::new(http_client()), config)
}

/// A pool over many servers on async-std: a client per server and the scheduler's task. Submit
/// jobs with [`Pool::submit`] and follow each with its [`JobHandle`]; jobs whose handle was
/// dropped report to the [`PoolEvents`].
pub fn pool(config: PoolConfig) -> (Pool, PoolEvents) {
    Pool::start(Arc::new(AsyncStd), Arc::new(http_client()), config)
}

/// Sends one HTTP request to `config`'s server (its auth, headers and TLS settings applied),
/// without a websocket: for a one-off exchange such as fetching `object_info`.
pub async fn request(
    config: &ClientConfig,
    request: HttpRequest,
) -> Result<HttpResponse, ClientError> {
    http_client()
        .send(comfy_proxy_driver::client::outgoing(config, request))
        .await
        .map_err(ClientError::Transport)
}
