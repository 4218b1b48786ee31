//! The pool's servers, with the indexes that keep a scheduling decision's cost flat as the pool
//! grows: servers with a free slot ordered as dispatch prefers them, and server timers ordered
//! by deadline.
//!
//! # How it works
//!
//! Every way to change a server (`servers[i]` as a place, [`Servers::get_mut`],
//! [`Servers::iter_mut`], [`Servers::push`]) marks it *dirty*; [`Servers::reindex`] moves the
//! dirty servers' entries to where their state now puts them. Queries are exact even with dirty
//! servers: they skip dirty servers' stale entries and look at those servers directly, so a
//! query costs O(log n + dirty). The scheduler reindexes before each decision, which keeps the
//! dirty list to the one or two servers the decision touched.

use std::collections::BTreeSet;
use std::ops::{Deref, Index, IndexMut};
use std::time::Duration;

use super::server::{Breaker, Server};

/// How dispatch orders servers with a free slot: least load, then fastest, then first.
pub(super) type FreeKey = (u64, Duration, usize);

/// What the indexes hold for one server, as of its last reindex.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    dirty: bool,
    free: Option<FreeKey>,
    timer: Option<Duration>,
    down: bool,
    unarmed: bool,
}

/// The servers, `ServerId(i)` at index `i`, and their indexes.
#[derive(Debug, Default)]
pub(super) struct Servers {
    list: Vec<Server>,
    entries: Vec<Entry>,
    /// Servers changed since their entries were last brought up to date.
    dirty: Vec<usize>,
    /// In service with a free slot, by [`FreeKey`].
    free: BTreeSet<FreeKey>,
    /// Breaker backoffs and periodic health checks, by deadline.
    timers: BTreeSet<(Duration, usize)>,
    /// In service with no periodic health check armed.
    unarmed: BTreeSet<usize>,
    /// Servers out of service (`down_since` set).
    down: usize,
}

/// Where dispatch would put `s`, if it has a free slot.
fn free_key(s: &Server, i: usize, per_server: usize) -> Option<FreeKey> {
    s.has_slot(per_server)
        .then(|| (s.load(), s.ewma.unwrap_or(Duration::ZERO), i))
}

/// The server's next timer: its breaker's backoff, or its periodic health check.
fn timer(s: &Server) -> Option<Duration> {
    match s.breaker {
        Breaker::Open { until, .. } => Some(until),
        Breaker::Closed => s.next_health,
        Breaker::HalfOpen { .. } => None,
    }
}

fn unarmed(s: &Server) -> bool {
    s.is_closed() && s.next_health.is_none()
}

impl Servers {
    fn touch(&mut self, i: usize) {
        if let Some(e) = self.entries.get_mut(i)
            && !e.dirty
        {
            e.dirty = true;
            self.dirty.push(i);
        }
    }

