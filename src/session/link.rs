//! The websocket's life and the session's timers: connects that fail, sockets that drop or go
//! silent, reconnects with backoff, and the deadline of every request handed to the adapter.
//!
//! | link | input | what follows |
//! | --- | --- | --- |
//! | connecting | `handle_connected` | open; waiting prompts are posted |
//! | connecting | `handle_connect_failed`, or the connect deadline | prompts never posted fail with [`Failure::Unreachable`]; posted ones wait for a reconnect (backoff), or fail with [`Failure::ServerGone`] once [`REFUSALS_GONE`] connects in a row were refused; with none left, the link goes down |
//! | open | `handle_disconnect` | a reconnect at once (at most three per [`Backoff::initial`](super::Backoff)), else backoff; a prompt whose `SaveImageWebsocket` node was running fails with [`Failure::LostOutputs`] at once and is interrupted; the other prompts in flight are looked up after the reconnect |
//! | open | silence deadline (no frame, no pong) | [`Transmit::Close`], then as a disconnect |
//! | backoff | its timer | connecting |
//! | down | `submit` | connecting |
//!
//! The silence deadline is [`Timeouts::silence`](super::Timeouts), and the pings go
//! [`SessionConfig::keepalive`](super::SessionConfig) apart; while a prompt on the server has
//! a shorter deadline (accept, idle or total) than twice the silence, both shrink to half and a
//! quarter of it (not below 2 s and 1 s): a silent socket is then noticed, given up and
//! replaced while the prompt can still learn its fate, instead of the prompt running into its
//! own deadline. A reconnect for such a prompt, and its `POST /prompt` and
//! lookups, are bounded by half of it too (not below 2 s).

use std::time::Duration;

use crate::error::{TransportError, TransportErrorKind};
use crate::ids::PromptId;

use super::event::{Deadline, Event, Failure, Transmit};
use super::prompt::Phase;
use super::{Link, Session};

/// How much later than the adapter's own bound the session's timers for connects and HTTP
/// exchanges fire: the adapter reports the expiry first, naming the address; the session's
/// timer is the backstop for an adapter that does not.
pub(super) const GRACE: Duration = Duration::from_secs(1);

/// Connects refused in a row after which prompts already posted fail with
/// [`Failure::ServerGone`]: within about two seconds of the socket
/// dropping with the default backoff.
/// A refusal means nothing listens at the address; one or two may be a restart under way.
pub const REFUSALS_GONE: u32 = 3;

/// The shortest ping interval and silence a prompt's short deadline can bring about (see
/// [`Session::poll_timeout`]): below them a loaded machine's late pong would look like a dead
/// socket.
const PING_FLOOR: Duration = Duration::from_secs(1);
const SILENCE_FLOOR: Duration = Duration::from_secs(2);

/// Reconnects at once (without backoff) allowed within one [`Backoff::initial`](super::Backoff):
/// a prompt running on a server that drops sockets often keeps its frames coming, and a server
/// that closes every socket it accepts is still not hammered.
pub(super) const QUICK_RECONNECTS: u32 = 3;

/// The shortest bound a prompt's short deadline can put on its `POST /prompt` and lookups.
pub(super) const LOOKUP_FLOOR: Duration = Duration::from_secs(2);

impl Session {
    /// Opening the websocket asked for by [`Transmit::Connect`] failed: refused, unresolvable,
    /// TLS, a refused handshake, or no answer within [`Timeouts::connect`](super::Timeouts).
    ///
    /// Every prompt that was never posted fails with [`Failure::Unreachable`] at once: it never
    /// reached the server, so it can run elsewhere with no risk of running twice. Prompts
    /// already posted keep waiting for a reconnect (with backoff) and are looked up after it,
    /// unless [`REFUSALS_GONE`] connects in a row were refused: then nothing listens where the
    /// server was, its in-memory queue is gone, and they fail with [`Failure::ServerGone`], which
    /// a pool runs elsewhere at once. With none left, the link goes down until the next submission. A call while no connect
    /// is under way is a no-op.
    pub fn handle_connect_failed(&mut self, now: Duration, error: TransportError) {
        let Link::Connecting { attempt, .. } = self.link else {
            return;
        };
        for id in self.order.clone() {
            let never_posted = self
                .prompts
                .get(&id)
                .is_some_and(|p| p.phase == Phase::Waiting);
            if never_posted {
                self.end(
                    &id,
                    Event::Failed {
                        prompt: id.clone(),
                        failure: Failure::Unreachable(error.clone()),
                    },
                );
            }
        }
        self.refused = match error.kind {
            TransportErrorKind::Refused => self.refused + 1,
            _ => 0,
        };
        if self.refused >= REFUSALS_GONE {
            // Nothing listens where the server was: the process that held the posted prompts
            // is gone, and with it ComfyUI's queue (kept in memory). Waiting out the backoff
            // would only delay running them elsewhere.
            for id in self.order.clone() {
                self.end(
                    &id,
                    Event::Failed {
                        prompt: id.clone(),
                        failure: Failure::ServerGone {
                            refusals: self.refused,
                            error: error.clone(),
                        },
                    },
                );
            }
        }
        if self.prompts.is_empty() {
            self.link = Link::Down;
            self.pinged_at = None;
            return;
        }
        self.retry(now, attempt + 1);
    }

