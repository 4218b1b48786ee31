//! One timer for a loop whose deadline moves: it is replaced only when the deadline comes
//! earlier than the one it is set for.
//!
//! A loop that makes a fresh sleep for each turn registers a timer with the runtime's reactor
//! each time (async-io wakes its reactor thread for every new timer) and deregisters it when
//! the turn ends: several times per job. Most deadlines only move later (a socket's silence
//! deadline moves with every frame; the pool's tick moves with the clock), so an [`Alarm`]
//! keeps the timer it has when it would fire no later than the new deadline: if it fires first,
//! the alarm sets one for the deadline then. A deadline that comes earlier replaces the timer.

use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;

use crate::runtime::{BoxFuture, Runtime};

/// A reusable timer: see the module's documentation.
pub(crate) struct Alarm {
    /// The instant the current timer is set for, and the timer.
    armed: Option<(Instant, BoxFuture<'static, ()>)>,
}

impl Alarm {
    pub(crate) fn new() -> Self {
        Self { armed: None }
    }

    /// `Ready` once `deadline` has passed; `None`: no deadline, never ready. Registers the
    /// task's waker for the deadline otherwise.
    pub(crate) fn poll(
        &mut self,
        rt: &dyn Runtime,
        cx: &mut Context<'_>,
        deadline: Option<Instant>,
    ) -> Poll<()> {
        loop {
            match &mut self.armed {
                // A timer set no later than the deadline: it wakes the task in time.
                Some((at, timer)) if deadline.is_none_or(|d| *at <= d) => {
                    if timer.poll_unpin(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.armed = None;
                    match deadline {
                        Some(d) if rt.now() >= d => return Poll::Ready(()),
                        // It was set for an earlier deadline, since moved: set one for this.
                        Some(_) => {}
                        None => return Poll::Pending,
                    }
                }
                _ => {
                    let Some(d) = deadline else {
                        return Poll::Pending;
                    };
                    let now = rt.now();
                    if d <= now {
                        return Poll::Ready(());
                    }
                    self.armed = Some((d, rt.sleep(d - now)));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // real time, as the counting runtime's sleeps use
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;
    use std::time::Duration;

    use super::*;
    use crate::runtime::Stream;

    /// A runtime whose sleeps complete once the clock has reached them, counting how many it
    /// made.
    #[derive(Default)]
    struct Counting {
        made: AtomicUsize,
    }

    impl Runtime for Counting {
        fn spawn(&self, _: BoxFuture<'static, ()>) {}
        fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
            self.made.fetch_add(1, Ordering::SeqCst);
            let at = Instant::now() + d;
            Box::pin(futures_util::future::poll_fn(move |_| {
                if Instant::now() >= at {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }))
        }
        fn connect(&self, _: &str, _: u16) -> BoxFuture<'static, std::io::Result<Box<dyn Stream>>> {
            Box::pin(async { Err(std::io::ErrorKind::Unsupported.into()) })
        }
    }

    fn poll(alarm: &mut Alarm, rt: &Counting, deadline: Option<Instant>) -> Poll<()> {
        alarm.poll(rt, &mut Context::from_waker(Waker::noop()), deadline)
    }

    #[test]
    fn a_deadline_that_moves_later_keeps_the_timer() {
        let rt = Counting::default();
        let mut alarm = Alarm::new();
        let start = Instant::now();
        for i in 0..100 {
            let deadline = start + Duration::from_secs(10 + i);
            assert!(poll(&mut alarm, &rt, Some(deadline)).is_pending());
        }
        assert!(poll(&mut alarm, &rt, None).is_pending());
        assert_eq!(rt.made.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_earlier_deadline_replaces_the_timer() {
        let rt = Counting::default();
        let mut alarm = Alarm::new();
        let start = Instant::now();
        assert!(poll(&mut alarm, &rt, Some(start + Duration::from_secs(60))).is_pending());
        assert!(poll(&mut alarm, &rt, Some(start + Duration::from_secs(30))).is_pending());
        assert_eq!(rt.made.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn it_fires_at_the_deadline_not_at_the_old_timer() {
        let rt = Counting::default();
        let mut alarm = Alarm::new();
        let start = Instant::now();
        // Set for 20 ms, then the deadline moves to 60 ms: the first timer fires early, the
        // alarm is not ready, and sets a second one.
        assert!(poll(&mut alarm, &rt, Some(start + Duration::from_millis(20))).is_pending());
        let deadline = start + Duration::from_millis(60);
        while Instant::now() < start + Duration::from_millis(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(poll(&mut alarm, &rt, Some(deadline)).is_pending());
        assert_eq!(rt.made.load(Ordering::SeqCst), 2);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(poll(&mut alarm, &rt, Some(deadline)).is_ready());
        // A past deadline is ready at once, with no timer.
        assert!(poll(&mut alarm, &rt, Some(start)).is_ready());
        assert_eq!(rt.made.load(Ordering::SeqCst), 2);
    }
}
