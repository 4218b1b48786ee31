//! The per-prompt event queue between a session's adapter and a slow reader: [`Outbox`].

use std::collections::VecDeque;

use crate::ids::NodeId;

use super::event::Event;

/// What an [`Outbox`] did to keep itself small, and the most it ever held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// Previews dropped because the reader lagged.
    pub previews_dropped: u64,
    /// Progress and text events replaced, unread, by a later one of the same node.
    pub coalesced: u64,
    /// Other informational events dropped at the hard bound (`4 × cap`).
    pub others_dropped: u64,
    /// The most events waiting at once.
    pub peak: usize,
}

/// The events of one prompt on their way to a reader that may be slower than the server.
///
/// # How it works
///
/// The adapter [`push`](Outbox::push)es every event of a prompt as the session reports it,
/// without waiting; the prompt's reader [`pop`](Outbox::pop)s them when it gets to them. What
/// waits in between is kept small by a policy that depends on what the event is:
///
/// | event | while fewer than `cap` wait | once `cap` or more wait |
/// | --- | --- | --- |
/// | [`Event::Output`], [`Event::File`], [`Event::NodeOutput`], the terminal event | kept | kept (never dropped) |
/// | [`Event::Progress`], [`Event::Text`] | replaces an unread one of the same node | same |
/// | [`Event::Preview`] | kept | replaces an unread preview of the same node, else dropped |
/// | anything else | kept | kept until `4 × cap` wait, then dropped |
///
/// Every drop and replacement is counted in [`OutboxStats`], which reaches the caller.
///
/// **Bounds.** At most `4 × cap` events wait besides outputs and the terminal event; previews
/// never make the queue grow past `cap`. Outputs are bounded another way: the outbox is
/// [lagging](Outbox::is_lagging) from the moment `cap` events wait until the reader has taken
/// it down to `cap / 2`, and the adapter reports that to
/// [`Session::handle_reader_lag`](super::Session::handle_reader_lag), which starts no `/view`
/// download for the prompt meanwhile. Websocket outputs (`SaveImageWebsocket`) cannot wait on
/// the socket without stalling every other prompt; they are as many as the graph makes.
#[derive(Debug, Clone)]
pub struct Outbox {
    queue: VecDeque<Event>,
    cap: usize,
    lagging: bool,
    stats: OutboxStats,
}

