//! How the session reacts to what the server sends: websocket messages, binary frames and
//! HTTP responses.

use std::borrow::Borrow;
use std::hash::Hash;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{ExchangeError, ProtocolError, TransportError};
use crate::ids::{NodeId, PromptId};
use crate::wire::http::{self, HttpResponse, PromptOutcome, QueuePosition};
use crate::wire::message::FileRef;
use crate::wire::{BinaryFrame, ImageFormat, ServerMessage};

use super::event::{Event, Failure, Image};
use super::prompt::{Ending, Phase, Reconcile};
use super::{Pending, Session};

/// A prompt the socket said ended, and that `/queue` still lists as running when its history
/// is read (ComfyUI writes the history just after `execution_success`), reads it again after
/// 100 ms, then 200 ms..., [`RECHECKS`] times at most, then fails with
/// [`Failure::NoHistory`].
const RECHECK_FIRST: Duration = Duration::from_millis(100);
/// See [`RECHECK_FIRST`].
const RECHECKS: u32 = 5;

impl Session {
    /// Our id for a prompt id the server used (as an id or as its text), if the prompt is ours
    /// and in flight.
    fn resolve<Q>(&self, id: &Q) -> Option<PromptId>
    where
        PromptId: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.prompts.get_key_value(id) {
            Some((ours, _)) => Some(ours.clone()),
            None => self.aliases.get(id).cloned(),
        }
    }

    /// The prompt a message without a prompt id is about: none while the server runs another
    /// prompt (see `Session::elsewhere`), else the running one, or else the earliest accepted
    /// one (the server runs one client's prompts in order).
    fn implied(&self) -> Option<PromptId> {
        if self.elsewhere {
            return None;
        }
        self.running.clone().or_else(|| {
            self.order
                .iter()
                .find(|id| {
                    self.prompts
                        .get(*id)
                        .is_some_and(|p| p.phase == Phase::Accepted)
                })
                .cloned()
        })
    }

    fn target(&self, id: Option<&PromptId>) -> Option<PromptId> {
        match id {
            Some(id) => self.resolve(id),
            None => self.implied(),
        }
    }

    fn touch(&mut self, id: &PromptId, now: Duration) {
        if let Some(p) = self.prompts.get_mut(id) {
            p.last_activity = now;
            if p.phase == Phase::Accepted || p.phase == Phase::Posted {
                p.phase = Phase::Running;
            }
        }
        self.running = Some(id.clone());
        self.elsewhere = false;
    }

    /// An image frame without a prompt id came while the server said it ran another prompt:
    /// it is nobody's. If one of ours was running an output node when the other prompt
    /// appeared, that node may miss an image (a hostile or confused server).
    fn image_not_ours(&mut self, now: Duration) {
        if let Some(p) = self
            .running
            .as_ref()
            .and_then(|id| self.prompts.get_mut(id))
        {
            p.mark_image_lost();
        }
        self.give_up_cut(now);
    }

    /// Fails at once every prompt whose running websocket output node may have lost images
    /// (see [`Prompt::cut_output`](super::prompt::Prompt::cut_output)), and interrupts it on
    /// the server: the run cannot succeed, so the server is freed and the prompt can run again
    /// elsewhere now rather than at its end.
    pub(super) fn give_up_cut(&mut self, now: Duration) {
        let cut: Vec<(PromptId, NodeId)> = (self.order.iter())
            .filter_map(|id| self.prompts.get(id))
            .filter_map(|p| p.cut_output().map(|n| (p.id.clone(), n.clone())))
            .collect();
        for (id, node) in cut {
            self.stop_on_server(now, &id, Phase::Running);
            self.fail(&id, Failure::LostOutputs { nodes: vec![node] });
        }
    }

    /// A text frame that did not decode: the prompt it names, else the running one, reads
    /// `/history` before it completes, since the frame may have been one of its messages.
    pub(super) fn damaged_text(&mut self, text: &str) {
        let named = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v.get("data")?
                    .get("prompt_id")?
                    .as_str()
                    .map(PromptId::from)
            });
        let owner = match named {
            // Another prompt's message, damaged: not ours to worry about.
            Some(id) => self.resolve(&id),
            None => self.running.clone().filter(|_| !self.elsewhere),
        };
        if let Some(p) = owner.and_then(|id| self.prompts.get_mut(&id))
            && p.phase != Phase::Waiting
        {
            p.mark_damaged();
        }
    }

    /// Whether `id`'s progress events are reported ([`Submission::progress`](super::Submission::progress)).
    fn wants_progress(&self, id: &PromptId) -> bool {
        self.prompts.get(id).is_some_and(|p| p.progress)
    }

    /// A `progress_state` message: the prompt it names is running. Its nodes are not read.
    pub(super) fn on_progress_state(&mut self, now: Duration, prompt: &str) {
        if let Some(id) = self.resolve(prompt) {
            self.touch(&id, now);
        }
    }

    pub(super) fn on_message(&mut self, now: Duration, msg: ServerMessage) {
        match msg {
            ServerMessage::Status {
                queue_remaining, ..
            } => {
                self.events.push_back(Event::QueueStatus {
                    remaining: queue_remaining,
                });
            }
            ServerMessage::FeatureFlags {
                supports_preview_metadata,
                max_upload_size,
            } => {
                self.events.push_back(Event::ServerFeatures {
                    supports_preview_metadata,
                    max_upload_size,
                });
            }
            ServerMessage::Unknown { kind, data } => {
                self.events.push_back(Event::Unknown { kind, data })
            }
            ServerMessage::ExecutionStart { prompt_id } => match self.resolve(&prompt_id) {
                Some(id) => {
                    self.touch(&id, now);
                    self.events.push_back(Event::Started { prompt: id });
                }
                None => self.elsewhere = true,
            },
            ServerMessage::ExecutionCached { prompt_id, nodes } => {
                if let Some(id) = self.resolve(&prompt_id) {
                    self.touch(&id, now);
                    if self.wants_progress(&id) {
                        self.events.push_back(Event::Cached { prompt: id, nodes });
                    }
                }
            }
            ServerMessage::Executing { prompt_id, node } => {
                let Some(id) = self.target(prompt_id.as_ref()) else {
                    if prompt_id.is_some() {
                        // Another prompt runs now, or (node null) its run ended.
                        self.elsewhere = node.is_some();
                    }
                    return;
                };
                self.touch(&id, now);
                if let Some(p) = self.prompts.get_mut(&id) {
                    p.advance(node.as_ref());
                }
                match node {
                    Some(node) if self.wants_progress(&id) => self
                        .events
                        .push_back(Event::NodeStarted { prompt: id, node }),
                    Some(_) => {}
                    None => self.finish(now, &id, Ending::Completed),
                }
            }
            ServerMessage::Progress {
                prompt_id,
                node,
                value,
                max,
            } => {
                let Some(id) = self.target(prompt_id.as_ref()) else {
                    if prompt_id.is_some() {
                        self.elsewhere = true;
                    }
                    return;
                };
                self.touch(&id, now);
                if !self.wants_progress(&id) {
                    return;
                }
                self.events.push_back(Event::Progress {
                    prompt: id,
                    node,
                    value,
                    max,
                });
            }
            ServerMessage::ProgressState { prompt_id, .. } => {
                self.on_progress_state(now, prompt_id.as_str());
            }
            ServerMessage::Executed {
                prompt_id,
                node,
                output,
            } => {
                let Some(id) = self.resolve(&prompt_id) else {
                    return;
                };
                self.touch(&id, now);
                self.node_output(now, &id, node, output);
            }
            ServerMessage::ExecutionSuccess { prompt_id } => match self.resolve(&prompt_id) {
                Some(id) => self.finish(now, &id, Ending::Completed),
                None => self.elsewhere = false,
            },
            ServerMessage::ExecutionError(error) => {
                if let Some(id) = self.resolve(&error.prompt_id) {
                    let ending = Event::Failed {
                        prompt: id.clone(),
                        failure: Failure::Execution(error),
                    };
                    self.finish(now, &id, Ending::Event(ending));
                } else {
                    self.elsewhere = false;
                }
            }
            ServerMessage::ExecutionInterrupted(info) => {
                if let Some(id) = self.resolve(&info.prompt_id) {
                    let ending = Event::Interrupted {
                        prompt: id.clone(),
                        node: info.node_id,
                    };
                    self.finish(now, &id, Ending::Event(ending));
                } else {
                    self.elsewhere = false;
                }
            }
        }
    }

    /// A node's `ui` data (from `executed`, or `/history` after a gap): its files are fetched
    /// (before the prompt may complete) and the data is reported as it came.
    fn node_output(
        &mut self,
        now: Duration,
        id: &PromptId,
        node: NodeId,
        output: serde_json::Map<String, serde_json::Value>,
    ) {
        if let Some(p) = self.prompts.get_mut(id) {
            p.ui_reported.insert(node.clone());
        }
        if self.config.fetch_files {
            for file in crate::wire::message::files_in_output(&output) {
                self.fetch_file(now, id, &node, file);
            }
        }
        self.events.push_back(Event::NodeOutput {
            prompt: id.clone(),
            node,
            output,
        });
    }

    /// The server signalled the prompt's end: report it now, or once its files are fetched.
    fn finish(&mut self, now: Duration, id: &PromptId, ending: Ending) {
        let Some(p) = self.prompts.get_mut(id) else {
            return;
        };
        if p.ending.is_some() {
            return; // the first end signal wins
        }
        p.advance(None);
        if self.running.as_ref() == Some(id) {
            self.running = None;
        }
        p.ending = Some(ending);
        self.release(now, id);
    }

    /// Reports a held ending once no file fetch is outstanding, and a completion once
    /// `/history` was read if messages about the prompt may have been missed.
    fn release(&mut self, now: Duration, id: &PromptId) {
        let Some(p) = self.prompts.get_mut(id) else {
            return;
        };
        if p.files_pending > 0 {
            return;
        }
        if p.unheard && p.ending == Some(Ending::Completed) {
            // What the socket missed (a node's `executed` with its files) is in the history.
            if p.reconcile.is_none() && p.recheck_at.is_none() {
                self.ask_history(now, id);
            }
            return;
        }
        let event = match p.ending.take() {
            None => return,
            Some(Ending::Event(event)) => event,
            Some(Ending::Completed) => {
                let lost = p.lost_ws_nodes();
                if lost.is_empty() {
                    Event::Completed { prompt: id.clone() }
                } else {
                    Event::Failed {
                        prompt: id.clone(),
                        failure: Failure::LostOutputs { nodes: lost },
                    }
                }
            }
        };
        self.end(id, event);
    }

    fn fail(&mut self, id: &PromptId, failure: Failure) {
        self.end(
            id,
            Event::Failed {
                prompt: id.clone(),
                failure,
            },
        );
    }

    pub(super) fn on_binary(&mut self, now: Duration, frame: Bytes) -> Result<(), ProtocolError> {
        let decoded = match BinaryFrame::decode_with_limit(&frame, self.config.max_frame_len) {
            Ok(decoded) => decoded,
            Err(e) => {
                let e = ProtocolError::Frame(e);
                // A damaged frame while an output node runs may be a damaged output; a text
                // frame (type 3) cannot be one.
                let text_frame =
                    frame.get(..4) == Some(&crate::wire::frame::TEXT.to_be_bytes()[..]);
                if text_frame {
                    return Err(e);
                }
                if self.elsewhere {
                    self.image_not_ours(now);
                } else if let Some(id) = self.running.clone() {
                    let at_output = self.prompts.get(&id).is_some_and(|p| {
                        p.current
                            .as_ref()
                            .is_some_and(|(node, _)| p.is_ws_output(node.as_str()))
                    });
                    if at_output {
                        self.fail(&id, Failure::Protocol(e.clone()));
                    }
                }
                return Err(e);
            }
        };
        let (id, node, format, image) = match decoded {
            BinaryFrame::Text { node_id, text } => {
                let prompt = self.running.clone().filter(|_| !self.elsewhere);
                if let Some(id) = &prompt {
                    self.touch(&id.clone(), now);
                }
                self.events.push_back(Event::Text {
                    prompt,
                    node: node_id.into(),
                    text: text.to_owned(),
                });
                return Ok(());
            }
            BinaryFrame::ImageWithMetadata {
                metadata,
                format,
                image,
            } => {
                let Some(id) = self.resolve(metadata.prompt_id.as_str()) else {
                    return Ok(());
                };
                (id, Some(NodeId::from(metadata.node_id)), format, image)
            }
            BinaryFrame::Image { format, image } => {
                let Some(id) = self.implied() else {
                    if self.elsewhere {
                        self.image_not_ours(now);
                    }
                    return Ok(());
                };
                let node = self
                    .prompts
                    .get(&id)
                    .and_then(|p| p.current.as_ref().map(|(n, _)| n.clone()));
                (id, node, format, image)
            }
        };
        self.touch(&id, now);
        let image = Image {
            format,
            data: frame.slice_ref(image),
        };
        let Some(p) = self.prompts.get_mut(&id) else {
            return Ok(());
        };
        let event = match node {
            Some(node) if p.is_ws_output(node.as_str()) => {
                let index = p.next_index(&node);
                Event::Output {
                    prompt: id,
                    node,
                    index,
                    image,
                    file: None,
                }
            }
            node => Event::Preview {
                prompt: id,
                node,
                image,
            },
        };
        self.events.push_back(event);
        Ok(())
    }

    pub(super) fn on_response(
        &mut self,
        now: Duration,
        pending: Pending,
        result: Result<HttpResponse, TransportError>,
    ) {
        match pending {
            Pending::FireAndForget => {}
            Pending::Dequeue(id) => {
                self.request(now, http::interrupt(Some(&id)), Pending::FireAndForget);
            }
            Pending::Post(id) => self.on_post(now, &id, result),
            Pending::View {
                prompt,
                node,
                index,
                file,
            } => {
                self.view_done();
                self.on_view(now, &prompt, node, index, file, result);
                self.start_views(now);
            }
            Pending::History(id) => self.on_history(now, &id, result),
            Pending::Queue(id) => self.on_queue(now, &id, result),
        }
    }

    fn on_post(
        &mut self,
        now: Duration,
        id: &PromptId,
        result: Result<HttpResponse, TransportError>,
    ) {
        if !self.prompts.contains_key(id) {
            return;
        }
        let response = match result {
            Ok(r) => r,
            Err(error) => {
                // The server may have queued it anyway: the id is ours, so ask it.
                if let Some(p) = self.prompts.get_mut(id) {
                    p.phase = Phase::Accepted;
                    p.reconcile_after_post = Some(error);
                }
                self.ask_history(now, id);
                return;
            }
        };
        match http::decode_prompt(&response) {
            Ok(PromptOutcome::Accepted(accepted)) => {
                if accepted.prompt_id != *id {
                    self.aliases.insert(accepted.prompt_id.clone(), id.clone());
                }
                let gap = match self.prompts.get_mut(id) {
                    Some(p) => {
                        if p.phase == Phase::Posted {
                            p.phase = Phase::Accepted;
                        }
                        for (_, error) in accepted.node_errors.iter() {
                            p.skipped_outputs
                                .extend(error.dependent_outputs.iter().cloned());
                        }
                        p.gap && p.reconcile.is_none()
                    }
                    None => false,
                };
                self.events.push_back(Event::Accepted {
                    prompt: id.clone(),
                    number: accepted.number,
                    warnings: accepted.node_errors,
                });
                if gap && self.is_connected() {
                    self.ask_history(now, id);
                }
            }
            Ok(PromptOutcome::Rejected(rejection)) => {
                self.end(
                    id,
                    Event::Rejected {
                        prompt: id.clone(),
                        rejection,
                    },
                );
            }
            Err(e) => self.fail(id, Failure::Protocol(e)),
        }
    }

    fn on_view(
        &mut self,
        now: Duration,
        id: &PromptId,
        node: NodeId,
        index: u32,
        file: FileRef,
        result: Result<HttpResponse, TransportError>,
    ) {
        let Some(p) = self.prompts.get_mut(id) else {
            return;
        };
        p.files_pending = p.files_pending.saturating_sub(1);
        let data = match result
            .map_err(ExchangeError::from)
            .and_then(|r| http::decode_view(&r).map_err(ExchangeError::from))
        {
            Ok(data) => data,
            Err(error) => return self.fail(id, Failure::FileFetch { file, error }),
        };
        let format =
            ImageFormat::sniff(&data).or_else(|| ImageFormat::from_file_name(&file.filename));
        let event = match format {
            Some(format) => Event::Output {
                prompt: id.clone(),
                node,
                index,
                image: Image { format, data },
                file: Some(file),
            },
            None => Event::File {
                prompt: id.clone(),
                node,
                index,
                file,
                data,
            },
        };
        self.events.push_back(event);
        self.release(now, id);
    }

    fn on_history(
        &mut self,
        now: Duration,
        id: &PromptId,
        result: Result<HttpResponse, TransportError>,
    ) {
        let Some(step) = self.prompts.get(id).and_then(|p| p.reconcile) else {
            return;
        };
        let entry = match result {
            Ok(r) => match http::decode_history(&r, id) {
                Ok(entry) => entry,
                Err(e) => return self.fail(id, Failure::Protocol(e)),
            },
            Err(error) => {
                return self.fail(
                    id,
                    Failure::Transport {
                        context: "GET /history",
                        error,
                    },
                );
            }
        };
        let Some(entry) = entry else {
            if step == Reconcile::History {
                if let Some(p) = self.prompts.get_mut(id) {
                    p.reconcile = Some(Reconcile::Queue);
                }
                self.lookup(now, http::queue(), Pending::Queue(id.clone()));
            } else {
                self.not_found(id);
            }
            return;
        };
        // The history is the server's word on the prompt: it replaces a completion held for it.
        if let Some(p) = self.prompts.get_mut(id) {
            p.ending = None;
            p.unheard = false;
            p.recheck_at = None;
        }
        if let Some(error) = entry.execution_error() {
            let ending = Event::Failed {
                prompt: id.clone(),
                failure: Failure::Execution(Box::new(error)),
            };
            return self.finish(now, id, Ending::Event(ending));
        }
        if entry.interrupted() {
            return self.finish(
                now,
                id,
                Ending::Event(Event::Interrupted {
                    prompt: id.clone(),
                    node: None,
                }),
            );
        }
        // What the socket missed: the `ui` data (texts, file names) of nodes not yet reported.
        for (node, output) in entry.outputs {
            let seen = self
                .prompts
                .get(id)
                .is_none_or(|p| p.ui_reported.contains(&node));
            if !seen {
                self.node_output(now, id, node, output);
            }
        }
        if let Some(p) = self.prompts.get_mut(id) {
            p.reconcile = None;
            // What ran while nobody listened is unknown: only nodes seen whole count.
            p.current = None;
            p.gap = true;
        }
        self.finish(now, id, Ending::Completed);
    }

    fn on_queue(
        &mut self,
        now: Duration,
        id: &PromptId,
        result: Result<HttpResponse, TransportError>,
    ) {
        if self.prompts.get(id).and_then(|p| p.reconcile) != Some(Reconcile::Queue) {
            return;
        }
        let queue = match result {
            Ok(r) => match http::decode_queue(&r) {
                Ok(q) => q,
                Err(e) => return self.fail(id, Failure::Protocol(e)),
            },
            Err(error) => {
                return self.fail(
                    id,
                    Failure::Transport {
                        context: "GET /queue",
                        error,
                    },
                );
            }
        };
        if let Some(position) = queue.contains(id) {
            // Still queued or running: its messages will come on the socket.
            if let Some(p) = self.prompts.get_mut(id) {
                p.reconcile = None;
                p.reconcile_after_post = None;
                if p.ending.is_some() {
                    // It ended (the socket said so) but its history is not written yet.
                    p.rechecks += 1;
                    if p.rechecks > RECHECKS {
                        let checks = p.rechecks;
                        return self.fail(id, Failure::NoHistory { checks });
                    }
                    p.recheck_at = Some(now + RECHECK_FIRST * (1 << (p.rechecks - 1)));
                } else if matches!(position, QueuePosition::Pending { .. }) {
                    // Not started: nothing of it was missed.
                    p.gap = false;
                    p.unheard = false;
                }
            }
        } else {
            if let Some(p) = self.prompts.get_mut(id) {
                p.reconcile = Some(Reconcile::HistoryAgain);
            }
            self.lookup(now, http::history(id), Pending::History(id.clone()));
        }
    }

    /// Neither the history nor the queue knows the prompt.
    fn not_found(&mut self, id: &PromptId) {
        let failure = match self
            .prompts
            .get_mut(id)
            .and_then(|p| p.reconcile_after_post.take())
        {
            Some(error) => Failure::Transport {
                context: "POST /prompt",
                error,
            },
            None => Failure::NotOnServer,
        };
        self.fail(id, failure);
    }
}
