//! Sockets that take a short read to mean "drained".
//!
//! A reactor such as async-io's reads a socket until it answers `WouldBlock`, and only then
//! waits for it to become readable. On a TCP socket, a read that returns less than it was
//! offered has already emptied the socket: the read after it can only answer `WouldBlock`.
//! [`ShortReads`] skips that read and asks for readability at once, as tokio does. A server's
//! burst of websocket frames then costs one `recv` instead of two (or three, when the
//! reactor's own "readable" flag is stale from the burst before), and the websocket's reader no
//! longer clears its buffer for a read that brings nothing.
//!
//! No wake-up is lost: asking for readability re-arms the socket in the reactor, and the
//! kernel reports it at once if data came after the short read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::io::{AsyncRead, AsyncWrite};

/// A non-blocking socket that can wait for readability without reading.
pub trait Readiness {
    /// Reads what is there without waiting: `WouldBlock` when nothing is.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;

    /// `Ready` once the socket has become readable since it last answered `Pending`; `Pending`
    /// registers `cx`'s waker.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// A socket whose short reads mark it drained: the next read waits for readability first,
/// without a read that could only answer `WouldBlock`.
#[derive(Debug)]
pub struct ShortReads<S> {
    socket: S,
    /// The last read emptied the socket (it was short, or answered `WouldBlock`).
    drained: bool,
}

impl<S> ShortReads<S> {
    /// Wraps a connected socket.
    pub fn new(socket: S) -> Self {
        Self {
            socket,
            drained: false,
        }
    }
}

impl<S: Readiness + Unpin> AsyncRead for ShortReads<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.drained {
                ready!(this.socket.poll_readable(cx))?;
                this.drained = false;
            }
            match this.socket.try_read(buf) {
                Ok(n) => {
                    this.drained = n > 0 && n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ShortReads<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_close(cx)
    }
}

#[cfg(feature = "async-io")]
impl Readiness for async_io::Async<std::net::TcpStream> {
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut self.get_ref(), buf)
    }

    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        async_io::Async::poll_readable(self, cx)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    use futures_util::AsyncReadExt;

    use super::*;

    /// A socket whose reads and readiness the test scripts, counting the reads.
    #[derive(Default)]
    struct Scripted {
        /// What each read finds: bytes, or `None` for `WouldBlock`.
        reads: RefCell<VecDeque<Option<Vec<u8>>>>,
        /// Whether the socket became readable since it last answered `Pending`.
        readable: RefCell<bool>,
        reads_made: RefCell<usize>,
    }

    impl Readiness for Scripted {
        fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
            *self.reads_made.borrow_mut() += 1;
            match self.reads.borrow_mut().pop_front().flatten() {
                Some(data) => {
                    buf[..data.len()].copy_from_slice(&data);
                    Ok(data.len())
                }
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }

        fn poll_readable(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if std::mem::take(&mut *self.readable.borrow_mut()) {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    fn read(s: &mut ShortReads<Scripted>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut buf = [0u8; 8];
        Pin::new(s).poll_read(cx, &mut buf)
    }

    #[test]
    fn a_short_read_waits_for_readability_without_reading_again() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut s = ShortReads::new(Scripted::default());
        s.socket.reads.borrow_mut().push_back(Some(b"abc".to_vec()));
        assert!(matches!(read(&mut s, &mut cx), Poll::Ready(Ok(3))));
        // Short: the socket is drained; no read until it is readable again.
        assert!(read(&mut s, &mut cx).is_pending());
        assert_eq!(*s.socket.reads_made.borrow(), 1);
        *s.socket.readable.borrow_mut() = true;
        s.socket.reads.borrow_mut().push_back(Some(b"de".to_vec()));
        assert!(matches!(read(&mut s, &mut cx), Poll::Ready(Ok(2))));
        assert_eq!(*s.socket.reads_made.borrow(), 2);
    }

    #[test]
    fn a_full_read_reads_again_and_would_block_waits() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut s = ShortReads::new(Scripted::default());
        let reads = [Some(b"12345678".to_vec()), None, Some(b"9".to_vec())];
        s.socket.reads.borrow_mut().extend(reads);
        assert!(matches!(read(&mut s, &mut cx), Poll::Ready(Ok(8))));
        // The buffer was filled: there may be more, so it reads; the socket is empty.
        assert!(read(&mut s, &mut cx).is_pending());
        assert_eq!(*s.socket.reads_made.borrow(), 2);
        *s.socket.readable.borrow_mut() = true;
        assert!(matches!(read(&mut s, &mut cx), Poll::Ready(Ok(1))));
    }

    /// Over a real loopback socket on async-io: every byte arrives, in order, when the peer
    /// writes after the reader has taken a short read and is waiting; then the end.
    #[cfg(feature = "async-io")]
    #[test]
    fn over_loopback_nothing_written_after_a_short_read_is_missed() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            for chunk in [&b"first"[..], b"second", b"third"] {
                peer.write_all(chunk).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        });
        let got = async_io::block_on(async {
            let socket = async_io::Async::<std::net::TcpStream>::connect(addr)
                .await
                .unwrap();
            let mut s = ShortReads::new(socket);
            let mut got = Vec::new();
            let read = s.read_to_end(&mut got);
            let limit = async_io::Timer::after(std::time::Duration::from_secs(10));
            let _ = futures_util::future::select(Box::pin(read), limit).await;
            got
        });
        writer.join().unwrap();
        assert_eq!(got, b"firstsecondthird");
    }
}
