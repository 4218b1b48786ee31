//! The pool's log lines (the `log` facade, target `comfy_proxy::pool`): what the machine asks
//! the driver to do, what it reports to the consumer, and the changes of each server's breaker
//! and steal count, which the machine decides without an event. Addresses are shown as
//! [`ServerAddress`] displays them (no credentials can be in one); no header or token ever is.
//!
//! Levels: `info` for what changes a job's or a server's course (a retry, a cancel, a breaker,
//! a steal, a job's end), `debug` for every request and post, `warn` for a failed job or a
//! server going out of service.

use comfy_proxy::ServerAddress;
use comfy_proxy::pool::{BreakerState, Io, PoolEvent, PoolStats};

const TARGET: &str = "comfy_proxy::pool";

fn at(servers: &[ServerAddress], server: usize) -> String {
    servers
        .get(server)
        .map_or_else(|| format!("server {server}"), ToString::to_string)
}

/// An I/O the machine asked for, about to be performed.
pub(super) fn io(io: &Io, servers: &[ServerAddress]) {
    // Nothing is formatted for a line nobody shows: this runs for every request and post.
    // A retry is logged here, not from its `Dispatched` event, which a pool that reports less
    // than every event leaves out.
    let level = match io {
        Io::Cancel { .. } => log::Level::Info,
        Io::Submit { attempt, .. } if *attempt > 1 => log::Level::Info,
        _ => log::Level::Debug,
    };
    if !log::log_enabled!(target: TARGET, level) {
        return;
    }
    match io {
        Io::Http {
            server, request, ..
        } => {
            let path = request.path.split('?').next().unwrap_or_default();
            let what = match (request.method.as_str(), path) {
                ("DELETE", "/queue") => "steal: delete from the queue",
                ("GET", "/system_stats") => "health check",
                ("GET", p) if p.starts_with("/history") => "lookup",
                ("GET", "/queue") => "lookup",
                ("GET", p) if p.starts_with("/object_info") => "capabilities",
                ("POST", p) if p.starts_with("/upload") => "upload",
                _ => "request",
            };
            log::debug!(target: TARGET, "{what}: {} {path} on {}",
                request.method.as_str(), at(servers, server.0));
        }
        Io::Submit {
            server,
            job,
            attempt,
            ..
        } if *attempt > 1 => {
            log::info!(target: TARGET, "job {job}: attempt {attempt} goes to {}",
                at(servers, server.0));
        }
        Io::Submit {
            server,
            job,
            attempt,
            submission,
        } => log::debug!(target: TARGET, "job {job} attempt {attempt}: posting prompt {} to {}",
            submission.prompt_id, at(servers, server.0)),
        Io::Cancel { server, prompt } => {
            log::info!(target: TARGET, "cancelling prompt {prompt} on {}", at(servers, server.0));
        }
        _ => {}
    }
}

/// An event about to reach the consumer.
pub(super) fn event(event: &PoolEvent, servers: &[ServerAddress]) {
    // `warn` is the lowest level any event logs at (a failed job): below it, nothing to format.
    if !log::log_enabled!(target: TARGET, log::Level::Warn) {
        return;
    }
    match event {
        PoolEvent::Dispatched {
            job,
            server,
            attempt,
        } => {
            log::debug!(target: TARGET, "job {job}: attempt {attempt} dispatched to {}",
                at(servers, *server));
        }
        PoolEvent::Accepted {
            job,
            server,
            attempt,
        } => log::debug!(target: TARGET, "job {job}: attempt {attempt} accepted by {}",
            at(servers, *server)),
        PoolEvent::Finished(report) => {
            let on = report
                .server
                .map_or_else(|| "no server".to_owned(), |s| at(servers, s));
            match &report.outcome {
                Ok(()) => log::info!(target: TARGET, "job {}: done on {on} after {} attempt(s)",
                    report.job, report.attempts),
                Err(e) => {
                    log::warn!(target: TARGET, "job {}: failed on {on} after {} attempt(s): {e}",
                    report.job, report.attempts)
                }
            }
        }
        _ => {}
    }
}

/// The breaker state and steal count of each server last seen, to log their changes.
#[derive(Default)]
pub(super) struct Watch {
    last: Vec<(BreakerState, u64)>,
}

impl Watch {
    /// Logs what changed since the last look. Costs nothing unless `info` is on.
    pub(super) fn look(&mut self, stats: impl FnOnce() -> PoolStats, servers: &[ServerAddress]) {
        if !log::log_enabled!(target: TARGET, log::Level::Info) {
            return;
        }
        let stats = stats();
        self.last
            .resize(stats.servers.len(), (BreakerState::Closed, 0));
        for (i, (s, last)) in stats.servers.iter().zip(&mut self.last).enumerate() {
            let server = at(servers, i);
            if s.state != last.0 {
                match s.state {
                    BreakerState::Open => log::warn!(target: TARGET,
                        "{server}: out of service (breaker open)"),
                    BreakerState::HalfOpen => log::info!(target: TARGET,
                        "{server}: breaker half-open, asking its health"),
                    BreakerState::Closed => log::info!(target: TARGET,
                        "{server}: back in service (breaker closed)"),
                    _ => {}
                }
            }
            if s.stolen > last.1 {
                log::info!(target: TARGET, "{server}: {} queued job(s) stolen by a faster server",
                    s.stolen - last.1);
            }
            *last = (s.state, s.stolen);
        }
    }
}
