//! Where a job may go: capability verdicts, class fetches, and the give-up when no server can
//! be reached.

use std::time::Duration;

use crate::ServerAddress;
use crate::error::TransportError;

use super::JobId;
use super::ServerId;
use super::caps::Verdict;
use super::machine::{Exchange, Pool};
use super::report::JobError;

impl Pool {
    /// When waiting jobs give up because no server can be reached, while that is so.
    pub(super) fn give_up_at(&self) -> Option<Duration> {
        let mut latest = Duration::ZERO;
        for d in &self.down {
            latest = latest.max(d.as_ref()?.0);
        }
        let waiting = self.scheduler.queued() > 0 || self.held > 0;
        (waiting && !self.down.is_empty())
            .then(|| latest.saturating_add(self.settings.unreachable_give_up))
    }

    pub(super) fn give_up_unreachable(&mut self, now: Duration) {
        let servers: Vec<(ServerAddress, TransportError)> = self
            .down
            .iter()
            .zip(&self.servers)
            .filter_map(|(d, a)| d.as_ref().map(|(_, e)| (a.clone(), e.clone())))
            .collect();
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            let Some(j) = self.jobs.get(&job) else {
                continue;
            };
            if j.done {
                continue;
            }
            let held = j.held;
            let invalid = self
                .verdicts_of(job)
                .into_iter()
                .find_map(|(s, v)| match v {
                    Verdict::Invalid(report) => Some((s, report)),
                    _ => None,
                });
            let error = match invalid {
                Some((s, report)) => JobError::Unrunnable {
                    server: self.servers[s].clone(),
                    report,
                },
                None => JobError::NoServerReachable {
                    servers: servers.clone(),
                },
            };
            if held {
                self.finish_now(now, job, error);
            } else if self.scheduler.abort_queued(job, error.to_string())
                == Ok(super::Handled::Applied)
                && let Some(j) = self.jobs.get_mut(&job)
            {
                j.last_error = Some(error);
            }
        }
    }

    /// Hands a job to the scheduler once a server can run it; fetches what is missing.
    pub(super) fn route(&mut self, now: Duration, job: JobId) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        if j.done {
            return;
        }
        if self.caps.is_none() {
            if j.held {
                self.unhold(job);
                self.enqueue(now, job);
            }
            return;
        }
        let held = j.held;
        let classes = j.classes.clone();
        let v = self.verdicts_of(job);
        let ok: Vec<ServerId> = v
            .iter()
            .filter(|(_, v)| *v == Verdict::Ok)
            .map(|(s, _)| ServerId(*s))
            .collect();
        let all_invalid = v.iter().all(|(_, v)| matches!(v, Verdict::Invalid(_)));
        // Ask every server that could still say yes for the classes it has not answered.
        for (s, verdict) in &v {
            if *verdict != Verdict::Pending {
                continue;
            }
            self.fetch_classes(now, *s, &classes);
        }
        if all_invalid {
            if held {
                let (s, report) = v
                    .into_iter()
                    .find_map(|(s, v)| match v {
                        Verdict::Invalid(r) => Some((s, r)),
                        _ => None,
                    })
                    .expect("every verdict is invalid");
                let server = self.servers[s].clone();
                self.finish_now(now, job, JobError::Unrunnable { server, report });
            }
            return;
        }
        if ok.is_empty() {
            return;
        }
        if held {
            self.unhold(job);
            self.enqueue(now, job);
        }
        if ok.len() < self.servers.len() {
            let _ = self.scheduler.set_eligible(job, &ok);
        } else {
            let all: Vec<ServerId> = (0..self.servers.len()).map(ServerId).collect();
            let _ = self.scheduler.set_eligible(job, &all);
        }
    }

    /// The job's verdict on every server, from its cache where final.
    pub(super) fn verdicts_of(&mut self, job: JobId) -> Vec<(usize, Verdict)> {
        let (Some(caps), Some(j)) = (&self.caps, self.jobs.get_mut(&job)) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(caps.len());
        for (s, c) in caps.iter().enumerate() {
            let cached = j.verdicts.get(s).cloned().flatten();
            let v = cached.unwrap_or_else(|| c.verdict(&j.workflow, &j.classes));
            if v != Verdict::Pending
                && let Some(slot) = j.verdicts.get_mut(s)
            {
                *slot = Some(v.clone());
            }
            out.push((s, v));
        }
        out
    }

    /// Hands the job to the scheduler's queue, ahead of the rest if it has priority.
    fn enqueue(&mut self, now: Duration, job: JobId) {
        if self.jobs.get(&job).is_some_and(|j| j.front) {
            let _ = self.scheduler.submit_in_front(now, job);
        } else {
            let _ = self.scheduler.submit(now, job);
        }
    }

    fn unhold(&mut self, job: JobId) {
        if let Some(j) = self.jobs.get_mut(&job)
            && std::mem::replace(&mut j.held, false)
        {
            self.held -= 1;
        }
    }

    /// Drops the cached verdicts on server `s` (its cache was dropped).
    pub(super) fn forget_verdicts(&mut self, s: usize) {
        for j in self.jobs.values_mut() {
            if let Some(slot) = j.verdicts.get_mut(s) {
                *slot = None;
            }
        }
    }

    /// Routes again every job that waits (classes answered, a cache dropped, a retry due).
    pub(super) fn reroute_all(&mut self, now: Duration) {
        let jobs: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.done)
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            self.route(now, job);
        }
    }

    pub(super) fn fetch_classes(&mut self, now: Duration, s: usize, classes: &[String]) {
        let Some(c) = self.caps.as_mut().and_then(|c| c.get_mut(s)) else {
            return;
        };
        if c.retry_at.is_some() {
            return;
        }
        let missing: Vec<String> = c.missing(classes).cloned().collect();
        c.asked.extend(missing.iter().cloned());
        for class in missing {
            let request = crate::wire::http::object_info(Some(&class));
            self.queue_http(now, s, request, Exchange::Class { class });
        }
    }
}
