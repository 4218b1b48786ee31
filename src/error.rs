//! The errors of the core, split by whose fault they are.
//!
//! - [`ProtocolError`]: the server (or something between us and it) sent what the protocol does
//!   not allow. The core never panics on such input; it reports this.
//! - [`Misuse`]: the caller used the API wrongly (an unknown prompt id, a submit after close).
//! - Input errors of their own: [`crate::AddressError`] for server addresses and
//!   [`crate::WorkflowError`] for graphs, both naming the offending part.

use std::fmt;

use crate::wire::FrameError;

/// The remote side broke the protocol: a malformed frame, JSON that does not have the documented
/// shape, an HTTP status the endpoint never returns.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A binary websocket frame could not be decoded.
    Frame(FrameError),
    /// A text message or HTTP body was not the JSON the protocol describes.
    BadJson {
        /// What was being decoded (`"websocket message"`, `"/prompt response"`, ...).
        context: &'static str,
        /// serde_json's account of what was wrong.
        message: String,
    },
    /// A text frame or body that should be UTF-8 was not.
    BadUtf8 {
        /// What was being decoded.
        context: &'static str,
    },
    /// An HTTP response with a status the endpoint does not document.
    UnexpectedStatus {
        /// What was being decoded.
        context: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The start of the body, lossily decoded, for the error message.
        body: String,
    },
    /// A message larger than the configured limit.
    TooLarge {
        /// What was too large.
        context: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(e) => write!(f, "bad binary frame: {e}"),
            Self::BadJson { context, message } => write!(f, "malformed {context}: {message}"),
            Self::BadUtf8 { context } => write!(f, "{context} is not valid UTF-8"),
            Self::UnexpectedStatus {
                context,
                status,
                body,
            } => {
                write!(f, "unexpected HTTP {status} for {context}: {body}")
            }
            Self::TooLarge {
                context,
                len,
                limit,
            } => {
                write!(
                    f,
                    "{context} of {len} bytes is over the limit of {limit} bytes"
                )
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<FrameError> for ProtocolError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

impl ProtocolError {
    /// A [`ProtocolError::BadJson`] from a serde_json error.
    pub(crate) fn json(context: &'static str, e: &serde_json::Error) -> Self {
        Self::BadJson {
            context,
            message: e.to_string(),
        }
    }

    /// A [`ProtocolError::UnexpectedStatus`] quoting at most 200 bytes of the body.
    pub(crate) fn status(context: &'static str, status: u16, body: &[u8]) -> Self {
        let cut = &body[..body.len().min(200)];
        Self::UnexpectedStatus {
            context,
            status,
            body: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

/// The caller used the API in a way it does not allow. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misuse {
    /// The prompt id is not one this session submitted (or it has already ended).
    UnknownPrompt(crate::PromptId),
    /// A prompt with this id was already submitted on this session.
    DuplicatePrompt(crate::PromptId),
    /// The session was closed; it takes no new work.
    Closed,
    /// The workflow has no nodes.
    EmptyWorkflow,
}

impl fmt::Display for Misuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownPrompt(id) => write!(f, "prompt {id} is not in flight on this session"),
            Self::DuplicatePrompt(id) => write!(f, "prompt {id} was already submitted"),
            Self::Closed => f.write_str("the session is closed"),
            Self::EmptyWorkflow => f.write_str("the workflow has no nodes"),
        }
    }
}

impl std::error::Error for Misuse {}

/// How a connection or an HTTP exchange failed below the protocol: the bytes did not get to the
/// server, or its answer did not get back. Whose fault it is, and whether to try elsewhere,
/// follows from the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportErrorKind {
    /// Nothing listens at the address: the connection was refused.
    Refused,
    /// The host name did not resolve to an address.
    Unresolvable,
    /// No answer within the deadline the core set.
    TimedOut(std::time::Duration),
    /// The connection was reset or closed before the exchange completed.
    Reset,
    /// TLS failed: an untrusted certificate, a failed handshake.
    Tls,
    /// The server answered the websocket upgrade with something other than a websocket.
    Handshake,
    /// The response was larger than the configured limit.
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The response was not HTTP/1.1 (or websocket framing) the client could read.
    Malformed,
    /// The request could not be written: a header name or value, or a URL, that HTTP does not
    /// allow. Nothing was sent; the caller's settings need fixing.
    InvalidRequest,
    /// Any other I/O failure.
    Io,
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => f.write_str("connection refused"),
            Self::Unresolvable => f.write_str("host name does not resolve"),
            Self::TimedOut(after) => write!(f, "no answer within {after:?}"),
            Self::Reset => f.write_str("connection reset"),
            Self::Tls => f.write_str("TLS failed"),
            Self::Handshake => f.write_str("websocket handshake refused"),
            Self::TooLarge { limit } => write!(f, "response over the limit of {limit} bytes"),
            Self::Malformed => f.write_str("malformed response"),
            Self::InvalidRequest => f.write_str("the request cannot be sent as it is"),
            Self::Io => f.write_str("I/O error"),
        }
    }
}

