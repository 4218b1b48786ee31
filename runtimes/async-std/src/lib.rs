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
//! ```no_run
//! use comfy_proxy::workflow::QwenParams;
//! use comfy_proxy_async_std::{ClientConfig, connect};
//!
//! async_std::task::block_on(async {
//!     let client = connect(ClientConfig::new("127.0.0.1:8188".parse().unwrap()));
//!     let graph = QwenParams::new("a tea house in the rain", 3).build().unwrap();
//!     let result = client.run(graph).await.unwrap();
//!     println!("{} images", result.outputs.len());
//! });
//! ```

use std::io;
use std::sync::Arc;
use std::time::Duration;

pub use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{BoxFuture, Runtime, Stream};

#[cfg(feature = "surf")]
mod surf_client;
#[cfg(feature = "surf")]
pub use surf_client::{SurfClient, connect_with_surf};

pub use comfy_proxy_driver::{Auth, Client, ClientConfig, ClientError, PromptStream, RunResult};

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
