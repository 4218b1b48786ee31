//! The running prompt: its plan of timed actions (simulated or replayed), carrying them out, and
//! its end (success, or an interrupt at a step or node boundary) with its history entry.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::graph::{self, SAMPLERS};
use super::replay::{self, Answer};
use super::submit::{Job, Mode};
use super::{Audience, Frame, ImageSpec, MockServer, pyjson};
use comfy_proxy::ids::NodeId;
use comfy_proxy::wire::ImageFormat;
use comfy_proxy::wire::frame::{encode_image, encode_image_with_metadata};

/// One thing a run does, at a time after its start.
#[derive(Debug, Clone)]
struct Timed {
    at: Duration,
    act: Act,
}

#[derive(Debug, Clone)]
enum Act {
    /// `execution_start` and `execution_cached`.
    Start,
    /// `progress_state` (running) and `executing`. An interrupt boundary.
    NodeStart(NodeId),
    /// `progress_state` and `progress`, with an image or not. An interrupt boundary.
    Progress {
        node: NodeId,
        value: u32,
        max: u32,
        image: Option<(ImageFormat, ImageSpec)>,
    },
    /// Renders `batch` PNGs into a folder and reports them with `executed`.
    SaveFiles {
        node: NodeId,
        kind: &'static str,
        prefix: String,
        spec: ImageSpec,
        batch: u32,
    },
    /// Stores one file (a video, an audio clip) and reports it with `executed` under `key`
    /// (`images` for videos, as the real `SaveVideo` does, with `animated: [true]`).
    SaveMedia {
        node: NodeId,
        prefix: String,
        ext: &'static str,
        key: &'static str,
        animated: bool,
        bytes: Bytes,
    },
    /// `executed` with this `ui` output (`PreviewAny`'s text).
    Ui { node: NodeId, output: Value },
    /// `progress_state` (finished).
    NodeDone {
        node: NodeId,
        value: Value,
        max: Value,
    },
    /// `execution_success`, then the end.
    Success,
    /// A recorded frame; `executing` and `progress` messages are interrupt boundaries.
    Raw(Frame),
    /// The end of a replay.
    End,
}

/// The prompt that runs now.
#[derive(Debug)]
pub(super) struct Run {
    job: Job,
    started: Duration,
    plan: VecDeque<Timed>,
    interrupt: bool,
    current: Option<NodeId>,
    executed: Vec<NodeId>,
    /// The `nodes` of `progress_state`: every node started so far, with its latest state.
    states: Map<String, Value>,
    /// The history's `status.messages`.
    messages: Vec<Value>,
    /// The history's `outputs` and `meta`.
    ui_outputs: Map<String, Value>,
    meta: Map<String, Value>,
    success: bool,
}

impl Run {
    pub fn prompt_id(&self) -> &str {
        &self.job.id
    }

    pub fn job(&self) -> &Job {
        &self.job
    }

    pub fn audience(&self) -> &Audience {
        &self.job.audience
    }

    pub fn current_node(&self) -> Option<&str> {
        self.current.as_ref().map(NodeId::as_str)
    }

    /// Asks the run to stop at its next boundary.
    pub fn interrupt(&mut self) {
        self.interrupt = true;
    }

    /// When the next action is due.
    pub fn next_at(&self) -> Duration {
        let offset = self.plan.front().map_or(Duration::ZERO, |t| t.at);
        self.started.saturating_add(offset)
    }

    fn class_of(&self, node: &str) -> Option<&str> {
        self.job.workflow.class_of(node)
    }
}

fn millis(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

fn mime(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Webp => "image/webp",
        _ => "image/png",
    }
}

impl MockServer {
    pub(super) fn advance(&mut self, now: Duration) {
        loop {
            if let Some(mut run) = self.running.take() {
                let at = run.next_at();
                if at > now {
                    self.running = Some(run);
                    return;
                }
                let ended = match run.plan.pop_front() {
                    Some(timed) => self.perform(&mut run, at, timed.act),
                    None => true,
                };
                if ended {
                    self.finish(run, at);
                } else {
                    self.running = Some(run);
                }
                continue;
            }
            let Some(job) = self.pending.first() else {
                return;
            };
            let start = job.queued_at.max(self.idle_since);
            if start > now {
                return;
            }
            self.start(start);
        }
    }

