//! The pool-wide stream of events, [`PoolEvents`]: the events of every job without a handle,
//! waiting in one bounded [`EventQueue`] that the driver pushes to without waiting and the
//! consumer pops from.
//!
//! # Wake-ups
//!
//! The consumer usually runs on another thread than the pool's tasks, so each wake-up is a
//! futex call and a context switch on each side. The driver wakes the consumer only when it
//! waits on an empty queue (events pushed meanwhile are read in the same turn). The consumer
//! wakes the driver only when the pool waits on it ([`Feed::set_wanted`], from the machine's
//! `waits_on_consumer`), and then only for the first report it reads since the driver last
//! looked; otherwise the driver takes the reports read so far on its next turn
//! ([`Feed::take_consumed`]).
//!
//! # Backpressure
//!
//! A report counts against the pool's backpressure until the consumer has read it (the
//! driver learns of it on its next turn): a consumer that does not read stops the pool from
//! dispatching more, and the progress events waiting are bounded by the queue.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use comfy_proxy::pool::{EventQueue, JobId, PoolEvent};
use futures_util::Stream;
use futures_util::stream::FusedStream;

/// The queue between the driver and the [`PoolEvents`] receiver.
pub(super) struct Feed {
    state: Mutex<FeedState>,
    /// The driver waits on the consumer: wake it for a report read.
    wanted: AtomicBool,
}

struct FeedState {
    queue: EventQueue,
    /// The receiver, waiting on an empty queue.
    reader: Option<Waker>,
    /// The driver, to hear of reports read and of the receiver's drop.
    driver: Option<Waker>,
    /// Reports read since the driver last took them.
    consumed: Vec<JobId>,
    /// The driver has stopped: nothing more comes.
    ended: bool,
    /// The receiver was dropped.
    gone: bool,
}

impl Feed {
    /// A feed whose queue holds at most `progress` progress events.
    pub(super) fn new(progress: usize) -> (Arc<Self>, PoolEvents) {
        let feed = Arc::new(Self {
            state: Mutex::new(FeedState {
                queue: EventQueue::new(progress),
                reader: None,
                driver: None,
                consumed: Vec::new(),
                ended: false,
                gone: false,
            }),
            wanted: AtomicBool::new(true),
        });
        let events = PoolEvents {
            feed: feed.clone(),
            done: false,
        };
        (feed, events)
    }

    fn lock(&self) -> MutexGuard<'_, FeedState> {
        // Nothing panics while holding the lock; a poisoned one still holds a sound queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an event for the receiver; gives it back if the receiver is gone.
    #[must_use = "an event given back has nobody to read it"]
    pub(super) fn push(&self, event: PoolEvent) -> Option<PoolEvent> {
        let mut s = self.lock();
        if s.gone {
            return Some(event);
        }
        s.queue.push(event);
        let reader = s.reader.take();
        // Woken after the lock is let go: the reader may run at once on another thread.
        drop(s);
        if let Some(w) = reader {
            w.wake();
        }
        None
    }

    /// The reports read since the last call (empty when none), and whether the receiver is
    /// gone; registers the driver's waker for the next of either.
    pub(super) fn take_consumed(&self, cx: &mut Context<'_>) -> (Vec<JobId>, bool) {
        let mut s = self.lock();
        match &s.driver {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.driver = Some(cx.waker().clone()),
        }
        (std::mem::take(&mut s.consumed), s.gone)
    }

    /// Whether the driver must be woken for the next report read (else it looks on its next
    /// turn).
    pub(super) fn set_wanted(&self, wanted: bool) {
        self.wanted.store(wanted, Ordering::Release);
    }

    /// Whether the receiver was dropped.
    pub(super) fn is_gone(&self) -> bool {
        self.lock().gone
    }

    /// Everything still queued (for a receiver that is gone).
    pub(super) fn drain(&self) -> Vec<PoolEvent> {
        let mut s = self.lock();
        std::iter::from_fn(|| s.queue.pop()).collect()
    }

    /// The driver stops: the receiver reads what is queued, then the end.
    pub(super) fn end(&self) {
        let mut s = self.lock();
        s.ended = true;
        let reader = s.reader.take();
        drop(s);
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// The stream of a pool's events: those of every job whose [`JobHandle`](super::JobHandle)
/// was dropped (or never read), in the order they happened, each job's ending with its
/// [`PoolEvent::Finished`] report. It ends once the pool has stopped and every event was read.
///
/// Read it: a report counts against the pool's backpressure
/// ([`PoolConfig::max_unconsumed`](comfy_proxy::pool::PoolConfig::max_unconsumed)) until it
/// is read here. Dropping it cancels the jobs that report only here: nobody could learn how
/// they end.
pub struct PoolEvents {
    feed: Arc<Feed>,
    /// The end was returned.
    done: bool,
}

impl fmt::Debug for PoolEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.feed.lock();
        f.debug_struct("PoolEvents")
            .field("queued", &s.queue.len())
            .field("ended", &s.ended)
            .finish()
    }
}

