//! The harness: every scenario, every client, each run in fresh processes; tables, then JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::child::{self, Servers};
use crate::figures::{Derived, Outcome, RunFigures, Table, ideal_s, mib, ordinals, round, secs};
use crate::python::{self, PACKAGE, Python};

const COMMAND: &str = "cargo run --release -p comfy-proxy-bench --bin e2e";
const SMALL: usize = 8 << 10;
const LARGE: usize = 4 << 20;
/// The job counts of scenario 4's two runs.
const LARGE_JOBS: (usize, usize) = (50, 200);

#[derive(Clone, Copy, PartialEq)]
enum Target {
    None,
    /// Utilisation at least this.
    Utilisation(f64),
    /// Makespan / ideal at most this.
    OverIdeal(f64),
}

struct Scenario {
    key: &'static str,
    title: String,
    delays_ms: Vec<u64>,
    jobs: usize,
    image_bytes: usize,
    /// Write each job's image to a temporary directory as it is reported.
    write: bool,
    target: Target,
}

fn scenarios() -> Vec<Scenario> {
    let large = |key, jobs| Scenario {
        key,
        title: format!(
            "{key}. 4 MiB images: 4 servers at 50 ms, {jobs} jobs, each image written to a \
             temporary directory as it is reported, then dropped"
        ),
        delays_ms: vec![50; 4],
        jobs,
        image_bytes: LARGE,
        write: true,
        target: Target::None,
    };
    vec![
        Scenario {
            key: "0",
            title: "0. client cost: 4 servers at 30 ms, 400 jobs, 8 KiB images".into(),
            delays_ms: vec![30; 4],
            jobs: 400,
            image_bytes: SMALL,
            write: false,
            target: Target::Utilisation(0.98),
        },
        Scenario {
            key: "1",
            title: "1. client overhead: 4 servers, no delay, 2000 jobs, 8 KiB images".into(),
            delays_ms: vec![0; 4],
            jobs: 2000,
            image_bytes: SMALL,
            write: false,
            target: Target::None,
        },
        Scenario {
            key: "2",
            title: "2. utilisation: 4 servers at 100 ms, 200 jobs, 8 KiB images".into(),
            delays_ms: vec![100; 4],
            jobs: 200,
            image_bytes: SMALL,
            write: false,
            target: Target::Utilisation(0.98),
        },
        Scenario {
            key: "3",
            title: "3. heterogeneous: 4 servers at 50/100/150/200 ms, 200 jobs, 8 KiB images"
                .into(),
            delays_ms: vec![50, 100, 150, 200],
            jobs: 200,
            image_bytes: SMALL,
            write: false,
            target: Target::OverIdeal(1.05),
        },
        large("4a", LARGE_JOBS.0),
        large("4b", LARGE_JOBS.1),
    ]
}

const CLIENTS: [&str; 4] = ["smol", "smol-1thread", "async-std", "original"];

/// The clients a scenario runs: scenario 0, the client's cost, also measures the floor
/// (`floor.rs`: the sockets and frames alone on smol's runtime, no client).
fn clients(scenario: &Scenario) -> Vec<&'static str> {
    let mut clients = CLIENTS.to_vec();
    if scenario.key == "0" {
        clients.push("floor");
    }
    clients
}

/// What to run.
pub struct Options {
    /// Skip the original.
    pub no_python: bool,
    /// Only these scenarios (keys such as `0`, `4a`); every one when empty.
    pub only: Vec<String>,
    /// The events our pools report (`all`, `outputs`, `reports`): every client reads only the
    /// jobs' reports, so the others are made and dropped unless this says `reports`.
    pub events: String,
}

