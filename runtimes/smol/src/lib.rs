//! comfy-proxy on [smol]: spawn, timers and TCP from smol, HTTP from hyper 1 (HTTP/1.1 over
//! futures-io), TLS from futures-rustls. Everything else is the shared driver.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use comfy_proxy::wire::{HttpResponse, Method};
use comfy_proxy_driver::{BoxFuture, HttpClient, Listener, OutgoingRequest, Runtime, Stream};
use http_body_util::{BodyExt, Full, Limited};
use smol_hyper::rt::FuturesIo;

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

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = smol::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SmolListener(listener)) as Box<dyn Listener>)
        })
    }
}

struct SmolListener(smol::net::TcpListener);

impl Listener for SmolListener {
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

/// HTTP/1.1 with hyper 1 over a futures-io stream: one connection per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hyper;

impl HttpClient for Hyper {
    fn send(&self, o: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, String>> {
        Box::pin(async move {
            let what = format!("{} {}", o.request.method.as_str(), o.url);
            send(o).await.map_err(|e| format!("{what}: {e}"))
        })
    }
}

async fn send(o: OutgoingRequest) -> Result<HttpResponse, String> {
    let server = &o.server;
    let tcp = Smol
        .connect(server.host(), server.port())
        .await
        .map_err(|e| e.to_string())?;
    let stream = if server.tls() {
        comfy_proxy_driver::tls::connect(server.host(), tcp, o.verify_tls)
            .await
            .map_err(|e| e.to_string())?
    } else {
        tcp
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(FuturesIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    smol::spawn(async move {
        let _ = connection.await;
    })
    .detach();
    let method = match o.request.method {
        Method::Post => hyper::Method::POST,
        _ => hyper::Method::GET,
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(o.target.as_str())
        .header(hyper::header::HOST, server.authority());
    for (name, value) in &o.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = match o.request.body {
        Some(body) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, body.content_type);
            Bytes::from(body.bytes)
        }
        None => Bytes::new(),
    };
    let request = builder.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), o.max_body)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok(HttpResponse::new(status, body))
}

/// A client for one server on smol.
pub fn connect(config: ClientConfig) -> Client {
    Client::connect(Arc::new(Smol), Arc::new(Hyper), config)
}
