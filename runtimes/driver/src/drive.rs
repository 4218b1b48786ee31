//! The one loop that drives a sans-IO machine: the client's actor (a [`Session`]) and the
//! pool's driver (the core's pool machine) both run in it.
//!
//! Each turn: perform what the machine asks for, stop if the task is done, then wait for the
//! first of the task's inputs and the machine's next deadline, and feed that back (with every
//! other input ready by then: one perform for a burst), with the time read from the runtime
//! ([`Runtime::now`]). The loop owns the wait: it sleeps only
//! through [`Runtime::sleep`], never longer than the machine's deadline, so a runtime whose
//! clock a test moves drives every timer.
//!
//! [`Session`]: comfy_proxy::session::Session

use std::ops::ControlFlow;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::alarm::Alarm;
use crate::runtime::Runtime;

/// A task that owns a sans-IO machine and moves its I/O: what [`drive`] needs from it. Times
/// are durations since the loop started, on the runtime's clock.
pub(crate) trait Drive {
    /// What the task waits for besides the machine's deadline.
    type Wake;

    /// Performs everything the machine has queued (transmits, I/O, events), after each input
    /// and before each wait.
    fn perform(&mut self, now: Duration);

    /// Whether the task has ended, winding it down if it has. Asked after each
    /// [`Drive::perform`]; after `true` the loop returns.
    fn finished(&mut self, now: Duration) -> bool;

    /// When [`Drive::handle_timeout`] is due next; `None`: only an input changes anything.
    fn poll_timeout(&self, now: Duration) -> Option<Duration>;

    /// The deadline [`Drive::poll_timeout`] returned has passed (or the wake came early: then a
    /// no-op).
    fn handle_timeout(&mut self, now: Duration);

    /// The next input, if one is ready; registers `cx` otherwise.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Self::Wake>;

    /// Feeds an input to the machine; `Break` ends the task.
    fn handle(&mut self, now: Duration, wake: Self::Wake) -> ControlFlow<()>;
}

/// Turns the loop takes with inputs always ready before it lets the executor run other tasks
/// once: a socket that never runs dry (the actor reads its websocket itself) must not hold
/// the thread.
pub(crate) const BUDGET: u32 = 64;

/// Runs `task` until it has finished or its [`Drive::handle`] breaks.
pub(crate) async fn drive(rt: &dyn Runtime, task: &mut impl Drive) {
    let epoch = rt.now();
    let clock = || rt.now().saturating_duration_since(epoch);
    // One timer, kept while the deadline only moves later (see [`Alarm`]): no timer made and
    // dropped with the reactor every turn.
    let mut alarm = Alarm::new();
    let mut budget = BUDGET;
    loop {
        if budget == 0 {
            budget = BUDGET;
            yield_now().await;
        }
        let now = clock();
        task.perform(now);
        if task.finished(now) {
            return;
        }
        let due = task.poll_timeout(now);
        let deadline = due.map(|at| epoch + at);
        let wake = futures_util::future::poll_fn(|cx| {
            if let Poll::Ready(wake) = task.poll_wake(cx) {
                return Poll::Ready(Some(wake));
            }
            alarm.poll(rt, cx, deadline).map(|()| None)
        })
        .await;
        let now = clock();
        match wake {
            Some(first) => {
                // The inputs ready now (a burst of frames, a batch of events) are fed before
                // the machine is performed, and its deadline asked, once for them all.
                let mut next = Some(first);
                while let Some(wake) = next.take() {
                    budget -= 1;
                    if task.handle(now, wake).is_break() {
                        return;
                    }
                    if budget > 0
                        && let Poll::Ready(more) =
                            futures_util::future::poll_fn(|cx| Poll::Ready(task.poll_wake(cx)))
                                .await
                    {
                        next = Some(more);
                    }
                }
                // Inputs that never stop coming (a socket that floods) must not hold the
                // deadlines off: a deadline passed is handled after the inputs.
                if due.is_some_and(|at| at <= now) {
                    task.handle_timeout(now);
                }
            }
            None => {
                budget = BUDGET;
                task.handle_timeout(now);
            }
        }
    }
}

