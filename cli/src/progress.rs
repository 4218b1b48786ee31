//! Progress on stderr: on a terminal, redrawn in place, an overall bar, a line per server (jobs
//! in flight there, done, failed) and a bar per running job; plain lines otherwise; nothing
//! with `--quiet`. Results go to stdout; [`Progress::result`] prints them, and log lines
//! (`-v`) are printed, without tearing the bars.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use comfy_proxy::ServerAddress;
use comfy_proxy::pool::JobId;
use comfy_proxy::text::terminal_safe_line;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
pub enum Progress {
    /// Bars on a terminal.
    Bars(Bars),
    /// A line per dispatch and per end, on stderr.
    Plain,
    /// Nothing.
    Quiet,
}

/// The bars of a terminal.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    jobs: HashMap<JobId, ProgressBar>,
    /// Per server: its line and its counts.
    servers: Vec<(ProgressBar, Counts)>,
    /// The server each job was last handed to.
    placed: HashMap<JobId, usize>,
}

/// A server's jobs, for its line.
#[derive(Default)]
struct Counts {
    in_flight: usize,
    done: usize,
    failed: usize,
}

impl Bars {
    fn count(&mut self, server: usize, change: impl FnOnce(&mut Counts)) {
        if let Some((line, counts)) = self.servers.get_mut(server) {
            change(counts);
            line.set_message(format!(
                "{} in flight, {} done, {} failed",
                counts.in_flight, counts.done, counts.failed
            ));
        }
    }
}

