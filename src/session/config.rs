//! The settings of a [`Session`](super::Session): what it asks of the server, its reconnect
//! policy, and the deadline of every wait it hands to the adapter.

use std::time::Duration;

/// Reconnect backoff: `initial`, doubled per attempt up to `max`, at most `attempts` times.
///
/// When an open websocket drops, the first reconnect goes at once and is not counted as an
/// attempt: a prompt still running on the server keeps sending its frames, and a socket back
/// within milliseconds receives them instead of leaving them to nobody (which, for
/// `SaveImageWebsocket` images, fails the prompt). Only if that reconnect fails do the
/// counted attempts follow, `initial` apart and doubling. At most three reconnects go at once
/// per `initial`, so a server that closes every socket it accepts is not hammered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay before the first reconnect attempt.
    pub initial: Duration,
    /// The longest delay between attempts.
    pub max: Duration,
    /// Attempts before prompts in flight fail with
    /// [`Failure::Disconnected`](super::Failure::Disconnected).
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
            attempts: 8,
        }
    }
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max`, for at most `attempts` attempts.
    pub fn new(initial: Duration, max: Duration, attempts: u32) -> Self {
        Self {
            initial,
            max,
            attempts,
        }
    }

    /// The wait before attempt `attempt`; attempt 0 (the reconnect at once) waits nothing.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How long each wait the session hands to the adapter may last. The session keeps a timer for
/// every one of them (see [`Session::poll_timeout`](super::Session::poll_timeout)) and decides
/// what an expiry means; the adapter bounds its own work by the same values
/// ([`Session::timeouts`](super::Session::timeouts)), so nothing waits without a limit.
///
/// `None` turns a deadline off; [`Timeouts::none`] turns them all off, which is only sensible in
/// tests and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// Opening the websocket: TCP connect, TLS and the websocket handshake together. On expiry
    /// the attempt counts as failed with
    /// [`TransportErrorKind::TimedOut`](crate::TransportErrorKind::TimedOut). Default: 10 s.
    pub connect: Option<Duration>,
    /// One HTTP exchange, from sending the request to the last byte of the response: the bound
    /// of a `/view` download and the adapter's bound on every exchange. On expiry the request
    /// counts as failed in transport. Default: 120 s.
    pub http: Option<Duration>,
    /// One small exchange, whose answer is a few KiB and comes at once from a healthy server:
    /// `POST /prompt`, the `/history` and `/queue` lookups, a queue delete, an interrupt. On
    /// expiry it counts as failed in transport, and a `POST /prompt` is looked up (the server
    /// may have queued it), so a slow answer costs a lookup, not the prompt; a server that
    /// answers nothing is given up in seconds instead of [`Timeouts::http`]. Default: 10 s.
    pub exchange: Option<Duration>,
    /// The longest the open websocket may stay silent: no frame and no pong. On expiry the
    /// session gives up on the socket and reconnects. Armed only with
    /// [`SessionConfig::keepalive`] on (an idle server sends nothing but pongs); keep it above
    /// the keepalive interval. While a prompt on the server has a shorter deadline than twice
    /// this, the session watches at half that deadline instead (not below 2 s), and pings at
    /// a quarter of it (not below 1 s). Default: 45 s.
    pub silence: Option<Duration>,
    /// Closing the websocket (the close handshake) and each websocket write. An adapter that
    /// cannot finish within it drops the socket. Default: 5 s.
    pub close: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Some(Duration::from_secs(10)),
            http: Some(Duration::from_secs(120)),
            exchange: Some(Duration::from_secs(10)),
            silence: Some(Duration::from_secs(45)),
            close: Some(Duration::from_secs(5)),
        }
    }
}

impl Timeouts {
    /// No deadlines at all: every wait lasts as long as the peer makes it.
    pub fn none() -> Self {
        Self {
            connect: None,
            http: None,
            exchange: None,
            silence: None,
            close: None,
        }
    }

    /// Sets [`Timeouts::connect`].
    pub fn with_connect(mut self, d: Option<Duration>) -> Self {
        self.connect = d;
        self
    }

    /// Sets [`Timeouts::http`].
    pub fn with_http(mut self, d: Option<Duration>) -> Self {
        self.http = d;
        self
    }

    /// Sets [`Timeouts::exchange`].
    pub fn with_exchange(mut self, d: Option<Duration>) -> Self {
        self.exchange = d;
        self
    }

    /// Sets [`Timeouts::silence`].
    pub fn with_silence(mut self, d: Option<Duration>) -> Self {
        self.silence = d;
        self
    }

    /// Sets [`Timeouts::close`].
    pub fn with_close(mut self, d: Option<Duration>) -> Self {
        self.close = d;
        self
    }
}

/// Settings of a [`Session`](super::Session).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Send the `feature_flags` hello so that images arrive as type 4 frames with their prompt
    /// and node ids. Default: on.
    pub feature_flags: bool,
    /// Fetch file outputs named by `executed` messages with `/view` and deliver them as
    /// [`Event::Output`](super::Event::Output) or [`Event::File`](super::Event::File) before
    /// the prompt completes. Default: on.
    pub fetch_files: bool,
    /// The largest binary frame accepted. Default: 64 MiB.
    pub max_frame_len: usize,
    /// Reconnect policy.
    pub backoff: Backoff,
    /// Interval of websocket pings; `None` for none. Default: 20 s.
    pub keepalive: Option<Duration>,
    /// The deadline of every wait handed to the adapter.
    pub timeouts: Timeouts,
    /// The most `/view` downloads in flight at once on this session; the rest wait their turn
    /// in order. At least 1. Default: 4.
    pub max_views: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            feature_flags: true,
            fetch_files: true,
            max_frame_len: crate::wire::frame::DEFAULT_MAX_FRAME_LEN,
            backoff: Backoff::default(),
            keepalive: Some(Duration::from_secs(20)),
            timeouts: Timeouts::default(),
            max_views: 4,
        }
    }
}

impl SessionConfig {
    /// Sets [`SessionConfig::feature_flags`].
    pub fn with_feature_flags(mut self, on: bool) -> Self {
        self.feature_flags = on;
        self
    }

    /// Sets [`SessionConfig::fetch_files`].
    pub fn with_fetch_files(mut self, on: bool) -> Self {
        self.fetch_files = on;
        self
    }

    /// Sets [`SessionConfig::max_frame_len`].
    pub fn with_max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes;
        self
    }

    /// Sets [`SessionConfig::backoff`].
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets [`SessionConfig::keepalive`].
    pub fn with_keepalive(mut self, every: Option<Duration>) -> Self {
        self.keepalive = every;
        self
    }

    /// Sets [`SessionConfig::timeouts`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets [`SessionConfig::max_views`] (at least 1).
    pub fn with_max_views(mut self, n: usize) -> Self {
        self.max_views = n.max(1);
        self
    }
}