/// How an event is treated by the outbox.
enum Class<'a> {
    /// Never dropped.
    Kept,
    /// Only the latest unread one per node matters.
    Latest(LatestKey<'a>),
    /// Dropped (or replacing an older one) while the reader lags.
    Preview(Option<&'a NodeId>),
    /// Dropped at the hard bound.
    Info,
}

#[derive(PartialEq, Eq)]
enum LatestKey<'a> {
    Progress(Option<&'a NodeId>),
    Text(&'a NodeId),
}

fn class(event: &Event) -> Class<'_> {
    match event {
        // A node's `ui` data carries texts and file names: an output, at most one per node.
        Event::Output { .. } | Event::File { .. } | Event::NodeOutput { .. } => Class::Kept,
        e if e.is_terminal() => Class::Kept,
        Event::Progress { node, .. } => Class::Latest(LatestKey::Progress(node.as_ref())),
        Event::Text { node, .. } => Class::Latest(LatestKey::Text(node)),
        Event::Preview { node, .. } => Class::Preview(node.as_ref()),
        _ => Class::Info,
    }
}

impl Outbox {
    /// An empty outbox that counts its reader as lagging once `cap` events wait (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            cap: cap.max(1),
            lagging: false,
            stats: OutboxStats::default(),
        }
    }

    /// The number of waiting events at which the reader counts as lagging.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// The most informational events that wait; past it they are dropped.
    pub fn hard_limit(&self) -> usize {
        self.cap.saturating_mul(4)
    }

    /// Adds an event, dropping or replacing as the [policy](Outbox) says. Never blocks, never
    /// refuses an output or a terminal event.
    pub fn push(&mut self, event: Event) {
        match class(&event) {
            Class::Kept => self.queue.push_back(event),
            Class::Latest(key) => {
                let earlier = self.queue.iter().position(|e| match class(e) {
                    Class::Latest(k) => k == key,
                    _ => false,
                });
                if let Some(i) = earlier {
                    self.queue.remove(i);
                    self.stats.coalesced += 1;
                    self.queue.push_back(event);
                } else if self.queue.len() >= self.hard_limit() {
                    self.stats.others_dropped += 1;
                } else {
                    self.queue.push_back(event);
                }
            }
            Class::Preview(node) => {
                if self.queue.len() < self.cap {
                    self.queue.push_back(event);
                } else {
                    let older = self.queue.iter().position(
                        |e| matches!(e, Event::Preview { node: n, .. } if n.as_ref() == node),
                    );
                    self.stats.previews_dropped += 1;
                    if let Some(i) = older {
                        self.queue.remove(i);
                        self.queue.push_back(event);
                    }
                }
            }
            Class::Info => {
                if self.queue.len() >= self.hard_limit() {
                    self.stats.others_dropped += 1;
                } else {
                    self.queue.push_back(event);
                }
            }
        }
        self.stats.peak = self.stats.peak.max(self.queue.len());
        if self.queue.len() >= self.cap {
            self.lagging = true;
        }
    }

    /// Takes the oldest waiting event.
    pub fn pop(&mut self) -> Option<Event> {
        let event = self.queue.pop_front();
        if self.queue.len() <= self.cap / 2 {
            self.lagging = false;
        }
        event
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the reader lags: from `cap` waiting events until it has taken them down to
    /// `cap / 2`.
    pub fn is_lagging(&self) -> bool {
        self.lagging
    }

    /// What the outbox dropped and replaced so far, and its peak.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PromptId;
    use crate::session::Image;
    use crate::wire::ImageFormat;
    use bytes::Bytes;

    fn p() -> PromptId {
        PromptId::from("p")
    }

    fn progress(node: &str, value: f64) -> Event {
        Event::Progress {
            prompt: p(),
            node: Some(node.into()),
            value,
            max: 10.0,
        }
    }

    fn preview(node: &str, len: usize) -> Event {
        Event::Preview {
            prompt: p(),
            node: Some(node.into()),
            image: Image {
                format: ImageFormat::Jpeg,
                data: Bytes::from(vec![0; len]),
            },
        }
    }

    fn output(index: u32) -> Event {
        Event::Output {
            prompt: p(),
            node: "save".into(),
            index,
            image: Image {
                format: ImageFormat::Png,
                data: Bytes::from_static(b"png"),
            },
            file: None,
        }
    }

    fn started(node: &str) -> Event {
        Event::NodeStarted {
            prompt: p(),
            node: node.into(),
        }
    }

    fn drain(o: &mut Outbox) -> Vec<String> {
        std::iter::from_fn(|| o.pop())
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn progress_keeps_only_the_latest_unread_per_node() {
        let mut o = Outbox::new(8);
        o.push(progress("a", 1.0));
        o.push(progress("b", 1.0));
        o.push(progress("a", 2.0));
        o.push(progress("a", 3.0));
        assert_eq!(drain(&mut o), ["progress p b 1/10", "progress p a 3/10"]);
        assert_eq!(o.stats().coalesced, 2);
        // Read ones are not coalesced with.
        o.push(progress("a", 4.0));
        assert_eq!(drain(&mut o), ["progress p a 4/10"]);
    }

    #[test]
    fn previews_are_dropped_and_counted_once_the_reader_lags() {
        let mut o = Outbox::new(4);
        for i in 0..100 {
            o.push(preview(if i % 2 == 0 { "x" } else { "y" }, i));
        }
        assert_eq!(o.len(), 4, "previews never grow the queue past cap");
        assert_eq!(o.stats().previews_dropped, 96);
        assert_eq!(o.stats().peak, 4);
        // The latest preview of each node is what the reader sees last.
        let seen = drain(&mut o);
        assert_eq!(seen[2..], ["preview p x JPEG 98B", "preview p y JPEG 99B"]);
    }

    #[test]
    fn outputs_and_the_terminal_event_are_never_dropped() {
        let mut o = Outbox::new(2);
        for i in 0..50 {
            o.push(preview("x", 1));
            o.push(output(i));
        }
        o.push(Event::Completed { prompt: p() });
        let seen = drain(&mut o);
        assert_eq!(seen.iter().filter(|s| s.starts_with("output")).count(), 50);
        assert_eq!(seen.last().map(String::as_str), Some("completed p"));
    }

    #[test]
    fn informational_events_stop_at_the_hard_limit() {
        let mut o = Outbox::new(3);
        for i in 0..100 {
            o.push(started(&i.to_string()));
        }
        assert_eq!(o.len(), o.hard_limit());
        assert_eq!(o.stats().others_dropped, 100 - 12);
        o.push(output(0));
        assert_eq!(o.len(), 13, "an output goes past the hard limit");
    }

    #[test]
    fn lagging_starts_at_cap_and_ends_at_half() {
        // (pushes, pops, lagging after)
        let table = [
            (3, 0, false),
            (1, 0, true),
            (0, 1, true),
            (0, 1, false),
            (2, 0, true),
        ];
        let mut o = Outbox::new(4);
        for (pushes, pops, lagging) in table {
            for i in 0..pushes {
                o.push(started(&format!("{}-{i}", o.len())));
            }
            for _ in 0..pops {
                o.pop();
            }
            assert_eq!(o.is_lagging(), lagging, "at {} waiting", o.len());
        }
    }
}