    fn start(&mut self, at: Duration) {
        if self.pending.is_empty() {
            return;
        }
        let job = self.pending.remove(0);
        let plan = match &job.mode {
            Mode::Simulate { order } => self.simulate_plan(&job, order),
            Mode::Replay(index) => self.replay_plan(&job, *index),
        };
        self.running = Some(Run {
            job,
            started: at,
            plan,
            interrupt: false,
            current: None,
            executed: Vec::new(),
            states: Map::new(),
            messages: Vec::new(),
            ui_outputs: Map::new(),
            meta: Map::new(),
            success: false,
        });
        self.broadcast_status();
    }

    fn simulate_plan(&self, job: &Job, order: &[NodeId]) -> VecDeque<Timed> {
        let wf = &job.workflow;
        let nodes = u32::try_from(order.len()).unwrap_or(u32::MAX).max(1);
        let per_node = self.job_time / nodes;
        let mut t = Duration::ZERO;
        let mut plan = VecDeque::from([Timed {
            at: t,
            act: Act::Start,
        }]);
        let mut push = |at: Duration, act: Act| plan.push_back(Timed { at, act });
        let one = || (json!(1.0), json!(1.0));
        for node in order {
            let class = wf.class_of(node.as_str()).unwrap_or_default();
            push(t, Act::NodeStart(node.clone()));
            t = t.saturating_add(per_node);
            let (width, height, batch) = graph::image_size(wf, node.as_str());
            let spec = ImageSpec {
                width,
                height,
                seed: graph::seed(wf, node.as_str()),
                index: 0,
                step: None,
            };
            let (value, max) = if SAMPLERS.contains(&class) {
                let steps = graph::steps(wf, node.as_str());
                for k in 1..=steps {
                    t = t.saturating_add(self.step);
                    let image = self.previews.then(|| {
                        let spec = ImageSpec {
                            step: Some((k, steps)),
                            ..spec.clone()
                        };
                        (ImageFormat::Jpeg, spec)
                    });
                    let (node, value, max) = (node.clone(), k, steps);
                    push(
                        t,
                        Act::Progress {
                            node,
                            value,
                            max,
                            image,
                        },
                    );
                }
                (json!(steps), json!(steps))
            } else if class == "SaveImageWebsocket" {
                for k in 0..batch {
                    let spec = ImageSpec {
                        index: k,
                        ..spec.clone()
                    };
                    let image = Some((ImageFormat::Png, spec));
                    let (node, value, max) = (node.clone(), k, batch);
                    push(
                        t,
                        Act::Progress {
                            node,
                            value,
                            max,
                            image,
                        },
                    );
                }
                (json!(batch), json!(batch))
            } else if class == "SaveImage" || class == "PreviewImage" {
                let (kind, prefix) = if class == "SaveImage" {
                    let prefix = wf
                        .node(node.as_str())
                        .and_then(|n| n.input("filename_prefix"))
                        .and_then(|i| i.as_value())
                        .and_then(Value::as_str)
                        .unwrap_or("ComfyUI");
                    ("output", prefix.to_owned())
                } else {
                    ("temp", "ComfyUI_temp_mocks".to_owned())
                };
                let node = node.clone();
                push(
                    t,
                    Act::SaveFiles {
                        node,
                        kind,
                        prefix,
                        spec,
                        batch,
                    },
                );
                one()
            } else if let Some(act) = media_act(wf, node, class) {
                push(t, act);
                one()
            } else {
                one()
            };
            let node = node.clone();
            push(t, Act::NodeDone { node, value, max });
        }
        push(t, Act::Success);
        plan
    }

    fn replay_plan(&mut self, job: &Job, index: usize) -> VecDeque<Timed> {
        let mut plan = VecDeque::new();
        let Some(Answer::Accepted {
            prompt_id,
            frames,
            files,
            ..
        }) = self.recordings.get(index).map(|r| &r.answer)
        else {
            plan.push_back(Timed {
                at: Duration::ZERO,
                act: Act::End,
            });
            return plan;
        };
        for (key, bytes) in files {
            self.files.insert(key.clone(), bytes.clone());
        }
        let t0 = frames.first().map_or(0, |(t, _)| *t);
        let mut at = Duration::ZERO;
        for (t, frame) in frames {
            at = replay::scaled(t.saturating_sub(t0), self.speed);
            let act = Act::Raw(replay::rewrite(frame, prompt_id, &job.id));
            plan.push_back(Timed { at, act });
        }
        plan.push_back(Timed { at, act: Act::End });
        plan
    }

