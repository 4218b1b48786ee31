//! The hidden `client --runtime floor` mode: what smol's runtime and the kernel cost per job,
//! with no client in between.
//!
//! It is not a client: it does the least any client must do for a job on one thread of smol's
//! runtime (async-io's reactor, async-net's sockets), and nothing else. Per server, one
//! websocket and one kept-alive HTTP connection, both opened by hand; per job, one
//! `POST /prompt` with a fixed body and its answer read to the end, and the server's websocket
//! frames read and cut at their headers. A job is done at the text frame that holds
//! `execution_success` (no JSON is parsed); its image is the binary frame before it, checked by
//! size and signature as the clients' are. No decoding, no validation, no deadlines, no
//! scheduler, no events: the CPU time it spends per job is the floor under any client built on
//! this runtime, so that "ours - floor" is what our layers cost.

use std::cell::Cell;
use std::io::ErrorKind;
use std::rc::Rc;
use std::time::Instant;

use comfy_proxy::ServerAddress;
use futures_util::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

use crate::client::{SAVE_NODE, graph};
use crate::figures::RunFigures;
use crate::serve::PNG_SIGNATURE;
use crate::usage;

/// Prompts in flight per server: the pool's default (`SchedulerConfig::per_server`).
const IN_FLIGHT: usize = 2;

/// What the servers' tasks share (one thread: `Cell`s, no locks).
struct Run {
    /// Jobs not yet posted.
    left: Cell<usize>,
    /// Jobs done.
    done: Cell<usize>,
    /// When the first job was done: seconds since the start, and the CPU time then.
    first: Cell<Option<(f64, f64)>>,
    start: Instant,
}

impl Run {
    fn take(&self) -> bool {
        let left = self.left.get();
        self.left.set(left.saturating_sub(1));
        left > 0
    }
}

/// Runs `jobs` jobs over `servers`, every task on the calling thread's executor.
pub fn main(
    servers: &[ServerAddress],
    jobs: usize,
    image_bytes: usize,
) -> Result<RunFigures, String> {
    let before = usage()?;
    let run = Rc::new(Run {
        left: Cell::new(jobs),
        done: Cell::new(0),
        first: Cell::new(None),
        start: Instant::now(),
    });
    let graph = serde_json::to_string(&graph()).map_err(|e| e.to_string())?;
    let ex = smol::LocalExecutor::new();
    let per_server = smol::block_on(ex.run(async {
        let tasks: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, server)| {
                let run = run.clone();
                let graph = graph.clone();
                let host = server.authority();
                ex.spawn(async move { one_server(&host, i, &graph, image_bytes, &run).await })
            })
            .collect();
        let mut per_server = Vec::new();
        for task in tasks {
            per_server.push(task.await?);
        }
        Ok::<_, String>(per_server)
    }))?;
    let makespan = run.start.elapsed();
    let after = usage()?;
    if run.done.get() != jobs {
        return Err(format!("{} of {jobs} jobs done", run.done.get()));
    }
    let first = run.first.get();
    Ok(RunFigures {
        jobs,
        makespan_s: makespan.as_secs_f64(),
        per_server,
        cpu_s: after.cpu_s - before.cpu_s,
        peak_rss_kib: after.max_rss_kib,
        first_done_s: first.map(|f| f.0),
        steady_cpu_s: first.map(|f| after.cpu_s - f.1),
        prompts: Vec::new(),
    })
}

