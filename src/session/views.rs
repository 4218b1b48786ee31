//! `/view` downloads: at most [`SessionConfig::max_views`](super::SessionConfig::max_views) in
//! flight per session, the rest queued in the order they were asked for; a prompt whose reader
//! lags gets none started until it catches up, while other prompts' downloads go on.
//!
//! File outputs are never dropped, so this is their back-pressure: an output downloaded is an
//! output held in memory until its reader takes it. The memory for outputs in flight is bounded
//! by `max_views` bodies (each bounded by the adapter's body limit), plus what readers that are
//! not lagging have yet to take.

use std::time::Duration;

use crate::ids::{NodeId, PromptId};
use crate::wire::http;
use crate::wire::message::FileRef;

use super::{Pending, Session, ViewJob};

impl Session {
    /// The reader of `prompt`'s events lags (`true`) or has caught up (`false`). While it lags,
    /// the prompt's `/view` downloads are not started; other prompts' go on. An adapter that
    /// keeps a [`Outbox`](super::Outbox) per prompt reports its
    /// [`is_lagging`](super::Outbox::is_lagging) here whenever it changes. Unknown prompts are
    /// ignored.
    pub fn handle_reader_lag(&mut self, now: Duration, prompt: &PromptId, lagging: bool) {
        self.clock(now);
        if lagging {
            if self.prompts.contains_key(prompt) {
                self.lagging.insert(prompt.clone());
            }
        } else if self.lagging.remove(prompt) {
            self.start_views(now);
        }
    }

    /// `/view` downloads waiting for their turn.
    pub fn views_queued(&self) -> usize {
        self.views.len()
    }

    /// `/view` downloads started and not yet answered.
    pub fn views_in_flight(&self) -> usize {
        self.views_in_flight
    }

    /// Asks for a file output with `/view`, once per file; only outputs, not temp previews.
    pub(super) fn fetch_file(
        &mut self,
        now: Duration,
        id: &PromptId,
        node: &NodeId,
        file: FileRef,
    ) {
        if file.kind != "output" {
            return;
        }
        let Some(p) = self.prompts.get_mut(id) else {
            return;
        };
        if !p.files_requested.insert(file.clone()) {
            return;
        }
        p.files_pending += 1;
        let index = p.next_index(node);
        self.views.push_back(ViewJob {
            prompt: id.clone(),
            node: node.clone(),
            index,
            file,
        });
        self.start_views(now);
    }

    /// A download ended (answered, failed or timed out): its slot is free.
    pub(super) fn view_done(&mut self) {
        self.views_in_flight = self.views_in_flight.saturating_sub(1);
    }

    /// Starts queued downloads while slots are free, skipping prompts whose reader lags.
    pub(super) fn start_views(&mut self, now: Duration) {
        while self.views_in_flight < self.config.max_views.max(1) {
            let Some(i) = self
                .views
                .iter()
                .position(|v| !self.lagging.contains(&v.prompt))
            else {
                return;
            };
            let Some(job) = self.views.remove(i) else {
                return;
            };
            self.views_in_flight += 1;
            let request = http::view(&job.file);
            self.request(
                now,
                request,
                Pending::View {
                    prompt: job.prompt,
                    node: job.node,
                    index: job.index,
                    file: job.file,
                },
            );
        }
    }
}
