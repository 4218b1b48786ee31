//! The `log` lines of the client and the pool, captured by a logger of this test: a refused
//! connect is logged naming the address, a pool's run logs its connects, posts, breakers and job
//! ends, a dropped websocket and its reconnect are logged,
//! and no secret (a query token, a bearer token, a secret header) appears in any line, at any
//! level, from any crate but tungstenite's `trace` of the handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use comfy_proxy::ServerAddress;
use comfy_proxy_driver::Runtime;
use comfy_proxy_mock::{self as mock, MockConfig};
use comfy_proxy_smol::{Auth, JobOptions, PoolConfig, PoolEvent, Smol, connect, pool};
use smol::stream::StreamExt;

#[path = "common/secrets.rs"]
mod common;
use common::{BEARER_SECRET, QUERY_SECRET, config, dead_port, graph, leaked};

/// Every line logged in this process, as `LEVEL target: message`.
static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn flush(&self) {}
}

fn capture() {
    // Both tests call it; the second finds the logger set.
    let _ = log::set_logger(&Capture);
    log::set_max_level(log::LevelFilter::Trace);
}

fn lines() -> Vec<String> {
    LINES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// No secret in any line, but for tungstenite's `trace` of the handshake request, which shows
/// the request as sent (a program must not turn on `trace` for tungstenite when it has
/// secrets; the command never does).
fn assert_no_secret(lines: &[String]) {
    for line in lines
        .iter()
        .filter(|l| !l.starts_with("TRACE tungstenite::"))
    {
        if let Some(secret) = leaked(line) {
            panic!("{secret} leaked: {line}");
        }
    }
}

#[test]
fn a_refused_connect_is_logged_with_its_address_and_no_secret() {
    capture();
    let port = dead_port();
    let address = format!("127.0.0.1:{port}");
    let server = ServerAddress::parse(&address).unwrap();
    let auth = Auth::Query {
        name: "token".into(),
        value: QUERY_SECRET.into(),
    };
    let client = connect(config(server, auth));
    let result = smol::block_on(client.run(graph()));
    assert!(result.is_err(), "nothing listens on {address}");
    let lines = lines();
    let refused: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("WARN comfy_proxy::client: cannot connect to"))
        .filter(|l| l.contains(&address))
        .collect();
    assert!(!refused.is_empty(), "no refused connect logged: {lines:#?}");
    assert_no_secret(&lines);
}

#[test]
fn a_pool_run_logs_its_course_and_no_secret() {
    capture();
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let mut c = MockConfig::default();
    c.step = Duration::from_millis(1);
    c.job = Duration::from_millis(2);
    let mock = smol::block_on(mock::serve(rt, "127.0.0.1:0".parse().unwrap(), c)).unwrap();
    let live = ServerAddress::parse(&mock.address()).unwrap();
    let dead = ServerAddress::parse(&format!("127.0.0.1:{}", dead_port())).unwrap();
    for auth in [
        Auth::Query {
            name: "token".into(),
            value: QUERY_SECRET.into(),
        },
        Auth::Bearer(BEARER_SECRET.into()),
    ] {
        let servers = [live.clone(), dead.clone()];
        let template = config(live.clone(), auth);
        let (pool, mut events) = pool(PoolConfig::new(&servers, &template));
        for _ in 0..3 {
            let job = pool.try_submit(graph(), JobOptions::new());
            drop(job.expect("room in the submission queue"));
        }
        pool.close();
        let succeeded = smol::block_on(async {
            let mut ok = 0;
            while let Some(event) = events.next().await {
                if let PoolEvent::Finished(report) = event {
                    ok += usize::from(report.outcome.is_ok());
                }
            }
            ok
        });
        assert_eq!(succeeded, 3, "every job runs on the live server");
    }
    let lines = lines();
    // Shown with --nocapture: what a user of -vv would read.
    for line in lines.iter().filter(|l| l.contains(" comfy_proxy::")) {
        println!("{line}");
    }
    let live = live.to_string();
    let has = |what: &str, on: &str| lines.iter().any(|l| l.contains(what) && l.contains(on));
    assert!(has("connected to", &live), "{lines:#?}");
    assert!(has("POST", "/prompt"), "{lines:#?}");
    assert!(has(": done on", &live), "{lines:#?}");
    let dead = dead.to_string();
    assert!(has("cannot connect to", &dead), "{lines:#?}");
    assert!(has("out of service (breaker open)", &dead), "{lines:#?}");
    assert_no_secret(&lines);
}

#[test]
fn a_dropped_websocket_and_the_reconnect_are_logged() {
    capture();
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let mut c = MockConfig::default();
    c.step = Duration::from_millis(5);
    c.job = Duration::from_millis(5);
    c.faults = "drop-ws=1".parse().unwrap();
    let mock = smol::block_on(mock::serve(rt, "127.0.0.1:0".parse().unwrap(), c)).unwrap();
    let server = ServerAddress::parse(&mock.address()).unwrap();
    let client = connect(config(server.clone(), Auth::Bearer(BEARER_SECRET.into())));
    // Whether the job survives its dropped sockets is the session's business; the log says
    // what happened to them.
    let _ = smol::block_on(client.run(graph()));
    let lines = lines();
    let server = server.to_string();
    let has = |what: &str| {
        lines
            .iter()
            .any(|l| l.contains(what) && l.contains(&server))
    };
    assert!(has("ended:"), "{lines:#?}");
    assert!(has("reconnected to"), "{lines:#?}");
    assert_no_secret(&lines);
}
