//! A program's own `surf::Client` as comfy-proxy's HTTP transport (the `surf` feature).

use std::str::FromStr;
use std::sync::Arc;

use comfy_proxy::wire::{HttpResponse, Method};
use comfy_proxy::{TransportError, TransportErrorKind};
use comfy_proxy_driver::{BoxFuture, HttpClient, OutgoingRequest};
use futures_util::AsyncReadExt;
use futures_util::future::{Either, select};
use surf::http::headers::{HeaderName, HeaderValue};

use crate::{AsyncStd, Client, ClientConfig};

/// Sends comfy-proxy's HTTP requests through a `surf::Client` the program configured: its
/// middleware, proxy, timeouts and backend apply.
///
/// What comfy-proxy still decides: each exchange's deadline ([`OutgoingRequest::timeout`]) and
/// the largest body it accepts ([`OutgoingRequest::max_body`], read in pieces, never allocated
/// at a declared length). What surf's client decides instead: TLS, so
/// [`ClientConfig::danger_accept_invalid_certs`] has no effect on HTTP sent this way (the
/// websocket still honours it).
#[derive(Debug, Clone)]
pub struct SurfClient(surf::Client);

impl SurfClient {
    /// Wraps `client`.
    pub fn new(client: surf::Client) -> Self {
        Self(client)
    }
}

impl From<surf::Client> for SurfClient {
    fn from(client: surf::Client) -> Self {
        Self(client)
    }
}

/// A client for one server on async-std whose HTTP goes through `surf`.
pub fn connect_with_surf(surf: surf::Client, config: ClientConfig) -> Client {
    Client::connect(Arc::new(AsyncStd), Arc::new(SurfClient(surf)), config)
}

impl HttpClient for SurfClient {
    fn send(&self, o: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, TransportError>> {
        let client = self.0.clone();
        Box::pin(async move {
            let what = format!("{} {}", o.request.method.as_str(), o.shown_url);
            let limit = o.timeout;
            let sleep = Box::pin(async_std::task::sleep(limit));
            let result = match select(Box::pin(send(client, o)), sleep).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => {
                    Err(TransportError::new(TransportErrorKind::TimedOut(limit), ""))
                }
            };
            result.map_err(|mut e| {
                e.what = what;
                e
            })
        })
    }
}

fn invalid(detail: impl AsRef<str>) -> TransportError {
    TransportError::new(TransportErrorKind::InvalidRequest, "").with_detail(detail)
}

/// A header as http-types takes it, refused (not panicking, not sent) when HTTP does not allow it.
fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), TransportError> {
    let bad_value = value.chars().any(|c| c.is_control() && c != '\t');
    let name = HeaderName::from_str(name)
        .ok()
        .filter(|n| !n.as_str().is_empty() && !n.as_str().contains([' ', ':', '\r', '\n']))
        .ok_or_else(|| invalid(format!("header name {name:?}")))?;
    let value = HeaderValue::from_str(value)
        .ok()
        .filter(|_| !bad_value)
        .ok_or_else(|| invalid(format!("value of header {}", name.as_str())))?;
    Ok((name, value))
}

/// Sorts surf's error: ours passed through a backend as they were, I/O errors by their kind.
fn from_surf(e: surf::Error) -> TransportError {
    let e = match e.downcast::<TransportError>() {
        Ok(ours) => return ours,
        Err(e) => e,
    };
    match e.downcast::<std::io::Error>() {
        Ok(io) => TransportError::from_io("", io),
        Err(e) => TransportError::new(TransportErrorKind::Io, "").with_detail(e.to_string()),
    }
}

async fn send(client: surf::Client, o: OutgoingRequest) -> Result<HttpResponse, TransportError> {
    let url = surf::Url::parse(&o.url).map_err(|e| invalid(format!("URL: {e}")))?;
    let method = match o.request.method {
        Method::Post => surf::http::Method::Post,
        _ => surf::http::Method::Get,
    };
    let mut request = surf::Request::new(method, url);
    for (name, value) in o.headers.iter() {
        let value = value
            .to_str()
            .map_err(|_| invalid(format!("value of header {name}")))?;
        let (name, value) = header(name.as_str(), value)?;
        request.insert_header(name, value);
    }
    if let Some(body) = o.request.body {
        let (name, value) = header("content-type", &body.content_type)?;
        request.set_body(surf::Body::from_bytes(body.bytes));
        request.insert_header(name, value);
    }
    let mut response = client.send(request).await.map_err(from_surf)?;
    let status: u16 = response.status().into();
    let max = o.max_body;
    let too_large = |n: usize| {
        TransportError::new(TransportErrorKind::TooLarge { limit: max as u64 }, "")
            .with_detail(format!("{n} bytes or more"))
    };
    if let Some(declared) = response.len()
        && declared > max
    {
        return Err(too_large(declared));
    }
    let mut reader = response.take_body().into_reader();
    let mut body = Vec::new();
    let mut piece = vec![0u8; 64 << 10];
    loop {
        let n = reader
            .read(&mut piece)
            .await
            .map_err(|e| TransportError::from_io("", e))?;
        if n == 0 {
            break;
        }
        if body.len() + n > max {
            return Err(too_large(body.len() + n));
        }
        body.extend_from_slice(&piece[..n]);
    }
    Ok(HttpResponse::new(status, body))
}
