//! What the scheduler knows of one server: its circuit breaker, its jobs, its speed.

use std::time::Duration;

use super::types::{BreakerState, JobId, PoolConfig, ServerStats};

/// A circuit breaker. Transitions:
///
/// | state | input | next |
/// | --- | --- | --- |
/// | `Closed` | failure, `failure_threshold` in a row | `Open { backoff: initial }` |
/// | `Closed` | success | `Closed` (count reset) |
/// | `Open` | backoff over (timer) | `HalfOpen`, one health check asked |
/// | `Open` | anything else | `Open` |
/// | `HalfOpen` | health check ok | `Closed` |
/// | `HalfOpen` | failure | `Open { backoff: 2 x backoff, at most max }` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Breaker {
    Closed,
    Open { until: Duration, backoff: Duration },
    HalfOpen { backoff: Duration },
}

#[derive(Debug)]
pub(super) struct Server {
    pub breaker: Breaker,
    /// Consecutive failures while closed.
    pub failures: u32,
    /// Our jobs there (in flight or of uncertain fate), in dispatch order.
    pub jobs: Vec<JobId>,
    /// Slots held for jobs being stolen to this server.
    pub reserved: usize,
    /// Other clients' prompts in its queue.
    pub external: u64,
    /// Moving average of successful job durations.
    pub ewma: Option<Duration>,
    pub dispatched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub stolen: u64,
    /// A health check was asked and not yet answered.
    pub health_asked: bool,
    /// When the next periodic health check is due (closed servers only).
    pub next_health: Option<Duration>,
    /// When the breaker last opened, while it is not closed.
    pub down_since: Option<Duration>,
    /// The last failure reported, for error messages.
    pub last_error: Option<String>,
    /// Time it held at least one of our jobs, over the intervals that have ended.
    pub busy: Duration,
    /// Since when it holds one of our jobs, while it does.
    pub busy_since: Option<Duration>,
}

impl Server {
    pub fn new() -> Self {
        Self {
            breaker: Breaker::Closed,
            failures: 0,
            jobs: Vec::new(),
            reserved: 0,
            external: 0,
            ewma: None,
            dispatched: 0,
            succeeded: 0,
            failed: 0,
            stolen: 0,
            health_asked: false,
            next_health: None,
            down_since: None,
            last_error: None,
            busy: Duration::ZERO,
            busy_since: None,
        }
    }

    /// Opens or closes the busy interval after its jobs changed at `now`.
    pub fn track_busy(&mut self, now: Duration) {
        match (self.jobs.is_empty(), self.busy_since) {
            (false, None) => self.busy_since = Some(now),
            (true, Some(since)) => {
                self.busy = self.busy.saturating_add(now.saturating_sub(since));
                self.busy_since = None;
            }
            _ => {}
        }
    }

    /// Busy time up to `now` (the open interval counted up to `now`, if `now` is given).
    pub fn busy_at(&self, now: Option<Duration>) -> Duration {
        match (self.busy_since, now) {
            (Some(since), Some(now)) => self.busy.saturating_add(now.saturating_sub(since)),
            _ => self.busy,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.breaker == Breaker::Closed
    }

    /// Slots taken: our jobs there and slots held for steals.
    pub fn occupied(&self) -> usize {
        self.jobs.len() + self.reserved
    }

    /// In service with a free slot.
    pub fn has_slot(&self, per_server: usize) -> bool {
        self.is_closed() && self.occupied() < per_server
    }

    /// What dispatch balances: our jobs there plus other clients' queued prompts.
    pub fn load(&self) -> u64 {
        (self.occupied() as u64).saturating_add(self.external)
    }

    /// Records a failure. Returns whether the breaker opened because of it.
    pub fn record_failure(&mut self, now: Duration, config: &PoolConfig) -> bool {
        match self.breaker {
            Breaker::Closed => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= config.failure_threshold.max(1) {
                    self.open(now, config.breaker.initial.min(config.breaker.max));
                    true
                } else {
                    false
                }
            }
            Breaker::HalfOpen { backoff } => {
                self.open(now, backoff.saturating_mul(2).min(config.breaker.max));
                true
            }
            Breaker::Open { .. } => false,
        }
    }

    fn open(&mut self, now: Duration, backoff: Duration) {
        self.breaker = Breaker::Open {
            until: now.saturating_add(backoff),
            backoff,
        };
        self.failures = 0;
        self.next_health = None;
        self.down_since.get_or_insert(now);
    }

    /// A job succeeded or a health check passed while in service.
    pub fn record_success(&mut self) {
        if self.is_closed() {
            self.failures = 0;
        }
    }

    /// Puts the server back in service.
    pub fn close(&mut self, now: Duration, config: &PoolConfig) {
        self.breaker = Breaker::Closed;
        self.failures = 0;
        self.down_since = None;
        self.next_health = config.health_interval.map(|d| now.saturating_add(d));
    }

    /// Folds a successful job's duration into the moving average (weight 1/4).
    pub fn record_duration(&mut self, sample: Duration) {
        self.ewma = Some(match self.ewma {
            None => sample,
            Some(old) => (old.saturating_mul(3).saturating_add(sample)) / 4,
        });
    }

    pub fn stats(&self, now: Option<Duration>) -> ServerStats {
        ServerStats {
            busy: self.busy_at(now),
            dispatched: self.dispatched,
            succeeded: self.succeeded,
            failed: self.failed,
            stolen: self.stolen,
            state: match self.breaker {
                Breaker::Closed => BreakerState::Closed,
                Breaker::Open { .. } => BreakerState::Open,
                Breaker::HalfOpen { .. } => BreakerState::HalfOpen,
            },
            mean_job_time: self.ewma,
            in_flight: self.jobs.len(),
            external_load: self.external,
        }
    }
}