/// One server's jobs until none are left: returns how many it ran.
async fn one_server(
    host: &str,
    index: usize,
    graph: &str,
    image_bytes: usize,
    run: &Run,
) -> Result<usize, String> {
    let context = |what: &str, e: std::io::Error| format!("server {host}: {what}: {e}");
    let client_id = format!("floor-{index}");
    let mut ws = TcpStream::connect(host)
        .await
        .map_err(|e| context("connect", e))?;
    ws.set_nodelay(true).map_err(|e| context("nodelay", e))?;
    let handshake = format!(
        "GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    ws.write_all(handshake.as_bytes())
        .await
        .map_err(|e| context("handshake", e))?;
    let mut frames = Frames::new(image_bytes);
    let head = frames
        .read_head(&mut ws)
        .await
        .map_err(|e| context("handshake", e))?;
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!("server {host}: handshake answered {head:?}"));
    }
    let mut http = TcpStream::connect(host)
        .await
        .map_err(|e| context("connect", e))?;
    http.set_nodelay(true).map_err(|e| context("nodelay", e))?;
    let body = format!(r#"{{"prompt":{graph},"client_id":"{client_id}"}}"#);
    let request = format!(
        "POST /prompt HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut answer = Answer::default();
    let mut in_flight = 0;
    let mut ran = 0;
    loop {
        while in_flight < IN_FLIGHT && run.take() {
            http.write_all(request.as_bytes())
                .await
                .map_err(|e| context("post", e))?;
            answer
                .read(&mut http)
                .await
                .map_err(|e| context("post", e))?;
            in_flight += 1;
        }
        if in_flight == 0 {
            return Ok(ran);
        }
        frames
            .next_success(&mut ws)
            .await
            .map_err(|e| context("websocket", e))?;
        in_flight -= 1;
        ran += 1;
        run.done.set(run.done.get() + 1);
        if run.first.get().is_none() {
            let cpu = usage().map_err(|e| format!("server {host}: {e}"))?.cpu_s;
            run.first
                .set(Some((run.start.elapsed().as_secs_f64(), cpu)));
        }
    }
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body, to its end.
#[derive(Default)]
struct Answer {
    buf: Vec<u8>,
}

impl Answer {
    async fn read(&mut self, http: &mut TcpStream) -> std::io::Result<()> {
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(invalid)?;
                if !head.starts_with("HTTP/1.1 200") {
                    return Err(invalid(head.to_owned()));
                }
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .ok_or_else(|| invalid("no content-length"))?;
                if self.buf.len() >= end + 4 + length {
                    return Ok(());
                }
            }
            let n = http.read(&mut chunk).await?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The websocket's bytes, cut into frames at their headers (server frames are not masked).
struct Frames {
    /// Read into once zeroed, never again: `filled` bytes are the stream's.
    buf: Vec<u8>,
    filled: usize,
    /// A binary frame of the expected size and signature since the last success.
    image: bool,
    image_bytes: usize,
}

impl Frames {
    fn new(image_bytes: usize) -> Self {
        Self {
            buf: vec![0; (image_bytes + 64 * 1024).max(128 * 1024)],
            filled: 0,
            image: false,
            image_bytes,
        }
    }

    async fn fill(&mut self, ws: &mut TcpStream) -> std::io::Result<()> {
        if self.filled == self.buf.len() {
            return Err(invalid("a frame larger than the buffer"));
        }
        let n = ws.read(&mut self.buf[self.filled..]).await?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.filled += n;
        Ok(())
    }

    /// The handshake's answer head; what follows it stays in the buffer.
    async fn read_head(&mut self, ws: &mut TcpStream) -> std::io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf[..self.filled], b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.consume(end + 4);
                return Ok(head);
            }
            self.fill(ws).await?;
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// Reads frames until an `execution_success` text frame, which needs an image before it.
    async fn next_success(&mut self, ws: &mut TcpStream) -> std::io::Result<()> {
        loop {
            let mut at = 0;
            let mut success = false;
            {
                let buf = &self.buf;
                while let Some((opcode, start, end)) = frame(&buf[at..self.filled]) {
                    let payload = &buf[at + start..at + end];
                    at += end;
                    match opcode {
                        // ComfyUI writes `type` first: the name is in the first few bytes.
                        1 if find(&payload[..payload.len().min(40)], b"execution_success")
                            .is_some() =>
                        {
                            success = true;
                            break;
                        }
                        // ComfyUI's binary frame: a 4-byte event type and a 4-byte format.
                        2 if payload.len() == 8 + self.image_bytes
                            && payload[8..].starts_with(PNG_SIGNATURE) =>
                        {
                            self.image = true;
                        }
                        8 => return Err(ErrorKind::ConnectionReset.into()),
                        _ => {}
                    }
                }
            }
            self.consume(at);
            if success {
                if !std::mem::take(&mut self.image) {
                    return Err(invalid(format!("a job of {SAVE_NODE} without its image")));
                }
                return Ok(());
            }
            self.fill(ws).await?;
        }
    }
}

/// The first whole frame in `buf`: its opcode and its payload's range.
fn frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let [first, second, ..] = *buf else {
        return None;
    };
    let (len, start): (usize, usize) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
            10,
        ),
        n => (n as usize, 2),
    };
    let end = start.checked_add(len)?;
    (buf.len() >= end).then_some((first & 0x0f, start, end))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::frame;

    /// A server frame (unmasked): `opcode`, then `payload`, with the shortest length form.
    fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_are_cut_at_each_length_form_and_not_before_they_are_whole() {
        for len in [0, 125, 126, 1049, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut bytes = encode(2, &payload);
            let whole = bytes.len();
            bytes.extend_from_slice(&encode(1, b"next"));
            let (opcode, start, end) = frame(&bytes).expect("a whole frame");
            assert_eq!((opcode, end), (2, whole), "length {len}");
            assert_eq!(&bytes[start..end], &payload[..], "length {len}");
            assert_eq!(frame(&bytes[end..]), Some((1, 2, 6)), "after length {len}");
            for cut in [0, 1, start.saturating_sub(1), whole - 1] {
                assert_eq!(frame(&bytes[..cut]), None, "length {len} cut at {cut}");
            }
        }
    }

    #[test]
    fn a_length_beyond_the_address_space_is_never_whole() {
        let mut bytes = vec![0x82, 127];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(frame(&bytes), None);
    }
}