impl Stream for PoolEvents {
    type Item = PoolEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PoolEvent>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut s = self.feed.lock();
        if let Some(event) = s.queue.pop() {
            let mut driver = None;
            if let PoolEvent::Finished(report) = &event {
                s.consumed.push(report.job);
                if s.consumed.len() == 1 && self.feed.wanted.load(Ordering::Acquire) {
                    driver = s.driver.take();
                }
            }
            // Woken after the lock is let go: the driver may run at once on another thread.
            drop(s);
            if let Some(w) = driver {
                w.wake();
            }
            return Poll::Ready(Some(event));
        }
        if s.ended {
            drop(s);
            self.done = true;
            return Poll::Ready(None);
        }
        match &s.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.reader = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl FusedStream for PoolEvents {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl Drop for PoolEvents {
    fn drop(&mut self) {
        let driver = {
            let mut s = self.feed.lock();
            s.gone = true;
            s.driver.take()
        };
        if let Some(w) = driver {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use comfy_proxy::pool::{JobError, JobReport};
    use futures_util::StreamExt;

    use super::*;
    use crate::pool::wake_count::WakeCount as Count;

    fn dispatched(job: u64) -> PoolEvent {
        PoolEvent::Dispatched {
            job: JobId(job),
            server: 0,
            attempt: 1,
        }
    }

    fn finished(job: u64) -> PoolEvent {
        PoolEvent::Finished(JobReport::not_run(JobId(job), JobError::Cancelled))
    }

    #[test]
    fn reports_count_as_consumed_once_read_and_wake_the_driver_once_per_look() {
        let (feed, mut events) = Feed::new(8);
        let (driver, reader) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let driver_waker = Waker::from(driver.clone());
        let reader_waker = Waker::from(reader.clone());
        let mut dcx = Context::from_waker(&driver_waker);
        let mut rcx = Context::from_waker(&reader_waker);

        assert_eq!(feed.take_consumed(&mut dcx), (vec![], false));
        assert!(events.poll_next_unpin(&mut rcx).is_pending());
        for event in [dispatched(1), finished(1), dispatched(2), finished(2)] {
            assert!(feed.push(event).is_none());
        }
        assert_eq!(reader.get(), 1, "one wake-up for the four events");
        assert_eq!(
            feed.take_consumed(&mut dcx),
            (vec![], false),
            "none read yet"
        );

        let mut read = Vec::new();
        while let Poll::Ready(Some(event)) = events.poll_next_unpin(&mut rcx) {
            read.push(event.job().0);
        }
        assert_eq!(read, [1, 1, 2, 2], "in order");
        assert_eq!(driver.get(), 1, "one wake-up for the two reports");
        assert_eq!(
            feed.take_consumed(&mut dcx),
            (vec![JobId(1), JobId(2)], false)
        );

        // A driver that does not wait on the consumer looks on its next turn.
        feed.set_wanted(false);
        assert!(feed.push(finished(3)).is_none());
        assert!(matches!(
            events.poll_next_unpin(&mut rcx),
            Poll::Ready(Some(_))
        ));
        assert_eq!(driver.get(), 1, "not woken");
        assert_eq!(feed.take_consumed(&mut dcx), (vec![JobId(3)], false));

        drop(events);
        assert_eq!(driver.get(), 2, "the drop wakes the driver");
        assert_eq!(feed.take_consumed(&mut dcx), (vec![], true));
        assert!(feed.push(finished(4)).is_some(), "nobody to read it");
    }

    #[test]
    fn the_stream_ends_after_what_was_queued_when_the_driver_stops() {
        let (feed, events) = Feed::new(8);
        assert!(feed.push(dispatched(1)).is_none());
        assert!(feed.push(finished(1)).is_none());
        feed.end();
        let read: Vec<u64> = futures_executor_lite(events.map(|e| e.job().0).collect());
        assert_eq!(read, [1, 1]);
    }

    /// Polls a future that needs no waking to completion.
    fn futures_executor_lite<T>(future: impl std::future::Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the stream waited though everything was queued"),
        }
    }
}
