//! Every wait ends, over real sockets on loopback: nothing listening, a server that never
//! answers the handshake, a websocket that goes silent mid-job, a reader that leaves one
//! prompt unread, a reader that drains two prompts one after the other, a preview flood into
//! a slow reader, and a frame over the limit.
//!
//! None of these tests asserts on timing. Each is wrapped in a generous guard that turns a
//! hang into a failure, and asserts on what the client reports and on counters that show the
//! fault struck.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use comfy_proxy::session::{Backoff, Deadlines, Event, Failure, SessionConfig, Timeouts};
use comfy_proxy::{ServerAddress, TransportErrorKind, Workflow};
use comfy_proxy_mock::{self as mock, MockHandle};
use comfy_proxy_mock::{Faults, MockConfig};
use comfy_proxy_smol::{ClientConfig, ClientError, Smol, connect};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::stream::StreamExt;

/// Runs `test`, failing if it has not ended within a minute (a hang, not a slow run).
fn guarded<T>(test: impl Future<Output = T>) -> T {
    smol::block_on(async {
        let hang = async {
            smol::Timer::after(Duration::from_secs(60)).await;
            panic!("the scenario hung");
        };
        smol::future::or(test, hang).await
    })
}

fn fast() -> MockConfig {
    let mut c = MockConfig::default();
    c.step = Duration::from_millis(2);
    c.job = Duration::from_millis(5);
    c
}

async fn start(config: MockConfig) -> MockHandle {
    mock::serve(Arc::new(Smol), "127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("bind a loopback port")
}

fn graph(steps: u32, save: &str) -> Workflow {
    Workflow::from_json(&format!(
        r#"{{"1":{{"class_type":"EmptyLatentImage","inputs":{{"width":64,"height":48,"batch_size":1}}}},
            "2":{{"class_type":"KSampler","inputs":{{"seed":5,"steps":{steps},"cfg":1.0,"sampler_name":"euler","scheduler":"normal","denoise":1.0,"latent_image":["1",0]}}}},
            "3":{{"class_type":"VAEDecode","inputs":{{"samples":["2",0]}}}},
            "save":{{"class_type":"{save}","inputs":{{"images":["3",0]}}}}}}"#
    ))
    .expect("test graph")
}

fn config(address: &str) -> ClientConfig {
    ClientConfig::new(ServerAddress::parse(address).unwrap()).with_deadlines(Deadlines::none())
}

/// A port nobody listens on: bound, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn nothing_listening_fails_at_once_naming_the_address() {
    guarded(async {
        let port = free_port();
        // Backoff as slow as the old default: a retry loop would show as a hang.
        let session = SessionConfig::default().with_backoff(Backoff::default());
        let client = connect(config(&format!("127.0.0.1:{port}")).with_session(session));
        for _ in 0..2 {
            match client.run(graph(1, "SaveImageWebsocket")).await {
                Err(ClientError::Failed(Failure::Unreachable(e))) => {
                    assert_eq!(e.kind, TransportErrorKind::Refused);
                    let expected = format!("connect to 127.0.0.1:{port}: connection refused");
                    let shown = ClientError::Failed(Failure::Unreachable(e)).to_string();
                    assert!(shown.contains(&expected), "{shown}");
                }
                other => panic!("{other:?}"),
            }
        }
    });
}

/// A server that accepts connections and never says a word.
async fn mute_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    smol::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    })
    .detach();
    (addr, accepted)
}

