//! The `comfy-proxy` binary against `comfy-proxy mock` processes at hostile fault rates, over
//! real sockets: every job ends exactly once, the run ends within a bound computed from
//! `--timeout` and the retry budget, at least 90 % succeed while one server stays healthy, and
//! every kind of fault the mock has struck (each of the mocks' `GET /mock/faults` counters,
//! summed over the faulty mocks, is above zero).
//! Also: nothing listening at the address fails in seconds, naming it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::*;

fn fixtures() -> String {
    format!("{}/../fixtures", env!("CARGO_MANIFEST_DIR"))
}

/// `GET /mock/faults` of the mock at `address` (`http://host:port`), over a plain socket. The
/// mock never stalls its own endpoint, but `refuse` may close the connection: tried again.
fn counters(address: &str) -> Value {
    let host = address.trim_start_matches("http://");
    for _ in 0..50 {
        let Ok(mut s) = TcpStream::connect(host) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let request =
            format!("GET /mock/faults HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if s.write_all(request.as_bytes()).is_err() {
            continue;
        }
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let Some((_, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        // The first JSON document of the body (read to the end: `Connection: close`).
        let first = serde_json::Deserializer::from_str(body)
            .into_iter::<Value>()
            .next();
        if let Some(Ok(value)) = first {
            return value;
        }
    }
    panic!("{address}: no answer from GET /mock/faults")
}

/// Every fault at 5-10 % per chance, `drop-ws` at 10 % per frame, a stall on every kind of
/// request and on the websocket.
const HOSTILE: &str = "refuse=0.05,drop-ws=0.1,stall=0.05,http500=0.1,restart=0.05,slow=0.1,\
    oversize=0.1,bad-json=0.05,bad-utf8=0.05,unknown-type=0.05,truncated=0.1,wrong-id=0.05,\
    stall-prompt=0.1,stall-object-info=0.1,stall-history=0.1,stall-queue=0.1,stall-view=0.1,\
    stall-upload=0.1,stall-health=0.1,stall-ws=0.05";

/// Two uploaded images through a sampler with a preview per step (16 image frames a run,
/// for `truncated` and `oversize` to strike) into two saved files (two `/view` downloads) and
/// a websocket image: every kind of request and frame a job can meet, several times a run.
const GRAPH: &str = r#"{
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    "5": {"class_type": "LoadImage", "inputs": {"image": "second.png"}},
    "2": {"class_type": "TestSlowProgress", "inputs": {"images": ["1", 0], "steps": 16, "sleep_ms": 1}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "hostile"}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "second"}},
    "4": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["2", 0]}}
}"#;

/// The outputs of a job that succeeded: two files and a websocket image.
const OUTPUTS: usize = 3;

/// Every fault the mock has (`comfy_proxy_mock::Fault::ALL`); the test checks that its
/// counters name exactly these, so a new kind of fault cannot go unasserted.
const EVERY_FAULT: [&str; 20] = [
    "refuse",
    "drop-ws",
    "stall",
    "http500",
    "restart",
    "slow",
    "oversize",
    "bad-json",
    "bad-utf8",
    "unknown-type",
    "truncated",
    "wrong-id",
    "stall-prompt",
    "stall-object-info",
    "stall-history",
    "stall-queue",
    "stall-view",
    "stall-upload",
    "stall-health",
    "stall-ws",
];

const JOBS: u64 = 300;
const TIMEOUT_SECS: u64 = 5;
/// The second run, over the faulty servers alone.
const HOSTILE_JOBS: u64 = 60;
const HOSTILE_TIMEOUT_SECS: u64 = 3;
const HOSTILE_SERVERS: usize = 8;

/// What one `comfy-proxy run --json` came to.
struct Tally {
    succeeded: usize,
    errors: BTreeMap<String, usize>,
    took: Duration,
}

