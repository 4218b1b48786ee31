//! Recorded sessions in the `comfy-transcript/1` format (JSON Lines).
//!
//! Line 1 is a header (`format`, `scenario`, `client_id`, ...); every further line is one event
//! with `t_ms` (milliseconds since the recording started), `kind`, and for two-socket
//! recordings `conn`. See `fixtures/README.md` for the kinds and their fields.

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The format name in a transcript's header.
pub const FORMAT: &str = "comfy-transcript/1";

/// A transcript's first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The scenario's name.
    #[serde(default)]
    pub scenario: String,
    /// The server's ComfyUI commit, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comfyui_commit: Option<String>,
    /// The client id of connection 0.
    pub client_id: String,
    /// The client ids of every connection, when there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ids: Option<Vec<String>>,
    /// What the recording shows.
    #[serde(default)]
    pub description: String,
}

impl Header {
    /// The client id of connection `conn`.
    pub fn client_id_of(&self, conn: u32) -> &str {
        self.client_ids
            .as_ref()
            .and_then(|ids| ids.get(conn as usize))
            .map_or(self.client_id.as_str(), String::as_str)
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// Milliseconds since the recording started.
    pub t_ms: u64,
    /// The connection (0 unless the recording has several).
    pub conn: u32,
    /// What happened.
    pub kind: RecordKind,
}

/// What a [`Record`] says happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RecordKind {
    /// The websocket handshake succeeded.
    WsOpen {
        /// Path and query of the socket.
        path: String,
    },
    /// The client sent a text frame.
    WsSendText {
        /// The text.
        text: String,
    },
    /// The server sent a text frame.
    WsText {
        /// The text, byte for byte.
        text: String,
    },
    /// The server sent a binary frame.
    WsBinary {
        /// The whole frame.
        data: Bytes,
    },
    /// The websocket closed.
    WsClose {
        /// The close code.
        code: Option<u16>,
        /// The close reason.
        reason: String,
        /// `client` or `server`.
        initiator: String,
    },
    /// The client made an HTTP request.
    HttpRequest {
        /// `GET` or `POST`.
        method: String,
        /// Path and query.
        path: String,
        /// The JSON body, if any.
        body: Option<Value>,
    },
    /// The response to the previous request on this connection.
    HttpResponse {
        /// The status code.
        status: u16,
        /// Response headers.
        headers: Map<String, Value>,
        /// The body bytes (JSON bodies re-encoded, others decoded from base64).
        body: Bytes,
    },
}

/// A whole transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The header line.
    pub header: Header,
    /// The events, in order.
    pub records: Vec<Record>,
}

/// Why a transcript could not be read; names the line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TranscriptError {
    /// The 1-based line number.
    pub line: usize,
    /// What was wrong with it.
    pub kind: TranscriptErrorKind,
}

impl fmt::Display for TranscriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transcript line {}: {}", self.line, self.kind)
    }
}

/// What was wrong with a transcript's line (see [`TranscriptError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranscriptErrorKind {
    /// The text has no lines but blank ones.
    Empty,
    /// The first line is not a header.
    BadHeader {
        /// serde_json's account of what was wrong.
        message: String,
    },
    /// The header names another format than [`FORMAT`].
    WrongFormat {
        /// The format it names.
        found: String,
    },
    /// An event line is not JSON, or lacks `t_ms` or `kind`.
    BadJson {
        /// serde_json's account of what was wrong.
        message: String,
    },
    /// An event lacks a field its kind needs.
    MissingField {
        /// The field's name.
        name: &'static str,
    },
    /// A field that must be a string is not.
    NotAString {
        /// The field's name.
        name: &'static str,
    },
    /// A `b64` or body field is not valid base64.
    BadBase64 {
        /// The decoder's account of what was wrong.
        message: String,
    },
    /// A binary frame's `len` is not the length of its decoded bytes.
    LengthMismatch {
        /// The decoded length.
        actual: usize,
        /// The `len` field.
        declared: u64,
    },
    /// An HTTP response's `status` is not a number that fits a status code.
    BadStatus,
    /// An event kind this reader does not know.
    UnknownKind {
        /// The kind as written.
        kind: String,
    },
    /// A JSON body that could not be encoded again.
    BadBody {
        /// serde_json's account of what was wrong.
        message: String,
    },
}

impl fmt::Display for TranscriptErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty transcript"),
            Self::BadHeader { message } => write!(f, "bad header: {message}"),
            Self::WrongFormat { found } => {
                write!(f, "format is {found:?}, expected {FORMAT:?}")
            }
            Self::BadJson { message } | Self::BadBody { message } => f.write_str(message),
            Self::MissingField { name } => write!(f, "missing field {name:?}"),
            Self::NotAString { name } => write!(f, "field {name:?} is not a string"),
            Self::BadBase64 { message } => write!(f, "bad base64: {message}"),
            Self::LengthMismatch { actual, declared } => {
                write!(f, "binary frame is {actual} bytes, header says {declared}")
            }
            Self::BadStatus => f.write_str("field \"status\" is not a status code"),
            Self::UnknownKind { kind } => write!(f, "unknown event kind {kind:?}"),
        }
    }
}

impl std::error::Error for TranscriptError {}

#[derive(Deserialize)]
struct RawRecord {
    t_ms: u64,
    kind: String,
    #[serde(default)]
    conn: u32,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

type Kind = TranscriptErrorKind;

fn field<'a>(rest: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, Kind> {
    rest.get(name).ok_or(Kind::MissingField { name })
}

