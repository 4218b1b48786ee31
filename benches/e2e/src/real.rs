//! `e2e real`: the pool against running ComfyUI servers; time to the first job and utilisation
//! from the servers' own `/history`.
//!
//! ```sh
//! cargo run --release -p comfy-proxy-bench --bin e2e -- real \
//!     --servers 127.0.0.1:8188,127.0.0.1:8189 --graph benches/e2e/graphs/slow_100ms.json --jobs 20
//! ```
//!
//! Each run launches a fresh client process (`client --runtime smol --graph FILE`, validation
//! on unless `--no-validate`), which prints the prompt id of every job; the harness then reads
//! each prompt's `status.messages` from its server's `/history/{id}`: `execution_start` and
//! `execution_success` carry the server's timestamps (milliseconds since the epoch, the same
//! clock as the harness's on one machine).
//!
//! - **Time to the first job**: the earliest `execution_start` minus the instant the harness
//!   launched the client process.
//! - **Utilisation**: the servers' busy time (each prompt's `execution_start` to
//!   `execution_success`) over servers x wall time, the wall time running from the launch to
//!   the last `execution_success`: start-up included.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::Args;
use crate::child;
use crate::figures::{RunFigures, round, secs};

/// One prompt's time on its server, in milliseconds since the epoch.
struct Busy {
    start_ms: f64,
    end_ms: f64,
}

