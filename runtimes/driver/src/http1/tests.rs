//! The exchange over scripted streams: what a server sends, what the client makes of it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use comfy_proxy::wire::HttpRequest;
use comfy_proxy::{ServerAddress, TransportErrorKind};
use futures_util::FutureExt;
use futures_util::io::{AsyncRead, AsyncWrite};

use super::exchange::{Conn, Failed, exchange};
use crate::runtime::OutgoingRequest;

/// A stream that answers with `replies` in pieces of `piece` bytes, then ends (or fails with
/// `end_error`), and keeps what was written.
struct Scripted {
    replies: Vec<u8>,
    at: usize,
    piece: usize,
    end_error: Option<io::ErrorKind>,
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let left = &self.replies[self.at..];
        if left.is_empty() {
            if let Some(kind) = self.end_error {
                return Poll::Ready(Err(kind.into()));
            }
            return Poll::Ready(Ok(0));
        }
        let n = left.len().min(buf.len()).min(self.piece);
        buf[..n].copy_from_slice(&left[..n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.written.lock().unwrap().extend_from_slice(b);
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn outgoing(request: HttpRequest, max_body: usize) -> OutgoingRequest {
    let server = ServerAddress::parse("127.0.0.1:8188").unwrap();
    let mut headers = crate::headers::Headers::new();
    headers.push("x-user", "yes").unwrap();
    OutgoingRequest {
        url: server.http_url(&request.path),
        shown_url: server.http_url(&request.path),
        target: request.path.clone(),
        server,
        request,
        headers,
        tls: crate::tls::TlsConfig::default(),
        max_body,
        timeout: Duration::from_secs(5),
    }
}

struct Run {
    result: Result<(u16, Vec<u8>, bool), Failed>,
    written: String,
}

fn run_with(
    replies: &[u8],
    piece: usize,
    end_error: Option<io::ErrorKind>,
    o: &OutgoingRequest,
) -> Run {
    let written = std::sync::Arc::default();
    let stream = Scripted {
        replies: replies.to_vec(),
        at: 0,
        piece,
        end_error,
        written: std::sync::Arc::clone(&written),
    };
    let mut conn = Conn::new(Box::new(stream));
    let result = exchange(&mut conn, o)
        .now_or_never()
        .expect("a scripted stream never waits")
        .map(|(r, reuse)| (r.status, r.body.to_vec(), reuse));
    let written = String::from_utf8_lossy(&written.lock().unwrap()).into_owned();
    Run { result, written }
}

fn get(replies: &[u8], max_body: usize) -> Result<(u16, Vec<u8>, bool), Failed> {
    let o = outgoing(comfy_proxy::wire::http::system_stats(), max_body);
    // One byte at a time and all at once must read the same.
    let slow = run_with(replies, 1, None, &o).result;
    let fast = run_with(replies, 1 << 20, None, &o).result;
    match (&slow, &fast) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.error.kind, b.error.kind),
        _ => panic!("byte by byte {slow:?}, at once {fast:?}"),
    }
    fast
}

fn kind(result: Result<(u16, Vec<u8>, bool), Failed>) -> TransportErrorKind {
    result.expect_err("a failure").error.kind
}

#[test]
fn bodies_by_length_chunks_and_close() {
    assert_eq!(
        get(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 10).unwrap(),
        (200, b"hi".to_vec(), true)
    );
    assert_eq!(
        get(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3;x=1\r\n th\r\n0\r\n\r\n",
            10
        )
        .unwrap(),
        (200, b"hi th".to_vec(), true)
    );
    assert_eq!(
        get(b"HTTP/1.1 500 Boom\r\n\r\nall of it", 100).unwrap(),
        (500, b"all of it".to_vec(), false),
        "a body to the end of the stream: the connection cannot be reused"
    );
    assert_eq!(
        get(b"HTTP/1.1 204 No Content\r\n\r\n", 100).unwrap(),
        (204, Vec::new(), true)
    );
}

#[test]
fn keep_alive_is_the_protocol_s_decision() {
    let close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi";
    assert!(!get(close, 10).unwrap().2, "Connection: close");
    let http10 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    assert!(!get(http10, 10).unwrap().2, "HTTP/1.0 without keep-alive");
    let extra = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n";
    let o = outgoing(comfy_proxy::wire::http::queue(), 10);
    let (_, _, reusable) = run_with(extra, 1 << 20, None, &o).result.unwrap();
    assert!(
        !reusable,
        "bytes past the response: the connection is not trusted again"
    );
}

#[test]
fn too_large_bodies_are_refused_as_they_arrive() {
    // Declared over the limit: refused before a byte of the body is read.
    let declared = b"HTTP/1.1 200 OK\r\nContent-Length: 200000000000\r\n\r\n";
    assert_eq!(
        kind(get(declared, 100)),
        TransportErrorKind::TooLarge { limit: 100 }
    );
    // Chunked or to the end of the stream: refused once the bytes pass the limit.
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"a\r\n0123456789\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        kind(get(&chunked, 100)),
        TransportErrorKind::TooLarge { limit: 100 }
    );
    assert_eq!(
        get(&chunked, 200).unwrap().1.len(),
        200,
        "at the limit is fine"
    );
    let mut close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    close.extend_from_slice(&[b'x'; 101]);
    assert_eq!(
        kind(get(&close, 100)),
        TransportErrorKind::TooLarge { limit: 100 }
    );
}

