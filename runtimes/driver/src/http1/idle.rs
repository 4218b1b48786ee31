//! The idle keep-alive connections, per server: which one a request may reuse, which one to
//! keep after a response. Pure bookkeeping; time comes in as an argument.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Idle connections by server key, at most `max_per_server` each, none older than
/// `idle_timeout`.
#[derive(Debug)]
pub(crate) struct IdlePool<C> {
    by_server: HashMap<String, VecDeque<(C, Instant)>>,
    max_per_server: usize,
    idle_timeout: Duration,
}

impl<C> IdlePool<C> {
    pub(crate) fn new(max_per_server: usize, idle_timeout: Duration) -> Self {
        Self {
            by_server: HashMap::new(),
            max_per_server,
            idle_timeout,
        }
    }

    /// The most recently returned connection to `key` that has not idled too long (the one the
    /// server is least likely to have closed); expired ones are dropped.
    pub(crate) fn take(&mut self, key: &str, now: Instant) -> Option<C> {
        let timeout = self.idle_timeout;
        let list = self.by_server.get_mut(key)?;
        let fresh = |since: Instant| now.saturating_duration_since(since) < timeout;
        list.retain(|(_, since)| fresh(*since));
        let conn = list.pop_back().map(|(c, _)| c);
        if list.is_empty() {
            self.by_server.remove(key);
        }
        conn
    }

    /// Keeps `conn` for the next request to `key`. Returns it when the pool is full, for the
    /// caller to close. Expired connections of every server are dropped on the way, so servers
    /// no longer used do not hold sockets.
    pub(crate) fn put(&mut self, key: &str, conn: C, now: Instant) -> Option<C> {
        let timeout = self.idle_timeout;
        self.by_server.retain(|_, list| {
            list.retain(|(_, since)| now.saturating_duration_since(*since) < timeout);
            !list.is_empty()
        });
        if self.max_per_server == 0 || timeout.is_zero() {
            return Some(conn);
        }
        let list = self.by_server.entry(key.to_owned()).or_default();
        if list.len() >= self.max_per_server {
            return Some(conn);
        }
        list.push_back((conn, now));
        None
    }

    /// How many idle connections are kept for `key`.
    #[cfg(test)]
    pub(crate) fn idle(&self, key: &str) -> usize {
        self.by_server.get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Any start will do: the tests pass every time explicitly.
mod tests {
    use super::*;

    #[test]
    fn reuses_the_newest_connection_of_the_same_server() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, Duration::from_secs(10));
        assert_eq!(pool.put("a", 1, t0), None);
        assert_eq!(pool.put("a", 2, t0), None);
        assert_eq!(pool.put("b", 3, t0), None);
        assert_eq!(pool.take("a", t0), Some(2));
        assert_eq!(pool.take("a", t0), Some(1));
        assert_eq!(pool.take("a", t0), None);
        assert_eq!(pool.take("b", t0), Some(3));
    }

    #[test]
    fn bounded_per_server() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(2, Duration::from_secs(10));
        assert_eq!(pool.put("a", 1, t0), None);
        assert_eq!(pool.put("a", 2, t0), None);
        assert_eq!(pool.put("a", 3, t0), Some(3), "full: the caller closes it");
        assert_eq!(pool.idle("a"), 2);
        assert_eq!(
            pool.put("b", 4, t0),
            None,
            "another server has its own room"
        );
    }

    #[test]
    fn idle_connections_expire() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(4, Duration::from_secs(10));
        assert_eq!(pool.put("a", 1, t0), None);
        assert_eq!(pool.put("a", 2, t0 + Duration::from_secs(5)), None);
        let later = t0 + Duration::from_secs(12);
        assert_eq!(pool.take("a", later), Some(2));
        assert_eq!(
            pool.take("a", later),
            None,
            "the older one had idled too long"
        );
        assert_eq!(pool.put("b", 3, t0), None);
        assert_eq!(pool.put("c", 4, later), None);
        assert_eq!(
            pool.idle("b"),
            0,
            "putting prunes every server's expired connections"
        );
    }

    #[test]
    fn zero_keeps_nothing() {
        let t0 = Instant::now();
        let mut none = IdlePool::new(0, Duration::from_secs(10));
        assert_eq!(none.put("a", 1, t0), Some(1));
        let mut instant = IdlePool::new(4, Duration::ZERO);
        assert_eq!(instant.put("a", 1, t0), Some(1));
    }
}
