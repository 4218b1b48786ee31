//! Child processes: the mock servers' process, and runs with a deadline.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The process of `serve`: it runs while this value lives (its standard input stays open).
pub struct Servers {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `host:port` of each instance, in order.
    pub addresses: Vec<String>,
}

impl Servers {
    /// Starts `serve` with `delays_ms` (one per instance) and waits for its addresses.
    pub fn start(delays_ms: &[u64], image_bytes: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let list: Vec<String> = delays_ms.iter().map(u64::to_string).collect();
        let mut child = Command::new(exe)
            .args(["serve", "--instances", &delays_ms.len().to_string()])
            .args(["--job-ms", &list.join(",")])
            .args(["--image-bytes", &image_bytes.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start the mock servers: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = tx.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let mut servers = Self {
            child,
            stdin,
            addresses: Vec::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(Ok(_)) => return Err("the mock servers' process exited without addresses".into()),
            Ok(Err(e)) => return Err(format!("read the mock servers' addresses: {e}")),
            Err(_) => return Err("the mock servers did not start within 20 s".into()),
        };
        servers.addresses = line.trim().split(',').map(str::to_owned).collect();
        if servers.addresses.len() != delays_ms.len() {
            return Err(format!("the mock servers' process printed {line:?}"));
        }
        Ok(servers)
    }

    /// The addresses, comma-separated.
    pub fn list(&self) -> String {
        self.addresses.join(",")
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a child run ended.
pub struct Finished {
    /// Its exit status; `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// What it printed.
    pub stdout: String,
    /// What it printed on standard error.
    pub stderr: String,
}

impl Finished {
    /// The last non-empty line of standard output.
    pub fn last_line(&self) -> Option<&str> {
        self.stdout.lines().rev().find(|l| !l.trim().is_empty())
    }

    /// The end of standard error, for messages.
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// Runs `cmd` to its end, or kills it once `deadline` has passed.
pub fn run(mut cmd: Command, deadline: Duration) -> Result<Finished, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {:?}: {e}", cmd.get_program()))?;
    let out = reader(child.stdout.take().expect("piped"));
    let err = reader(child.stderr.take().expect("piped"));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("wait for {:?}: {e}", cmd.get_program())),
        }
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
