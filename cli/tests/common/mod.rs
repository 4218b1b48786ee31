//! What the command's integration tests share: the binary, child processes that are killed on
//! every path, temporary directories, and mock servers started as `comfy-proxy mock`.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The `comfy-proxy` binary, without the user's `COMFY_SERVERS` and `COMFY_TOKEN`.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_comfy-proxy"));
    cmd.env_remove("COMFY_SERVERS").env_remove("COMFY_TOKEN");
    cmd
}

/// A file of the repository's `fixtures/` (the folder itself for `""`).
pub fn fixture(name: &str) -> String {
    format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Kills the child when dropped, whatever happened in between.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with no stdin and piped stdout and stderr, killed when the guard drops.
pub fn spawn_piped(cmd: &mut Command) -> Guard {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start comfy-proxy");
    Guard(child)
}

/// How a run of the command ended.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From start to exit.
    pub took: Duration,
}

/// Runs `cmd` to its end, killing it (and failing: a hang) after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Finished {
    let mut guard = spawn_piped(&mut cmd);
    let stdout = drain(guard.0.stdout.take().expect("stdout"));
    let stderr = drain(guard.0.stderr.take().expect("stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = guard.0.kill();
            let _ = guard.0.wait();
            let out = stdout.join().unwrap_or_default();
            panic!(
                "comfy-proxy ran over its bound of {limit:?} (a hang): {} lines were printed",
                out.lines().count()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        took: start.elapsed(),
    }
}

/// A fresh empty directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name starts with `name`.
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "comfy-proxy-cli-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        Self(dir)
    }

    /// Writes `bytes` to the file `name` in it and returns that file's path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write a temp file");
        path.to_str().expect("a UTF-8 temp path").to_owned()
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Reads `pipe` to its end on a thread of its own.
pub fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Starts `comfy-proxy mock --instances N ARGS` on free ports and returns it with the
/// addresses it prints (waiting 30 s at most).
pub fn start_mocks(instances: usize, args: &[&str]) -> (Guard, Vec<String>) {
    let child = bin()
        .args(["mock", "--listen", "127.0.0.1:0", "--instances"])
        .arg(instances.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the mock");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for _ in 0..instances {
            let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(line);
        }
    });
    let addresses: Vec<String> = (0..instances)
        .map(|_| {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the mock prints its addresses");
            let line = line.trim().to_owned();
            assert!(line.starts_with("http://127.0.0.1:"), "{line:?}");
            line
        })
        .collect();
    (guard, addresses)
}

/// One fast simulating mock (2 ms a step, 5 ms a job) with `extra` flags, and its address.
pub fn start_mock_with(extra: &[&str]) -> (Guard, String) {
    let mut args = vec!["--step-ms", "2", "--job-ms", "5"];
    args.extend_from_slice(extra);
    let (guard, mut addresses) = start_mocks(1, &args);
    (guard, addresses.remove(0))
}