/// A job's line before its first step.
const WAITING: &str = "  job {prefix:>4} {msg}";
/// A job's line once it reports steps.
const STEPPING: &str = "  job {prefix:>4} [{bar:30}] {pos}/{len} steps, {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    /// Progress for `total` jobs on `servers`: bars when stderr is a terminal, lines
    /// otherwise, none when `quiet`.
    pub fn new(quiet: bool, total: usize, servers: &[ServerAddress]) -> Self {
        if quiet {
            return Self::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            return Self::Plain;
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(style("{elapsed:>4} [{wide_bar}] {pos}/{len} jobs {msg}"));
        overall.enable_steady_tick(Duration::from_millis(200));
        let width = servers
            .iter()
            .map(|s| s.authority().len())
            .max()
            .unwrap_or(0);
        let servers = servers
            .iter()
            .map(|s| {
                let line = multi.add(ProgressBar::new(0));
                line.set_style(style("  {prefix} {msg}"));
                line.set_prefix(format!("{:width$}", s.authority()));
                line.set_message("0 in flight, 0 done, 0 failed");
                (line, Counts::default())
            })
            .collect();
        let printer = multi.clone();
        crate::logger::set_printer(Some(Box::new(move |line: &str| {
            printer.suspend(|| eprintln!("{line}"));
        })));
        Self::Bars(Bars {
            multi,
            overall,
            jobs: HashMap::new(),
            servers,
            placed: HashMap::new(),
        })
    }

    /// Job `job` was handed to server `index`, `server` (uploads, then the post): not sent
    /// yet.
    pub fn dispatched(&mut self, job: JobId, index: usize, server: &ServerAddress, attempt: u32) {
        let again = again(attempt);
        match self {
            Self::Bars(b) => {
                if let Some(before) = b.placed.insert(job, index) {
                    b.count(before, |c| c.in_flight = c.in_flight.saturating_sub(1));
                }
                b.count(index, |c| c.in_flight += 1);
                let bar = b.jobs.remove(&job).unwrap_or_else(|| {
                    let bar = b.multi.add(ProgressBar::new(0));
                    bar.set_prefix(job.to_string());
                    bar
                });
                bar.set_style(style(WAITING));
                bar.set_length(0);
                bar.set_message(format!("sending to {}{again}", server.authority()));
                b.jobs.insert(job, bar);
            }
            Self::Plain | Self::Quiet => {}
        }
    }

    /// Job `job` was accepted by `server` (`POST /prompt` answered): now it was sent.
    pub fn sent(&mut self, job: JobId, server: &ServerAddress, attempt: u32) {
        let again = again(attempt);
        match self {
            Self::Bars(b) => {
                // The server's answer to the post may come after the job started running
                // there (the websocket is faster): then it says nothing new.
                if let Some(bar) = b.jobs.get(&job)
                    && !bar.message().starts_with("running")
                    && bar.length() == Some(0)
                {
                    bar.set_message(format!("queued on {}{again}", server.authority()));
                }
            }
            Self::Plain => eprintln!("job {job}: sent to {server}{again}"),
            Self::Quiet => {}
        }
    }

    /// Job `job` started running on `server`.
    pub fn started(&mut self, job: JobId, server: &ServerAddress) {
        let Self::Bars(b) = self else { return };
        if let Some(bar) = b.jobs.get(&job) {
            bar.set_message(format!("running on {}", server.authority()));
        }
    }

    /// Job `job` reported step `value` of `max`.
    pub fn step(&mut self, job: JobId, value: f64, max: f64) {
        let Self::Bars(b) = self else { return };
        if let Some(bar) = b.jobs.get(&job) {
            if bar.length() == Some(0) {
                bar.set_style(style(STEPPING));
            }
            bar.set_length(max.max(1.0) as u64);
            bar.set_position(value.max(0.0) as u64);
        }
    }

    /// Job `job` ended, `Ok(())` or with its error, after running `ran` on its server.
    pub fn finished(&mut self, job: JobId, outcome: &Result<(), String>, ran: Duration) {
        match self {
            Self::Bars(b) => {
                if let Some(bar) = b.jobs.remove(&job) {
                    bar.finish_and_clear();
                    b.multi.remove(&bar);
                }
                if let Some(server) = b.placed.remove(&job) {
                    b.count(server, |c| {
                        c.in_flight = c.in_flight.saturating_sub(1);
                        match outcome {
                            Ok(()) => c.done += 1,
                            Err(_) => c.failed += 1,
                        }
                    });
                }
                b.overall.inc(1);
                if outcome.is_err() {
                    b.overall.set_message("(some failed)");
                }
            }
            Self::Plain => match outcome {
                Ok(()) => eprintln!("job {job}: done, ran {:.2} s", ran.as_secs_f64()),
                Err(e) => eprintln!("job {job}: failed: {}", terminal_safe_line(e)),
            },
            Self::Quiet => {}
        }
    }

    /// Prints `line` on stdout, above the bars.
    pub fn result(&self, line: &str) {
        match self {
            Self::Bars(b) => b.multi.suspend(|| println!("{line}")),
            _ => println!("{line}"),
        }
    }

    /// Prints `line` on stderr, above the bars, unless quiet.
    pub fn note(&self, line: &str) {
        match self {
            Self::Bars(b) => b.multi.suspend(|| eprintln!("{line}")),
            Self::Plain => eprintln!("{line}"),
            Self::Quiet => {}
        }
    }

    /// The run was interrupted: takes the bars down and says so while the prompts are
    /// cancelled.
    pub fn interrupted(&mut self) {
        let line = "interrupted: cancelling this run's prompts on their servers \
                    (Ctrl-C again to exit at once)";
        if let Self::Bars(b) = self {
            b.clear();
            // Plain lines from now on: nothing is drawn in place any more.
            *self = Self::Plain;
        }
        if let Self::Plain = self {
            eprintln!("{line}");
        }
    }

    /// Removes the bars.
    pub fn done(mut self) {
        if let Self::Bars(b) = &mut self {
            b.clear();
        }
    }
}

impl Bars {
    /// Takes every bar and line off the screen, for good.
    fn clear(&mut self) {
        crate::logger::set_printer(None);
        let lines = self.jobs.drain().map(|(_, bar)| bar);
        let lines = lines.chain(self.servers.drain(..).map(|(line, _)| line));
        for line in lines.chain([self.overall.clone()]) {
            line.finish_and_clear();
            self.multi.remove(&line);
        }
        let _ = self.multi.clear();
    }
}

fn again(attempt: u32) -> String {
    if attempt > 1 {
        format!(" (attempt {attempt})")
    } else {
        String::new()
    }
}
