//! `e2e`: the pool against the Python original, end to end, on the same mock servers.
//!
//! ```sh
//! cargo run --release -p comfy-proxy-bench --bin e2e            # every scenario, every client
//! cargo run --release -p comfy-proxy-bench --bin e2e -- --no-python
//! cargo run --release -p comfy-proxy-bench --bin e2e -- --only 0    # one scenario
//! cargo run --release -p comfy-proxy-bench --bin e2e -- --events reports  # our pools report jobs alone
//! ```
//!
//! # How it works
//!
//! The harness runs nothing itself but re-executes this binary, so that each figure belongs to
//! one process alone:
//!
//! - `serve --instances N --job-ms LIST --image-bytes B` starts N simulating mock servers on
//!   free loopback ports (smol), prints their addresses on one line and runs until its standard
//!   input closes, so it dies with the harness;
//! - `client --runtime smol|smol-1thread|async-std --servers LIST --jobs M --image-bytes B [--write-dir D] [--events all|outputs|reports]`
//!   runs M jobs on a [`Pool`](comfy_proxy_smol::Pool) over those servers and prints one
//!   JSON line of figures (makespan, jobs per server, CPU time, peak RSS);
//! - `real --servers LIST --graph FILE --jobs N` runs the `client` against running ComfyUI
//!   servers and reads the servers' own timings from `/history` (see `real.rs`);
//! - the Python original runs from a virtualenv under `target/` with a driver script that prints
//!   the same JSON line.
//!
//! Every run gets a fresh server process of the scenario's configuration and a deadline; the
//! harness derives jobs/s, makespan / ideal and utilisation from the runs' figures, prints a
//! table per scenario and, last, one line of JSON with everything.

mod child;
mod client;
mod figures;
mod floor;
mod harness;
mod python;
mod real;
mod serve;

use std::collections::HashMap;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve::main(&Args::parse(&args[1..])),
        Some("client") => client::main(&Args::parse(&args[1..])),
        Some("real") => real::main(&Args::parse(&args[1..])),
        Some("--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => options(&args).and_then(|o| harness::main(&o)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e: error: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: e2e [--no-python] [--only KEY,...] [--events all|outputs|reports]\n       \
    e2e real --servers HOST:PORT,... --graph FILE --jobs N [--runs K] [--no-validate 1] [--no-warmup 1] [--per-server N]";

/// The harness's flags: `--no-python`, `--only 0,2,4a`, `--events reports`.
fn options(args: &[String]) -> Result<harness::Options, String> {
    let mut options = harness::Options {
        no_python: false,
        only: Vec::new(),
        events: "all".to_owned(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--no-python" => options.no_python = true,
            "--only" => {
                let list = it.next().ok_or("--only needs a list of scenarios")?;
                options.only = list.split(',').map(|k| k.trim().to_owned()).collect();
            }
            "--events" => {
                let level = it.next().ok_or("--events needs all, outputs or reports")?;
                client::event_detail(level)?;
                options.events = level.clone();
            }
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(options)
}

/// `--key value` pairs of the hidden modes.
pub struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Self {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            if let Some(key) = key.strip_prefix("--") {
                map.insert(key.to_owned(), it.next().cloned().unwrap_or_default());
            }
        }
        Self(map)
    }

    /// The value of `--key`, which must be there.
    pub fn get(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing --{key}"))
    }

    /// The value of `--key`, if given.
    pub fn opt(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `--key` as a number.
    pub fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, String> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|_| format!("--{key} {v:?} is not a number"))
    }
}

/// CPU time and peak resident set of this process, from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// User plus system time, in seconds.
    pub cpu_s: f64,
    /// `ru_maxrss`: the peak resident set, in KiB (Linux's unit).
    pub max_rss_kib: u64,
}

/// Reads this process's [`Usage`].
#[allow(unsafe_code)]
pub fn usage() -> Result<Usage, String> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` points to a `rusage`, which getrusage fills in.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!("getrusage: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: zeroed is a valid `rusage` (plain integers), and getrusage succeeded.
    let ru = unsafe { ru.assume_init() };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let max_rss_kib = u64::try_from(ru.ru_maxrss).map_err(|_| "negative ru_maxrss")?;
    if max_rss_kib == 0 {
        return Err("getrusage reported no peak RSS".into());
    }
    Ok(Usage {
        cpu_s: secs(ru.ru_utime) + secs(ru.ru_stime),
        max_rss_kib,
    })
}
