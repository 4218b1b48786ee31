//! The events of a pool on their way to a reader that may be slower than the servers:
//! [`EventQueue`].

use std::collections::VecDeque;

use crate::session::Event;

use super::report::PoolEvent;

/// A bounded queue of [`PoolEvent`]s, for one job's handle or for the pool-wide stream: the
/// driver [`push`](EventQueue::push)es without waiting, the reader [`pop`](EventQueue::pop)s.
///
/// # How it works
///
/// What waits is kept small by what the event is:
///
/// | event | while fewer than `cap` progress events wait | once `cap` wait |
/// | --- | --- | --- |
/// | `Dispatched`, `Accepted`, `Output`, `Finished`; `Progress` of [`Event::Started`] | kept | kept (never dropped) |
/// | `Progress` of [`Event::Progress`] | replaces an unread one of the same job and node | same |
/// | any other `Progress` (previews, node started, cached...) | kept | dropped (counted) |
///
/// **Bounds.** At most `cap` progress events wait. The rest are bounded by the jobs: a
/// dispatch and an acceptance per attempt, the outputs of a run, one report per job (and the
/// pool counts an unread report against its backpressure).
#[derive(Debug, Clone)]
pub struct EventQueue {
    queue: VecDeque<PoolEvent>,
    cap: usize,
    /// Progress events waiting.
    progress: usize,
    dropped: u64,
    coalesced: u64,
}

enum Class {
    Kept,
    Latest,
    Droppable,
}

fn class(event: &PoolEvent) -> Class {
    match event {
        PoolEvent::Progress {
            event: Event::Started { .. },
            ..
        } => Class::Kept,
        PoolEvent::Progress {
            event: Event::Progress { .. },
            ..
        } => Class::Latest,
        PoolEvent::Progress { .. } => Class::Droppable,
        _ => Class::Kept,
    }
}

/// Whether `a` and `b` are progress of the same job and node.
fn same_progress(a: &PoolEvent, b: &PoolEvent) -> bool {
    match (a, b) {
        (
            PoolEvent::Progress {
                job: ja,
                event: Event::Progress { node: na, .. },
                ..
            },
            PoolEvent::Progress {
                job: jb,
                event: Event::Progress { node: nb, .. },
                ..
            },
        ) => ja == jb && na == nb,
        _ => false,
    }
}

fn is_progress(event: &PoolEvent) -> bool {
    matches!(event, PoolEvent::Progress { .. })
}

impl EventQueue {
    /// An empty queue holding at most `cap` progress events (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            cap: cap.max(1),
            progress: 0,
            dropped: 0,
            coalesced: 0,
        }
    }

    /// Adds an event, or replaces or drops it as the table in the type's docs says.
    pub fn push(&mut self, event: PoolEvent) {
        match class(&event) {
            Class::Kept => {}
            Class::Latest => {
                if let Some(old) = self.queue.iter_mut().find(|e| same_progress(e, &event)) {
                    *old = event;
                    self.coalesced += 1;
                    return;
                }
                if self.progress >= self.cap {
                    self.dropped += 1;
                    return;
                }
            }
            Class::Droppable => {
                if self.progress >= self.cap {
                    self.dropped += 1;
                    return;
                }
            }
        }
        if is_progress(&event) {
            self.progress += 1;
        }
        self.queue.push_back(event);
    }

    /// The oldest event.
    pub fn pop(&mut self) -> Option<PoolEvent> {
        let event = self.queue.pop_front()?;
        if is_progress(&event) {
            self.progress = self.progress.saturating_sub(1);
        }
        Some(event)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Progress events dropped because the reader lagged.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Progress events replaced, unread, by a later one of the same job and node.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Image;
    use crate::wire::ImageFormat;
    use crate::{NodeId, PromptId};

    use super::super::{JobId, JobReport};

    fn prompt() -> PromptId {
        PromptId::from_random(1)
    }

    fn progress(job: u64, node: &str, value: f64) -> PoolEvent {
        PoolEvent::Progress {
            job: JobId(job),
            server: 0,
            event: Event::Progress {
                prompt: prompt(),
                node: Some(NodeId::from(node)),
                value,
                max: 10.0,
            },
        }
    }

    fn preview(job: u64) -> PoolEvent {
        PoolEvent::Progress {
            job: JobId(job),
            server: 0,
            event: Event::Preview {
                prompt: prompt(),
                node: None,
                image: Image {
                    format: ImageFormat::Png,
                    data: bytes::Bytes::from_static(b"p"),
                },
            },
        }
    }

    fn output(job: u64) -> PoolEvent {
        PoolEvent::Output {
            job: JobId(job),
            server: 0,
            attempt: 1,
            event: Event::Output {
                prompt: prompt(),
                node: NodeId::from("9"),
                index: 0,
                image: Image {
                    format: ImageFormat::Png,
                    data: bytes::Bytes::from_static(b"o"),
                },
                file: None,
            },
        }
    }

    #[test]
    fn progress_is_coalesced_previews_dropped_outputs_and_reports_kept() {
        let mut q = EventQueue::new(2);
        q.push(progress(1, "3", 1.0));
        q.push(progress(1, "3", 2.0));
        q.push(progress(2, "3", 1.0));
        assert_eq!((q.len(), q.coalesced()), (2, 1));
        q.push(preview(1));
        assert_eq!((q.len(), q.dropped()), (2, 1), "at the bound");
        for _ in 0..10 {
            q.push(output(1));
        }
        q.push(PoolEvent::Finished(JobReport::not_run(
            JobId(1),
            super::super::JobError::Cancelled,
        )));
        assert_eq!(q.len(), 13, "outputs and reports are never dropped");
        q.push(progress(1, "3", 9.0));
        assert_eq!(q.coalesced(), 2, "coalesced even at the bound");
        let Some(PoolEvent::Progress {
            event: Event::Progress { value, .. },
            ..
        }) = q.pop()
        else {
            panic!("the latest progress first, in the first one's place")
        };
        assert_eq!(value, 9.0);
        q.push(preview(2));
        assert_eq!(q.dropped(), 1, "room again: kept");
        let mut kinds = Vec::new();
        while let Some(e) = q.pop() {
            kinds.push(match e {
                PoolEvent::Progress { job, .. } => format!("p{job}"),
                PoolEvent::Output { .. } => "o".into(),
                PoolEvent::Finished(_) => "f".into(),
                _ => "?".into(),
            });
        }
        assert_eq!(kinds.len(), 13);
        assert_eq!(kinds[0], "p2");
        assert_eq!(kinds[11], "f");
        assert_eq!(kinds[12], "p2");
    }
}
