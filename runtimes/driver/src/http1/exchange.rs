//! One request and its response on one connection, with ureq-proto's [`Call`] deciding what the
//! bytes mean and whether the connection can be used again. This module only moves bytes.

use comfy_proxy::wire::{HttpResponse, Method};
use comfy_proxy::{TransportError, TransportErrorKind};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use ureq_proto::client::{Call, RecvBodyResult, RecvResponseResult, SendRequestResult};
use ureq_proto::{BodyMode, http};

use crate::runtime::{OutgoingRequest, Stream};

/// The longest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// How much is read from the socket at a time.
const READ_CHUNK: usize = 64 << 10;

/// A connection to a server, with the bytes read past the last response (none, unless the
/// server sent more than it announced).
pub(crate) struct Conn {
    pub stream: Box<dyn Stream>,
    pub buf: Vec<u8>,
    /// Where the socket is read into: allocated once per connection.
    scratch: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: Box<dyn Stream>) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            scratch: vec![0; READ_CHUNK],
        }
    }

    /// Reads what the socket has into `buf`; 0 at the end of the stream.
    async fn read_some(&mut self) -> std::io::Result<usize> {
        let n = self.stream.read(&mut self.scratch).await?;
        self.buf.extend_from_slice(&self.scratch[..n]);
        Ok(n)
    }
}

/// An exchange that failed, and whether the server can have seen none of the response: only
/// then may an idempotent request be tried again on a fresh connection.
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: TransportError,
    pub nothing_back: bool,
}

fn fail(kind: TransportErrorKind, detail: impl AsRef<str>, nothing_back: bool) -> Failed {
    Failed {
        error: TransportError::new(kind, "").with_detail(detail),
        nothing_back,
    }
}

fn io_fail(e: std::io::Error, nothing_back: bool) -> Failed {
    Failed {
        error: TransportError::from_io("", e),
        nothing_back,
    }
}

fn malformed(e: impl std::fmt::Display) -> Failed {
    fail(TransportErrorKind::Malformed, e.to_string(), false)
}

fn invalid(e: impl std::fmt::Display) -> Failed {
    fail(TransportErrorKind::InvalidRequest, e.to_string(), false)
}

