//! A server's events that name no prompt, coalesced for the pool: [`StatusBuffer`].

use crate::session::Event;

/// What the pool needs of a server's events that name no prompt, kept in constant space
/// between the client's task, which pushes without ever waiting, and the pool's, which takes.
///
/// The pool machine uses [`Event::QueueStatus`] (other clients' load) and
/// [`Event::Connected`] (the server can be reached); [`Event::Disconnected`] is kept for
/// completeness. Of queue statuses only the latest counts; of the link's changes, whether
/// it connected and whether it dropped after that. Everything else is not kept.
#[derive(Debug, Clone, Default)]
pub struct StatusBuffer {
    remaining: Option<u64>,
    connected: bool,
    disconnected: bool,
}

impl StatusBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in an event; returns whether it was kept.
    pub fn push(&mut self, event: &Event) -> bool {
        match event {
            Event::QueueStatus { remaining } => self.remaining = Some(*remaining),
            Event::Connected => {
                self.connected = true;
                self.disconnected = false;
            }
            Event::Disconnected => self.disconnected = true,
            _ => return false,
        }
        true
    }

    /// Whether [`StatusBuffer::take`] would give anything.
    pub fn is_empty(&self) -> bool {
        self.remaining.is_none() && !self.connected && !self.disconnected
    }

    /// The events to hand over, in an order equivalent to the one they came in (a connect
    /// before the drop that followed it), and empties the buffer.
    pub fn take(&mut self) -> Vec<Event> {
        let mut out = Vec::with_capacity(3);
        if std::mem::take(&mut self.connected) {
            out.push(Event::Connected);
        }
        if std::mem::take(&mut self.disconnected) {
            out.push(Event::Disconnected);
        }
        if let Some(remaining) = self.remaining.take() {
            out.push(Event::QueueStatus { remaining });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_coalesce_to_what_the_pool_uses() {
        let mut b = StatusBuffer::new();
        assert!(b.is_empty());
        for n in 0..1000 {
            assert!(b.push(&Event::QueueStatus { remaining: n }));
        }
        assert!(!b.push(&Event::ServerFeatures {
            supports_preview_metadata: true,
            max_upload_size: None,
        }));
        assert_eq!(b.take(), [Event::QueueStatus { remaining: 999 }]);
        assert!(b.is_empty() && b.take().is_empty());
        // Dropped, back, dropped again: it connected, and it is down now.
        for e in [Event::Disconnected, Event::Connected, Event::Disconnected] {
            b.push(&e);
        }
        assert_eq!(b.take(), [Event::Connected, Event::Disconnected]);
        // Dropped, then back: it connected.
        b.push(&Event::Disconnected);
        b.push(&Event::Connected);
        assert_eq!(b.take(), [Event::Connected]);
    }
}
