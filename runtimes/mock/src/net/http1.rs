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

/// The most header lines a request may have.
const MAX_HEADERS: usize = 64;

/// Parses the head at the start of `buf` with httparse: the request and the head's length, or
/// `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<(Request, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(bad("malformed request line"));
    };
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            let value =
                std::str::from_utf8(h.value).map_err(|_| bad("header value is not UTF-8"))?;
            Ok((h.name.to_owned(), value.trim().to_owned()))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body: Vec::new(),
    };
    Ok(Some((request, len)))
}

/// Whether `bytes` hold the blank line that ends a head.
fn has_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// Reads one request, `Ok(None)` at a clean end of stream. `buf` carries bytes read past the
/// previous request. The head is parsed by httparse once its blank line has arrived; the body
/// (by `Content-Length`, at most [`MAX_BODY`]) grows as it arrives.
pub(crate) async fn read_request<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    let mut chunk = vec![0u8; 64 << 10];
    let mut scanned: usize = 0;
    let (mut request, head_len) = loop {
        if has_blank_line(&buf[scanned.saturating_sub(2)..])
            && let Some(parsed) = parse_head(buf)?
        {
            break parsed;
        }
        scanned = buf.len();
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
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
    buf.drain(..head_len);
    if request.header("transfer-encoding").is_some() {
        return Err(bad("chunked request bodies are not supported"));
    }
    let len: usize = match request.header("content-length") {
        Some(v) => v.parse().map_err(|_| bad("bad Content-Length"))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(bad("request body too large"));
    }
    while buf.len() < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed inside a request body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // Bytes past the body stay in `buf`: they begin the next request.
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Hands out `bytes` `piece` bytes at a time.
    struct Drip {
        bytes: Vec<u8>,
        at: usize,
        piece: usize,
    }

    impl AsyncRead for Drip {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = (self.bytes.len() - self.at).min(self.piece).min(out.len());
            let at = self.at;
            out[..n].copy_from_slice(&self.bytes[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// Every request in `bytes`, read byte by byte and all at once (the same either way).
    fn requests(bytes: &[u8]) -> io::Result<Vec<Request>> {
        let read_all = |piece: usize| {
            let mut s = Drip {
                bytes: bytes.to_vec(),
                at: 0,
                piece,
            };
            let mut buf = Vec::new();
            let mut out = Vec::new();
            loop {
                match read_request(&mut s, &mut buf).now_or_never().unwrap()? {
                    Some(r) => out.push(r),
                    None => return Ok(out),
                }
            }
        };
        let slow = read_all(1);
        let fast = read_all(1 << 20);
        assert_eq!(format!("{slow:?}"), format!("{fast:?}"));
        fast
    }

    #[test]
    fn requests_one_after_another_on_a_connection() {
        let got = requests(
            b"GET /queue HTTP/1.1\r\nHost: x\r\n\r\nPOST /prompt?a=1 HTTP/1.1\r\nContent-Length: 4\r\nContent-Type: application/json\r\n\r\n{\"\"}GET /ws?clientId=c HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].method.as_str(), got[0].target.as_str()),
            ("GET", "/queue")
        );
        assert_eq!(got[0].header("HOST"), Some("x"));
        assert_eq!(got[1].target, "/prompt?a=1");
        assert_eq!(got[1].body, b"{\"\"}");
        assert_eq!(got[1].header("content-type"), Some("application/json"));
        assert_eq!(got[2].websocket_key(), Some("k"));
    }

    #[test]
    fn broken_requests_are_errors() {
        let kind = |bytes: &[u8]| requests(bytes).map(|r| r.len()).unwrap_err().kind();
        assert_eq!(kind(b"GET\r\n\r\n"), io::ErrorKind::InvalidData);
        assert_eq!(
            kind(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n"),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            kind(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort"),
            io::ErrorKind::InvalidData,
            "cut inside the body"
        );
        assert_eq!(
            kind(b"GET / HTTP/1.1\r\nHost"),
            io::ErrorKind::InvalidData,
            "cut in the head"
        );
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.extend_from_slice(&[b'a'; 70 << 10]);
        assert_eq!(kind(&endless), io::ErrorKind::InvalidData);
        assert!(requests(b"").unwrap().is_empty(), "a clean end");
    }
}