/// Runs everything; `Err` if one of our runs failed or a figure could not be measured.
pub fn main(options: &Options) -> Result<(), String> {
    let no_python = options.no_python;
    let target = target_dir()?;
    let machine = machine();
    let date = today();
    println!("comfy-proxy end to end: {COMMAND}");
    println!(
        "{date}, {} cores ({}), {} memory",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["memory"].as_str().unwrap_or("unknown")
    );
    let python: Result<Python, String> = if no_python {
        Err("skipped (--no-python)".into())
    } else {
        python::setup(&target.join("e2e-python"))
    };
    match &python {
        Ok(p) => println!("original: {PACKAGE} ({})", p.versions),
        Err(why) => println!("original: not run: {why}"),
    }
    println!(
        "Our pools report {} events (--events); every client reads the reports alone.",
        options.events
    );
    println!(
        "Each run gets fresh processes: the mock servers' (smol, loopback) and the client's. \
         Makespan runs from before the client connects to its last job's end."
    );

    let mut results = Vec::new();
    let mut rss: BTreeMap<&str, Vec<Option<u64>>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut write_baseline = Value::Null;
    let chosen = scenarios()
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|k| k == s.key));
    for scenario in chosen {
        println!();
        println!("== {}", scenario.title);
        let ideal = ideal_s(&scenario.delays_ms, scenario.jobs);
        let deadline = Duration::from_secs_f64(10.0 * ideal + 30.0);
        if scenario.key == "4a" {
            let (cpu, wall) = write_cost(LARGE_JOBS.0)?;
            println!(
                "  (writing a 4 MiB file to {} costs this machine {} CPU and {} wall, \
                 measured by the harness on {} files; every client below pays it per job)",
                std::env::temp_dir().display(),
                secs(cpu),
                secs(wall),
                LARGE_JOBS.0
            );
            write_baseline =
                json!({"cpu_per_file_s": round(cpu, 5), "wall_per_file_s": round(wall, 5)});
        }
        let mut outcomes = Vec::new();
        for client in clients(&scenario) {
            let outcome = if client == "original" {
                match &python {
                    Ok(p) => run_python(p, &scenario, deadline)?,
                    Err(_) => Outcome::Unavailable,
                }
            } else {
                Outcome::Ran(run_rust(client, &scenario, &options.events, deadline)?)
            };
            let derived = match &outcome {
                Outcome::Ran(figures) => Some(
                    Derived::new(figures.clone(), &scenario.delays_ms, scenario.jobs)
                        .map_err(|e| format!("scenario {}, {client}: {e}", scenario.key))?,
                ),
                _ => None,
            };
            if let Outcome::Error(e) = &outcome {
                errors.push(format!("scenario {}, original: {e}", scenario.key));
            }
            if scenario.key.starts_with('4') {
                rss.entry(client)
                    .or_default()
                    .push(derived.as_ref().map(|d| d.run.peak_rss_kib));
            }
            outcomes.push((client, outcome, derived));
        }
        results.push(print_scenario(&scenario, ideal, &outcomes));
    }
    println!();
    let flat = print_flatness(&rss);
    let summary = json!({
        "bench": "e2e",
        "command": COMMAND,
        "date": date,
        "machine": machine,
        "original": match &python {
            Ok(p) => json!({"package": PACKAGE, "versions": p.versions}),
            Err(why) => json!({"package": PACKAGE, "unavailable": why}),
        },
        "scenarios": results,
        "peak_rss_50_to_200_jobs": flat,
        "write_4mib_file": write_baseline,
    });
    println!();
    println!("{summary}");
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("the original failed:\n{}", errors.join("\n")))
    }
}

/// `target/`: two levels above this binary (`target/release/e2e`).
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no target directory above {}", exe.display()))
}