#[test]
fn a_handshake_never_answered_fails_at_the_connect_deadline() {
    guarded(async {
        let (addr, accepted) = mute_server().await;
        let mut c = config(&addr.to_string());
        c.connect_timeout = Duration::from_millis(300);
        match connect(c).run(graph(1, "SaveImageWebsocket")).await {
            Err(ClientError::Failed(Failure::Unreachable(e))) => {
                assert_eq!(
                    e.kind,
                    TransportErrorKind::TimedOut(Duration::from_millis(300))
                );
                assert!(e.to_string().contains(&addr.to_string()), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the server was reached once"
        );
    });
}

/// Counters of a [`Proxy`].
#[derive(Default)]
struct Seen {
    websockets: AtomicUsize,
    history_lookups: AtomicUsize,
    swallowed: AtomicUsize,
    silenced: AtomicBool,
}

/// A TCP proxy in front of a mock that, on the first websocket, swallows everything the
/// server sends once the job has started: the socket stays open and goes silent.
async fn silencing_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    smol::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            smol::spawn(pipe(client, upstream, counters.clone())).detach();
        }
    })
    .detach();
    (addr, seen)
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, seen: Arc<Seen>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut head = vec![0; 4096];
    let Ok(n) = client.read(&mut head).await else {
        return;
    };
    let first = String::from_utf8_lossy(&head[..n]).into_owned();
    let lookups = |bytes: &[u8]| bytes.windows(12).filter(|w| w == b"GET /history").count();
    seen.history_lookups
        .fetch_add(lookups(&head[..n]), Ordering::SeqCst);
    let silence =
        first.starts_with("GET /ws") && seen.websockets.fetch_add(1, Ordering::SeqCst) == 0;
    if server.write_all(&head[..n]).await.is_err() {
        return;
    }
    // HTTP connections are kept alive: a lookup may come on a connection opened for another
    // request, so every request on it is looked at.
    let (mut from_client, mut to_server) = (client.clone(), server.clone());
    let counters = seen.clone();
    smol::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n) = from_client.read(&mut buf).await {
            if n == 0 || to_server.write_all(&buf[..n]).await.is_err() {
                return;
            }
            counters
                .history_lookups
                .fetch_add(lookups(&buf[..n]), Ordering::SeqCst);
        }
    })
    .detach();
    let mut buf = vec![0; 64 * 1024];
    let mut started = false;
    loop {
        let n = match server.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silence && started {
            seen.swallowed.fetch_add(n, Ordering::SeqCst);
            seen.silenced.store(true, Ordering::SeqCst);
            continue;
        }
        if client.write_all(&buf[..n]).await.is_err() {
            return;
        }
        started |= buf[..n].windows(15).any(|w| w == b"execution_start");
    }
}

#[test]
fn a_silent_websocket_is_replaced_and_the_job_reconciled() {
    guarded(async {
        let mut m = fast();
        m.step = Duration::from_millis(20);
        let mock = start(m).await;
        let (addr, seen) = silencing_proxy(mock.addr()).await;
        let session = SessionConfig::default()
            .with_keepalive(Some(Duration::from_millis(100)))
            .with_timeouts(Timeouts::default().with_silence(Some(Duration::from_millis(400))))
            .with_backoff(Backoff::new(
                Duration::from_millis(10),
                Duration::from_millis(50),
                5,
            ));
        let client = connect(config(&addr.to_string()).with_session(session));
        let mut stream = client.submit(graph(10, "SaveImage")).await.unwrap();
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            events.push(event);
        }
        assert!(
            seen.silenced.load(Ordering::SeqCst),
            "the socket went silent"
        );
        assert!(seen.swallowed.load(Ordering::SeqCst) > 0);
        assert_eq!(seen.websockets.load(Ordering::SeqCst), 2, "one reconnect");
        assert!(
            seen.history_lookups.load(Ordering::SeqCst) >= 1,
            "reconciled"
        );
        let outputs = events
            .iter()
            .filter(|e| matches!(e, Event::Output { .. }))
            .count();
        assert_eq!(outputs, 1, "the file output, fetched after the lookup");
        assert!(
            matches!(events.last(), Some(Event::Completed { .. })),
            "{:?}",
            events.last()
        );
    });
}

#[test]
fn an_unread_prompt_does_not_hold_up_the_next_one() {
    guarded(async {
        let mock = start(fast()).await;
        let mut c = config(&mock.address());
        c.events_buffer = 2;
        let client = connect(c);
        // A has many events and a file output; nobody reads it until B is done.
        let mut a = client.submit(graph(30, "SaveImage")).await.unwrap();
        let b = client
            .run(graph(2, "SaveImageWebsocket"))
            .await
            .expect("B completes");
        assert_eq!(b.outputs.len(), 1);
        let mut outputs = 0;
        let mut last = None;
        while let Some(event) = a.next().await {
            outputs += usize::from(matches!(event, Event::Output { .. }));
            last = Some(event);
        }
        assert!(matches!(last, Some(Event::Completed { .. })), "{last:?}");
        assert_eq!(
            outputs, 1,
            "A's file output arrives once its reader catches up"
        );
        let stats = a.stats();
        assert!(
            stats.previews_dropped + stats.coalesced > 0,
            "A's reader lagged: {stats:?}"
        );
    });
}

