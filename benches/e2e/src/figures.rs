//! What a run measured, what follows from it, and how it is printed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What one client run measured, as its process prints it (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFigures {
    /// Jobs run, every one successful.
    pub jobs: usize,
    /// From before the client started to the last job's end, in seconds.
    pub makespan_s: f64,
    /// Jobs run by each server, in the servers' order.
    pub per_server: Vec<usize>,
    /// The client's user plus system CPU time over the run, in seconds.
    pub cpu_s: f64,
    /// The client process's peak resident set, in KiB.
    pub peak_rss_kib: u64,
    /// From before the client started to the end of its first job, in seconds.
    #[serde(default)]
    pub first_done_s: Option<f64>,
    /// The client's CPU time from the end of its first job to the end of its last (start-up
    /// taken off), in seconds.
    #[serde(default)]
    pub steady_cpu_s: Option<f64>,
    /// Each job's server index and prompt id (real-server runs, for `/history`).
    #[serde(default)]
    pub prompts: Vec<(usize, String)>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Every job ended.
    Ran(RunFigures),
    /// Still running at the deadline, and killed (the original only).
    Hang {
        /// Where its jobs got to.
        trace: Trace,
        /// The deadline, in seconds.
        deadline_s: f64,
    },
    /// It failed (the original only; our clients' failures stop the harness).
    Error(String),
    /// Not run: Python or the package could not be had.
    Unavailable,
}

/// Where the original's jobs got to, from its driver's standard error: `start ADDR N` when the
/// Nth job of a server starts, `image ADDR N` when it yields its image, `empty ADDR N` when it
/// ends without one, `done K SECONDS CPU` when the Kth job is complete (CPU: the process's
/// user + system seconds then).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Jobs complete.
    pub done: usize,
    /// When the last of them completed, in seconds from the start.
    pub last_done_s: Option<f64>,
    /// The process's CPU time when the first job completed, and when the last did (seconds).
    pub cpu_at_done_s: Option<(f64, f64)>,
    /// Per-server ordinals (1 = the server's first job) of the jobs that ended without an image.
    pub empty: Vec<u32>,
    /// Per-server ordinals of the jobs that started and never ended.
    pub stuck: Vec<u32>,
}

impl Trace {
    /// Reads the driver's lines.
    pub fn parse(stderr: &str) -> Self {
        let mut trace = Self::default();
        let mut open: BTreeMap<(String, u32), ()> = BTreeMap::new();
        for line in stderr.lines() {
            let mut words = line.split_whitespace();
            let (Some(kind), Some(a), Some(b)) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            match (kind, b.parse::<u32>()) {
                ("done", _) => {
                    if let (Ok(k), Ok(t)) = (a.parse(), b.parse()) {
                        trace.done = k;
                        trace.last_done_s = Some(t);
                    }
                    if let Some(Ok(cpu)) = words.next().map(str::parse::<f64>) {
                        let first = trace.cpu_at_done_s.map_or(cpu, |(f, _)| f);
                        trace.cpu_at_done_s = Some((first, cpu));
                    }
                }
                ("start", Ok(n)) => {
                    open.insert((a.to_owned(), n), ());
                }
                ("image", Ok(n)) => {
                    open.remove(&(a.to_owned(), n));
                }
                ("empty", Ok(n)) => {
                    open.remove(&(a.to_owned(), n));
                    trace.empty.push(n);
                }
                _ => {}
            }
        }
        trace.stuck = open.into_keys().map(|(_, n)| n).collect();
        trace
    }
}

impl Trace {
    /// CPU time per job from the first job's end to the last's, over the jobs done.
    pub fn steady_cpu_per_job_s(&self) -> Option<f64> {
        let (first, last) = self.cpu_at_done_s?;
        (self.done > 1).then(|| (last - first) / (self.done - 1) as f64)
    }
}

/// `#1 x4, #2`: per-server ordinals, counted.
pub fn ordinals(list: &[u32]) -> String {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for n in list {
        *counts.entry(*n).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(n, c)| {
            if *c == 1 {
                format!("#{n}")
            } else {
                format!("#{n} x{c}")
            }
        })
        .collect();
    parts.join(", ")
}

