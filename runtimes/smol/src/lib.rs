//! comfy-proxy on [smol]: spawn, timers and TCP from smol; HTTP/1.1, the websocket and TLS
//! (futures-rustls) from the shared driver, over futures-io.
//!
//! hyper 1 was the planned HTTP client, but it depends on the `tokio` crate (its `sync`
//! feature, unconditionally), which this project keeps out of its tree; the driver's own
//! HTTP/1.1 client over futures-io serves instead.
//!
//! ```no_run
//! use comfy_proxy::workflow::FluxParams;
//! use comfy_proxy_smol::{ClientConfig, connect};
//!
//! smol::block_on(async {
//!     let server = "127.0.0.1:8188".parse().unwrap();
//!     let client = connect(ClientConfig::new(server));
//!     let graph = FluxParams::new("a red fox in snow", 7).build().unwrap();
//!     let result = client.run(graph).await.unwrap();
//!     println!("{} images", result.outputs.len());
//! });
//! ```

use std::io;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{BoxFuture, Runtime, Stream};

pub mod blocking;

pub use comfy_proxy_driver::{Auth, Client, ClientConfig, ClientError, PromptStream, RunResult};

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
