//! What the session remembers about one prompt it submitted.

use std::time::Duration;

use foldhash::{HashMap, HashSet};
use serde_json::{Map, Value};

use crate::ids::{NodeId, PromptId};
use crate::wire::message::FileRef;
use crate::workflow::Workflow;

use super::event::{Deadline, Deadlines, Event};

/// The class whose images are outputs; every other image is a preview.
pub const SAVE_IMAGE_WEBSOCKET: &str = "SaveImageWebsocket";

/// Where a prompt is in its life. Terminal prompts are removed from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the websocket to open before it is posted.
    Waiting,
    /// `POST /prompt` sent; no answer yet.
    Posted,
    /// The server queued it.
    Accepted,
    /// `execution_start` seen.
    Running,
}

/// A step of the reconciliation after a reconnect: what the last question was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconcile {
    /// Asked `/history/{id}` for the first time.
    History,
    /// History was empty; asked `/queue`.
    Queue,
    /// Not in the queue either; asked `/history/{id}` once more (it may have just finished).
    HistoryAgain,
}

/// A terminal outcome held back until the prompt's file outputs have been fetched.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ending {
    Event(Event),
    /// Completion, to be checked for lost websocket outputs when it is released.
    Completed,
}

#[derive(Debug)]
pub(crate) struct Prompt {
    pub id: PromptId,
    pub workflow: Workflow,
    pub phase: Phase,
    /// `extra_data` and `front`, kept until the prompt is posted.
    pub pending_post: Option<(Option<Map<String, Value>>, bool)>,
    pub submitted_at: Duration,
    pub deadlines: Deadlines,
    /// Report its progress events ([`Submission::progress`](super::Submission::progress)).
    pub progress: bool,
    /// When the idle deadline was last reset (any message for the prompt).
    pub last_activity: Duration,
    /// Output images delivered so far, per node (the next index).
    pub output_index: HashMap<NodeId, u32>,
    /// Files named by `executed` or `/history` that were already asked for.
    pub files_requested: HashSet<FileRef>,
    /// `/view` requests not yet answered.
    pub files_pending: usize,
    /// The ending, once the server signalled it, while files are still being fetched.
    pub ending: Option<Ending>,
    /// The websocket dropped at least once while this prompt was in flight, or a frame that
    /// may have been its did not decode: websocket images may be missing.
    pub gap: bool,
    /// Messages about this prompt may have been missed (a dropped socket, a frame that did not
    /// decode) and `/history` was not read since: its completion waits for that read, which
    /// reports the `ui` data (and fetches the files) the socket missed.
    pub unheard: bool,
    /// When to ask `/history` again: the server said the prompt ended, but still listed it as
    /// running when its history was read (ComfyUI writes the history after
    /// `execution_success`).
    pub recheck_at: Option<Duration>,
    /// `/queue` answers that listed the prompt as running after it ended.
    pub rechecks: u32,
    /// Reconciliation under way, if any.
    pub reconcile: Option<Reconcile>,
    /// The transport error of a `POST /prompt` whose fate is being looked up.
    pub reconcile_after_post: Option<crate::error::TransportError>,
    /// `SaveImageWebsocket` nodes seen from their `executing` to the next node's without a gap.
    pub ws_nodes_whole: HashSet<NodeId>,
    /// The node last seen executing, and whether the socket stayed up since.
    pub current: Option<(NodeId, bool)>,
    /// Output nodes the server said it will skip (`node_errors` on a 200).
    pub skipped_outputs: HashSet<NodeId>,
    /// Nodes whose `ui` data was reported (`executed`), so a `/history` lookup adds only the
    /// others.
    pub ui_reported: HashSet<NodeId>,
}

impl Prompt {
    pub fn new(id: PromptId, workflow: Workflow, deadlines: Deadlines, now: Duration) -> Self {
        Self {
            id,
            workflow,
            phase: Phase::Waiting,
            pending_post: None,
            submitted_at: now,
            deadlines,
            progress: true,
            last_activity: now,
            output_index: HashMap::default(),
            files_requested: HashSet::default(),
            files_pending: 0,
            ending: None,
            gap: false,
            unheard: false,
            recheck_at: None,
            rechecks: 0,
            reconcile: None,
            reconcile_after_post: None,
            ws_nodes_whole: HashSet::default(),
            current: None,
            skipped_outputs: HashSet::default(),
            ui_reported: HashSet::default(),
        }
    }

    pub fn is_ws_output(&self, node: &str) -> bool {
        self.workflow.class_of(node) == Some(SAVE_IMAGE_WEBSOCKET)
    }

    pub fn next_index(&mut self, node: &NodeId) -> u32 {
        let slot = self.output_index.entry(node.clone()).or_insert(0);
        let index = *slot;
        *slot += 1;
        index
    }

    /// Records that `node` (or, with `None`, the end of the prompt) follows the current node.
    pub fn advance(&mut self, node: Option<&NodeId>) {
        if let Some((prev, clean)) = self.current.take()
            && clean
            && self.is_ws_output(prev.as_str())
        {
            self.ws_nodes_whole.insert(prev);
        }
        self.current = node.map(|n| (n.clone(), true));
    }

    /// The socket dropped: whatever node was running may have sent frames to nobody.
    pub fn mark_gap(&mut self) {
        self.gap = true;
        self.unheard = true;
        if let Some((_, clean)) = &mut self.current {
            *clean = false;
        }
    }

    /// A text frame that may have been about this prompt did not decode: a message (an
    /// `executed` with its files, an `executing`) may be lost, though no image was.
    pub fn mark_damaged(&mut self) {
        self.gap = true;
        self.unheard = true;
    }

    /// An image frame that may have been this prompt's was not attributed to it (the server
    /// said it ran another prompt): if an output node was running, it may miss an image.
    pub fn mark_image_lost(&mut self) {
        if let Some((node, clean)) = &mut self.current
            && *clean
            && self.workflow.class_of(node.as_str()) == Some(SAVE_IMAGE_WEBSOCKET)
        {
            *clean = false;
            self.gap = true;
        }
    }

    /// The `SaveImageWebsocket` node that was running when images may have gone missing (a
    /// gap, an image given to nobody): the prompt cannot succeed any more.
    pub fn cut_output(&self) -> Option<&NodeId> {
        match &self.current {
            Some((node, false)) if self.ending.is_none() && self.is_ws_output(node.as_str()) => {
                Some(node)
            }
            _ => None,
        }
    }

    /// `SaveImageWebsocket` nodes whose images may have been lost in a gap.
    pub fn lost_ws_nodes(&self) -> Vec<NodeId> {
        if !self.gap {
            return Vec::new();
        }
        let mut lost: Vec<NodeId> = self
            .workflow
            .nodes_of_class(SAVE_IMAGE_WEBSOCKET)
            .into_iter()
            .filter(|n| !self.ws_nodes_whole.contains(*n) && !self.skipped_outputs.contains(*n))
            .cloned()
            .collect();
        lost.sort();
        lost
    }

    /// The earliest deadline of this prompt and which one it is.
    pub fn next_deadline(&self) -> Option<(Duration, Deadline)> {
        let accept = match self.phase {
            Phase::Waiting | Phase::Posted => self
                .deadlines
                .accept
                .map(|d| (self.submitted_at + d, Deadline::Accept)),
            _ => None,
        };
        let idle = match self.phase {
            Phase::Running => self
                .deadlines
                .idle
                .map(|d| (self.last_activity + d, Deadline::Idle)),
            _ => None,
        };
        let total = self
            .deadlines
            .total
            .map(|d| (self.submitted_at + d, Deadline::Total));
        [accept, idle, total]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}