    /// Carries out one action at `at`; true when the run ended with it.
    fn perform(&mut self, run: &mut Run, at: Duration, act: Act) -> bool {
        let id = run.job.id.clone();
        let audience = run.job.audience.clone();
        let text = |kind: &str, data: Value| Frame::Text(pyjson::message(kind, data));
        match act {
            Act::Start => {
                let start = json!({"prompt_id": id, "timestamp": millis(at)});
                let cached = json!({"nodes": [], "prompt_id": id, "timestamp": millis(at)});
                for (kind, data) in [("execution_start", start), ("execution_cached", cached)] {
                    self.send_to(&audience, text(kind, data.clone()));
                    run.messages.push(json!([kind, data]));
                }
            }
            Act::NodeStart(node) => {
                if run.interrupt {
                    return self.interrupted(run, at, Some(node));
                }
                run.current = Some(node.clone());
                self.set_state(run, &node, json!(0.0), json!(1.0), "running");
                let data = json!({"node": node, "display_node": node, "prompt_id": id});
                self.send_to(&audience, text("executing", data));
            }
            Act::Progress {
                node,
                value,
                max,
                image,
            } => {
                if run.interrupt {
                    return self.interrupted(run, at, None);
                }
                self.set_state(run, &node, json!(value), json!(max), "running");
                let data = json!({"value": value, "max": max, "prompt_id": id, "node": node});
                let progress = text("progress", data);
                self.send_with_image(&audience, &id, &node, progress, image);
            }
            Act::SaveFiles {
                node,
                kind,
                prefix,
                spec,
                batch,
            } => {
                let mut images = Vec::new();
                for index in 0..batch {
                    let spec = ImageSpec {
                        index,
                        ..spec.clone()
                    };
                    let png = self.renderer.png(&spec);
                    let (subfolder, filename) = self.save_file(kind, &prefix, "png", png);
                    images
                        .push(json!({"filename": filename, "subfolder": subfolder, "type": kind}));
                }
                self.executed(run, &node, json!({ "images": images }));
            }
            Act::SaveMedia {
                node,
                prefix,
                ext,
                key,
                animated,
                bytes,
            } => {
                let (subfolder, filename) = self.save_file("output", &prefix, ext, bytes);
                let file = json!({"filename": filename, "subfolder": subfolder, "type": "output"});
                let mut output = json!({ key: [file] });
                if animated {
                    output["animated"] = json!([true]);
                }
                self.executed(run, &node, output);
            }
            Act::Ui { node, output } => self.executed(run, &node, output),
            Act::NodeDone { node, value, max } => {
                self.set_state(run, &node, value, max, "finished");
                run.executed.push(node);
            }
            Act::Success => {
                let data = json!({"prompt_id": id, "timestamp": millis(at)});
                self.send_to(&audience, text("execution_success", data.clone()));
                run.messages.push(json!(["execution_success", data]));
                run.success = true;
                return true;
            }
            Act::Raw(frame) => return self.perform_raw(run, at, frame),
            Act::End => return true,
        }
        false
    }