/// The request as ureq-proto takes it: method, full URL, our headers; a body is sent with its
/// `Content-Length`, never chunked.
fn request(o: &OutgoingRequest) -> Result<http::Request<()>, Failed> {
    let method = match o.request.method {
        Method::Post => http::Method::POST,
        _ => http::Method::GET,
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(o.url.as_str())
        .header("user-agent", "comfy-proxy")
        .header("accept", "*/*");
    match &o.request.body {
        Some(body) => {
            builder = builder
                .header("content-type", body.content_type.as_str())
                .header("content-length", body.bytes.len());
        }
        None if o.request.method == Method::Post => {
            builder = builder.header("content-length", 0);
        }
        None => {}
    }
    // Checked when the config was built; a secret value keeps its sensitive mark.
    for (name, value) in o.headers.iter() {
        builder = builder.header(name, value);
    }
    builder.body(()).map_err(invalid)
}

/// The bytes `exchange` writes for `o`: its head as ureq-proto encodes it, then its body.
#[cfg(test)]
pub(crate) fn encode_request(o: &OutgoingRequest) -> Result<Vec<u8>, Failed> {
    let mut call = Call::new(request(o)?).map_err(invalid)?.proceed();
    let mut out = vec![0u8; MAX_HEAD];
    let mut sent = Vec::new();
    while !call.can_proceed() {
        let n = call.write(&mut out).map_err(invalid)?;
        sent.extend_from_slice(&out[..n]);
    }
    if let Some(body) = &o.request.body {
        sent.extend_from_slice(&body.bytes);
    }
    Ok(sent)
}

/// Whether `bytes` hold the blank line that ends a head (`\n\r\n`, or a bare `\n\n`).
fn has_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// Sends `o` on `conn` and reads the whole response, its body in pieces as they arrive, never
/// more than `o.max_body` bytes of it. Returns the response and whether the connection may
/// serve another request.
pub(crate) async fn exchange(
    conn: &mut Conn,
    o: &OutgoingRequest,
) -> Result<(HttpResponse, bool), Failed> {
    let call = Call::new(request(o)?).map_err(invalid)?;
    let mut call = call.proceed();

    // The head, written as ureq-proto encodes it into the connection's read buffer (unused
    // until the response; as large as the largest head); a failed write means nothing came back.
    // A body that fits after the head goes out with it, in one write (one segment, one system
    // call); a larger one is written after the head.
    let mut head = 0;
    while !call.can_proceed() {
        head += call.write(&mut conn.scratch[head..]).map_err(invalid)?;
    }
    let mut call = match call.proceed().map_err(invalid)? {
        Some(SendRequestResult::RecvResponse(call)) => {
            let bytes = &conn.scratch[..head];
            conn.stream
                .write_all(bytes)
                .await
                .map_err(|e| io_fail(e, true))?;
            call
        }
        Some(SendRequestResult::SendBody(mut send)) => {
            let body = o.request.body.as_ref().map_or(&[][..], |b| &b.bytes[..]);
            send.consume_direct_write(body.len()).map_err(invalid)?;
            let end = head + body.len();
            let written = if end <= conn.scratch.len() {
                conn.scratch[head..end].copy_from_slice(body);
                conn.stream.write_all(&conn.scratch[..end]).await
            } else {
                let bytes = &conn.scratch[..head];
                match conn.stream.write_all(bytes).await {
                    Ok(()) => conn.stream.write_all(body).await,
                    Err(e) => Err(e),
                }
            };
            written.map_err(|e| io_fail(e, true))?;
            send.proceed()
                .ok_or_else(|| invalid("the body was not all sent"))?
        }
        Some(SendRequestResult::Await100(_)) | None => {
            return Err(invalid("unexpected request state"));
        }
    };
    conn.stream.flush().await.map_err(|e| io_fail(e, true))?;

    // The head of the response.
    let mut nothing_back = conn.buf.is_empty();
    // Parsed again only once a blank line has arrived: a server dripping a head byte by byte
    // costs one scan, not one parse per byte.
    let mut scanned: usize = 0;
    let response = loop {
        let from = scanned.saturating_sub(3);
        scanned = conn.buf.len();
        if has_blank_line(&conn.buf[from..]) {
            let (used, response) = call.try_response(&conn.buf, false).map_err(malformed)?;
            conn.buf.drain(..used);
            if let Some(response) = response {
                break response;
            }
            if used > 0 {
                scanned = 0;
                continue; // an informational response (100 Continue): the real one follows
            }
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(malformed("response head over 64 KiB"));
        }
        match conn.read_some().await {
            Ok(0) => {
                let detail = "connection closed before the response";
                return Err(fail(TransportErrorKind::Reset, detail, nothing_back));
            }
            Ok(_) => nothing_back = false,
            Err(e) => return Err(io_fail(e, nothing_back)),
        }
    };
    let status = response.status().as_u16();

    // The body, grown as it arrives; a declared length over the limit is refused unread.
    let max = o.max_body;
    let too_large = |n: u64| {
        fail(
            TransportErrorKind::TooLarge { limit: max as u64 },
            format!("{n} bytes or more"),
            false,
        )
    };
    let mut body = Vec::new();
    let cleanup = match call.proceed() {
        Some(RecvResponseResult::RecvBody(mut recv)) => {
            let mode = recv.body_mode();
            if let BodyMode::LengthDelimited(n) = mode
                && n > max as u64
            {
                return Err(too_large(n));
            }
            let close_delimited = matches!(mode, BodyMode::CloseDelimited);
            loop {
                if !close_delimited && recv.can_proceed() {
                    break;
                }
                if !conn.buf.is_empty() {
                    // Decoded straight into the body: never more than the input's length (a
                    // chunked body's framing only shrinks it), at most one read past `max`.
                    let start = body.len();
                    body.resize(start + conn.buf.len().min(max + 1 - start.min(max)), 0);
                    let read = recv.read(&conn.buf, &mut body[start..]);
                    let (used, produced) = read.map_err(malformed)?;
                    body.truncate(start + produced);
                    conn.buf.drain(..used);
                    if body.len() > max {
                        return Err(too_large(body.len() as u64));
                    }
                    if used > 0 || produced > 0 {
                        continue;
                    }
                    if conn.buf.len() > MAX_HEAD {
                        return Err(malformed("a chunk header over 64 KiB"));
                    }
                }
                match conn.read_some().await {
                    Ok(0) if close_delimited => break,
                    Ok(0) => {
                        let detail = format!("connection closed after {} body bytes", body.len());
                        return Err(fail(TransportErrorKind::Reset, detail, false));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(io_fail(e, false)),
                }
            }
            match recv.proceed() {
                Some(RecvBodyResult::Cleanup(cleanup)) => cleanup,
                Some(RecvBodyResult::Redirect(redirect)) => redirect.proceed(),
                None => return Err(malformed("the body did not end")),
            }
        }
        Some(RecvResponseResult::Redirect(redirect)) => redirect.proceed(),
        Some(RecvResponseResult::Cleanup(cleanup)) => cleanup,
        None => return Err(malformed("no response")),
    };
    // Bytes past the response would be read as the next one's: such a connection is closed.
    let reusable = !cleanup.must_close_connection() && conn.buf.is_empty();
    Ok((HttpResponse::new(status, body), reusable))
}
