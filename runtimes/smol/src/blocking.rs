//! A blocking API, for programs with no async runtime: plain threads call [`Client`] and
//! [`Pool`] and wait for the answer.
//!
//! The clients' and pools' tasks (websockets, HTTP exchanges, the pool's scheduler) run on one
//! background thread, started on first use and shared by every blocking handle of the
//! process, which runs a smol executor and never blocks. A blocking call hands its work to that
//! thread and parks the calling thread until the answer comes; the calling thread never runs
//! the connections itself, so many threads can share one [`Client`] (it is cheap to clone).
//!
//! Every wait has a bound: the server operations end within the client's
//! [`http_timeout`](ClientConfig::http_timeout), a prompt within its
//! [`deadlines`](ClientConfig::deadlines), and the event iterators have
//! [`recv_timeout`](PromptStream::recv_timeout) for a thread that wants its own.
//!
//! These calls are for threads that run no async code: called inside a future, they would
//! stall the executor that polls it until the answer comes. Async code uses the async
//! [`Client`](crate::Client) instead ([`Client::as_async`] gives it).
//!
//! Handles behave as their async counterparts: dropping a [`PromptStream`] before its end
//! cancels the prompt on the server; dropping a [`Pool`] cancels every job of the pool, and
//! dropping its [`PoolEvents`] the jobs whose [`JobHandle`]s were dropped.
//!
//! ```no_run
//! use std::time::Duration;
//! use comfy_proxy::workflow::FluxParams;
//! use comfy_proxy_smol::blocking::{Client, ClientConfig};
//!
//! let client = Client::connect(ClientConfig::new("127.0.0.1:8188".parse().unwrap()));
//! let graph = FluxParams::new("a red fox in snow", 7).build().unwrap();
//! let result = client.run(graph.clone()).unwrap(); // waits for the outputs
//! let mut stream = client.submit(graph).unwrap(); // or follow the events
//! while let Ok(event) = stream.recv_timeout(Duration::from_secs(60)) {
//!     if event.is_terminal() {
//!         break;
//!     }
//! }
//! println!("{} outputs, {:?}", result.outputs.len(), client.queue().unwrap());
//! ```

use std::future::Future;

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use comfy_proxy::session::{Event, OutboxStats, Submission};
use comfy_proxy::wire::FileRef;
use comfy_proxy::wire::http::{HistoryEntry, QueuePosition, QueueState, SystemStats, UploadedFile};
use comfy_proxy::{PromptId, ServerAddress, Workflow};
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{HttpClient, Runtime};
use smol::stream::StreamExt;

mod pool;

pub use comfy_proxy_driver::pool::{
    JobError, JobOptions, JobReport, PoolConfig, PoolEvent, PoolStats, SubmitError, Upload,
};
pub use comfy_proxy_driver::{ClientConfig, ClientError, RunResult, UploadOptions};
pub use pool::{JobHandle, Pool, PoolEvents};
pub use std::sync::mpsc::{RecvTimeoutError, TryRecvError};

/// The background thread's executor, started on first use.
fn executor() -> &'static Arc<smol::Executor<'static>> {
    static EXECUTOR: OnceLock<Arc<smol::Executor<'static>>> = OnceLock::new();
    EXECUTOR.get_or_init(|| {
        let executor = Arc::new(smol::Executor::new());
        let ex = executor.clone();
        std::thread::Builder::new()
            .name("comfy-proxy-blocking".to_owned())
            .spawn(move || {
                loop {
                    // A task's panic reaches whoever waits for it; should one still escape,
                    // the thread goes on serving the other tasks.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        smol::block_on(ex.run(smol::future::pending::<()>()))
                    }));
                }
            })
            .expect("spawn comfy-proxy's background thread");
        executor
    })
}

