//! A small HTTP/1.1 server side over futures-io, enough for a mock ComfyUI: request heads,
//! `Content-Length` bodies, keep-alive, and the websocket upgrade handshake.

use std::io;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request head accepted.
const MAX_HEAD: usize = 64 << 10;
/// The longest request body accepted (uploads).
pub(crate) const MAX_BODY: usize = 128 << 20;

/// A parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Sec-WebSocket-Key` of a websocket upgrade request.
    pub fn websocket_key(&self) -> Option<&str> {
        let upgrade = self.header("upgrade")?;
        upgrade
            .eq_ignore_ascii_case("websocket")
            .then(|| self.header("sec-websocket-key"))
            .flatten()
    }
}

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads one request, `Ok(None)` at a clean end of stream. `buf` carries bytes read past the
/// previous request.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(bad("connection closed inside a request head"))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head =
        std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return Err(bad("malformed request line"));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad("malformed header line"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    buf.drain(..head_end + 4);
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let len: usize = match request.header("content-length") {
        Some(v) => v.parse().map_err(|_| bad("bad Content-Length"))?,
        None => 0,
    };
    if request.header("transfer-encoding").is_some() {
        return Err(bad("chunked request bodies are not supported"));
    }
    if len > MAX_BODY {
        return Err(bad("request body too large"));
    }
    while buf.len() < len {
        let mut chunk = vec![0u8; (len - buf.len()).min(1 << 20)];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed inside a request body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    request.body = buf.drain(..len).collect();
    Ok(Some(request))
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Writes a whole response with a `Content-Length` body.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nServer: comfy-proxy-mock\r\n\r\n",
        reason(status),
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// Answers a websocket upgrade with `101 Switching Protocols`.
pub(crate) async fn accept_websocket<S: AsyncWrite + Unpin>(
    s: &mut S,
    key: &str,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    s.write_all(head.as_bytes()).await?;
    s.flush().await
}