/// One reader, two prompts submitted together: it drains A to its end, then B. B runs first
/// on the server, so its events pile up meanwhile (its previews are dropped and counted, never its outputs) and nothing
/// stalls: both complete with their outputs, A's websocket image and B's file.
#[test]
fn a_reader_drains_two_prompts_one_after_the_other() {
    guarded(async {
        let mock = start(fast()).await;
        let cap = 4;
        let mut c = config(&mock.address());
        c.events_buffer = cap;
        let client = connect(c);
        // B is queued first, so it runs while the reader still waits for A's events.
        let mut b = client.submit(graph(40, "SaveImage")).await.unwrap();
        let mut a = client
            .submit(graph(40, "SaveImageWebsocket"))
            .await
            .unwrap();
        let mut seen = Vec::new();
        for stream in [&mut a, &mut b] {
            let (mut outputs, mut last) = (0, None);
            while let Some(event) = stream.next().await {
                outputs += usize::from(matches!(event, Event::Output { .. }));
                last = Some(event);
            }
            assert!(matches!(last, Some(Event::Completed { .. })), "{last:?}");
            seen.push((outputs, stream.stats()));
        }
        assert_eq!(seen[0].0, 1, "A's websocket image");
        assert_eq!(seen[1].0, 1, "B's file, fetched while its reader lagged");
        let b_stats = &seen[1].1;
        assert!(
            b_stats.previews_dropped + b_stats.coalesced > 0,
            "B's events waited for the reader: {b_stats:?}"
        );
        assert!(b_stats.peak <= 4 * cap + 2, "{b_stats:?}");
    });
}

#[test]
fn a_preview_flood_into_a_slow_reader_stays_bounded() {
    guarded(async {
        let mut m = fast();
        m.step = Duration::from_millis(1);
        let mock = start(m).await;
        let cap = 8;
        let mut c = config(&mock.address());
        c.events_buffer = cap;
        let client = connect(c);
        let steps = 300;
        let mut stream = client
            .submit(graph(steps, "SaveImageWebsocket"))
            .await
            .unwrap();
        let mut previews = 0u64;
        let mut outputs = 0;
        let mut last = None;
        while let Some(event) = stream.next().await {
            match &event {
                Event::Preview { .. } => {
                    previews += 1;
                    // A slow consumer.
                    smol::Timer::after(Duration::from_millis(5)).await;
                }
                Event::Output { .. } => outputs += 1,
                _ => {}
            }
            last = Some(event);
        }
        assert!(matches!(last, Some(Event::Completed { .. })), "{last:?}");
        assert_eq!(outputs, 1, "the output is never dropped");
        let stats = stream.stats();
        assert!(
            stats.previews_dropped > 0,
            "the flood outran the reader: {stats:?}"
        );
        assert_eq!(
            previews + stats.previews_dropped,
            u64::from(steps),
            "every preview was either read or counted as dropped"
        );
        // Previews never grow the queue past cap; the rest is bounded by the outbox's limit.
        assert!(stats.peak <= 4 * cap + 2, "{stats:?}");
    });
}

#[test]
fn a_frame_over_the_limit_is_a_typed_failure() {
    guarded(async {
        let mut m = fast();
        m.previews = false;
        m.faults = Faults::parse("oversize=1").unwrap();
        let mock = start(m).await;
        let session = SessionConfig::default().with_backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
            3,
        ));
        let client = connect(config(&mock.address()).with_session(session));
        match client.run(graph(1, "SaveImageWebsocket")).await {
            Err(ClientError::Failed(Failure::LostOutputs { nodes })) => {
                let names: Vec<&str> = nodes.iter().map(|n| n.as_str()).collect();
                assert_eq!(names, ["save"]);
            }
            other => panic!("a 64 MiB + 1 frame must fail the prompt cleanly: {other:?}"),
        }
    });
}