/// The ideal makespan: every server busy from start to end, the work split in proportion to
/// speed, `M / sum(1 / d_i)`; zero when any server takes no time.
pub fn ideal_s(delays_ms: &[u64], jobs: usize) -> f64 {
    if delays_ms.contains(&0) {
        return 0.0;
    }
    let rate: f64 = delays_ms.iter().map(|&d| 1000.0 / d as f64).sum();
    jobs as f64 / rate
}

/// A run's figures and those derived from them.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The measured figures.
    pub run: RunFigures,
    /// Jobs per second over the makespan.
    pub jobs_per_s: f64,
    /// Makespan / ideal; `None` when the ideal is zero.
    pub over_ideal: Option<f64>,
    /// Sum of server busy time / (servers x makespan); `None` when servers take no time.
    pub utilisation: Option<f64>,
    /// CPU time per job, in seconds.
    pub cpu_per_job_s: f64,
    /// CPU time per job after the first job's end (start-up taken off), in seconds.
    pub steady_cpu_per_job_s: Option<f64>,
}

impl Derived {
    /// Checks the figures and derives the rest; `Err` if anything is missing or inconsistent.
    pub fn new(run: RunFigures, delays_ms: &[u64], jobs: usize) -> Result<Self, String> {
        if run.jobs != jobs {
            return Err(format!("ran {} jobs of {jobs}", run.jobs));
        }
        if run.per_server.len() != delays_ms.len() {
            return Err(format!(
                "jobs counted for {} servers of {}",
                run.per_server.len(),
                delays_ms.len()
            ));
        }
        if run.per_server.iter().sum::<usize>() != jobs {
            return Err(format!(
                "jobs per server {:?} do not add up to {jobs}",
                run.per_server
            ));
        }
        if !(run.makespan_s > 0.0 && run.cpu_s > 0.0 && run.peak_rss_kib > 0) {
            return Err(format!("a figure was not measured: {run:?}"));
        }
        let ideal = ideal_s(delays_ms, jobs);
        let busy_s: f64 = run
            .per_server
            .iter()
            .zip(delays_ms)
            .map(|(&n, &d)| n as f64 * d as f64 / 1000.0)
            .sum();
        let utilisation = (busy_s > 0.0 || ideal > 0.0)
            .then(|| busy_s / (delays_ms.len() as f64 * run.makespan_s));
        Ok(Self {
            jobs_per_s: jobs as f64 / run.makespan_s,
            over_ideal: (ideal > 0.0).then(|| run.makespan_s / ideal),
            utilisation,
            cpu_per_job_s: run.cpu_s / jobs as f64,
            steady_cpu_per_job_s: run
                .steady_cpu_s
                .filter(|_| jobs > 1)
                .map(|c| c / (jobs - 1) as f64),
            run,
        })
    }

    /// The figures as JSON.
    pub fn json(&self) -> Value {
        json!({
            "status": "ran",
            "jobs_per_s": round(self.jobs_per_s, 3),
            "makespan_s": round(self.run.makespan_s, 4),
            "makespan_over_ideal": self.over_ideal.map(|v| round(v, 4)),
            "utilisation": self.utilisation.map(|v| round(v, 4)),
            "cpu_s": round(self.run.cpu_s, 4),
            "cpu_per_job_us": round(self.cpu_per_job_s * 1e6, 1),
            "steady_cpu_per_job_us": self.steady_cpu_per_job_s.map(|c| round(c * 1e6, 1)),
            "first_done_s": self.run.first_done_s.map(|v| round(v, 4)),
            "peak_rss_kib": self.run.peak_rss_kib,
            "per_server": self.run.per_server,
        })
    }
}

/// `v` to `digits` decimals, for JSON that reads well.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Seconds, with a unit that suits them.
pub fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A table: a label column and one column per client.
pub struct Table {
    header: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(columns: &[&str]) -> Self {
        Self {
            header: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, label: &str, cells: Vec<String>) {
        self.rows.push((label.to_owned(), cells));
    }

    /// Prints it with aligned columns.
    pub fn print(&self) {
        let label_w = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for (_, cells) in &self.rows {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |label: &str, cells: &[String]| {
            let mut s = format!("  {label:<label_w$}");
            for (c, w) in cells.iter().zip(&widths) {
                s.push_str(&format!("  {c:>w$}"));
            }
            println!("{}", s.trim_end());
        };
        line("", &self.header);
        for (label, cells) in &self.rows {
            line(label, cells);
        }
    }
}