/// A failed connection or HTTP exchange, typed from the I/O seam to the public results.
///
/// `what` names the operation and the server without secrets (`connect to 10.0.0.5:8188`,
/// `POST http://10.0.0.5:8188/prompt`); `detail` is the lower layer's own account, stripped of
/// control characters; [`std::error::Error::source`] gives the lower layer's error when the
/// adapter kept it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TransportError {
    /// What failed.
    pub kind: TransportErrorKind,
    /// The operation and server, never with a token or password in it.
    pub what: String,
    /// The lower layer's account, if it adds anything to the kind.
    pub detail: Option<String>,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for TransportError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.what == other.what && self.detail == other.detail
    }
}

impl TransportError {
    /// A transport error of `kind` while doing `what`.
    pub fn new(kind: TransportErrorKind, what: impl Into<String>) -> Self {
        Self {
            kind,
            what: what.into(),
            detail: None,
            source: None,
        }
    }

    /// Adds the lower layer's account (control characters are dropped).
    pub fn with_detail(mut self, detail: impl AsRef<str>) -> Self {
        let clean: String = detail
            .as_ref()
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        self.detail = (!clean.is_empty()).then_some(clean);
        self
    }

    /// Keeps the lower layer's error as [`std::error::Error::source`].
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        if self.detail.is_none() {
            self = self.with_detail(source.to_string());
        }
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// Sorts an I/O error by its kind: refused, reset, timed out, unresolvable or other.
    pub fn from_io(what: impl Into<String>, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::ConnectionRefused => TransportErrorKind::Refused,
            K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::NotConnected => TransportErrorKind::Reset,
            K::TimedOut => TransportErrorKind::TimedOut(std::time::Duration::ZERO),
            K::InvalidData => TransportErrorKind::Malformed,
            // std reports a failed name lookup as an uncategorised error whose text says so.
            _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => {
                TransportErrorKind::Unresolvable
            }
            _ => TransportErrorKind::Io,
        };
        Self::new(kind, what).with_source(e)
    }

    /// Whether the server never saw the request: refused, unresolvable, or TLS/handshake
    /// failures before anything was sent. A prompt that failed this way can go elsewhere with
    /// no risk of running twice.
    pub fn before_request(&self) -> bool {
        matches!(
            self.kind,
            TransportErrorKind::Refused
                | TransportErrorKind::Unresolvable
                | TransportErrorKind::Tls
                | TransportErrorKind::InvalidRequest
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// An HTTP exchange that did not give the expected answer: it failed in transport, or the
/// server's answer broke the protocol.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The bytes did not get there or back.
    Transport(TransportError),
    /// The answer came, but it was not what the protocol allows.
    Protocol(ProtocolError),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport(e) => write!(f, "{e}"),
            Self::Protocol(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ExchangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Transport(e) => Some(e),
            Self::Protocol(e) => Some(e),
        }
    }
}

impl From<TransportError> for ExchangeError {
    fn from(e: TransportError) -> Self {
        Self::Transport(e)
    }
}

impl From<ProtocolError> for ExchangeError {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}
