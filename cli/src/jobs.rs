//! Running jobs on a pool of servers: the flags `generate` and `run` share, the pool's event
//! loop, output files, result lines and the per-server tally.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use comfy_proxy::address::parse_addresses;
use comfy_proxy::pool::JobId;
use comfy_proxy::session::{Deadlines, Event};
use comfy_proxy::text::{terminal_safe_json, terminal_safe_line};
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_smol::{ClientConfig, JobReport, PoolConfig, PoolEvent, Smol, Upload};
use futures_util::StreamExt;
use smol::Executor;

use crate::error::{Result, usage};
use crate::interrupt::{self, Interrupt};
use crate::output;
use crate::progress::Progress;

/// The flags of a command that runs jobs on servers.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// The servers: a comma list of HOST[:PORT], port ranges (host:8188-8191), IPv6 in brackets,
    /// http:// or https:// with a base path. Defaults to $COMFY_SERVERS. $COMFY_TOKEN, when set,
    /// is sent as a bearer token.
    #[arg(long, value_name = "ADDRS", env = "COMFY_SERVERS")]
    pub server: Option<String>,
    /// How many jobs to run, each a distinct image: every job gets fresh random seeds (generate:
    /// SEED+i with --seed; run: in every literal seed and noise_seed input not set by --set).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Where to write the output files (images, video, audio...), as <job>-<node>-<index>.<ext>
    /// with the extension told by the content (created if missing; files of the same name are
    /// replaced). Text outputs are printed.
    #[arg(long, value_name = "DIR", default_value = "comfy-proxy-out")]
    pub out: PathBuf,
    /// Print one JSON line per finished job on stdout instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Give up on a job that has not finished this many seconds after it was sent to a server
    /// (each attempt), on an attempt whose fate its server has not told within that long after
    /// losing track of it, and on jobs waiting that long while every server is out of service.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Record the traffic as comfy-transcript/1 files in DIR, one per server connection (each
    /// holds the jobs that ran on that server), for `comfy-proxy replay` and for fixtures.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Do not check jobs against each server's object_info before sending them. By default a
    /// job goes only to servers that can run it, and a job none can run fails at once with the
    /// validation errors.
    #[arg(long)]
    pub no_validate: bool,
    /// `--ca-cert`, `--insecure`.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("{text:?}: give a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Where and how jobs run, checked before anything is sent.
pub struct Plan {
    /// The servers.
    pub servers: Vec<ServerAddress>,
    /// The settings of every server's client.
    pub template: ClientConfig,
    /// The output directory (not yet created).
    pub out: PathBuf,
    /// One JSON line per job on stdout.
    pub json: bool,
    /// No progress.
    pub quiet: bool,
    /// `--timeout`: also how long jobs wait for a server when every one is out of service, and
    /// for the fate of an attempt its server lost track of.
    pub timeout: Option<Duration>,
    /// Validate jobs against each server's object_info and route them by it.
    pub validate: bool,
}

impl Plan {
    /// Checks the flags and the environment: the servers, `$COMFY_TOKEN`, `--record`.
    pub fn from_args(args: &JobArgs) -> Result<Self> {
        let spec = args.server.as_deref().unwrap_or("");
        if spec.trim().is_empty() {
            return Err(usage(
                "no server given: pass --server HOST:PORT[,...] or set COMFY_SERVERS",
            ));
        }
        let servers = parse_addresses(spec).map_err(|e| usage(format!("bad --server: {e}")))?;
        let mut template = crate::tls::client_config(servers[0].clone(), &args.tls)?;
        if let Some(total) = args.timeout {
            template = template.with_deadlines(Deadlines::none().total(total));
            // No single exchange may outlast the job's own deadline.
            template.http_timeout = template.http_timeout.min(total);
            template.connect_timeout = template.connect_timeout.min(total);
        }
        if let Some(dir) = &args.record {
            std::fs::create_dir_all(dir).map_err(|e| {
                usage(format!(
                    "cannot create the --record directory {}: {e}",
                    dir.display()
                ))
            })?;
            template = template.with_recording(dir);
        }
        Ok(Self {
            servers,
            template,
            out: args.out.clone(),
            json: args.json,
            quiet: args.quiet,
            timeout: args.timeout,
            validate: !args.no_validate,
        })
    }
}

/// The smol runtime, for the mock servers the command starts.
pub fn kit() -> Arc<Smol> {
    Arc::new(Smol)
}

