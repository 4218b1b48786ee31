//! The pool machine's answers to its own HTTP exchanges: class fetches, health checks,
//! lookups (`/history`, then `/queue` or `/view`), steals (a queue delete, then `/queue`) and
//! uploads.

use std::time::Duration;

use crate::NodeId;
use crate::error::{ExchangeError, TransportError};
use crate::session::Outputs;
use crate::wire::HttpResponse;
use crate::wire::http;
use crate::workflow::ObjectInfo;

use super::machine::{Exchange, HttpId, Pool};
use super::{BreakerState, JobId, JobResult, Lookup, ServerId};

impl Pool {
    /// The answer to an [`Io::Http`](super::Io::Http): the response, or how the exchange
    /// failed (refused, reset, timed out...). An answer after its deadline, or to an exchange
    /// the machine no longer needs, is ignored.
    pub fn handle_http(
        &mut self,
        now: Duration,
        id: HttpId,
        result: Result<HttpResponse, TransportError>,
    ) {
        let Some((s, _, exchange)) = self.exchanges.remove(&id) else {
            return;
        };
        match &result {
            // Only a success shows a ComfyUI there. Another service on the port answers every
            // path with a 404: the server stays as down as its websocket showed it, and the
            // jobs waiting for it end after `unreachable_give_up`, not after the breaker's
            // whole backoff.
            Ok(r) if (200..300).contains(&r.status) => self.reachable(s),
            Ok(_) => {}
            Err(e) => self.unreachable(now, s, e.clone()),
        }
        match exchange {
            Exchange::Class { class } => self.on_class(now, s, &class, result),
            Exchange::Health => self.on_health(now, s, result),
            Exchange::History { job, attempt } => self.on_history(now, s, job, attempt, result),
            Exchange::Queue { job, attempt } => {
                let lookup = match (self.prompt_of(job, attempt), &result) {
                    (Some(prompt), Ok(r)) => match http::decode_queue(r) {
                        Ok(queue) => Lookup::from_queue(&queue, &prompt),
                        Err(_) => Lookup::Unreachable,
                    },
                    _ => Lookup::Unreachable,
                };
                let _ = self.scheduler.handle_lookup(now, job, attempt, lookup);
            }
            Exchange::View {
                job,
                attempt,
                mut files,
                mut outputs,
            } => {
                let data = result.ok().and_then(|r| http::decode_view(&r).ok());
                match (data, files.pop_front()) {
                    (Some(data), Some((node, file))) => {
                        let index = outputs
                            .iter()
                            .filter(|o| o.node == node && o.data().is_some())
                            .count();
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        outputs.push_data(node, index, data, Some(file));
                        self.next_view(now, s, job, attempt, files, outputs);
                    }
                    _ => {
                        let lookup = Lookup::Finished { ok: false };
                        let _ = self.scheduler.handle_lookup(now, job, attempt, lookup);
                    }
                }
            }
            Exchange::StealDelete { job, attempt } => match self.prompt_of(job, attempt) {
                Some(_) => {
                    let request = http::queue();
                    self.queue_http(now, s, request, Exchange::StealCheck { job, attempt });
                }
                None => drop(self.scheduler.handle_steal(now, job, attempt, false)),
            },
            Exchange::StealCheck { job, attempt } => {
                let prompt = self.prompt_of(job, attempt);
                let taken = match (&prompt, &result) {
                    (Some(p), Ok(r)) => {
                        http::decode_queue(r).is_ok_and(|q| q.contains(p).is_none())
                    }
                    _ => false,
                };
                if taken {
                    self.cancel_attempt(job, attempt);
                }
                let _ = self.scheduler.handle_steal(now, job, attempt, taken);
            }
            Exchange::Upload { job, attempt } => self.on_upload(now, s, job, attempt, result),
        }
        self.pump(now);
    }

    fn on_class(
        &mut self,
        now: Duration,
        s: usize,
        class: &str,
        result: Result<HttpResponse, TransportError>,
    ) {
        let initial = self.settings.scheduler.breaker.initial;
        let max = self.settings.scheduler.breaker.max;
        let Some(caps) = self.caps.as_mut().and_then(|c| c.get_mut(s)) else {
            return;
        };
        match result {
            Ok(r) if r.status == 200 => {
                match http::decode_object_info(&r).map(|v| ObjectInfo::from_value(&v)) {
                    Ok(Ok(info)) => caps.answer(class, Some(info)),
                    _ => caps.set_blind(),
                }
            }
            // Another status: the server cannot tell us (an old server without the
            // per-class route, an error). It rules nothing out; the post will say.
            Ok(_) => caps.set_blind(),
            Err(e) => {
                caps.failed(now, initial, max);
                let _ = self
                    .scheduler
                    .handle_server_error(now, ServerId(s), e.to_string());
            }
        }
        self.reroute_all(now);
    }

