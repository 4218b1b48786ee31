//! comfy-proxy on [async-std], for programs already on that stack: spawn, timers and TCP from
//! async-std, HTTP from surf (plain HTTP by default; the `tls` feature adds surf's rustls
//! client for `https`). The websocket, `wss` included, is the shared driver's.
//!
//! async-std is discontinued upstream and surf is unmaintained (RUSTSEC-2025-0052,
//! RUSTSEC-2025-0036); new programs should prefer `comfy-proxy-smol`.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::wire::{HttpResponse, Method};
use comfy_proxy_driver::{BoxFuture, HttpClient, Listener, OutgoingRequest, Runtime, Stream};
use futures_util::io::AsyncReadExt;

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

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = async_std::net::TcpListener::bind(addr).await?;
            Ok(Box::new(AsyncStdListener(listener)) as Box<dyn Listener>)
        })
    }
}

struct AsyncStdListener(async_std::net::TcpListener);

impl Listener for AsyncStdListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Box<dyn Stream>>> {
        Box::pin(async move {
            let (tcp, _) = self.0.accept().await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(tcp) as Box<dyn Stream>)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// HTTP through surf.
#[derive(Debug, Clone)]
pub struct Surf(surf::Client);

impl Default for Surf {
    fn default() -> Self {
        Self(surf::Client::new())
    }
}

impl HttpClient for Surf {
    fn send(&self, o: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, String>> {
        let client = self.0.clone();
        Box::pin(async move {
            let what = format!("{} {}", o.request.method.as_str(), o.url);
            send(client, o).await.map_err(|e| format!("{what}: {e}"))
        })
    }
}

async fn send(client: surf::Client, o: OutgoingRequest) -> Result<HttpResponse, String> {
    let url: surf::Url = o.url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let method = match o.request.method {
        Method::Post => surf::http::Method::Post,
        _ => surf::http::Method::Get,
    };
    let mut builder = surf::RequestBuilder::new(method, url);
    for (name, value) in &o.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = o.request.body {
        builder = builder
            .body(surf::Body::from_bytes(body.bytes))
            .header("Content-Type", body.content_type);
    }
    let mut response = client
        .send(builder.build())
        .await
        .map_err(|e| e.to_string())?;
    let status: u16 = response.status().into();
    let mut body = Vec::new();
    let limit = o.max_body as u64;
    response
        .take_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    if body.len() as u64 > limit {
        return Err(format!("body over the limit of {limit} bytes"));
    }
    Ok(HttpResponse::new(status, body))
}

/// A client for one server on async-std.
pub fn connect(config: ClientConfig) -> Client {
    Client::connect(Arc::new(AsyncStd), Arc::new(Surf::default()), config)
}
