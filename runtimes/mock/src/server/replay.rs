//! Recorded runs, ready to be played again: what a recording's server answered to each
//! `POST /prompt`, the frames of the run that followed, and the files its client fetched.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::Frame;
use super::graph::{Shape, shape};
use comfy_proxy::transcript::{RecordKind, Transcript};
use comfy_proxy::wire::frame::{PREVIEW_IMAGE_WITH_METADATA, encode_image_with_metadata};
use comfy_proxy::workflow::Workflow;

/// A file the server holds: `(type, subfolder, filename)`.
pub(super) type FileKey = (String, String, String);

/// One recorded `POST /prompt` and what came of it.
#[derive(Debug, Clone)]
pub(super) struct Recording {
    /// The graph as posted.
    pub graph: Value,
    /// Its shape.
    pub shape: Shape,
    /// The server's answer.
    pub answer: Answer,
}

/// What the recorded server did with a posted graph.
#[derive(Debug, Clone)]
pub(super) enum Answer {
    /// Queued and ran it.
    Accepted {
        /// The id the recorded server used.
        prompt_id: String,
        /// `node_errors` of the 200.
        node_errors: Value,
        /// The run's frames from `execution_start` up to (not including) the final
        /// `executing` with node null, `status` messages left out, with their `t_ms`.
        frames: Vec<(u64, Frame)>,
        /// Files the recorded client fetched with `/view`, and their bytes.
        files: Vec<(FileKey, Bytes)>,
    },
    /// Refused it.
    Rejected {
        /// The status code.
        status: u16,
        /// The body as recorded.
        body: Bytes,
    },
}

/// The type and `prompt_id` of a recorded text message, and whether it is `executing` with a
/// null node.
fn kind_of(text: &str) -> Option<(String, Option<String>, bool)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let kind = v.get("type")?.as_str()?.to_owned();
    let data = v.get("data");
    let prompt = data
        .and_then(|d| d.get("prompt_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let null_node = data.and_then(|d| d.get("node")).is_some_and(Value::is_null);
    Some((kind, prompt, null_node))
}

/// Every `POST /prompt` of a transcript, in order.
pub(super) fn extract(t: &Transcript) -> Vec<Recording> {
    let records = &t.records;
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let RecordKind::HttpRequest { method, path, body } = &r.kind else {
            continue;
        };
        if method != "POST" || path.split('?').next() != Some("/prompt") {
            continue;
        }
        let Some(graph) = body.as_ref().and_then(|b| b.get("prompt")).cloned() else {
            continue;
        };
        let Ok(workflow) = Workflow::from_value(graph.clone()) else {
            continue;
        };
        let response = records[i + 1..].iter().find_map(|x| match &x.kind {
            RecordKind::HttpResponse { status, body, .. } if x.conn == r.conn => {
                Some((*status, body.clone()))
            }
            _ => None,
        });
        let Some((status, body)) = response else {
            continue;
        };
        let answer = if status == 200 {
            let Ok(json) = serde_json::from_slice::<Value>(&body) else {
                continue;
            };
            let Some(prompt_id) = json.get("prompt_id").and_then(Value::as_str) else {
                continue;
            };
            Answer::Accepted {
                prompt_id: prompt_id.to_owned(),
                node_errors: json.get("node_errors").cloned().unwrap_or(Value::Null),
                frames: run_frames(t, i, r.conn, prompt_id),
                files: view_files(t, r.conn),
            }
        } else {
            Answer::Rejected { status, body }
        };
        out.push(Recording {
            shape: shape(&workflow),
            graph,
            answer,
        });
    }
    out
}

/// The frames on `conn` from `execution_start` of `prompt` (searched from record `from`) up to
/// its final `executing` with node null, `status` messages left out.
fn run_frames(t: &Transcript, from: usize, conn: u32, prompt: &str) -> Vec<(u64, Frame)> {
    let mut frames = Vec::new();
    let mut started = false;
    for r in t.records.iter().skip(from).filter(|r| r.conn == conn) {
        match &r.kind {
            RecordKind::WsText { text } => {
                let Some((kind, id, null_node)) = kind_of(text) else {
                    if started {
                        frames.push((r.t_ms, Frame::Text(text.clone())));
                    }
                    continue;
                };
                let ours = id.as_deref() == Some(prompt);
                if !started {
                    started = kind == "execution_start" && ours;
                }
                if !started || kind == "status" {
                    continue;
                }
                if kind == "executing" && null_node && ours {
                    break;
                }
                frames.push((r.t_ms, Frame::Text(text.clone())));
            }
            RecordKind::WsBinary { data } if started => {
                frames.push((r.t_ms, Frame::Binary(data.clone())));
            }
            _ => {}
        }
    }
    frames
}

/// Files fetched with `GET /view` on `conn`, with the bytes the server answered.
fn view_files(t: &Transcript, conn: u32) -> Vec<(FileKey, Bytes)> {
    let mut files = Vec::new();
    let mut asked: Option<FileKey> = None;
    for r in t.records.iter().filter(|r| r.conn == conn) {
        match &r.kind {
            RecordKind::HttpRequest { method, path, .. } => {
                asked = match path.split_once('?') {
                    Some(("/view", query)) if method == "GET" => {
                        let q = super::http::Query::parse(query);
                        Some((
                            q.get("type").unwrap_or("output").to_owned(),
                            q.get("subfolder").unwrap_or_default().to_owned(),
                            q.get("filename").unwrap_or_default().to_owned(),
                        ))
                    }
                    _ => None,
                };
            }
            RecordKind::HttpResponse { status, body, .. } => {
                if let (200, Some(key)) = (*status, asked.take()) {
                    files.push((key, body.clone()));
                }
            }
            _ => {}
        }
    }
    files
}

/// A recorded frame with the recorded prompt id `old` replaced by `new`: in a text message, and
/// in the metadata of a type 4 frame (whose length header is rewritten to match).
pub(super) fn rewrite(frame: &Frame, old: &str, new: &str) -> Frame {
    if old == new {
        return frame.clone();
    }
    let (old, new) = (super::pyjson::escaped(old), super::pyjson::escaped(new));
    match frame {
        Frame::Text(text) => Frame::Text(text.replace(&old, &new)),
        Frame::Binary(data) => {
            let header = |at: usize| -> Option<usize> {
                let b = data.get(at..at + 4)?;
                Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            };
            let rewritten = (|| {
                if header(0)? != PREVIEW_IMAGE_WITH_METADATA as usize {
                    return None;
                }
                let len = header(4)?;
                let meta = std::str::from_utf8(data.get(8..8usize.checked_add(len)?)?).ok()?;
                let image = data.get(8 + len..)?;
                Some(encode_image_with_metadata(&meta.replace(&old, &new), image))
            })();
            match rewritten {
                Some(bytes) => Frame::Binary(Bytes::from(bytes)),
                None => frame.clone(),
            }
        }
    }
}

/// `ms` recorded milliseconds scaled by `speed` (0, negative or not a number: no delay).
pub(super) fn scaled(ms: u64, speed: f64) -> Duration {
    if speed.is_nan() || speed <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(ms as f64 / 1000.0 * speed).unwrap_or(Duration::MAX)
}