    /// The websocket closed (or, for adapters that do not tell connect failures apart, a
    /// connect attempt failed). Prompts in flight wait for the reconnect; after
    /// [`Backoff::attempts`](super::Backoff) failures they fail.
    pub fn handle_disconnect(&mut self, now: Duration) {
        self.clock(now);
        let attempt = match self.link {
            Link::Closed | Link::Down => return,
            Link::Open => {
                self.events.push_back(Event::Disconnected);
                // Reconnect at once (attempt 0, not counted), unless `QUICK_RECONNECTS` went
                // at once within the last `initial`: then the counted backoff starts.
                let backoff = self.config.backoff;
                let (since, count) = self.quick_reconnects;
                let (since, count) = if now.saturating_sub(since) >= backoff.initial || count == 0 {
                    (now, 0)
                } else {
                    (since, count)
                };
                if backoff.attempts > 0 && count < QUICK_RECONNECTS {
                    self.quick_reconnects = (since, count + 1);
                    0
                } else {
                    1
                }
            }
            Link::Connecting { attempt, .. } | Link::Backoff { attempt, .. } => attempt + 1,
        };
        self.retry(now, attempt);
    }

    /// A pong (or any control frame) arrived on the open websocket: it is alive.
    pub fn handle_pong(&mut self, now: Duration) {
        self.heard(now);
    }

