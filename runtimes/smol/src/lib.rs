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

pub use comfy_proxy_driver::{Auth, Client, ClientConfig, ClientError, PromptStream, RunResult};

/// The smol runtime: tasks on smol's global executor, async-io timers, async-net TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

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
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    Client::connect(rt.clone(), Arc::new(Http1::new(rt)), config)
}