    /// A recorded frame: sent as it is, and read for the history and the interrupt boundaries.
    fn perform_raw(&mut self, run: &mut Run, at: Duration, frame: Frame) -> bool {
        let audience = run.job.audience.clone();
        let parsed = match &frame {
            Frame::Text(text) => serde_json::from_str::<Value>(text).ok(),
            Frame::Binary(_) => None,
        };
        if let Some(msg) = parsed {
            let kind = msg.get("type").and_then(Value::as_str).unwrap_or_default();
            let data = msg.get("data").cloned().unwrap_or(Value::Null);
            let node = data.get("node").and_then(Value::as_str).map(NodeId::from);
            match kind {
                "executing" | "progress" if run.interrupt => {
                    let next = node.filter(|_| kind == "executing");
                    return self.interrupted(run, at, next);
                }
                "executing" => {
                    if let Some(node) = node
                        && let Some(prev) = run.current.replace(node)
                    {
                        run.executed.push(prev);
                    }
                }
                "execution_start"
                | "execution_cached"
                | "execution_error"
                | "execution_interrupted" => run.messages.push(json!([kind, data])),
                "execution_success" => {
                    run.messages.push(json!([kind, data]));
                    run.success = true;
                }
                "executed" => {
                    if let (Some(node), Some(output)) = (node, data.get("output")) {
                        run.ui_outputs.insert(node.to_string(), output.clone());
                        let meta = json!({"node_id": node, "display_node": node, "parent_node": null, "real_node_id": node});
                        run.meta.insert(node.to_string(), meta);
                    }
                }
                _ => {}
            }
        }
        self.send_to(&audience, frame);
        false
    }

    /// Records `node`'s state and sends the whole `progress_state`.
    fn set_state(&mut self, run: &mut Run, node: &NodeId, value: Value, max: Value, state: &str) {
        let id = run.job.id.clone();
        let entry = json!({
            "value": value, "max": max, "state": state, "node_id": node, "prompt_id": id,
            "display_node_id": node, "parent_node_id": null, "real_node_id": node,
        });
        run.states.insert(node.to_string(), entry);
        if self.recipients(&run.job.audience).is_empty() {
            return;
        }
        let data = json!({"prompt_id": id, "nodes": Value::Object(run.states.clone())});
        let audience = run.job.audience.clone();
        self.send_to(
            &audience,
            Frame::Text(pyjson::message("progress_state", data)),
        );
    }

    /// `progress`, with its image if any: a type 4 frame before it to sockets that asked for
    /// metadata, a type 1 frame after it to the others (the recorded order).
    fn send_with_image(
        &mut self,
        audience: &Audience,
        prompt: &str,
        node: &NodeId,
        progress: Frame,
        image: Option<(ImageFormat, ImageSpec)>,
    ) {
        let recipients = self.recipients(audience);
        let image = match image {
            Some((format, spec)) if !recipients.is_empty() => {
                let bytes = match format {
                    ImageFormat::Jpeg => self.renderer.jpeg(&spec),
                    _ => self.renderer.png(&spec),
                };
                Some((format, bytes))
            }
            _ => None,
        };
        let (mut plain, mut with_meta): (Option<Frame>, Option<Frame>) = (None, None);
        for (conn, metadata) in recipients {
            let Some((format, bytes)) = &image else {
                self.send(conn, progress.clone());
                continue;
            };
            if metadata {
                let frame = with_meta.get_or_insert_with(|| {
                    let meta = json!({
                        "node_id": node, "prompt_id": prompt, "display_node_id": node,
                        "parent_node_id": null, "real_node_id": node, "image_type": mime(*format),
                    });
                    let meta = pyjson::dumps(&meta);
                    Frame::Binary(Bytes::from(encode_image_with_metadata(&meta, bytes)))
                });
                let frame = frame.clone();
                self.send(conn, frame);
                self.send(conn, progress.clone());
            } else {
                let frame = plain
                    .get_or_insert_with(|| Frame::Binary(Bytes::from(encode_image(*format, bytes))))
                    .clone();
                self.send(conn, progress.clone());
                self.send(conn, frame);
            }
        }
    }

    /// Stores a PNG as `{prefix}_{counter:05}_.png`; the prefix may name a subfolder.
    /// Sends `executed` with a node's `ui` output and keeps it for the history entry.
    fn executed(&mut self, run: &mut Run, node: &NodeId, output: Value) {
        let id = run.job.id.clone();
        let data = json!({"node": node, "display_node": node, "output": output, "prompt_id": id});
        let audience = run.job.audience.clone();
        self.send_to(&audience, Frame::Text(pyjson::message("executed", data)));
        run.ui_outputs.insert(node.to_string(), output);
        let meta = json!({"node_id": node, "display_node": node, "parent_node": null, "real_node_id": node});
        run.meta.insert(node.to_string(), meta);
    }

