//! comfy-proxy on [async-std], for programs already on that stack: spawn, timers and TCP from
//! async-std, HTTP requests made with surf. The websocket and TLS (`wss`, `https`) are the
//! shared driver's.
//!
//! surf's own HTTP/1 backends pull in the `tokio` crate (through deadpool) or libcurl, so surf
//! runs here over a backend of ours: the driver's HTTP/1.1 client on async-std's TCP, with
//! futures-rustls for `https`.
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
use comfy_proxy::{TransportError, TransportErrorKind};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{BoxFuture, HttpClient, Listener, OutgoingRequest, Runtime, Stream};

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

/// HTTP through surf, over [`Backend`].
#[derive(Debug, Clone)]
pub struct Surf(surf::Client);

impl Default for Surf {
    fn default() -> Self {
        let rt: Arc<dyn Runtime> = Arc::new(AsyncStd);
        Self(surf::Client::with_http_client(Backend {
            http: Http1::new(rt),
            config: http_client::Config::default(),
        }))
    }
}

impl HttpClient for Surf {
    fn send(&self, o: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, TransportError>> {
        let client = self.0.clone();
        Box::pin(async move {
            let what = format!("{} {}", o.request.method.as_str(), o.url);
            send(client, o).await.map_err(|e| {
                // Our backend's errors come back as they were; surf's own are I/O failures.
                match e.downcast::<TransportError>() {
                    Ok(e) => e,
                    Err(e) => {
                        TransportError::new(TransportErrorKind::Io, what).with_detail(e.to_string())
                    }
                }
            })
        })
    }
}

async fn send(client: surf::Client, o: OutgoingRequest) -> Result<HttpResponse, surf::Error> {
    let url: surf::Url = o.url.parse()?;
    let method = match o.request.method {
        Method::Post => surf::http::Method::Post,
        _ => surf::http::Method::Get,
    };
    let mut builder = surf::RequestBuilder::new(method, url)
        .header(VERIFY_TLS, if o.verify_tls { "1" } else { "0" })
        .header(MAX_BODY, o.max_body.to_string());
    for (name, value) in &o.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(body) = o.request.body {
        builder = builder
            .body(surf::Body::from_bytes(body.bytes))
            .header("Content-Type", body.content_type);
    }
    let mut response = client.send(builder.build()).await?;
    let status: u16 = response.status().into();
    let body = response.body_bytes().await?;
    Ok(HttpResponse::new(status, body))
}

/// Internal headers that carry the driver's per-request settings through surf to the backend;
/// the backend removes them before sending.
const VERIFY_TLS: &str = "x-comfy-proxy-verify-tls";
const MAX_BODY: &str = "x-comfy-proxy-max-body";

/// surf's backend: the driver's HTTP/1.1 client on async-std.
#[derive(Debug)]
pub struct Backend {
    http: Http1,
    config: http_client::Config,
}

#[async_trait::async_trait]
impl http_client::HttpClient for Backend {
    async fn send(
        &self,
        mut req: http_client::Request,
    ) -> Result<http_client::Response, http_client::Error> {
        let err = |status: u16, e: String| http_client::Error::from_str(status, e);
        let url = req.url().clone();
        let scheme = url.scheme().to_owned();
        let host = url
            .host_str()
            .ok_or_else(|| err(400, format!("no host in {url}")))?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let server = comfy_proxy::ServerAddress::parse(&format!("{scheme}://{host}:{port}"))
            .map_err(|e| err(400, e.to_string()))?;
        let verify_tls = req.header(VERIFY_TLS).is_none_or(|v| v.as_str() != "0");
        let max_body = req
            .header(MAX_BODY)
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(512 << 20);
        req.remove_header(VERIFY_TLS);
        req.remove_header(MAX_BODY);
        let mut headers = Vec::new();
        let mut content_type = None;
        for (name, values) in req.iter() {
            for value in values.iter() {
                if name.as_str().eq_ignore_ascii_case("content-type") {
                    content_type = Some(value.as_str().to_owned());
                } else if !name.as_str().eq_ignore_ascii_case("content-length") {
                    headers.push((name.as_str().to_owned(), value.as_str().to_owned()));
                }
            }
        }
        let method = match req.method() {
            surf::http::Method::Post => Method::Post,
            _ => Method::Get,
        };
        let bytes = req.body_bytes().await?;
        let body =
            (method == Method::Post || !bytes.is_empty()).then(|| comfy_proxy::wire::http::Body {
                content_type: content_type.unwrap_or_else(|| "application/octet-stream".into()),
                bytes,
            });
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let outgoing = OutgoingRequest {
            server,
            url: url.to_string(),
            target,
            request: comfy_proxy::wire::HttpRequest {
                method,
                path: url.path().to_owned(),
                body,
            },
            headers,
            verify_tls,
            max_body,
            timeout: self.config.timeout.unwrap_or(Duration::from_secs(120)),
        };
        let response = self
            .http
            .send(outgoing)
            .await
            .map_err(|e| http_client::Error::new(502, e))?;
        let mut out = http_client::Response::new(response.status);
        out.set_body(response.body.to_vec());
        Ok(out)
    }

    fn set_config(&mut self, config: http_client::Config) -> Result<(), http_client::Error> {
        self.config = config;
        Ok(())
    }

    fn config(&self) -> &http_client::Config {
        &self.config
    }
}

/// A client for one server on async-std.
pub fn connect(config: ClientConfig) -> Client {
    Client::connect(Arc::new(AsyncStd), Arc::new(Surf::default()), config)
}
