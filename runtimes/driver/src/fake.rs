//! A [`Runtime`] for tests whose clock the test moves: [`Runtime::sleep`] completes once the
//! test has advanced the clock past its deadline, [`Runtime::connect`] never completes (a server
//! that never answers), and spawned tasks run on a small executor that the test turns with
//! [`FakeRuntime::run`]. No test that uses it waits real time for a deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use comfy_proxy::TransportError;
use comfy_proxy::wire::HttpResponse;

use crate::runtime::{BoxFuture, HttpClient, OutgoingRequest, Runtime, Stream};

/// Rounds of polling in one [`FakeRuntime::run`] before it gives up on tasks that keep waking
/// each other without the clock moving.
const MAX_ROUNDS: usize = 100_000;

pub(crate) struct FakeRuntime {
    clock: Arc<Mutex<Clock>>,
    spawned: Mutex<Vec<BoxFuture<'static, ()>>>,
    tasks: Mutex<Vec<Task>>,
}

struct Clock {
    now: Instant,
    /// Sleeps waiting for the clock to move.
    sleepers: Vec<Waker>,
}

struct Task {
    future: BoxFuture<'static, ()>,
    woken: Arc<Flag>,
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeRuntime {
    pub(crate) fn new() -> Arc<Self> {
        #[allow(clippy::disallowed_methods)] // Any start will do: only differences count.
        let start = Instant::now();
        Arc::new(Self {
            clock: Arc::new(Mutex::new(Clock {
                now: start,
                sleepers: Vec::new(),
            })),
            spawned: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Polls every woken task until none is woken: everything that can happen without the
    /// clock moving has happened.
    pub(crate) fn run(&self) {
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        for _ in 0..MAX_ROUNDS {
            let spawned = std::mem::take(&mut *lock(&self.spawned));
            tasks.extend(spawned.into_iter().map(|future| Task {
                future,
                woken: Arc::new(Flag(AtomicBool::new(true))),
            }));
            let mut polled = false;
            tasks.retain_mut(|task| {
                if !task.woken.0.swap(false, Ordering::SeqCst) {
                    return true;
                }
                polled = true;
                let waker = Waker::from(task.woken.clone());
                let mut cx = Context::from_waker(&waker);
                task.future.as_mut().poll(&mut cx).is_pending()
            });
            if !polled && lock(&self.spawned).is_empty() {
                *lock(&self.tasks) = tasks;
                return;
            }
        }
        panic!("the tasks kept waking each other for {MAX_ROUNDS} rounds");
    }

    /// Moves the clock `by` forward, wakes the sleeps it passed, and runs what they woke.
    pub(crate) fn advance(&self, by: Duration) {
        let sleepers = {
            let mut clock = lock(&self.clock);
            clock.now += by;
            std::mem::take(&mut clock.sleepers)
        };
        // Every sleep looks at the clock again; those not yet due register once more.
        sleepers.into_iter().for_each(Waker::wake);
        self.run();
    }
}

/// A sleep on the fake clock; `None`: a deadline too far to reach.
struct Sleep {
    clock: Arc<Mutex<Clock>>,
    until: Option<Instant>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut clock = lock(&self.clock);
        if self.until.is_some_and(|until| clock.now >= until) {
            return Poll::Ready(());
        }
        clock.sleepers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Runtime for FakeRuntime {
    fn spawn(&self, future: BoxFuture<'static, ()>) {
        lock(&self.spawned).push(future);
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let until = lock(&self.clock).now.checked_add(duration);
        Box::pin(Sleep {
            clock: self.clock.clone(),
            until,
        })
    }

    fn connect(&self, _host: &str, _port: u16) -> BoxFuture<'static, io::Result<Box<dyn Stream>>> {
        Box::pin(std::future::pending())
    }

    fn now(&self) -> Instant {
        lock(&self.clock).now
    }
}

/// An HTTP client whose server never answers.
pub(crate) struct Unanswered;

impl HttpClient for Unanswered {
    fn send(&self, _: OutgoingRequest) -> BoxFuture<'static, Result<HttpResponse, TransportError>> {
        Box::pin(std::future::pending())
    }
}
