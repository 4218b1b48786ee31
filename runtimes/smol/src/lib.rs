//! comfy-proxy on [smol]: the one crate a smol program adds. Spawn, timers and TCP come from
//! smol; HTTP/1.1, the websocket and TLS (futures-rustls) from the shared driver, over
//! futures-io.
//!
//! It re-exports what a program needs: a [`Client`] for one server ([`connect`]), a [`Pool`]
//! over many ([`pool`]), their settings and events, and the sans-IO core as [`core`]
//! (workflows, addresses, the session's events).
//!
//! One server:
//!
//! ```no_run
//! use comfy_proxy_smol::core::workflow::FluxParams;
//! use comfy_proxy_smol::{ClientConfig, connect};
//!
//! smol::block_on(async {
//!     let server = "127.0.0.1:8188".parse().unwrap();
//!     let client = connect(ClientConfig::new(server));
//!     let graph = FluxParams::new("a red fox in snow", 7).build().unwrap();
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
//!
//! A pool of servers: each [`Pool::submit`] returns a [`JobHandle`], a stream of that job's
//! events (the server each attempt went to, progress, outputs as they arrive) and a future of
//! its report; a job can be cancelled, or given priority; the pool answers with statistics.
//!
//! ```no_run
//! use comfy_proxy_smol::core::address::parse_addresses;
//! use comfy_proxy_smol::core::workflow::FluxParams;
//! use comfy_proxy_smol::{ClientConfig, JobOptions, PoolConfig, PoolEvent, pool};
//! use smol::stream::StreamExt;
//!
//! smol::block_on(async {
//!     let servers = parse_addresses("127.0.0.1:8188-8189").unwrap();
//!     let (pool, _events) = pool(PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone())));
//!     let mut jobs = Vec::new();
//!     for seed in 0..4 {
//!         let graph = FluxParams::new("a lighthouse at dusk", seed).build().unwrap();
//!         jobs.push(pool.submit(graph).await.unwrap()); // waits only if the queue is full
//!     }
//!     // Priority: ahead of the four, and at the front of its server's queue.
//!     let graph = FluxParams::new("a lighthouse at dawn", 9).build().unwrap();
//!     let mut urgent = pool.submit_with(graph, JobOptions::new().in_front()).await.unwrap();
//!     while let Some(event) = urgent.next().await {
//!         match event {
//!             PoolEvent::Dispatched { server, attempt, .. } => {
//!                 println!("attempt {attempt} on {}", pool.servers()[server]);
//!             }
//!             PoolEvent::Output { .. } => println!("an image"),
//!             PoolEvent::Finished(report) => println!("urgent: {:?}", report.outcome),
//!             _ => {}
//!         }
//!     }
//!     jobs.pop().unwrap().cancel(); // cancelled on its server if it runs there
//!     for job in jobs {
//!         let report = job.result().await;
//!         println!("job {}: {} images", report.job, report.outputs.len());
//!     }
//!     for (i, s) in pool.stats().await.unwrap().servers.iter().enumerate() {
//!         println!("{}: {} done, {} failed, busy {:?}", servers[i], s.succeeded, s.failed, s.busy);
//!     }
//!     pool.close(); // lets running jobs finish; pool.abort() cancels them
//! });
//! ```
//!
//! A program that reads one stream for every job drops the handles: a job whose handle is
//! dropped reports to the pool's [`PoolEvents`] instead.
//!
//! ```no_run
//! use comfy_proxy_smol::core::address::parse_addresses;
//! use comfy_proxy_smol::core::workflow::FluxParams;
//! use comfy_proxy_smol::{ClientConfig, PoolConfig, PoolEvent, pool};
//! use smol::stream::StreamExt;
//!
//! smol::block_on(async {
//!     let servers = parse_addresses("127.0.0.1:8188-8189").unwrap();
//!     let (pool, mut events) = pool(PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone())));
//!     for seed in 0..4 {
//!         let graph = FluxParams::new("a lighthouse at dusk", seed).build().unwrap();
//!         drop(pool.submit(graph).await.unwrap());
//!     }
//!     pool.close();
//!     while let Some(event) = events.next().await {
//!         if let PoolEvent::Finished(report) = event {
//!             println!("job {}: {} outputs", report.job, report.outputs.len());
//!         }
//!     }
//! });
//! ```

use std::io;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::wire::{HttpRequest, HttpResponse};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{BoxFuture, HttpClient, Runtime, Stream};

pub mod blocking;

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