/// What the jobs came to.
#[derive(Debug, Default)]
pub struct Tally {
    /// Jobs that succeeded.
    pub succeeded: usize,
    /// Jobs that failed.
    pub failed: usize,
    /// Jobs that had not ended when Ctrl-C stopped the run (cancelled on their servers).
    pub cancelled: usize,
    /// Ctrl-C stopped the run.
    pub interrupted: bool,
    /// Per server (in the plan's order): jobs finished there, and their run time there (from
    /// `execution_start` to the end) added up.
    pub per_server: Vec<(usize, Duration)>,
    /// From the first submission to the last end.
    pub elapsed: Duration,
}

impl Tally {
    /// 0 when every job succeeded, 1 when any failed, 130 when interrupted.
    pub fn exit_code(&self) -> ExitCode {
        if self.interrupted {
            ExitCode::from(interrupt::EXIT_CODE)
        } else if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }
}

/// Runs `workflows` on the plan's servers, writes their output files, prints their texts, prints a line per job (JSON
/// with `--json`) and, unless quiet, a summary per server. Blocks until every job has ended.
pub fn run(plan: &Plan, workflows: Vec<Workflow>) -> Result<Tally> {
    run_with_uploads(plan, workflows, Vec::new())
}

/// [`run`], where every job first uploads `uploads` to the server that runs it.
pub fn run_with_uploads(
    plan: &Plan,
    workflows: Vec<Workflow>,
    uploads: Vec<Upload>,
) -> Result<Tally> {
    fs::create_dir_all(&plan.out).map_err(|e| {
        usage(format!(
            "cannot create the output directory {}: {e}; choose another --out",
            plan.out.display()
        ))
    })?;
    let progress = Progress::new(plan.quiet, workflows.len(), &plan.servers);
    // The pool's tasks run on an executor of this run's own: once the pool is dropped, its
    // being empty says that every cancel was sent and answered (or gave up).
    let executor = Arc::new(Executor::new());
    let interrupt = Interrupt::install();
    let run = drive(plan, workflows, uploads, progress, &executor, interrupt);
    let tally = smol::block_on(executor.run(run));
    Ok(tally)
}

/// How long an interrupted run waits for its cancels (the interrupt and queue-delete requests
/// to every server) before it exits all the same.
const CANCEL_GRACE: Duration = Duration::from_millis(2500);
/// How long a finished run waits for its connections to close.
const CLOSE_GRACE: Duration = Duration::from_millis(300);

