//! What each server can run, learnt one class at a time (`GET /object_info/{class}`), and the
//! verdict on a job.
//!
//! # Policy
//!
//! A job goes to a server only once that server's answers cover every class the job uses and
//! the job validates against them (`Verdict::Ok`). A server whose answers are still out is
//! not yet eligible (`Verdict::Pending`) — but it never holds a job back from servers already
//! known good: the job is queued for those at once, and the slow server joins its eligible
//! list when its answers arrive. A server whose answers cannot be read (an HTTP error, a
//! malformed document) rules nothing out: it will say itself. So does one that does not list
//! [`SENTINEL`], a core class every ComfyUI has (it lists nothing, like a mock without
//! `object_info`); every server is asked for it with a job's first classes. The cache is per server and dropped when a server comes back from an
//! outage (it may have restarted with other nodes or models).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::Workflow;
use crate::workflow::{ObjectInfo, ValidationReport, validate};

/// One server's classes, as far as known.
#[derive(Debug, Default)]
pub(super) struct ServerCaps {
    /// Every class answered present, merged.
    info: ObjectInfo,
    /// Classes answered (present or not).
    known: BTreeSet<String>,
    /// Classes answered absent (an empty object).
    absent: BTreeSet<String>,
    /// Classes asked and not yet answered.
    pub asked: BTreeSet<String>,
    /// Its answers could not be read: it rules nothing out.
    blind: bool,
    /// After a transport failure, when to ask again.
    pub retry_at: Option<Duration>,
    /// The wait before the next retry (doubles up to the breaker's max).
    pub backoff: Option<Duration>,
}

/// Whether a job can run on a server.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    Ok,
    Pending,
    Invalid(Box<ValidationReport>),
}

/// A core class every ComfyUI lists: a server that does not lists nothing at all.
pub(super) const SENTINEL: &str = "SaveImage";

/// The distinct classes of a graph, and [`SENTINEL`].
pub(super) fn classes_of(workflow: &Workflow) -> Vec<String> {
    let mut set: BTreeSet<&str> = workflow.iter().map(|(_, n)| n.class_type()).collect();
    set.insert(SENTINEL);
    set.into_iter().map(str::to_owned).collect()
}

impl ServerCaps {
    /// Forgets everything (the server came back from an outage).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Classes of `classes` neither known nor asked.
    pub fn missing<'a>(&'a self, classes: &'a [String]) -> impl Iterator<Item = &'a String> {
        classes
            .iter()
            .filter(|c| !self.known.contains(*c) && !self.asked.contains(*c))
    }

    /// The answer for `class`: `Some(info)` with the class in it, `None` for an empty object.
    pub fn answer(&mut self, class: &str, info: Option<ObjectInfo>) {
        self.asked.remove(class);
        self.known.insert(class.to_owned());
        self.retry_at = None;
        self.backoff = None;
        match info {
            Some(info) if info.class(class).is_some() => self.info.extend(info),
            _ => {
                self.absent.insert(class.to_owned());
            }
        }
    }

    /// The server's answers cannot be read.
    pub fn set_blind(&mut self) {
        self.blind = true;
        self.asked.clear();
    }

    /// A transport failure: ask again after a backoff.
    pub fn failed(&mut self, now: Duration, initial: Duration, max: Duration) {
        self.asked.clear();
        let wait = self
            .backoff
            .map_or(initial, |b| b.saturating_mul(2))
            .min(max);
        self.backoff = Some(wait);
        self.retry_at = Some(now.saturating_add(wait));
    }

    /// The verdict on a job with these classes.
    pub fn verdict(&self, workflow: &Workflow, classes: &[String]) -> Verdict {
        if self.blind {
            return Verdict::Ok;
        }
        if classes.iter().any(|c| !self.known.contains(c)) {
            return Verdict::Pending;
        }
        if self.absent.contains(SENTINEL) {
            return Verdict::Ok;
        }
        let report = validate(workflow, &self.info);
        if report.is_valid() {
            Verdict::Ok
        } else {
            Verdict::Invalid(Box::new(report))
        }
    }
}