/// The smol runtime: tasks on smol's global executor, async-io timers, async-net TCP.
///
/// For tasks on an executor your program owns, use [`Smol::with_executor`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Smol {
    /// The smol runtime with its tasks (each client's connection, its HTTP exchanges, the
    /// pool's workers) spawned on `executor` instead of smol's global one. Timers and sockets
    /// are async-io's as with [`Smol`], so they work on any executor; the program must run
    /// `executor` (`executor.run(..)` on a thread of its own, or around the futures it awaits)
    /// for as long as clients made with it are in use, or their tasks make no progress.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use comfy_proxy_driver::Runtime;
    /// use comfy_proxy_smol::{ClientConfig, Smol, connect_with};
    ///
    /// let executor = Arc::new(smol::Executor::new());
    /// let rt: Arc<dyn Runtime> = Arc::new(Smol::with_executor(executor.clone()));
    /// let client = connect_with(rt, ClientConfig::new("127.0.0.1:8188".parse().unwrap()));
    /// let stats = smol::block_on(executor.run(client.system_stats())).unwrap();
    /// println!("{:?}", stats.comfyui_version);
    /// ```
    pub fn with_executor(executor: Arc<smol::Executor<'static>>) -> SmolExecutor {
        SmolExecutor { executor }
    }
}

/// The smol runtime on an executor the program owns: see [`Smol::with_executor`].
#[derive(Clone)]
pub struct SmolExecutor {
    executor: Arc<smol::Executor<'static>>,
}

impl std::fmt::Debug for SmolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolExecutor").finish_non_exhaustive()
    }
}

impl Runtime for SmolExecutor {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        self.executor.spawn(future).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Smol.sleep(duration)
    }

    fn connect(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        Smol.connect(host, port)
    }
}

impl Runtime for Smol {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        smol::spawn(future).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }

    fn connect(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let tcp = smol::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as Box<dyn Stream>)
        })
    }
}

/// A client for one server on smol.
pub fn connect(config: ClientConfig) -> Client {
    connect_with(Arc::new(Smol), config)
}

/// A client for one server on the runtime `rt` (such as [`Smol::with_executor`]), with the
/// driver's HTTP client on the same runtime.
pub fn connect_with(rt: Arc<dyn Runtime>, config: ClientConfig) -> Client {
    Client::connect(rt.clone(), Arc::new(Http1::new(rt)), config)
}

/// A pool over many servers on smol: a client per server and the scheduler's task. Submit jobs
/// with [`Pool::submit`] and follow each with its [`JobHandle`]; jobs whose handle was dropped
/// report to the [`PoolEvents`].
pub fn pool(config: PoolConfig) -> (Pool, PoolEvents) {
    pool_with(Arc::new(Smol), config)
}

/// A pool on the runtime `rt` (such as [`Smol::with_executor`]), with the driver's HTTP client
/// on the same runtime. With an executor the program runs on the thread that reads the pool's
/// events, every task of the pool runs on that one thread: no wake-up crosses threads. On an
/// executor of its own, a program can also tell when every task of the pool has ended (its
/// cancels sent after a drop): `executor.is_empty()`.
///
/// ```no_run
/// use std::sync::Arc;
/// use comfy_proxy_smol::{ClientConfig, PoolConfig, Smol, pool_with};
/// use smol::stream::StreamExt;
///
/// let executor = Arc::new(smol::Executor::new());
/// let servers = ["127.0.0.1:8188".parse().unwrap()];
/// let config = PoolConfig::new(&servers, &ClientConfig::new(servers[0].clone()));
/// let (pool, mut events) = pool_with(Arc::new(Smol::with_executor(executor.clone())), config);
/// pool.close();
/// smol::block_on(executor.run(async { while events.next().await.is_some() {} }));
/// ```
pub fn pool_with(rt: Arc<dyn Runtime>, config: PoolConfig) -> (Pool, PoolEvents) {
    Pool::start(rt.clone(), Arc::new(Http1::new(rt)), config)
}

/// Sends one HTTP request to `config`'s server (its auth, headers and TLS settings applied),
/// without a websocket: for a one-off exchange such as fetching `object_info`.
pub async fn request(
    config: &ClientConfig,
    request: HttpRequest,
) -> Result<HttpResponse, ClientError> {
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    Http1::new(rt)
        .send(comfy_proxy_driver::client::outgoing(config, request))
        .await
        .map_err(ClientError::Transport)
}

/// The README's library examples, compiled as doc tests of this crate (the front door they
/// use) so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