    fn on_health(&mut self, now: Duration, s: usize, result: Result<HttpResponse, TransportError>) {
        let before = self.breaker(s);
        let verdict = match result {
            Ok(r) => http::decode_system_stats(&r)
                .map(drop)
                .map_err(ExchangeError::Protocol),
            Err(e) => Err(ExchangeError::Transport(e)),
        };
        let _ = self.scheduler.handle_health(now, ServerId(s), verdict);
        // Back from an outage: it may have restarted with other nodes or models.
        if before != BreakerState::Closed
            && self.breaker(s) == BreakerState::Closed
            && let Some(caps) = self.caps.as_mut().and_then(|c| c.get_mut(s))
        {
            caps.reset();
            self.forget_verdicts(s);
            self.reroute_all(now);
        }
    }

    fn breaker(&self, s: usize) -> BreakerState {
        self.scheduler
            .stats()
            .servers
            .get(s)
            .map_or(BreakerState::Closed, |st| st.state)
    }

    fn on_history(
        &mut self,
        now: Duration,
        s: usize,
        job: JobId,
        attempt: u32,
        result: Result<HttpResponse, TransportError>,
    ) {
        let Some(prompt) = self.prompt_of(job, attempt) else {
            let _ = self
                .scheduler
                .handle_lookup(now, job, attempt, Lookup::Unknown);
            return;
        };
        let entry = match result.map(|r| http::decode_history(&r, &prompt)) {
            Ok(Ok(entry)) => entry,
            _ => {
                let _ = self
                    .scheduler
                    .handle_lookup(now, job, attempt, Lookup::Unreachable);
                return;
            }
        };
        let Some(entry) = entry else {
            self.queue_http(now, s, http::queue(), Exchange::Queue { job, attempt });
            return;
        };
        let verdict = match self.jobs.get(&job) {
            Some(j) => Lookup::from_history(&entry, &j.workflow),
            None => return,
        };
        if verdict != (Lookup::Finished { ok: true }) {
            let _ = self.scheduler.handle_lookup(now, job, attempt, verdict);
            return;
        }
        // Outputs as the session would report them: every node's `ui` data (texts too), then
        // the files it names, fetched one by one; `temp` files are previews, left out.
        let mut outputs = Outputs::new();
        for (node, ui) in &entry.outputs {
            outputs.handle_ui(node, ui);
        }
        let files = (entry.files().into_iter())
            .filter(|(_, f)| f.kind == "output")
            .collect();
        self.next_view(now, s, job, attempt, files, outputs);
    }

    /// Fetches the next file output of a run found in the history, or concludes the lookup.
    fn next_view(
        &mut self,
        now: Duration,
        s: usize,
        job: JobId,
        attempt: u32,
        files: std::collections::VecDeque<(NodeId, crate::wire::FileRef)>,
        outputs: Outputs,
    ) {
        if let Some((_, file)) = files.front() {
            let request = http::view(file);
            let exchange = Exchange::View {
                job,
                attempt,
                files,
                outputs,
            };
            self.queue_http(now, s, request, exchange);
            return;
        }
        if let Some(a) = self
            .jobs
            .get_mut(&job)
            .and_then(|j| j.attempt.as_mut())
            .filter(|a| a.number == attempt)
        {
            a.outputs = outputs;
        }
        let lookup = Lookup::Finished { ok: true };
        let _ = self.scheduler.handle_lookup(now, job, attempt, lookup);
    }

    fn on_upload(
        &mut self,
        now: Duration,
        s: usize,
        job: JobId,
        attempt: u32,
        result: Result<HttpResponse, TransportError>,
    ) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(a) = j.attempt.as_mut().filter(|a| a.number == attempt) else {
            return;
        };
        let Some((i, workflow)) = a.uploading.as_mut() else {
            return;
        };
        let stored = match result {
            // Nothing was posted yet: the job never ran here and moves at once.
            Err(e) => return self.unreached(now, job, attempt, s, e),
            Ok(r) => http::decode_upload(&r),
        };
        let input = j
            .uploads
            .get(*i)
            .map(|u| u.input.clone())
            .unwrap_or_default();
        let set = stored.map_err(|e| e.to_string()).and_then(|f| {
            workflow
                .set(&input, serde_json::Value::String(f.input_value()))
                .map_err(|e| e.to_string())
        });
        match set {
            Ok(()) => {
                *i += 1;
                self.next_upload(now, job, attempt);
            }
            Err(e) => {
                let result = JobResult::failed(true, false, format!("upload for {input}: {e}"));
                let _ = self.scheduler.handle_result(now, job, attempt, result);
            }
        }
    }
}