    /// When [`Session::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let link = match self.link {
            Link::Backoff { at, .. } => Some(at),
            Link::Connecting { deadline, .. } => deadline,
            Link::Open => self.silence_at(),
            Link::Down | Link::Closed => None,
        };
        let prompts = self
            .prompts
            .values()
            .flat_map(|p| [p.next_deadline().map(|(at, _)| at), p.recheck_at])
            .flatten();
        let requests = self.requests.values().filter_map(|(_, at, _)| *at);
        link.into_iter()
            .chain(self.keepalive_at())
            .chain(prompts)
            .chain(requests)
            .min()
    }

    /// Fires every timer due at `now`. A spurious call is a no-op.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.clock(now);
        let mut expired: Vec<_> = self
            .requests
            .iter()
            .filter(|(_, (_, at, _))| at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        expired.sort();
        for id in expired {
            if let Some((pending, _, after)) = self.requests.remove(&id) {
                let error =
                    TransportError::new(TransportErrorKind::TimedOut(after), pending.what());
                self.on_response(now, pending, Err(error));
            }
        }
        match self.link {
            Link::Connecting {
                deadline: Some(at), ..
            } if at <= now => {
                let after = self
                    .short_connect()
                    .or(self.config.timeouts.connect)
                    .unwrap_or_default();
                let error =
                    TransportError::new(TransportErrorKind::TimedOut(after), "open the websocket");
                self.handle_connect_failed(now, error);
            }
            Link::Backoff { attempt, at } if at <= now => self.connect(now, attempt),
            Link::Open if self.silence_at().is_some_and(|at| at <= now) => {
                // A socket that answers nothing is as good as closed: give it up and reconnect.
                self.transmits.push_back(Transmit::Close);
                self.handle_disconnect(now);
            }
            _ => {}
        }
        if self.keepalive_at().is_some_and(|at| at <= now) {
            self.transmits.push_back(Transmit::Ping);
            self.pinged_at = Some(now);
        }
        let recheck: Vec<PromptId> = self
            .order
            .iter()
            .filter(|id| {
                self.prompts
                    .get(*id)
                    .and_then(|p| p.recheck_at)
                    .is_some_and(|at| at <= now)
            })
            .cloned()
            .collect();
        for id in recheck {
            if let Some(p) = self.prompts.get_mut(&id) {
                p.recheck_at = None;
            }
            self.ask_history(now, &id);
        }
        let expired: Vec<(PromptId, Deadline, Phase)> = self
            .order
            .iter()
            .filter_map(|id| self.prompts.get(id))
            .filter_map(|p| match p.next_deadline() {
                Some((at, which)) if at <= now => Some((p.id.clone(), which, p.phase)),
                _ => None,
            })
            .collect();
        for (id, deadline, phase) in expired {
            self.stop_on_server(now, &id, phase);
            self.end(
                &id,
                Event::TimedOut {
                    prompt: id.clone(),
                    deadline,
                },
            );
        }
    }

    /// Asks for a connect (attempt `attempt` of the current outage) with its deadline.
    pub(super) fn connect(&mut self, now: Duration, attempt: u32) {
        let deadline = match self.short_connect() {
            Some(bound) => Some(now + bound),
            None => self.config.timeouts.connect.map(|d| now + d + GRACE),
        };
        self.link = Link::Connecting { attempt, deadline };
        self.transmits.push_back(self.connect_transmit());
    }

    /// A reconnect for prompts already on the server with a short deadline is given up after
    /// half of it (not below 2 s) if that is sooner than [`Timeouts::connect`](super::Timeouts):
    /// a handshake the server never answers then leaves time for another attempt.
    fn short_connect(&self) -> Option<Duration> {
        let bound = (self.shortest_deadline()? / 2).max(LOOKUP_FLOOR);
        match self.config.timeouts.connect {
            Some(connect) if connect + GRACE <= bound => None,
            _ => Some(bound),
        }
    }

    /// The first input with a clock arms the deadline of the connect [`Session::new`] asked
    /// for.
    pub(super) fn clock(&mut self, now: Duration) {
        if let Link::Connecting {
            deadline: deadline @ None,
            ..
        } = &mut self.link
        {
            *deadline = self.config.timeouts.connect.map(|d| now + d + GRACE);
        }
    }

    /// Something arrived on the websocket.
    pub(super) fn heard(&mut self, now: Duration) {
        self.clock(now);
        self.heard_at = self.heard_at.max(now);
    }

    /// When the open socket counts as dead if nothing more arrives.
    fn silence_at(&self) -> Option<Duration> {
        self.config.keepalive?;
        let mut silence = self.config.timeouts.silence?;
        if let Some(shortest) = self.shortest_deadline() {
            silence = silence.min((shortest / 2).max(SILENCE_FLOOR));
        }
        Some(self.heard_at + silence)
    }

    /// When the open socket is due for its next ping.
    fn keepalive_at(&self) -> Option<Duration> {
        let mut every = self.config.keepalive?;
        if let Some(shortest) = self.shortest_deadline() {
            every = every.min((shortest / 4).max(PING_FLOOR));
        }
        Some(self.pinged_at? + every)
    }

    /// The shortest deadline (accept, idle or total) of the prompts on the server. A socket
    /// gone silent is noticed within half of it, so that a prompt with a short deadline learns
    /// its fate from a new socket (and `/history`) instead of running into that deadline.
    fn shortest_deadline(&self) -> Option<Duration> {
        self.prompts
            .values()
            .filter(|p| p.phase != Phase::Waiting)
            .flat_map(|p| [p.deadlines.accept, p.deadlines.idle, p.deadlines.total])
            .flatten()
            .min()
    }

    /// The socket is gone: reconnect after the backoff of `attempt`, or give up.
    fn retry(&mut self, now: Duration, attempt: u32) {
        self.pinged_at = None;
        for p in self.prompts.values_mut() {
            if p.phase != Phase::Waiting {
                p.mark_gap();
            }
        }
        self.give_up_cut(now);
        if attempt > self.config.backoff.attempts {
            self.link = Link::Down;
            let failure = Failure::Disconnected {
                attempts: attempt - 1,
            };
            for id in self.order.clone() {
                self.end(
                    &id,
                    Event::Failed {
                        prompt: id.clone(),
                        failure: failure.clone(),
                    },
                );
            }
        } else if attempt == 0 {
            self.connect(now, 0);
        } else {
            self.link = Link::Backoff {
                attempt,
                at: now + self.config.backoff.delay(attempt),
            };
        }
    }
}