/// CPU time and wall time of writing one 4 MiB file to the temporary directory, over `files`.
fn write_cost(files: usize) -> Result<(f64, f64), String> {
    let dir = WriteDir(
        std::env::temp_dir().join(format!("comfy-proxy-e2e-{}-write-cost", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).map_err(|e| format!("create {}: {e}", dir.0.display()))?;
    let data: Vec<u8> = (0..LARGE).map(|i| (i * 7 + i / 4099) as u8).collect();
    let before = crate::usage()?;
    let start = Instant::now();
    for i in 0..files {
        let path = dir.0.join(format!("file-{i}"));
        std::fs::write(&path, &data).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = crate::usage()?.cpu_s - before.cpu_s;
    dir.check(files, LARGE)?;
    Ok((cpu / files as f64, wall / files as f64))
}

/// A temporary directory for one run's images, and whether the run wrote them all.
struct WriteDir(PathBuf);

impl WriteDir {
    fn new(scenario: &Scenario, client: &str) -> Result<Option<Self>, String> {
        if !scenario.write {
            return Ok(None);
        }
        let dir = std::env::temp_dir().join(format!(
            "comfy-proxy-e2e-{}-{}-{client}",
            std::process::id(),
            scenario.key
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Some(Self(dir)))
    }

    /// Every image is there, at its size.
    fn check(&self, jobs: usize, image_bytes: usize) -> Result<(), String> {
        let entries = std::fs::read_dir(&self.0).map_err(|e| e.to_string())?;
        let mut files = 0;
        for entry in entries {
            let meta = entry.map_err(|e| e.to_string())?.metadata();
            if meta.map_err(|e| e.to_string())?.len() as usize == image_bytes {
                files += 1;
            }
        }
        if files == jobs {
            Ok(())
        } else {
            Err(format!(
                "{files} images of {image_bytes} bytes written in {} for {jobs} jobs",
                self.0.display()
            ))
        }
    }
}

impl Drop for WriteDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_rust(
    runtime: &str,
    scenario: &Scenario,
    events: &str,
    deadline: Duration,
) -> Result<RunFigures, String> {
    let context = |e: String| format!("scenario {}, {runtime}: {e}", scenario.key);
    let servers = Servers::start(&scenario.delays_ms, scenario.image_bytes).map_err(context)?;
    let dir = WriteDir::new(scenario, runtime).map_err(context)?;
    let exe = std::env::current_exe().map_err(|e| context(e.to_string()))?;
    let mut cmd = Command::new(exe);
    cmd.args(["client", "--runtime", runtime, "--servers", &servers.list()])
        .args(["--jobs", &scenario.jobs.to_string()])
        .args(["--image-bytes", &scenario.image_bytes.to_string()])
        .args(["--events", events]);
    if let Some(dir) = &dir {
        cmd.arg("--write-dir").arg(&dir.0);
    }
    let end = child::run(cmd, deadline).map_err(context)?;
    drop(servers);
    match end.status {
        None => Err(context(format!(
            "no result within {}; killed\n{}",
            secs(deadline.as_secs_f64()),
            end.stderr_tail()
        ))),
        Some(status) if !status.success() => Err(context(format!(
            "the client exited with {status}\n{}",
            end.stderr_tail()
        ))),
        Some(_) => {
            let line = end
                .last_line()
                .ok_or_else(|| context("no figures".into()))?;
            let figures: RunFigures = serde_json::from_str(line)
                .map_err(|e| context(format!("figures {line:?}: {e}")))?;
            if let Some(dir) = &dir {
                dir.check(scenario.jobs, scenario.image_bytes)
                    .map_err(context)?;
            }
            Ok(figures)
        }
    }
}

fn run_python(python: &Python, scenario: &Scenario, deadline: Duration) -> Result<Outcome, String> {
    let context = |e: String| format!("scenario {}, original: {e}", scenario.key);
    let servers = Servers::start(&scenario.delays_ms, scenario.image_bytes).map_err(context)?;
    let dir = WriteDir::new(scenario, "original").map_err(context)?;
    let outcome = python
        .run(
            &servers.list(),
            scenario.jobs,
            scenario.image_bytes,
            dir.as_ref().map(|d| d.0.as_path()),
            deadline,
        )
        .map_err(context)?;
    drop(servers);
    if let (Outcome::Ran(_), Some(dir)) = (&outcome, &dir)
        && let Err(e) = dir.check(scenario.jobs, scenario.image_bytes)
    {
        return Ok(Outcome::Error(e));
    }
    Ok(outcome)
}

fn mark(value: String, met: bool) -> String {
    format!("{value} {}", if met { "(met)" } else { "(MISSED)" })
}

/// Prints a scenario's table and notes; returns its JSON.
fn print_scenario(
    scenario: &Scenario,
    ideal: f64,
    outcomes: &[(&str, Outcome, Option<Derived>)],
) -> Value {
    let header: Vec<&str> = outcomes.iter().map(|(c, _, _)| *c).collect();
    let mut table = Table::new(&header);
    let cells = |f: &dyn Fn(&Derived) -> String| -> Vec<String> {
        outcomes
            .iter()
            .map(|(_, outcome, derived)| match (outcome, derived) {
                (_, Some(d)) => f(d),
                (Outcome::Hang { .. }, _) => "hang".into(),
                (Outcome::Error(_), _) => "error".into(),
                _ => "not run".into(),
            })
            .collect()
    };
    table.row("jobs/s", cells(&|d| format!("{:.1}", d.jobs_per_s)));
    table.row("makespan", cells(&|d| secs(d.run.makespan_s)));
    let over_label = if ideal > 0.0 {
        format!("makespan / ideal ({})", secs(ideal))
    } else {
        "makespan / ideal (ideal 0)".into()
    };
    let over_label = match scenario.target {
        Target::OverIdeal(t) => format!("{over_label}, target <= {t}"),
        _ => over_label,
    };
    table.row(
        &over_label,
        cells(&|d| match (d.over_ideal, scenario.target) {
            (None, _) => "n/a".into(),
            (Some(v), Target::OverIdeal(t)) => mark(format!("{v:.3}"), v <= t),
            (Some(v), _) => format!("{v:.3}"),
        }),
    );
    let util_label = match scenario.target {
        Target::Utilisation(t) => format!("server utilisation, target >= {t}"),
        _ => "server utilisation".into(),
    };
    table.row(
        &util_label,
        cells(&|d| match (d.utilisation, scenario.target) {
            (None, _) => "n/a".into(),
            (Some(v), Target::Utilisation(t)) => mark(format!("{v:.3}"), v >= t),
            (Some(v), _) => format!("{v:.3}"),
        }),
    );
    table.row("client CPU per job", cells(&|d| secs(d.cpu_per_job_s)));
    table.row(
        "client CPU per job, start-up off",
        cells(&|d| d.steady_cpu_per_job_s.map_or("n/a".into(), secs)),
    );
    table.row(
        "first job done after",
        cells(&|d| d.run.first_done_s.map_or("n/a".into(), secs)),
    );
    // The original's CPU per job with start-up off, from its trace when it hung.
    let original_cpu = outcomes.iter().find(|(c, _, _)| *c == "original").and_then(
        |(_, outcome, derived)| match (outcome, derived) {
            (_, Some(d)) => d.steady_cpu_per_job_s,
            (Outcome::Hang { trace, .. }, _) => trace.steady_cpu_per_job_s(),
            _ => None,
        },
    );
    table.row(
        "original / ours, CPU per job, start-up off",
        outcomes
            .iter()
            .map(|(client, _, derived)| {
                match (
                    derived.as_ref().and_then(|d| d.steady_cpu_per_job_s),
                    original_cpu,
                ) {
                    _ if *client == "original" => "-".into(),
                    (Some(ours), Some(orig)) => format!("{:.1}x", orig / ours),
                    _ => "n/a".into(),
                }
            })
            .collect(),
    );
    let floor_cpu = outcomes
        .iter()
        .find(|(c, _, _)| *c == "floor")
        .and_then(|(_, _, d)| d.as_ref()?.steady_cpu_per_job_s);
    if let Some(floor) = floor_cpu {
        table.row(
            "ours - floor, CPU per job, start-up off",
            outcomes
                .iter()
                .map(|(client, _, derived)| {
                    match derived.as_ref().and_then(|d| d.steady_cpu_per_job_s) {
                        _ if matches!(*client, "original" | "floor") => "-".into(),
                        Some(ours) => secs(ours - floor),
                        None => "n/a".into(),
                    }
                })
                .collect(),
        );
    }
    table.row("client peak RSS", cells(&|d| mib(d.run.peak_rss_kib)));
    table.row(
        "jobs per server",
        cells(&|d| {
            let v: Vec<String> = d.run.per_server.iter().map(usize::to_string).collect();
            v.join("/")
        }),
    );
    let original = outcomes
        .iter()
        .find(|(c, _, _)| *c == "original")
        .and_then(|(_, _, d)| d.as_ref());
    let mut ratios = serde_json::Map::new();
    let ratio_cells: Vec<String> = outcomes
        .iter()
        .map(|(client, _, derived)| match (derived, original) {
            _ if *client == "original" => "-".into(),
            (Some(ours), Some(orig)) => {
                let r = ours.jobs_per_s / orig.jobs_per_s;
                ratios.insert((*client).into(), json!(round(r, 3)));
                format!("{r:.2}x")
            }
            _ => {
                ratios.insert((*client).into(), Value::Null);
                "n/a".into()
            }
        })
        .collect();
    table.row("ours / original, jobs/s", ratio_cells);
    table.print();
    if floor_cpu.is_some() {
        println!(
            "  floor: not a client; the sockets and frames alone on one thread of smol's runtime \
             (one POST and its answer per job, frames cut at their headers, no JSON, no pool): \
             the least any client on this runtime spends, so original / floor is the most any \
             can be below the original"
        );
    }
    let mut runs = serde_json::Map::new();
    for (client, outcome, derived) in outcomes {
        let value = match (outcome, derived) {
            (_, Some(d)) => d.json(),
            (Outcome::Hang { trace, deadline_s }, _) => {
                println!(
                    "  original: hang: {} of {} jobs complete at the {} deadline \
                     (10 x ideal + 30 s); killed",
                    trace.done,
                    scenario.jobs,
                    secs(*deadline_s)
                );
                if let Some(t) = trace.last_done_s.filter(|_| trace.done > 0) {
                    println!(
                        "    the last of those at {} ({:.1} jobs/s over them; partial, not compared)",
                        secs(t),
                        trace.done as f64 / t
                    );
                }
                if let Some(cpu) = trace.steady_cpu_per_job_s() {
                    println!(
                        "    client CPU per job over those, start-up off (from the first job's end \
                         to the last's): {}",
                        secs(cpu)
                    );
                }
                if !trace.empty.is_empty() {
                    println!(
                        "    {} job(s) ended without an image, their callers waiting for ever; \
                         which job of its server each was: {}",
                        trace.empty.len(),
                        ordinals(&trace.empty)
                    );
                }
                if !trace.stuck.is_empty() {
                    println!(
                        "    {} job(s) never ended on the client, each holding its server's \
                         worker; which job of its server each was: {}",
                        trace.stuck.len(),
                        ordinals(&trace.stuck)
                    );
                }
                json!({"status": "hang", "done": trace.done, "last_done_s": trace.last_done_s,
                       "steady_cpu_per_job_us": trace.steady_cpu_per_job_s().map(|c| round(c * 1e6, 1)),
                       "jobs_without_image": trace.empty.len(), "jobs_never_ended": trace.stuck.len(),
                       "deadline_s": deadline_s})
            }
            (Outcome::Error(e), _) => {
                println!("  {client}: error: {e}");
                json!({"status": "error", "message": e})
            }
            _ => json!({"status": "not run"}),
        };
        runs.insert((*client).into(), value);
    }
    json!({
        "key": scenario.key,
        "title": scenario.title,
        "servers": scenario.delays_ms.len(),
        "delays_ms": scenario.delays_ms,
        "jobs": scenario.jobs,
        "image_bytes": scenario.image_bytes,
        "ideal_s": round(ideal, 4),
        "runs": runs,
        "ours_over_original_jobs_per_s": ratios,
    })
}

/// Scenario 4's verdict: peak RSS at 50 and at 200 jobs. A client that kept each image would
/// grow by 150 images between the two; flat means it grew by less than a tenth of that.
fn print_flatness(rss: &BTreeMap<&str, Vec<Option<u64>>>) -> Value {
    let extra = (LARGE_JOBS.1 - LARGE_JOBS.0) as f64;
    let keep_all_kib = extra * (LARGE / 1024) as f64;
    println!(
        "== 4. peak RSS from {} to {} jobs of 4 MiB (keeping every image would add {}; \
         flat: under a tenth of that)",
        LARGE_JOBS.0,
        LARGE_JOBS.1,
        mib(keep_all_kib as u64)
    );
    let mut out = serde_json::Map::new();
    for client in CLIENTS {
        match rss.get(client).map(Vec::as_slice) {
            Some([Some(a), Some(b)]) => {
                let growth = *b as f64 - *a as f64;
                let per_job = growth / extra / (LARGE / 1024) as f64;
                let flat = growth < keep_all_kib / 10.0;
                println!(
                    "  {client:<12} {} -> {}: {:+.1} MiB, {:+.1}% of an image per extra job ({})",
                    mib(*a),
                    mib(*b),
                    growth / 1024.0,
                    per_job * 100.0,
                    if flat { "flat" } else { "GROWS" }
                );
                out.insert(
                    client.into(),
                    json!({"jobs_50_kib": a, "jobs_200_kib": b,
                           "growth_per_job_of_image": round(per_job, 4), "flat": flat}),
                );
            }
            _ => {
                println!("  {client:<12} n/a (a run did not finish)");
                out.insert(client.into(), Value::Null);
            }
        }
    }
    Value::Object(out)
}

/// The CPU model, cores and memory, as the machine reports them.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map(|s| s.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    json!({"cpu": cpu, "cores": cores, "memory": memory, "arch": std::env::consts::ARCH})
}

/// Today's date (UTC), `YYYY-MM-DD`.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
