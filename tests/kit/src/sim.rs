//! The event heap of the simulations: what happens next on a simulated clock.
//!
//! The pool's simulation (`tests/pool.rs`) and the chaos run (`runtimes/mock/tests/chaos.rs`)
//! schedule their arrivals, replies and timeouts here and pop them in time order; events due at
//! the same instant come out in the order they were scheduled, so a seed replays exactly.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Events of type `E` scheduled at times of type `T` (milliseconds, a `Duration`, ...).
#[derive(Debug)]
pub struct Timeline<T, E> {
    heap: BinaryHeap<Entry<T, E>>,
    seq: u64,
}

#[derive(Debug)]
struct Entry<T, E> {
    at: T,
    seq: u64,
    event: E,
}

impl<T: Ord, E> PartialEq for Entry<T, E> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T: Ord, E> Eq for Entry<T, E> {}

impl<T: Ord, E> PartialOrd for Entry<T, E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: Ord, E> Ord for Entry<T, E> {
    /// Reversed: the heap's greatest entry is the earliest, first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (&other.at, other.seq).cmp(&(&self.at, self.seq))
    }
}

impl<T: Ord, E> Default for Timeline<T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Ord, E> Timeline<T, E> {
    /// An empty timeline.
    #[must_use]
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Schedules `event` at `at`.
    pub fn at(&mut self, at: T, event: E) {
        self.seq += 1;
        self.heap.push(Entry {
            at,
            seq: self.seq,
            event,
        });
    }

    /// When the next event is due.
    #[must_use]
    pub fn next_time(&self) -> Option<&T> {
        self.heap.peek().map(|e| &e.at)
    }

    /// Removes the next event, whenever it is due.
    pub fn pop(&mut self) -> Option<(T, E)> {
        self.heap.pop().map(|e| (e.at, e.event))
    }

    /// Removes the next event if it is due at or before `now`.
    pub fn pop_due(&mut self, now: &T) -> Option<(T, E)> {
        if self.next_time()? > now {
            return None;
        }
        self.pop()
    }

    /// How many events are scheduled.
    #[must_use]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Timeline;

    #[test]
    fn earliest_first_then_in_scheduling_order() {
        let mut t = Timeline::new();
        t.at(5, "c");
        t.at(1, "a");
        t.at(5, "d");
        t.at(1, "b");
        assert_eq!(t.next_time(), Some(&1));
        assert_eq!(t.pop_due(&0), None);
        let order: Vec<_> = std::iter::from_fn(|| t.pop()).collect();
        assert_eq!(order, [(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
        assert!(t.is_empty());
    }
}