fn runtime() -> (Arc<dyn Runtime>, Arc<dyn HttpClient>) {
    // Tasks on the background thread's executor; async-io timers and async-net TCP.
    let rt: Arc<dyn Runtime> = Arc::new(crate::Smol::with_executor(executor().clone()));
    let http: Arc<dyn HttpClient> = Arc::new(Http1::new(rt.clone()));
    (rt, http)
}

/// Runs `future` on the background thread and parks the calling thread until it ends.
fn wait<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    smol::block_on(executor().spawn(future))
}

/// The next item of `stream`, waiting until `deadline` at most (`None`: no deadline). The
/// stream is polled on the calling thread: it only reads a buffer the background thread fills.
fn next_until<S: smol::stream::Stream + Unpin>(
    stream: &mut S,
    deadline: Option<Instant>,
) -> Result<S::Item, RecvTimeoutError> {
    let next = async { stream.next().await.ok_or(RecvTimeoutError::Disconnected) };
    match deadline {
        None => smol::block_on(next),
        Some(deadline) => smol::block_on(smol::future::or(next, async {
            smol::Timer::at(deadline).await;
            Err(RecvTimeoutError::Timeout)
        })),
    }
}

/// The next item of `stream` if one is ready now.
fn try_next<S: smol::stream::Stream + Unpin>(stream: &mut S) -> Result<S::Item, TryRecvError> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match pin!(stream.next()).poll(&mut cx) {
        std::task::Poll::Ready(Some(item)) => Ok(item),
        std::task::Poll::Ready(None) => Err(TryRecvError::Disconnected),
        std::task::Poll::Pending => Err(TryRecvError::Empty),
    }
}

/// The deadline `timeout` from now; `None` when it is too far to represent (wait forever).
fn deadline_in(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A blocking client for one server: the async [`Client`](crate::Client) on the background
/// thread. Cheap to clone, and shareable between threads; the connection closes when the last
/// clone is dropped and every prompt has ended.
///
/// ```no_run
/// use comfy_proxy::{ServerAddress, Workflow};
/// use comfy_proxy_smol::blocking::{Client, ClientConfig};
///
/// let server = ServerAddress::parse("127.0.0.1:8188").unwrap();
/// let client = Client::connect(ClientConfig::new(server));
/// let graph = Workflow::from_json(r#"{"1":{"class_type":"EmptyImage","inputs":{}}}"#).unwrap();
/// let threads: Vec<_> = (0..4)
///     .map(|_| {
///         let (client, graph) = (client.clone(), graph.clone());
///         std::thread::spawn(move || client.run(graph))
///     })
///     .collect();
/// for thread in threads {
///     println!("{:?}", thread.join().unwrap().map(|r| r.outputs.len()));
/// }
/// println!("{} pending", client.queue().unwrap().pending.len());
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
}

// The same `ClientError` as the async client's methods return, so that code moves between the
// two unchanged; boxing it here alone would set them apart.
#[allow(clippy::result_large_err)]
impl Client {
    /// Starts a client: its task opens the websocket at once, before any prompt is posted.
    /// Returns without waiting for the connection.
    pub fn connect(config: ClientConfig) -> Self {
        let (rt, http) = runtime();
        Self {
            inner: crate::Client::connect(rt, http, config),
        }
    }

    /// The async client behind this one, for code that has an executor after all.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }

    /// The client's settings.
    pub fn config(&self) -> &ClientConfig {
        self.inner.config()
    }

    /// The server this client talks to.
    pub fn server(&self) -> &ServerAddress {
        self.inner.server()
    }

    /// Runs a workflow to its end and returns its outputs, or the reason it failed. Waits at
    /// most as long as the client's [`deadlines`](ClientConfig::deadlines) allow.
    pub fn run(&self, workflow: Workflow) -> Result<RunResult, ClientError> {
        let client = self.inner.clone();
        wait(async move { client.run(workflow).await })
    }