/// Waits until every task on `executor` has ended, `limit` at most; whether they all did.
async fn settle(executor: &Executor<'static>, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while !executor.is_empty() {
        if Instant::now() >= until {
            return false;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    true
}

/// What the run's loop waits for next.
enum Next {
    Event(Option<Box<PoolEvent>>),
    Interrupted,
}

async fn drive(
    plan: &Plan,
    workflows: Vec<Workflow>,
    uploads: Vec<Upload>,
    mut progress: Progress,
    executor: &Arc<Executor<'static>>,
    interrupt: Interrupt,
) -> Tally {
    let total = workflows.len();
    let started = Instant::now();
    let mut config = PoolConfig::new(&plan.servers, &plan.template);
    config.route_by_capability = plan.validate;
    if let Some(timeout) = plan.timeout {
        let scheduler = &mut config.scheduler;
        scheduler.all_down_give_up = scheduler.all_down_give_up.min(timeout);
        scheduler.lookup_give_up = scheduler.lookup_give_up.min(timeout);
    }
    let rt = Arc::new(Smol::with_executor(executor.clone()));
    let (pool, mut events) = comfy_proxy_smol::pool_with(rt, config);
    // Every job reports to `events`: its handle is dropped at once. A submission waits only
    // while the pool's task catches up, never for `events` to be read.
    for wf in workflows {
        if pool.submit_with_uploads(wf, uploads.clone()).await.is_err() {
            break;
        }
    }
    pool.close();
    let mut tally = Tally {
        per_server: vec![(0, Duration::ZERO); plan.servers.len()],
        ..Tally::default()
    };
    // When each job's current attempt started running on its server.
    let mut running: HashMap<JobId, Instant> = HashMap::new();
    loop {
        let next = smol::future::or(
            async { Next::Event(events.next().await.map(Box::new)) },
            async {
                interrupt.pressed().await;
                Next::Interrupted
            },
        )
        .await;
        let event = match next {
            Next::Event(Some(event)) => *event,
            Next::Event(None) => break,
            Next::Interrupted => {
                tally.interrupted = true;
                break;
            }
        };
        match event {
            PoolEvent::Progress {
                job,
                server,
                event: Event::Started { .. },
            } => {
                running.insert(job, Instant::now());
                progress.started(job, &plan.servers[server]);
            }
            PoolEvent::Dispatched {
                job,
                server,
                attempt,
            } => progress.dispatched(job, server, &plan.servers[server], attempt),
            PoolEvent::Accepted {
                job,
                server,
                attempt,
            } => progress.sent(job, &plan.servers[server], attempt),
            PoolEvent::Progress {
                job,
                event: Event::Progress { value, max, .. },
                ..
            } => progress.step(job, value, max),
            PoolEvent::Finished(report) => {
                let (saved, outcome) = match &report.outcome {
                    Ok(()) => match output::save(&plan.out, report.job.0, &report.outputs) {
                        Ok(saved) => (saved, Ok(())),
                        Err(e) => (Vec::new(), Err(e)),
                    },
                    Err(e) => (Vec::new(), Err(e.to_string())),
                };
                let ran = running
                    .remove(&report.job)
                    .map_or(Duration::ZERO, |t| t.elapsed());
                progress.finished(report.job, &outcome, ran);
                if let Some(slot) = report.server.and_then(|s| tally.per_server.get_mut(s)) {
                    slot.0 += 1;
                    slot.1 += ran;
                }
                match &outcome {
                    Ok(()) => tally.succeeded += 1,
                    Err(_) => tally.failed += 1,
                }
                // Error texts come from the servers: no escape sequence reaches the terminal.
                let line = if plan.json {
                    let json = output::job_line(
                        &report,
                        &saved,
                        outcome.as_ref().err().map(String::as_str),
                    );
                    terminal_safe_json(&json.to_string()).into_owned()
                } else {
                    terminal_safe_line(&sentence(&report, ran, &saved, &outcome)).into_owned()
                };
                progress.result(&line);
                if !plan.json {
                    // Texts come from the servers too: one line each, escapes removed.
                    for s in &saved {
                        if let Some(text) = &s.text {
                            let line = format!("job {} node {} text: {text}", report.job, s.node);
                            progress.result(&terminal_safe_line(&line));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Dropping the pool cancels every unfinished job's prompt on its server.
    drop(pool);
    drop(events);
    if tally.interrupted {
        progress.interrupted();
        tally.cancelled = total.saturating_sub(tally.succeeded + tally.failed);
        if !settle(executor, CANCEL_GRACE).await {
            progress.note(&format!(
                "gave up waiting for the servers after {:.1} s: a cancel may not have reached \
                 its server",
                CANCEL_GRACE.as_secs_f64()
            ));
        }
    } else {
        settle(executor, CLOSE_GRACE).await;
    }
    tally.elapsed = started.elapsed();
    if !plan.quiet {
        for line in summary(&plan.servers, &tally) {
            if plan.json {
                progress.note(&line);
            } else {
                progress.result(&line);
            }
        }
    }
    progress.done();
    tally
}

fn sentence(
    report: &JobReport,
    ran: Duration,
    saved: &[output::Saved],
    outcome: &std::result::Result<(), String>,
) -> String {
    let server = report
        .address
        .as_ref()
        .map_or_else(|| "no server".to_owned(), ServerAddress::to_string);
    match outcome {
        Ok(()) => {
            let paths: Vec<String> = (saved.iter())
                .filter_map(|s| s.path.as_ref().map(|p| p.display().to_string()))
                .collect();
            let texts = saved.iter().filter(|s| s.text.is_some()).count();
            format!(
                "job {} ok on {server} in {:.2} s: {}",
                report.job,
                ran.as_secs_f64(),
                match (paths.is_empty(), texts) {
                    (true, 0) => "no outputs".to_owned(),
                    (true, n) => plural(n, "text"),
                    (false, 0) => paths.join(" "),
                    (false, n) => format!("{} and {}", paths.join(" "), plural(n, "text")),
                }
            )
        }
        Err(e) => format!("job {} failed on {server}: {e}", report.job),
    }
}

/// Per-server counts and times, then the total.
pub fn summary(servers: &[ServerAddress], tally: &Tally) -> Vec<String> {
    let mut lines: Vec<String> = servers
        .iter()
        .zip(&tally.per_server)
        .map(|(server, (jobs, time))| {
            let each = if *jobs > 0 {
                time.as_secs_f64() / *jobs as f64
            } else {
                0.0
            };
            format!(
                "{server}: {}, ran {:.2} s in all, {each:.2} s each",
                plural(*jobs, "job"),
                time.as_secs_f64()
            )
        })
        .collect();
    let cancelled = if tally.interrupted {
        format!(", {} cancelled (interrupted)", tally.cancelled)
    } else {
        String::new()
    };
    lines.push(format!(
        "{}: {} succeeded, {} failed{cancelled}, in {:.2} s",
        plural(tally.succeeded + tally.failed + tally.cancelled, "job"),
        tally.succeeded,
        tally.failed,
        tally.elapsed.as_secs_f64()
    ));
    lines
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
