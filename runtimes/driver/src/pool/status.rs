//! A server's events that name no prompt, from its client's task to the pool's: coalesced in
//! constant space by the core's [`StatusBuffer`], pushed without ever waiting.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use comfy_proxy::pool::StatusBuffer;
use comfy_proxy::session::Event;
use futures_util::Stream;

#[derive(Default)]
struct Cell {
    buffer: StatusBuffer,
    waker: Option<Waker>,
}

/// The client's end: [`StatusSink::push`] never blocks the client's task.
#[derive(Clone)]
pub(crate) struct StatusSink(Arc<Mutex<Cell>>);

impl fmt::Debug for StatusSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StatusSink")
    }
}

fn lock(cell: &Mutex<Cell>) -> MutexGuard<'_, Cell> {
    // Nothing panics while holding the lock; a poisoned one still holds a sound buffer.
    cell.lock().unwrap_or_else(|e| e.into_inner())
}

impl StatusSink {
    /// Hands over an event the pool may use; others are not kept.
    pub(crate) fn push(&self, event: &Event) {
        let mut c = lock(&self.0);
        if c.buffer.push(event)
            && let Some(w) = c.waker.take()
        {
            w.wake();
        }
    }
}

/// The pool's end: a stream of the coalesced events. It never ends by itself.
pub(crate) struct StatusStream {
    cell: Arc<Mutex<Cell>>,
    ready: std::vec::IntoIter<Event>,
}

/// A sink for a client and the stream the pool reads.
pub(crate) fn status() -> (StatusSink, StatusStream) {
    let cell = Arc::new(Mutex::new(Cell::default()));
    let stream = StatusStream {
        cell: cell.clone(),
        ready: Vec::new().into_iter(),
    };
    (StatusSink(cell), stream)
}

impl Stream for StatusStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(e) = self.ready.next() {
            return Poll::Ready(Some(e));
        }
        let taken = {
            let mut c = lock(&self.cell);
            if c.buffer.is_empty() {
                c.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            c.buffer.take()
        };
        self.ready = taken.into_iter();
        match self.ready.next() {
            Some(e) => Poll::Ready(Some(e)),
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}