    /// Submits a workflow and returns, once the client has taken it, the stream of its events:
    /// progress, previews and outputs as they arrive, ending with one terminal event. Dropping
    /// the stream before that cancels the prompt on the server.
    pub fn submit(&self, workflow: Workflow) -> Result<PromptStream, ClientError> {
        let client = self.inner.clone();
        let inner = wait(async move { client.submit(workflow).await })?;
        Ok(PromptStream { inner })
    }

    /// Submits a prepared [`Submission`] (own prompt id, extra data, front, deadlines).
    pub fn submit_with(&self, submission: Submission) -> Result<PromptStream, ClientError> {
        let client = self.inner.clone();
        let inner = wait(async move { client.submit_with(submission).await })?;
        Ok(PromptStream { inner })
    }

    /// Cancels a prompt: removed from the queue, or interrupted if it runs. Does not wait.
    pub fn cancel(&self, prompt: &PromptId) {
        self.inner.cancel(prompt);
    }

    /// The server's queue (`GET /queue`): running and pending prompts of every client.
    pub fn queue(&self) -> Result<QueueState, ClientError> {
        let client = self.inner.clone();
        wait(async move { client.queue().await })
    }

    /// Where `prompt` is in the server's queue, or `None` when it is in neither list. See
    /// [`Client::queue_position`](crate::Client::queue_position).
    pub fn queue_position(&self, prompt: &PromptId) -> Result<Option<QueuePosition>, ClientError> {
        let (client, prompt) = (self.inner.clone(), prompt.clone());
        wait(async move { client.queue_position(&prompt).await })
    }

    /// Stops the running prompt (`POST /interrupt`): only if it is `prompt`, or whatever runs
    /// with `None`. See [`Client::interrupt`](crate::Client::interrupt).
    pub fn interrupt(&self, prompt: Option<&PromptId>) -> Result<(), ClientError> {
        let (client, prompt) = (self.inner.clone(), prompt.cloned());
        wait(async move { client.interrupt(prompt.as_ref()).await })
    }

    /// Removes pending prompts from the queue (`POST /queue` `delete`).
    pub fn delete_from_queue(&self, prompts: &[PromptId]) -> Result<(), ClientError> {
        let (client, prompts) = (self.inner.clone(), prompts.to_vec());
        wait(async move { client.delete_from_queue(&prompts).await })
    }

    /// Removes every pending prompt of every client (`POST /queue` `clear`).
    pub fn clear_queue(&self) -> Result<(), ClientError> {
        let client = self.inner.clone();
        wait(async move { client.clear_queue().await })
    }

    /// One finished prompt's history entry, or `None` when the server has none for it.
    pub fn history(&self, prompt: &PromptId) -> Result<Option<HistoryEntry>, ClientError> {
        let (client, prompt) = (self.inner.clone(), prompt.clone());
        wait(async move { client.history(&prompt).await })
    }

    /// The most recent `max_items` history entries.
    pub fn recent_history(&self, max_items: u32) -> Result<Vec<HistoryEntry>, ClientError> {
        let client = self.inner.clone();
        wait(async move { client.recent_history(max_items).await })
    }

    /// Deletes history entries (`POST /history` `delete`).
    pub fn delete_history(&self, prompts: &[PromptId]) -> Result<(), ClientError> {
        let (client, prompts) = (self.inner.clone(), prompts.to_vec());
        wait(async move { client.delete_history(&prompts).await })
    }

    /// Deletes every finished prompt of every client (`POST /history` `clear`).
    pub fn clear_history(&self) -> Result<(), ClientError> {
        let client = self.inner.clone();
        wait(async move { client.clear_history().await })
    }

    /// Asks the server to unload its models and/or free cached memory (`POST /free`).
    pub fn free(&self, unload_models: bool, free_memory: bool) -> Result<(), ClientError> {
        let client = self.inner.clone();
        wait(async move { client.free(unload_models, free_memory).await })
    }

    /// The model folder names, or with `Some(folder)` the files in that folder (`loras`...).
    pub fn models(&self, folder: Option<&str>) -> Result<Vec<String>, ClientError> {
        let (client, folder) = (self.inner.clone(), folder.map(str::to_owned));
        wait(async move { client.models(folder.as_deref()).await })
    }