#[test]
fn cut_short_and_broken_responses() {
    let o = outgoing(comfy_proxy::wire::http::system_stats(), 100);
    let cut = run_with(
        b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nhi",
        4,
        None,
        &o,
    );
    let failed = cut.result.unwrap_err();
    assert_eq!(failed.error.kind, TransportErrorKind::Reset);
    assert!(!failed.nothing_back, "the head had come back");

    let reset = run_with(b"", 4, Some(io::ErrorKind::ConnectionReset), &o);
    let failed = reset.result.unwrap_err();
    assert_eq!(failed.error.kind, TransportErrorKind::Reset);
    assert!(
        failed.nothing_back,
        "nothing came back: a GET may be sent again"
    );

    let silent_close = run_with(b"", 4, None, &o).result.unwrap_err();
    assert_eq!(silent_close.error.kind, TransportErrorKind::Reset);
    assert!(silent_close.nothing_back);

    assert_eq!(
        kind(get(b"SMTP ready\r\n\r\n", 100)),
        TransportErrorKind::Malformed
    );
    assert_eq!(
        kind(get(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            100
        )),
        TransportErrorKind::Malformed
    );
    let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    endless.extend_from_slice(&[b'a'; 70 << 10]);
    assert_eq!(kind(get(&endless, 100)), TransportErrorKind::Malformed);
}

#[test]
fn the_request_as_written() {
    let graph = serde_json::json!({"1": {"class_type": "EmptyImage", "inputs": {}}});
    let post = comfy_proxy::wire::http::PromptRequest::new(graph, "c1".into()).to_request();
    let body = post.body.clone().unwrap().bytes;
    let o = outgoing(post, 100);
    let run = run_with(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        1 << 20,
        None,
        &o,
    );
    assert_eq!(run.result.unwrap().0, 200);
    let (head, sent_body) = run.written.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("POST /prompt HTTP/1.1\r\n"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nhost: 127.0.0.1:8188"), "{head}");
    assert!(
        lower.contains(&format!("\r\ncontent-length: {}", body.len())),
        "{head}"
    );
    assert!(
        lower.contains("\r\ncontent-type: application/json"),
        "{head}"
    );
    assert!(lower.contains("\r\nx-user: yes"), "{head}");
    assert_eq!(sent_body.as_bytes(), &body[..]);

    // Headers are checked when the config is built; what can still be unsendable is the URL.
    let mut bad = outgoing(comfy_proxy::wire::http::queue(), 100);
    assert!(bad.headers.push("x-evil", "a\r\nInjected: 1").is_err());
    bad.url = "http://127.0.0.1:8188/a b".into();
    let run = run_with(b"", 1, None, &bad);
    assert_eq!(
        run.result.unwrap_err().error.kind,
        TransportErrorKind::InvalidRequest
    );
    assert!(run.written.is_empty(), "nothing was sent");
}
