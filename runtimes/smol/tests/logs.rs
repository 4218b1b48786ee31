//! The `log` lines of the client and the pool, captured by a logger of this test: a refused
//! connect is logged naming the address, a pool's run logs its connects, posts, breakers and job
//! ends, a dropped websocket and its reconnect are logged,
//! and no secret (a query token, a bearer token, a secret header) appears in any line, at any
//! level, from any crate but tungstenite's `trace` of the handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use comfy_proxy::ServerAddress;
use comfy_proxy::Workflow;
use comfy_proxy::session::{Backoff, Deadlines, SessionConfig};
use comfy_proxy_driver::Runtime;
use comfy_proxy_mock::{self as mock, MockConfig};
use comfy_proxy_smol::{
    Auth, ClientConfig, JobOptions, PoolConfig, PoolEvent, Smol, connect, pool,
};
use smol::stream::StreamExt;

const QUERY_SECRET: &str = "q-s3cret/value";
const BEARER_SECRET: &str = "b-s3cret-value";
const HEADER_SECRET: &str = "h-s3cret-value";

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
        for secret in [
            QUERY_SECRET,
            "q-s3cret%2Fvalue",
            BEARER_SECRET,
            HEADER_SECRET,
        ] {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
    }
}

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap()
}

fn config(server: ServerAddress, auth: Auth) -> ClientConfig {
    let quick = SessionConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(20),
        2,
    ));
    ClientConfig::new(server)
        .with_session(quick)
        .with_deadlines(Deadlines::none().total(Duration::from_secs(20)))
        .with_auth(auth)
        .unwrap()
        .with_header("X-Api-Key", HEADER_SECRET)
        .unwrap()
}

/// A loopback port nothing listens on: bound, then let go.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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
