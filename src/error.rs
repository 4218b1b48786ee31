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