fn string(rest: &Map<String, Value>, name: &'static str) -> Result<String, Kind> {
    field(rest, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or(Kind::NotAString { name })
}

fn b64(text: &str) -> Result<Bytes, Kind> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|e| Kind::BadBase64 {
            message: e.to_string(),
        })
}

fn record_kind(raw: RawRecord) -> Result<RecordKind, Kind> {
    let rest = &raw.rest;
    Ok(match raw.kind.as_str() {
        "ws_open" => RecordKind::WsOpen {
            path: string(rest, "path")?,
        },
        "ws_send_text" => RecordKind::WsSendText {
            text: string(rest, "text")?,
        },
        "ws_text" => RecordKind::WsText {
            text: string(rest, "text")?,
        },
        "ws_binary" => {
            let data = b64(&string(rest, "b64")?)?;
            if let Some(len) = rest.get("len").and_then(Value::as_u64)
                && len != data.len() as u64
            {
                return Err(Kind::LengthMismatch {
                    actual: data.len(),
                    declared: len,
                });
            }
            RecordKind::WsBinary { data }
        }
        "ws_close" => RecordKind::WsClose {
            code: rest
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok()),
            reason: rest
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            initiator: rest
                .get("initiator")
                .and_then(Value::as_str)
                .unwrap_or("server")
                .to_owned(),
        },
        "http_request" => RecordKind::HttpRequest {
            method: string(rest, "method")?,
            path: string(rest, "path")?,
            body: rest.get("body").filter(|b| !b.is_null()).cloned(),
        },
        "http_response" => {
            let status = field(rest, "status")?
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or(Kind::BadStatus)?;
            let headers = rest
                .get("headers")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let body = match (rest.get("body_b64"), rest.get("body")) {
                (Some(Value::String(text)), _) => b64(text)?,
                (_, Some(Value::String(text))) if text.is_empty() => Bytes::new(),
                (_, Some(Value::String(text))) if !is_json(&headers) => b64(text)?,
                (_, Some(json)) => {
                    Bytes::from(serde_json::to_vec(json).map_err(|e| Kind::BadBody {
                        message: e.to_string(),
                    })?)
                }
                (_, None) => Bytes::new(),
            };
            RecordKind::HttpResponse {
                status,
                headers,
                body,
            }
        }
        other => {
            return Err(Kind::UnknownKind {
                kind: other.to_owned(),
            });
        }
    })
}

/// Whether a response's headers say its body is JSON.
fn is_json(headers: &Map<String, Value>) -> bool {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| v.as_str())
        .is_none_or(|ct| ct.contains("json"))
}

impl Transcript {
    /// Reads a transcript from its JSON Lines text. Blank lines are skipped.
    ///
    /// ```
    /// use comfy_proxy::transcript::{RecordKind, Transcript};
    /// let text = r#"{"format":"comfy-transcript/1","scenario":"x","client_id":"c"}
    /// {"t_ms":2,"kind":"ws_open","path":"/ws?clientId=c"}"#;
    /// let t = Transcript::parse(text).unwrap();
    /// assert!(matches!(t.records[0].kind, RecordKind::WsOpen { .. }));
    /// ```
    pub fn parse(text: &str) -> Result<Self, TranscriptError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let first_line = |kind| TranscriptError { line: 1, kind };
        let (_, first) = lines.next().ok_or(first_line(Kind::Empty))?;
        let header: Header = serde_json::from_str(first).map_err(|e| {
            first_line(Kind::BadHeader {
                message: e.to_string(),
            })
        })?;
        if header.format != FORMAT {
            return Err(first_line(Kind::WrongFormat {
                found: header.format,
            }));
        }
        let mut records = Vec::new();
        for (i, line) in lines {
            let err = |kind| TranscriptError { line: i + 1, kind };
            let raw: RawRecord = serde_json::from_str(line).map_err(|e| {
                err(Kind::BadJson {
                    message: e.to_string(),
                })
            })?;
            let (t_ms, conn) = (raw.t_ms, raw.conn);
            let kind = record_kind(raw).map_err(err)?;
            records.push(Record { t_ms, conn, kind });
        }
        Ok(Self { header, records })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let head = r#"{"format":"comfy-transcript/1","client_id":"c"}"#;
        for (body, line, needle) in [
            ("{\"t_ms\":1,\"kind\":\"ws_open\"}", 2, "path"),
            ("{\"t_ms\":1,\"kind\":\"teleport\"}", 2, "teleport"),
            (
                "{\"t_ms\":1,\"kind\":\"ws_binary\",\"b64\":\"!!\"}",
                2,
                "base64",
            ),
            (
                "{\"t_ms\":1,\"kind\":\"ws_binary\",\"b64\":\"AAAA\",\"len\":9}",
                2,
                "header says 9",
            ),
            ("not json", 2, "expected"),
            (
                "{\"t_ms\":-1,\"kind\":\"ws_open\",\"path\":\"/\"}",
                2,
                "invalid value",
            ),
        ] {
            let e = Transcript::parse(&format!("{head}\n{body}")).unwrap_err();
            assert_eq!(e.line, line, "{body}");
            assert!(e.kind.to_string().contains(needle), "{body}: {e}");
        }
        assert_eq!(Transcript::parse("").unwrap_err().kind, Kind::Empty);
        assert_eq!(
            Transcript::parse(&format!("{head}\n{{\"t_ms\":1,\"kind\":\"ws_open\"}}"))
                .unwrap_err()
                .kind,
            Kind::MissingField { name: "path" }
        );
        assert_eq!(
            Transcript::parse(r#"{"format":"other/2","client_id":"c"}"#)
                .unwrap_err()
                .to_string(),
            "transcript line 1: format is \"other/2\", expected \"comfy-transcript/1\""
        );
    }
}