    fn save_file(&mut self, kind: &str, prefix: &str, ext: &str, data: Bytes) -> (String, String) {
        let (subfolder, base) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let key = (kind.to_owned(), subfolder.to_owned(), base.to_owned());
        let counter = self.counters.entry(key).or_insert(0);
        *counter = counter.saturating_add(1);
        let filename = format!("{base}_{counter:05}_.{ext}");
        let key = (kind.to_owned(), subfolder.to_owned(), filename.clone());
        self.files.insert(key, data);
        (subfolder.to_owned(), filename)
    }

    /// Ends the run with `execution_interrupted`, naming `next` (the node about to start) or
    /// else the node running.
    fn interrupted(&mut self, run: &mut Run, at: Duration, next: Option<NodeId>) -> bool {
        let node = next.or_else(|| run.current.clone());
        let node_type = node.as_ref().and_then(|n| run.class_of(n.as_str()));
        let data = json!({
            "prompt_id": run.job.id, "node_id": node, "node_type": node_type,
            "executed": run.executed, "timestamp": millis(at),
        });
        let audience = run.job.audience.clone();
        self.send_to(
            &audience,
            Frame::Text(pyjson::message("execution_interrupted", data.clone())),
        );
        run.messages.push(json!(["execution_interrupted", data]));
        run.plan.clear();
        true
    }

    /// After the run's last message: `status`, `executing` with node null, the history entry.
    fn finish(&mut self, run: Run, at: Duration) {
        self.idle_since = at;
        self.broadcast_status();
        let id = run.job.id.clone();
        let data = json!({"node": null, "prompt_id": id});
        self.send_to(
            &run.job.audience,
            Frame::Text(pyjson::message("executing", data)),
        );
        let entry = json!({
            "prompt": run.job.item(),
            "outputs": run.ui_outputs,
            "status": {
                "status_str": if run.success { "success" } else { "error" },
                "completed": run.success,
                "messages": run.messages,
            },
            "meta": run.meta,
        });
        self.record_history(id, entry);
    }
}

/// The smallest files that sniff as what they are: an mp4 (`ftyp` box) and a FLAC (`fLaC`).
const MOCK_MP4: &[u8] = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2\0\0\0\x08free";
const MOCK_FLAC: &[u8] = b"fLaC\x80\0\0\x22\x10\0\x10\0\0\0\0\0\0\0\x0a\xc4\x40\xf0\0\0\0\0";

/// What `SaveVideo`, `SaveAudio` and `PreviewAny` do in the simulation, as ComfyUI 0.3.64
/// reports it: a video under `images` with `animated: [true]` (in `video/` by default), a FLAC
/// under `audio` (in `audio/`), and `{"text": [str(source)]}`.
fn media_act(wf: &comfy_proxy::Workflow, node: &NodeId, class: &str) -> Option<Act> {
    let literal = |name: &str| {
        wf.node(node.as_str())
            .and_then(|n| n.input(name))
            .and_then(|i| i.as_value())
    };
    let prefix = |default: &str| {
        literal("filename_prefix")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let node = node.clone();
    Some(match class {
        "SaveVideo" => Act::SaveMedia {
            node,
            prefix: prefix("video/ComfyUI"),
            ext: "mp4",
            key: "images",
            animated: true,
            bytes: Bytes::from_static(MOCK_MP4),
        },
        "SaveAudio" => Act::SaveMedia {
            node,
            prefix: prefix("audio/ComfyUI"),
            ext: "flac",
            key: "audio",
            animated: false,
            bytes: Bytes::from_static(MOCK_FLAC),
        },
        "PreviewAny" => {
            // Python's str() of the value: a literal, or the `value` of a linked primitive
            // (`PrimitiveString`...); anything else shows as the mock's placeholder.
            let linked = wf
                .node(node.as_str())
                .and_then(|n| n.input("source"))
                .and_then(|i| i.as_link())
                .and_then(|l| wf.node(l.node.as_str()))
                .and_then(|n| n.input("value"))
                .and_then(|i| i.as_value());
            let text = match literal("source").or(linked) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(true)) => "True".to_owned(),
                Some(Value::Bool(false)) => "False".to_owned(),
                Some(Value::Null) => "None".to_owned(),
                Some(v) => v.to_string(),
                None => "mock text".to_owned(),
            };
            Act::Ui {
                node,
                output: json!({"text": [text]}),
            }
        }
        _ => return None,
    })
}