    /// Every node class's description (`GET /object_info`), or one class's.
    pub fn object_info(&self, class: Option<&str>) -> Result<serde_json::Value, ClientError> {
        let (client, class) = (self.inner.clone(), class.map(str::to_owned));
        wait(async move { client.object_info(class.as_deref()).await })
    }

    /// Versions, RAM and devices (`GET /system_stats`).
    pub fn system_stats(&self) -> Result<SystemStats, ClientError> {
        let client = self.inner.clone();
        wait(async move { client.system_stats().await })
    }

    /// Uploads `bytes` as `file_name`; use the returned name. See
    /// [`Client::upload`](crate::Client::upload).
    pub fn upload(
        &self,
        file_name: &str,
        bytes: &[u8],
        options: &UploadOptions,
    ) -> Result<UploadedFile, ClientError> {
        let client = self.inner.clone();
        let (name, bytes, options) = (file_name.to_owned(), bytes.to_vec(), options.clone());
        wait(async move { client.upload(&name, &bytes, &options).await })
    }

    /// Downloads a file the server holds (`GET /view`).
    pub fn view(&self, file: &FileRef) -> Result<bytes::Bytes, ClientError> {
        let (client, file) = (self.inner.clone(), file.clone());
        wait(async move { client.view(&file).await })
    }
}

/// The events of one prompt, ending after its terminal event: an [`Iterator`] that blocks, with
/// [`recv_timeout`](Self::recv_timeout) for a bounded wait. Dropping it early cancels the
/// prompt on the server.
///
/// ```no_run
/// use std::time::Duration;
/// use comfy_proxy::session::Event;
/// use comfy_proxy::{ServerAddress, Workflow};
/// use comfy_proxy_smol::blocking::{Client, ClientConfig, RecvTimeoutError};
///
/// let client = Client::connect(ClientConfig::new(ServerAddress::parse("127.0.0.1:8188").unwrap()));
/// let graph = Workflow::from_json(r#"{"1":{"class_type":"EmptyImage","inputs":{}}}"#).unwrap();
/// let mut stream = client.submit(graph).unwrap();
/// loop {
///     match stream.recv_timeout(Duration::from_secs(30)) {
///         Ok(Event::Progress { value, max, .. }) => println!("{value}/{max}"),
///         Ok(event) if event.is_terminal() => break println!("{event:?}"),
///         Ok(_) => {}
///         // Nothing for 30 s: give up; dropping the stream cancels the prompt.
///         Err(RecvTimeoutError::Timeout) => break,
///         Err(RecvTimeoutError::Disconnected) => break,
///     }
/// }
/// ```
#[derive(Debug)]
pub struct PromptStream {
    inner: crate::PromptStream,
}

impl PromptStream {
    /// The prompt's id.
    pub fn prompt_id(&self) -> &PromptId {
        self.inner.prompt_id()
    }

    /// What was dropped or coalesced while the reader lagged.
    pub fn stats(&self) -> OutboxStats {
        self.inner.stats()
    }

    /// Cancels the prompt; the stream ends with [`Event::Cancelled`]. Does not wait.
    pub fn cancel(&self) {
        self.inner.cancel();
    }

    /// The next event, waiting as long as it takes; `None` after the terminal event.
    pub fn recv(&mut self) -> Option<Event> {
        next_until(&mut self.inner, None).ok()
    }

    /// The next event, waiting `timeout` at most: [`RecvTimeoutError::Timeout`] when none came,
    /// [`RecvTimeoutError::Disconnected`] after the terminal event.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        next_until(&mut self.inner, deadline_in(timeout))
    }

    /// The next event, waiting until `deadline` at most.
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Event, RecvTimeoutError> {
        next_until(&mut self.inner, Some(deadline))
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        try_next(&mut self.inner)
    }
}

impl Iterator for PromptStream {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}
