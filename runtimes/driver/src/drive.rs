//! The one loop that drives a sans-IO machine: the client's actor (a [`Session`]) and the
//! pool's driver (the core's pool machine) both run in it.
//!
//! Each turn: perform what the machine asks for, stop if the task is done, then wait for the
//! first of the task's inputs and the machine's next deadline, and feed that back, with the
//! time read from the runtime ([`Runtime::now`]). The loop owns the wait: it sleeps only
//! through [`Runtime::sleep`], never longer than the machine's deadline, so a runtime whose
//! clock a test moves drives every timer.
//!
//! [`Session`]: comfy_proxy::session::Session

use std::ops::ControlFlow;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;

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

/// Runs `task` until it has finished or its [`Drive::handle`] breaks.
pub(crate) async fn drive(rt: &dyn Runtime, task: &mut impl Drive) {
    let epoch = rt.now();
    let clock = || rt.now().saturating_duration_since(epoch);
    loop {
        let now = clock();
        task.perform(now);
        if task.finished(now) {
            return;
        }
        let mut timer = task
            .poll_timeout(now)
            .map(|at| rt.sleep(at.saturating_sub(clock())));
        let wake = futures_util::future::poll_fn(|cx| {
            if let Poll::Ready(wake) = task.poll_wake(cx) {
                return Poll::Ready(Some(wake));
            }
            if let Some(timer) = &mut timer
                && timer.poll_unpin(cx).is_ready()
            {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let now = clock();
        match wake {
            Some(wake) => {
                if task.handle(now, wake).is_break() {
                    return;
                }
            }
            None => task.handle_timeout(now),
        }
    }
}

#[cfg(test)]
mod tests {
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