    /// The server, marked as changed.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut Server> {
        self.touch(i);
        self.list.get_mut(i)
    }

    /// Every server, each marked as changed (O(n): not for the decision path).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Server> {
        for i in 0..self.list.len() {
            self.touch(i);
        }
        self.list.iter_mut()
    }

    /// Adds a server, the next `ServerId`.
    pub fn push(&mut self, server: Server) {
        self.list.push(server);
        self.entries.push(Entry::default());
        self.touch(self.list.len() - 1);
    }

    /// Brings the changed servers' entries up to date.
    pub fn reindex(&mut self, per_server: usize) {
        // The list's buffer is kept for the next decision's changes.
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let s = &self.list[i];
            let e = &mut self.entries[i];
            e.dirty = false;
            let free = free_key(s, i, per_server);
            if free != e.free {
                if let Some(old) = e.free.take() {
                    self.free.remove(&old);
                }
                if let Some(new) = free {
                    self.free.insert(new);
                }
                e.free = free;
            }
            let at = timer(s);
            if at != e.timer {
                if let Some(old) = e.timer.take() {
                    self.timers.remove(&(old, i));
                }
                if let Some(new) = at {
                    self.timers.insert((new, i));
                }
                e.timer = at;
            }
            let down = s.down_since.is_some();
            if down != e.down {
                if down {
                    self.down += 1;
                } else {
                    self.down -= 1;
                }
                e.down = down;
            }
            let bare = unarmed(s);
            if bare != e.unarmed {
                if bare {
                    self.unarmed.insert(i);
                } else {
                    self.unarmed.remove(&i);
                }
                e.unarmed = bare;
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn is_dirty(&self, i: usize) -> bool {
        self.entries.get(i).is_some_and(|e| e.dirty)
    }

    /// The server with a free slot and the least load, then the fastest, then the first; one
    /// other than `avoid` if there is any; among `eligible` only, when given.
    pub fn pick(
        &self,
        per_server: usize,
        avoid: Option<usize>,
        eligible: Option<&[usize]>,
    ) -> Option<usize> {
        let key = |i: usize| self.list.get(i).and_then(|s| free_key(s, i, per_server));
        let best = match eligible {
            // The job's own list is as short as the servers that can run it.
            Some(e) => e
                .iter()
                .filter(|&&i| Some(i) != avoid)
                .filter_map(|&i| key(i))
                .min(),
            None => {
                let clean = self
                    .free
                    .iter()
                    .find(|k| Some(k.2) != avoid && !self.is_dirty(k.2))
                    .copied();
                let changed = self
                    .dirty
                    .iter()
                    .filter(|&&i| Some(i) != avoid)
                    .filter_map(|&i| key(i))
                    .min();
                clean.into_iter().chain(changed).min()
            }
        };
        let allowed = |i: &usize| eligible.is_none_or(|e| e.contains(i));
        best.map(|k| k.2)
            .or_else(|| avoid.filter(allowed).filter(|&a| key(a).is_some()))
    }

    /// The servers with a free slot, by id. Call [`Servers::reindex`] first.
    pub fn with_slot(&self) -> Vec<usize> {
        let mut ids: Vec<usize> = self.free.iter().map(|k| k.2).collect();
        ids.sort_unstable();
        ids
    }

    /// The earliest server timer.
    pub fn next_timer(&self) -> Option<Duration> {
        let clean = self
            .timers
            .iter()
            .find(|(_, i)| !self.is_dirty(*i))
            .map(|t| t.0);
        let changed = self
            .dirty
            .iter()
            .filter_map(|&i| timer(&self.list[i]))
            .min();
        clean.into_iter().chain(changed).min()
    }

    /// The servers whose timer is due at `now`, by id. Call [`Servers::reindex`] first.
    pub fn due(&self, now: Duration) -> Vec<usize> {
        let mut ids: Vec<usize> = self
            .timers
            .range(..=(now, usize::MAX))
            .map(|t| t.1)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The servers in service with no periodic health check armed. Call
    /// [`Servers::reindex`] first.
    pub fn unarmed(&self) -> Vec<usize> {
        self.unarmed.iter().copied().collect()
    }

    /// Whether every server is out of service (false for no servers).
    pub fn all_down(&self) -> bool {
        let mut down = self.down;
        for &i in &self.dirty {
            down -= usize::from(self.entries[i].down);
            down += usize::from(self.list[i].down_since.is_some());
        }
        !self.list.is_empty() && down == self.list.len()
    }
}

impl FromIterator<Server> for Servers {
    fn from_iter<I: IntoIterator<Item = Server>>(iter: I) -> Self {
        let mut servers = Self::default();
        for s in iter {
            servers.push(s);
        }
        servers
    }
}

impl<'a> IntoIterator for &'a Servers {
    type Item = &'a Server;
    type IntoIter = std::slice::Iter<'a, Server>;
    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// Reading a server leaves the indexes as they are.
impl Deref for Servers {
    type Target = [Server];
    fn deref(&self) -> &[Server] {
        &self.list
    }
}

impl Index<usize> for Servers {
    type Output = Server;
    fn index(&self, i: usize) -> &Server {
        &self.list[i]
    }
}

/// `servers[i]` as a place marks the server as changed.
impl IndexMut<usize> for Servers {
    fn index_mut(&mut self, i: usize) -> &mut Server {
        self.touch(i);
        &mut self.list[i]
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::types::{Action, JobId, JobResult, Lookup, PoolConfig, ServerId};
    use super::super::{Scheduler, server::Breaker};

    /// The choice as the scheduler made it before it had an index: every server looked at.
    fn pick_by_scan(pool: &Scheduler, avoid: Option<usize>) -> Option<usize> {
        let k = pool.config.per_server;
        let key = |&i: &usize| {
            let s = &pool.servers[i];
            (s.load(), s.ewma.unwrap_or(Duration::ZERO), i)
        };
        let free = |&i: &usize| pool.servers[i].has_slot(k);
        (0..pool.servers.len())
            .filter(free)
            .filter(|&i| Some(i) != avoid)
            .min_by_key(key)
            .or_else(|| avoid.filter(free))
    }

    fn timer_by_scan(pool: &Scheduler) -> Option<Duration> {
        let servers = pool.servers.iter().filter_map(|s| match s.breaker {
            Breaker::Open { until, .. } => Some(until),
            Breaker::Closed => s.next_health,
            Breaker::HalfOpen { .. } => None,
        });
        servers.min()
    }

    /// The steal as the scheduler chose it before: every thief against every victim.
    fn steal_by_scan(pool: &Scheduler, now: Duration) -> Option<(JobId, usize, usize)> {
        use super::super::engine::{State, Steal};
        let remaining = |run: &super::super::engine::Run, mean: Duration| match run.started_at {
            Some(t) => mean.saturating_sub(now.saturating_sub(t)),
            None => mean,
        };
        let backlog = |server: usize, mean: Duration| {
            let s = &pool.servers[server];
            let mut total = mean.saturating_mul(s.reserved as u32);
            for job in &s.jobs {
                total = total.saturating_add(match pool.jobs.get(job).map(|j| &j.state) {
                    Some(State::Running(run)) => remaining(run, mean),
                    _ => mean,
                });
            }
            let external = u32::try_from(s.external).unwrap_or(u32::MAX);
            total.saturating_add(mean.saturating_mul(external))
        };
        let k = pool.config.per_server;
        let mut best: Option<(Duration, JobId, usize, usize)> = None;
        for to in 0..pool.servers.len() {
            let thief = &pool.servers[to];
            let Some(fast) = thief.ewma else { continue };
            if !thief.has_slot(k) {
                continue;
            }
            let there = backlog(to, fast).saturating_add(fast);
            for from in (0..pool.servers.len()).filter(|&f| f != to) {
                let victim = &pool.servers[from];
                let Some(slow) = victim.ewma else { continue };
                if !victim.is_closed() {
                    continue;
                }
                let mut ahead = Duration::ZERO;
                for &job in &victim.jobs {
                    let Some(State::Running(run)) = pool.jobs.get(&job).map(|j| &j.state) else {
                        ahead = ahead.saturating_add(slow);
                        continue;
                    };
                    let here = ahead.saturating_add(slow);
                    let thief_can_run = pool
                        .jobs
                        .get(&job)
                        .and_then(|j| j.eligible.as_ref())
                        .is_none_or(|e| e.contains(&to));
                    if run.started_at.is_none()
                        && thief_can_run
                        && run.steal == Steal::Open
                        && there.saturating_mul(5) < here.saturating_mul(4)
                    {
                        let gain = here.saturating_sub(there);
                        if best.is_none_or(|b| gain > b.0) {
                            best = Some((gain, job, from, to));
                        }
                    }
                    ahead = ahead.saturating_add(remaining(run, slow));
                }
            }
        }
        best.map(|(_, job, from, to)| (job, from, to))
    }

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    /// Random inputs to a pool with health checks, failures, other clients' load and steals;
    /// after each, the indexed answers equal the scanned ones.
    #[test]
    fn the_index_answers_as_a_scan_of_every_server() {
        let mut checked = 0;
        let mut dispatched = 0;
        let mut steals = 0;
        for seed in 1..=8u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let servers = 1 + rng.below(12) as usize;
            let config = PoolConfig {
                health_interval: (seed % 2 == 0).then(|| Duration::from_secs(2)),
                per_server: 1 + rng.below(3) as usize,
                failure_threshold: 2,
                ..PoolConfig::default()
            };
            let mut pool = Scheduler::new(servers, config);
            let mut now = Duration::ZERO;
            let mut next = 0u64;
            let mut running: Vec<(JobId, u32)> = Vec::new();
            for _ in 0..600 {
                // Whole tenths of a second, so that servers tie on load, speed and gain.
                now += Duration::from_millis(100 * rng.below(4));
                match rng.below(8) {
                    0 | 1 => {
                        pool.submit(now, JobId(next)).unwrap();
                        next += 1;
                    }
                    2 | 3 if !running.is_empty() => {
                        let (job, attempt) =
                            running.swap_remove(rng.below(running.len() as u64) as usize);
                        let result = match rng.below(5) {
                            0 => JobResult::failed(true, false, "x"),
                            1 => JobResult::failed(true, true, "lost"),
                            2 => JobResult::failed(false, false, "raised"),
                            _ => JobResult::Success,
                        };
                        pool.handle_result(now, job, attempt, result).unwrap();
                    }
                    4 => {
                        let s = ServerId(rng.below(servers as u64) as usize);
                        pool.handle_queue_status(s, rng.below(4)).unwrap();
                    }
                    5 => {
                        let s = ServerId(rng.below(servers as u64) as usize);
                        pool.handle_server_error(now, s, "refused").unwrap();
                    }
                    _ => {
                        if pool.poll_timeout().is_some_and(|t| t <= now) {
                            pool.handle_timeout(now);
                        }
                    }
                }
                for avoid in std::iter::once(None).chain((0..servers).map(Some)) {
                    assert_eq!(pool.pick_server(avoid), pick_by_scan(&pool, avoid));
                }
                assert_eq!(pool.servers.next_timer(), timer_by_scan(&pool));
                let all_down = pool.servers.iter().all(|s| s.down_since.is_some());
                assert_eq!(pool.servers.all_down(), all_down);
                checked += 1;
                let expected = steal_by_scan(&pool, now);
                if expected.is_some() {
                    steals += 1;
                }
                assert_eq!(pool.steal_choice(now), expected);
                while let Some(action) = pool.poll_action(now) {
                    match action {
                        Action::Dispatch { job, attempt, .. } => {
                            dispatched += 1;
                            running.push((job, attempt));
                            if rng.below(2) == 0 {
                                pool.handle_started(now, job, attempt).unwrap();
                            }
                        }
                        Action::Finished { job, .. } => pool.handle_consumed(job).unwrap(),
                        Action::Steal { job, attempt, .. } => {
                            let taken = rng.below(2) == 0;
                            pool.handle_steal(now, job, attempt, taken).unwrap();
                        }
                        Action::HealthCheck { server } => {
                            let ok = if rng.below(3) == 0 {
                                Err(crate::error::ExchangeError::Transport(
                                    crate::error::TransportError::new(
                                        crate::error::TransportErrorKind::Refused,
                                        "GET /system_stats",
                                    ),
                                ))
                            } else {
                                Ok(())
                            };
                            pool.handle_health(now, server, ok).unwrap();
                        }
                        Action::Lookup { job, attempt, .. } => {
                            let answer = [Lookup::Unknown, Lookup::Pending][rng.below(2) as usize];
                            pool.handle_lookup(now, job, attempt, answer).unwrap();
                        }
                        _ => {}
                    }
                    assert_eq!(pool.pick_server(None), pick_by_scan(&pool, None));
                }
            }
        }
        assert!(
            checked >= 4800 && dispatched > 500 && steals > 20,
            "{checked} {dispatched} {steals}"
        );
    }
}

#[cfg(test)]
mod sizes {
    use std::mem::size_of;

    use super::super::engine::{Doubt, Job, Run, State};
    use super::super::types::JobId;

    /// What the scheduler holds per queued job, before the B-tree's own overhead: its
    /// `BTreeMap<JobId, Job>` entry and its `JobId` in the queue. (The graph is the driver's.)
    #[test]
    fn a_queued_job_is_a_few_hundred_bytes() {
        let entry = size_of::<JobId>() + size_of::<Job>();
        let queued = entry + size_of::<JobId>();
        println!(
            "Job {} B (State {}, Run {}, Doubt {}); map entry {entry} B; with its queue slot {queued} B",
            size_of::<Job>(),
            size_of::<State>(),
            size_of::<Run>(),
            size_of::<Doubt>(),
        );
        // A B-tree node is at least half full: at most twice the entry, far below 1 KiB.
        assert!(2 * entry + size_of::<JobId>() < 1024, "{entry}");
    }
}