/// `real --servers LIST --graph FILE --jobs N [--runs K] [--no-validate 1] [--no-warmup 1]
/// [--per-server N]`.
pub fn main(args: &Args) -> Result<(), String> {
    let servers: Vec<String> = args.get("servers")?.split(',').map(str::to_owned).collect();
    let graph = args.get("graph")?;
    let jobs: usize = args.num("jobs")?;
    let runs: usize = args.opt("runs").map_or(Ok(1), |_| args.num("runs"))?;
    let validate = args.opt("no-validate").is_none();
    let per_server: Option<usize> = match args.opt("per-server") {
        Some(_) => Some(args.num("per-server")?),
        None => None,
    };
    println!(
        "comfy-proxy against real servers {}: {jobs} jobs of {graph}, validation {}",
        servers.join(", "),
        if validate { "on" } else { "off" }
    );
    if args.opt("no-warmup").is_none() {
        // ComfyUI collects garbage after a prompt when its last collection is 10 s old or more
        // (`gc_collect_interval` in main.py; about a second here, with torch loaded): a run
        // started after a pause pays it right after its first job. Two jobs per server first;
        // the runs that follow come within 10 s of it
        // (the first waits for the collection to end).
        let warm = run_once(&servers, graph, 2 * servers.len(), validate, per_server)?;
        println!(
            "  warm-up ({} jobs, then 3 s for the servers' collection): utilisation {}",
            2 * servers.len(),
            warm["utilisation"]
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let mut all = Vec::new();
    for run in 1..=runs {
        let figures = run_once(&servers, graph, jobs, validate, per_server)?;
        println!(
            "  run {run}: first job started {} after launch; utilisation {:.3} over {} \
             (busy {}); client CPU {} ({} per job), peak RSS {:.1} MiB; jobs per server {}",
            secs(figures["first_start_s"].as_f64().unwrap_or(f64::NAN)),
            figures["utilisation"].as_f64().unwrap_or(f64::NAN),
            secs(figures["wall_s"].as_f64().unwrap_or(f64::NAN)),
            secs(figures["busy_s"].as_f64().unwrap_or(f64::NAN)),
            secs(figures["cpu_s"].as_f64().unwrap_or(f64::NAN)),
            secs(figures["cpu_s"].as_f64().unwrap_or(f64::NAN) / jobs as f64),
            figures["peak_rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0,
            figures["per_server"],
        );
        println!("    idle per server: {}", figures["idle"]);
        all.push(figures);
    }
    println!(
        "{}",
        json!({"bench": "e2e real", "servers": servers, "graph": graph, "jobs": jobs,
               "validate": validate, "runs": all})
    );
    Ok(())
}

fn run_once(
    servers: &[String],
    graph: &str,
    jobs: usize,
    validate: bool,
    per_server: Option<usize>,
) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "client",
        "--runtime",
        "smol",
        "--servers",
        &servers.join(","),
    ])
    .args(["--jobs", &jobs.to_string(), "--graph", graph]);
    if validate {
        cmd.args(["--validate", "1"]);
    }
    if let Some(n) = per_server {
        cmd.args(["--per-server", &n.to_string()]);
    }
    let launch_ms = epoch_ms();
    let end = child::run(cmd, Duration::from_secs(120 + jobs as u64 * 10))?;
    match end.status {
        Some(s) if s.success() => {}
        other => {
            return Err(format!(
                "the client ended with {other:?}\n{}",
                end.stderr_tail()
            ));
        }
    }
    let line = end.last_line().ok_or("the client printed no figures")?;
    let run: RunFigures =
        serde_json::from_str(line).map_err(|e| format!("figures {line:?}: {e}"))?;
    if run.prompts.len() != jobs {
        return Err(format!("{} prompt ids for {jobs} jobs", run.prompts.len()));
    }
    let mut busy = Vec::new();
    let mut per_server: Vec<Vec<(f64, f64)>> = vec![Vec::new(); servers.len()];
    for (server, prompt) in &run.prompts {
        let address = servers
            .get(*server)
            .ok_or_else(|| format!("server index {server}"))?;
        let b = history(address, prompt)?;
        per_server[*server].push((b.start_ms, b.end_ms));
        busy.push(b);
    }
    let first = busy
        .iter()
        .map(|b| b.start_ms)
        .fold(f64::INFINITY, f64::min);
    let last = busy.iter().map(|b| b.end_ms).fold(0.0, f64::max);
    let busy_ms: f64 = busy.iter().map(|b| b.end_ms - b.start_ms).sum();
    let wall_ms = last - launch_ms;
    // Where each server's idle time went: before its first job, between jobs, after its last.
    let idle: Vec<Value> = per_server
        .iter_mut()
        .map(|jobs| {
            jobs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let gaps: Vec<f64> = jobs.windows(2).map(|w| w[1].0 - w[0].1).collect();
            json!({
                "before_first_ms": jobs.first().map(|j| round(j.0 - launch_ms, 1)),
                "gaps_ms_total": round(gaps.iter().sum::<f64>(), 1),
                "gap_ms_max": round(gaps.iter().copied().fold(0.0, f64::max), 1),
                "after_last_ms": jobs.last().map(|j| round(last - j.1, 1)),
            })
        })
        .collect();
    Ok(json!({
        "idle": idle,
        "first_start_s": round((first - launch_ms) / 1e3, 4),
        "wall_s": round(wall_ms / 1e3, 4),
        "busy_s": round(busy_ms / 1e3, 4),
        "utilisation": round(busy_ms / (servers.len() as f64 * wall_ms), 4),
        "client_makespan_s": round(run.makespan_s, 4),
        "cpu_s": round(run.cpu_s, 4),
        "peak_rss_kib": run.peak_rss_kib,
        "per_server": run.per_server,
    }))
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// `execution_start` .. `execution_success` of `prompt` on `address` (`host:port`).
fn history(address: &str, prompt: &str) -> Result<Busy, String> {
    let body = get(address, &format!("/history/{prompt}"))?;
    let value: Value =
        serde_json::from_str(&body).map_err(|e| format!("/history/{prompt} on {address}: {e}"))?;
    let messages = value[prompt]["status"]["messages"]
        .as_array()
        .ok_or_else(|| format!("/history/{prompt} on {address} has no status.messages"))?;
    let stamp = |kind: &str| {
        messages
            .iter()
            .find(|m| m[0] == kind)
            .and_then(|m| m[1]["timestamp"].as_f64())
            .ok_or_else(|| format!("prompt {prompt} on {address}: no {kind}"))
    };
    Ok(Busy {
        start_ms: stamp("execution_start")?,
        end_ms: stamp("execution_success")?,
    })
}

/// A plain HTTP/1.1 GET on loopback, the body as text.
fn get(address: &str, path: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect(address).map_err(|e| format!("connect {address}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("GET {path} on {address}: {e}"))?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response)
        .map_err(|e| format!("GET {path} on {address}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path} on {address}: no header end"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "GET {path} on {address}: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("GET {path} on {address}: chunked answer not read"));
    }
    Ok(body.to_owned())
}