/// Pending once, after waking the task: the executor runs the other tasks first.
async fn yield_now() {
    let mut yielded = false;
    futures_util::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::{Arc, Mutex};

    use futures_channel::mpsc;
    use futures_util::StreamExt;

    use super::*;
    use crate::fake::FakeRuntime;

    /// A machine with one deadline, 5 s after its last input; it logs what the loop fed it.
    struct Toy {
        inputs: mpsc::UnboundedReceiver<&'static str>,
        deadline: Option<Duration>,
        log: Arc<Mutex<Vec<(Duration, String)>>>,
    }

    impl Drive for Toy {
        type Wake = Option<&'static str>;

        fn perform(&mut self, _now: Duration) {}

        fn finished(&mut self, _now: Duration) -> bool {
            false
        }

        fn poll_timeout(&self, _now: Duration) -> Option<Duration> {
            self.deadline
        }

        fn handle_timeout(&mut self, now: Duration) {
            self.log.lock().unwrap().push((now, "timeout".into()));
            self.deadline = None;
        }

        fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Self::Wake> {
            self.inputs.poll_next_unpin(cx)
        }

        fn handle(&mut self, now: Duration, wake: Self::Wake) -> ControlFlow<()> {
            let Some(input) = wake else {
                return ControlFlow::Break(());
            };
            self.log.lock().unwrap().push((now, input.into()));
            self.deadline = Some(now + Duration::from_secs(5));
            ControlFlow::Continue(())
        }
    }

    /// Inputs that are always ready, and a deadline due from the start.
    struct Flood {
        inputs: u32,
        timeouts: u32,
    }

    impl Drive for Flood {
        type Wake = ();

        fn perform(&mut self, _now: Duration) {}

        fn finished(&mut self, _now: Duration) -> bool {
            false
        }

        fn poll_timeout(&self, _now: Duration) -> Option<Duration> {
            (self.timeouts == 0).then_some(Duration::ZERO)
        }

        fn handle_timeout(&mut self, _now: Duration) {
            self.timeouts += 1;
        }

        fn poll_wake(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
            Poll::Ready(())
        }

        fn handle(&mut self, _now: Duration, _wake: ()) -> ControlFlow<()> {
            self.inputs += 1;
            ControlFlow::Continue(())
        }
    }

    #[test]
    fn inputs_that_never_stop_neither_hold_the_thread_nor_the_deadlines() {
        let rt = FakeRuntime::new();
        let mut flood = Flood {
            inputs: 0,
            timeouts: 0,
        };
        {
            let mut looping = std::pin::pin!(drive(rt.as_ref(), &mut flood));
            let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
            let waker = std::task::Waker::from(woken.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(
                looping.as_mut().poll(&mut cx).is_pending(),
                "the loop yields"
            );
            assert!(
                woken.0.load(std::sync::atomic::Ordering::SeqCst),
                "and asks to run again"
            );
        }
        assert_eq!(flood.inputs, BUDGET, "one budget of inputs per poll");
        assert_eq!(
            flood.timeouts, 1,
            "the deadline was handled amid the inputs"
        );
    }

    /// Counts its inputs and how often it was performed.
    struct Burst {
        inputs: mpsc::UnboundedReceiver<u32>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Drive for Burst {
        type Wake = Option<u32>;

        fn perform(&mut self, _now: Duration) {
            self.log.lock().unwrap().push("perform".into());
        }

        fn finished(&mut self, _now: Duration) -> bool {
            false
        }

        fn poll_timeout(&self, _now: Duration) -> Option<Duration> {
            None
        }

        fn handle_timeout(&mut self, _now: Duration) {}

        fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.inputs.poll_next_unpin(cx)
        }

        fn handle(&mut self, _now: Duration, wake: Option<u32>) -> ControlFlow<()> {
            let Some(n) = wake else {
                return ControlFlow::Break(());
            };
            self.log.lock().unwrap().push(n.to_string());
            ControlFlow::Continue(())
        }
    }

    #[test]
    fn a_burst_of_inputs_is_performed_once() {
        let rt = FakeRuntime::new();
        let (tx, inputs) = mpsc::unbounded();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut burst = Burst {
            inputs,
            log: log.clone(),
        };
        let clock = rt.clone();
        rt.spawn(Box::pin(
            async move { drive(clock.as_ref(), &mut burst).await },
        ));
        rt.run();
        for n in 1..=3 {
            tx.unbounded_send(n).unwrap();
        }
        rt.run();
        tx.unbounded_send(4).unwrap();
        rt.run();
        assert_eq!(
            *log.lock().unwrap(),
            ["perform", "1", "2", "3", "perform", "4", "perform"]
        );
    }

    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn inputs_and_deadlines_are_fed_on_the_runtime_clock_until_the_task_breaks() {
        let rt = FakeRuntime::new();
        let (tx, inputs) = mpsc::unbounded();
        let log = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(false));
        let mut toy = Toy {
            inputs,
            deadline: None,
            log: log.clone(),
        };
        let (clock, end) = (rt.clone(), ended.clone());
        rt.spawn(Box::pin(async move {
            drive(clock.as_ref(), &mut toy).await;
            *end.lock().unwrap() = true;
        }));
        rt.run();
        tx.unbounded_send("a").unwrap();
        rt.run();
        rt.advance(Duration::from_secs(3));
        // A later input moves the deadline: the wait already under way must not fire at 5 s.
        tx.unbounded_send("b").unwrap();
        rt.run();
        rt.advance(Duration::from_secs(3));
        assert_eq!(log.lock().unwrap().len(), 2, "6 s: b's deadline is 8 s");
        rt.advance(Duration::from_secs(3));
        drop(tx);
        rt.run();
        let secs = |s| Duration::from_secs(s);
        assert_eq!(
            *log.lock().unwrap(),
            [
                (secs(0), "a".into()),
                (secs(3), "b".into()),
                (secs(9), "timeout".into())
            ]
        );
        assert!(*ended.lock().unwrap(), "the loop ended when its inputs did");
    }
}
