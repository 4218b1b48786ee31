//! Ctrl-C over real sockets: SIGINT to a `comfy-proxy generate` whose jobs run slowly on two
//! mock servers cancels them there (the mocks count the interrupts and queue deletes, and
//! their queues end empty), prints the summary so far and exits 130; against servers that
//! stall every request, the cancels are given up after their deadline and it still exits 130,
//! and a second SIGINT exits at once.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Guard, TempDir, bin, drain, spawn_piped, start_mocks};
use serde_json::Value;

/// `GET path` on a mock, as JSON.
fn get(address: &str, path: &str) -> Value {
    let host = address.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).expect("the mock listens");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()
        .expect("a JSON body")
        .expect("JSON")
}

fn sigint(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT {pid}: {status:?}");
}

/// Waits for the child to exit, `limit` at most (a hang detector, not a timing assertion).
fn wait(guard: &mut Guard, limit: Duration) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = guard.0.try_wait().expect("wait for the command") {
            return status;
        }
        assert!(
            Instant::now() < until,
            "still running {limit:?} after Ctrl-C"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

struct Interrupted {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `generate flux` with `args` on `servers`, waits until `ready` lines of stderr contain
/// `ready_text`, then sends SIGINT; with `twice`, another once the command says it cancels.
fn interrupt_run(
    servers: &[String],
    args: &[&str],
    (ready_text, ready): (&str, usize),
    twice: bool,
) -> Interrupted {
    let out = TempDir::new("interrupt");
    let mut guard = spawn_piped(
        bin()
            .args(["generate", "flux", "--server", &servers.join(",")])
            .args(args)
            .arg("--out")
            .arg(out.path()),
    );
    let stdout = drain(guard.0.stdout.take().expect("stdout"));
    let stderr = guard.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let lines = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut seen = 0;
    while seen < ready {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the jobs reach the servers");
        seen += usize::from(line.contains(ready_text));
    }
    sigint(guard.0.id());
    if twice {
        while !rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the command says it cancels")
            .starts_with("interrupted: cancelling")
        {}
        sigint(guard.0.id());
    }
    let status = wait(&mut guard, Duration::from_secs(20));
    Interrupted {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: lines.join().unwrap_or_default(),
    }
}

#[test]
fn ctrl_c_cancels_the_runs_prompts_on_their_servers_and_exits_130() {
    // 40 steps of 200 ms: a job runs 8 s; two per server run or wait in its queue.
    let (_mocks, servers) = start_mocks(2, &["--step-ms", "200", "--job-ms", "100"]);
    let args = ["--count", "6", "--steps", "40"];
    let run = interrupt_run(&servers, &args, (": sent to", 4), false);
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted: cancelling"),
        "{}",
        run.stderr
    );
    // The summary so far: no job ended, all six cancelled.
    assert!(
        run.stdout
            .contains("6 jobs: 0 succeeded, 0 failed, 6 cancelled (interrupted)"),
        "{}",
        run.stdout
    );
    let (mut interrupts, mut deletes) = (0, 0);
    for server in &servers {
        let counters = get(server, "/mock/faults");
        interrupts += counters["interrupts"].as_u64().unwrap_or(0);
        deletes += counters["deletes"].as_u64().unwrap_or(0);
        let queue = get(server, "/queue");
        for list in ["queue_running", "queue_pending"] {
            assert_eq!(
                queue[list].as_array().map(Vec::len),
                Some(0),
                "{server} still holds a prompt of the run: {queue}"
            );
        }
    }
    // Each server ran one job and held one in its queue: the four were stopped there, by an
    // interrupt or a delete from the queue (a queued prompt may have started by the time its
    // delete arrived; its interrupt stops it then).
    println!("cancels seen: {interrupts} interrupts, {deletes} deletes");
    assert!(interrupts >= 2, "interrupts seen: {interrupts}");
    assert!(
        interrupts + deletes >= 4,
        "{interrupts} interrupts and {deletes} deletes for four prompts"
    );
}

#[test]
fn ctrl_c_gives_up_on_cancels_a_stalled_server_never_answers() {
    // Every HTTP request stalls (the websocket opens): the posts are never answered, nor are
    // the cancels.
    let (_mocks, servers) = start_mocks(1, &["--faults", "stall=1"]);
    let run = interrupt_run(
        &servers,
        &["--count", "2", "--no-validate", "-v"],
        ("connected to", 1),
        false,
    );
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(run.stderr.contains("gave up waiting"), "{}", run.stderr);
    assert!(
        run.stdout.contains("2 cancelled (interrupted)"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    // The cancels stall: the first Ctrl-C would wait for them, the second does not.
    let (_mocks, servers) = start_mocks(1, &["--faults", "stall=1"]);
    let run = interrupt_run(
        &servers,
        &["--count", "2", "--no-validate", "-v"],
        ("connected to", 1),
        true,
    );
    assert_eq!(run.status.code(), Some(130), "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted again: exiting now"),
        "{}",
        run.stderr
    );
    // It left before the summary.
    assert!(!run.stdout.contains("cancelled"), "{}", run.stdout);
}
