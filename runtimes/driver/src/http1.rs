//! A small HTTP/1.1 client over any futures-io stream: one request per connection
//! (`Connection: close`), bodies by `Content-Length`, chunked, or to the end of the stream.
//!
//! Both runtime crates send HTTP through it. hyper 1 (and surf's own HTTP/1 backend, through
//! deadpool) depend on the `tokio` crate, which this project keeps out of its tree; this client
//! needs nothing but futures-io and rustls.

use std::sync::Arc;

use comfy_proxy::wire::HttpResponse;
use comfy_proxy::{TransportError, TransportErrorKind};
use futures_util::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::runtime::{BoxFuture, HttpClient, OutgoingRequest, Runtime, Stream};

/// The longest status line or header line accepted.
const MAX_LINE: usize = 16 << 10;

/// HTTP/1.1 over the runtime's TCP (and rustls for `https`).
#[derive(Clone)]
pub struct Http1 {
    rt: Arc<dyn Runtime>,
}

impl Http1 {
    /// A client that connects with `rt`.
    pub fn new(rt: Arc<dyn Runtime>) -> Self {
        Self { rt }
    }
}

impl std::fmt::Debug for Http1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http1")
    }
}

impl HttpClient for Http1 {
    fn send(&self, o: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, TransportError>> {
        let rt = self.rt.clone();
        Box::pin(async move {
            let what = format!("{} {}", o.request.method.as_str(), o.shown_url);
            let server = &o.server;
            let result = async {
                let tcp = rt
                    .connect(server.host(), server.port())
                    .await
                    .map_err(|e| TransportError::from_io("", e))?;
                let stream = if server.tls() {
                    o.tls.connect(server.host(), tcp).await.map_err(|e| {
                        TransportError::new(TransportErrorKind::Tls, "").with_source(e)
                    })?
                } else {
                    tcp
                };
                exchange(stream, &o).await
            }
            .await;
            result.map_err(|mut e| {
                e.what = what;
                e
            })
        })
    }
}

/// Writes the request head and body of `o`.
pub fn encode_request(o: &OutgoingRequest) -> Vec<u8> {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: comfy-proxy\r\nAccept: */*\r\nConnection: close\r\n",
        o.request.method.as_str(),
        o.target,
        o.server.authority()
    );
    // Names and values were checked when the config was built: no CR or LF can get here.
    for (name, value) in o.headers.iter() {
        head.push_str(name.as_str());
        head.push_str(": ");
        head.push_str(value.to_str().unwrap_or_default());
        head.push_str("\r\n");
    }
    let body: &[u8] = match &o.request.body {
        Some(body) => {
            head.push_str(&format!("Content-Type: {}\r\n", body.content_type));
            &body.bytes
        }
        None => &[],
    };
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn malformed(detail: impl AsRef<str>) -> TransportError {
    TransportError::new(TransportErrorKind::Malformed, "").with_detail(detail)
}

fn io(e: std::io::Error) -> TransportError {
    TransportError::from_io("", e)
}

async fn read_line<R: futures_util::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<String, TransportError> {
    let mut line = Vec::new();
    let n = r
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(io)?;
    if n == 0 {
        return Err(TransportError::new(TransportErrorKind::Reset, "")
            .with_detail("connection closed before the response"));
    }
    if !line.ends_with(b"\n") {
        return Err(malformed("response line too long"));
    }
    let text = String::from_utf8(line).map_err(|_| malformed("response head is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Sends the request and reads the whole response.
async fn exchange(
    mut stream: Box<dyn Stream>,
    o: &OutgoingRequest,
) -> Result<HttpResponse, TransportError> {
    stream.write_all(&encode_request(o)).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut r = BufReader::new(stream);
    let status_line = read_line(&mut r).await?;
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(malformed(format!("malformed status line {status_line:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(format!(
            "not an HTTP/1 response: {status_line:?}"
        )));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| malformed(format!("malformed status line {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    for _ in 0..256 {
        let line = read_line(&mut r).await?;
        if line.is_empty() {
            let body = read_body(&mut r, length, chunked, o.max_body).await?;
            return Ok(HttpResponse::new(status, body));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!("malformed header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| malformed(format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            chunked = true;
        }
    }
    Err(malformed("too many response headers"))
}

async fn read_body<R: futures_util::io::AsyncBufRead + Unpin>(
    r: &mut R,
    length: Option<usize>,
    chunked: bool,
    max: usize,
) -> Result<Vec<u8>, TransportError> {
    let too_big = |n: usize| {
        TransportError::new(TransportErrorKind::TooLarge { limit: max as u64 }, "")
            .with_detail(format!("{n} bytes"))
    };
    let mut body = Vec::new();
    if chunked {
        loop {
            let line = read_line(r).await?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| malformed(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(r).await?.is_empty() {}
                return Ok(body);
            }
            if body.len().saturating_add(size) > max {
                return Err(too_big(body.len().saturating_add(size)));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await.map_err(io)?;
            read_line(r).await?;
        }
    }
    match length {
        Some(n) if n > max => Err(too_big(n)),
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).await.map_err(io)?;
            Ok(body)
        }
        None => {
            r.take(max as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(io)?;
            if body.len() > max {
                Err(too_big(body.len()))
            } else {
                Ok(body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::Cursor;

    fn read(raw: &[u8], max: usize) -> Result<(u16, Vec<u8>), TransportError> {
        futures_util::future::FutureExt::now_or_never(async {
            let mut r = BufReader::new(Cursor::new(raw.to_vec()));
            let status = read_line(&mut r).await?;
            let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
            let mut length = None;
            let mut chunked = false;
            loop {
                let line = read_line(&mut r).await?;
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(v.trim().parse().unwrap());
                }
                if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = true;
                }
            }
            Ok((code, read_body(&mut r, length, chunked, max).await?))
        })
        .unwrap()
    }

    #[test]
    fn bodies() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 10),
            Ok((200, b"hi".to_vec()))
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3;x=1\r\n th\r\n0\r\n\r\n", 10),
            Ok((200, b"hi th".to_vec()))
        );
        assert_eq!(
            read(b"HTTP/1.1 500 Boom\r\n\r\nall of it", 100),
            Ok((500, b"all of it".to_vec()))
        );
        let kind = |raw: &[u8]| read(raw, 100).unwrap_err().kind;
        assert_eq!(
            kind(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nhi"),
            TransportErrorKind::Reset
        );
        assert_eq!(
            kind(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n"),
            TransportErrorKind::TooLarge { limit: 100 }
        );
        assert_eq!(
            kind(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            TransportErrorKind::Malformed
        );
    }
}