/// Runs `jobs` copies of [`GRAPH`] (both images uploaded) on `servers` with `--timeout
/// timeout` and `extra` flags, and checks what holds whatever the servers do: the command
/// ends within the bound computed from `--timeout` and the retry budget, every job ends
/// exactly once, a success has every output and a failure names its cause.
fn run_jobs(servers: &[String], jobs: u64, timeout: u64, extra: &[&str]) -> Tally {
    let dir = TempDir::new("run");
    let graph = dir.path().join("g.json");
    std::fs::write(&graph, GRAPH).unwrap();
    let image = dir.path().join("example.png");
    std::fs::write(&image, b"\x89PNG\r\n\x1a\nhostile").unwrap();
    let second = dir.path().join("second.png");
    std::fs::write(&second, b"\x89PNG\r\n\x1a\nsecond").unwrap();
    let mut cmd = bin();
    cmd.arg("run")
        .arg(&graph)
        .args(["--server", &servers.join(",")])
        .arg("--upload")
        .arg(format!("1.image={}", image.display()))
        .arg("--upload")
        .arg(format!("5.image={}", second.display()))
        .args(["--count", &jobs.to_string(), "--json"])
        .args(["--timeout", &timeout.to_string()])
        .args(extra)
        .arg("--out")
        .arg(dir.path().join("out"));
    // The bound: a job ends after at most `attempts` (3) attempts of `--timeout` each, plus the
    // pool's wait on a job of uncertain fate (30 s at most; the command caps it at `--timeout`)
    // and on every server being out (capped at `--timeout`); 60 s more for the jobs to get
    // their turns. Not a timing assertion: a hang detector, far above a normal run.
    let bound = Duration::from_secs(3 * timeout + 30 + timeout + 60);
    let out = run(cmd, bound);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}: {}",
        out.status,
        out.stderr
    );

    let mut seen = BTreeMap::new();
    let mut succeeded = 0;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for line in out.stdout.lines() {
        let line: Value = serde_json::from_str(line).expect("one JSON line per job");
        *seen
            .entry(line["job"].as_u64().expect("a job id"))
            .or_insert(0) += 1;
        match line["outcome"].as_str() {
            Some("success") => {
                succeeded += 1;
                assert_eq!(
                    line["outputs"].as_array().map(Vec::len),
                    Some(OUTPUTS),
                    "{line}"
                );
            }
            _ => {
                let error = line["error"].as_str().unwrap_or_default();
                assert!(error.len() > 10, "a failure names its cause: {line}");
                let kind: String = error.chars().take(60).collect();
                *errors.entry(kind).or_insert(0) += 1;
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "jobs reported more than once: {twice:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<u64>>(),
        (0..jobs).collect::<Vec<u64>>(),
        "every job ends exactly once"
    );
    println!(
        "{jobs} jobs ended, {succeeded} succeeded, in {:.1} s (bound {bound:?})",
        out.took.as_secs_f64()
    );
    println!("failures: {errors:#?}");
    // The per-server summary, after the progress lines.
    let tail: Vec<&str> = out.stderr.lines().rev().take(servers.len() + 1).collect();
    for line in tail.iter().rev() {
        println!("{line}");
    }
    Tally {
        succeeded,
        errors,
        took: out.took,
    }
}

/// Two runs at once. One over six faulty mocks beside a healthy one, with validation
/// (`/object_info`): at least 90 % succeed. The other over eight faulty mocks alone, without
/// validation, so that they run many jobs: no floor on successes, but every job still ends
/// once within its bound. Every kind of fault strikes in the two runs together.
#[test]
fn hostile_servers_every_job_ends_once_and_most_succeed() {
    let fixtures = fixtures();
    let common = [
        "--fixtures",
        fixtures.as_str(),
        "--speed",
        "0.05",
        "--step-ms",
        "2",
        "--job-ms",
        "5",
    ];
    let mut faulty_args = common.to_vec();
    faulty_args.extend(["--faults", HOSTILE, "--seed", "1009"]);
    let (_faulty, faulty) = start_mocks(6, &faulty_args);
    let mut alone_args = common.to_vec();
    alone_args.extend(["--faults", HOSTILE, "--seed", "2003"]);
    let (_alone, alone_servers) = start_mocks(HOSTILE_SERVERS, &alone_args);
    // The healthy server takes its time (30 ms a job), so that the faulty ones get tried
    // again as their breakers close.
    let mut healthy_args = common.to_vec();
    if let Some(job_ms) = healthy_args.last_mut() {
        *job_ms = "30";
    }
    let (_healthy, healthy) = start_mocks(1, &healthy_args);
    let mut servers = faulty.clone();
    servers.extend(healthy);

    let (beside, alone) = thread::scope(|scope| {
        let beside = scope.spawn(|| run_jobs(&servers, JOBS, TIMEOUT_SECS, &[]));
        let alone = scope.spawn(|| {
            run_jobs(
                &alone_servers,
                HOSTILE_JOBS,
                HOSTILE_TIMEOUT_SECS,
                &["--no-validate"],
            )
        });
        (beside.join(), alone.join())
    });
    let (beside, alone) = match (beside, alone) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
    };
    println!(
        "runs took {:.1} s (beside a healthy server, {} of {JOBS} succeeded) and {:.1} s \
         (faulty servers alone, {} of {HOSTILE_JOBS} succeeded)",
        beside.took.as_secs_f64(),
        beside.succeeded,
        alone.took.as_secs_f64(),
        alone.succeeded,
    );
    assert!(
        beside.succeeded * 10 >= JOBS as usize * 9,
        "{} of {JOBS} succeeded beside a healthy server; failures: {:#?}",
        beside.succeeded,
        beside.errors
    );

    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let (mut interrupted, mut deleted) = (0, 0);
    for address in faulty.iter().chain(&alone_servers) {
        let c = counters(address);
        for (name, n) in c["faults"].as_object().expect("fault counters") {
            *injected.entry(name.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
        }
        interrupted += c["interrupts"].as_u64().unwrap_or(0);
        deleted += c["deletes"].as_u64().unwrap_or(0);
    }
    println!("faults injected (all faulty servers): {injected:?}");
    println!("cancels seen: {interrupted} interrupts, {deleted} deletes");
    // Every fault struck, at least once.
    let names: Vec<&str> = injected.keys().map(String::as_str).collect();
    let mut every = EVERY_FAULT.to_vec();
    every.sort_unstable();
    assert_eq!(
        names, every,
        "the mock's faults are the ones this test asserts"
    );
    let missing: Vec<&str> = EVERY_FAULT
        .iter()
        .copied()
        .filter(|name| injected[*name] == 0)
        .collect();
    assert!(
        missing.is_empty(),
        "faults that never struck: {missing:?}; all: {injected:?}"
    );
}

/// A typo in the port: the command fails within seconds, naming the address and the reason.
#[test]
fn nothing_listening_fails_in_seconds_naming_the_address() {
    let dir = TempDir::new("refused");
    let mut cmd = bin();
    cmd.args([
        "generate",
        "flux",
        "--prompt",
        "x",
        "--server",
        "127.0.0.1:1",
        "--out",
    ])
    .arg(dir.path().join("out"));
    // 30 s is far above "seconds"; the old behaviour took 155 s.
    let out = run(cmd, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        !text.contains("sent to"),
        "nothing was sent, so nothing says so: {text}"
    );
}
