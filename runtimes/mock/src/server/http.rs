//! The HTTP API: routing, query strings, and every endpoint but `POST /prompt`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{MockResponse, MockServer, pyjson};

const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The model folders of the recorded server (`GET /models`).
const MODEL_FOLDERS: &[&str] = &[
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

/// The most history entries kept, as the real server keeps.
pub(super) const MAX_HISTORY: usize = 10_000;

/// A JSON response.
pub(super) fn json_response(status: u16, value: &Value) -> MockResponse {
    MockResponse {
        status,
        content_type: JSON,
        body: Bytes::from(pyjson::dumps(value)),
    }
}

fn text(status: u16, body: &'static str) -> MockResponse {
    MockResponse {
        status,
        content_type: TEXT,
        body: Bytes::from_static(body.as_bytes()),
    }
}

/// An empty 200 without a content type, as the real server answers edits.
fn empty() -> MockResponse {
    MockResponse {
        status: 200,
        content_type: "",
        body: Bytes::new(),
    }
}

/// The real server's 404.
pub(super) fn not_found() -> MockResponse {
    text(404, "404: Not Found")
}

fn bad_request() -> MockResponse {
    text(400, "400: Bad Request")
}

/// A query string, decoded: `+` is a space, `%XX` a byte; bytes that are not UTF-8 are replaced.
#[derive(Debug, Default)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(query: &str) -> Self {
        let pairs = query.split('&').filter(|p| !p.is_empty()).map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        });
        Self(pairs.collect())
    }

    /// The first value of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Percent-decodes `s` (and, in a query, `+` as a space).
pub(super) fn decode(s: &str, plus_is_space: bool) -> String {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let pair = bytes
            .get(i + 1..i + 3)
            .and_then(|p| Some((hex(p[0])? << 4) | hex(p[1])?));
        match (b, pair) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON object body; an empty body counts as `{}`.
fn object_body(body: &[u8]) -> Option<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

pub(super) fn route(
    server: &mut MockServer,
    now: Duration,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> MockResponse {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let path = path.split('#').next().unwrap_or_default();
    let path = match path.strip_prefix("/api") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    };
    let query = Query::parse(query);
    let (get, post) = (method == "GET", method == "POST");
    let known = |allowed: bool| {
        if allowed {
            None
        } else {
            Some(method_not_allowed())
        }
    };
    if let Some(id) = path.strip_prefix("/history/") {
        return known(get).unwrap_or_else(|| server.history_one(&decode(id, false)));
    }
    if let Some(class) = path.strip_prefix("/object_info/") {
        return known(get).unwrap_or_else(|| server.object_info_one(&decode(class, false)));
    }
    if let Some(folder) = path.strip_prefix("/models/") {
        return known(get).unwrap_or_else(|| models_in(&decode(folder, false)));
    }
    match (path, get, post) {
        ("/prompt", _, true) => server.post_prompt(now, body),
        ("/prompt", true, _) => json_response(
            200,
            &json!({"exec_info": {"queue_remaining": server.queue_remaining()}}),
        ),
        ("/queue", true, _) => server.get_queue(),
        ("/queue", _, true) => server.edit_queue(body),
        ("/interrupt", _, true) => server.interrupt(body),
        ("/history", true, _) => server.history_recent(&query),
        ("/history", _, true) => server.edit_history(body),
        ("/view", true, _) => server.view(&query),
        ("/object_info", true, _) => MockResponse {
            status: 200,
            content_type: JSON,
            body: server.object_info_body.clone(),
        },
        ("/system_stats", true, _) => MockResponse {
            status: 200,
            content_type: JSON,
            body: server.system_stats_body.clone(),
        },
        ("/features", true, _) => json_response(
            200,
            &json!({
                "supports_preview_metadata": true,
                "max_upload_size": super::MAX_UPLOAD_SIZE,
            }),
        ),
        ("/embeddings", true, _) => json_response(200, &json!([])),
        ("/models", true, _) => json_response(200, &json!(MODEL_FOLDERS)),
        ("/upload/image", _, true) => server.upload_image(body),
        ("/free", _, true) => match object_body(body) {
            Some(_) => empty(),
            None => bad_request(),
        },
        (
            "/prompt" | "/queue" | "/interrupt" | "/history" | "/view" | "/object_info"
            | "/upload/image" | "/system_stats" | "/features" | "/embeddings" | "/models" | "/free",
            _,
            _,
        ) => method_not_allowed(),
        _ => not_found(),
    }
}

fn method_not_allowed() -> MockResponse {
    text(405, "405: Method Not Allowed")
}

/// `GET /models/{folder}`: the mock has no model files.
fn models_in(folder: &str) -> MockResponse {
    if MODEL_FOLDERS.contains(&folder) {
        json_response(200, &json!([]))
    } else {
        not_found()
    }
}

/// The MIME type of a file by its extension.
fn mime_of(filename: &str) -> &'static str {
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

impl MockServer {
    fn history_one(&self, id: &str) -> MockResponse {
        let mut out = Map::new();
        if let Some((id, entry)) = self.history.iter().find(|(h, _)| h == id) {
            out.insert(id.clone(), entry.clone());
        }
        json_response(200, &Value::Object(out))
    }

    /// `GET /history?max_items=N`: the last N finished prompts, oldest first (all without N).
    fn history_recent(&self, query: &Query) -> MockResponse {
        let max = match query.get("max_items") {
            None => None,
            Some(n) => match n.trim().parse::<u64>() {
                Ok(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                Err(_) => return bad_request(),
            },
        };
        let skip = max.map_or(0, |m| self.history.len().saturating_sub(m));
        let out: Map<String, Value> = self.history.iter().skip(skip).cloned().collect();
        json_response(200, &Value::Object(out))
    }

    /// `POST /history` with `{"clear": true}` and/or `{"delete": [ids]}`.
    fn edit_history(&mut self, body: &[u8]) -> MockResponse {
        let Some(edit) = object_body(body) else {
            return bad_request();
        };
        if edit.get("clear").and_then(Value::as_bool) == Some(true) {
            self.history.clear();
        }
        if let Some(ids) = edit.get("delete").and_then(Value::as_array) {
            self.history
                .retain(|(h, _)| !ids.iter().any(|i| i.as_str() == Some(h)));
        }
        empty()
    }

    pub(super) fn record_history(&mut self, id: String, entry: Value) {
        self.history.retain(|(h, _)| *h != id);
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(0);
        }
        self.history.push((id, entry));
    }

    fn get_queue(&self) -> MockResponse {
        let running: Vec<Value> = self.running.iter().map(|r| r.job().item()).collect();
        let pending: Vec<Value> = self.pending.iter().map(|j| j.item()).collect();
        json_response(
            200,
            &json!({"queue_running": running, "queue_pending": pending}),
        )
    }

    /// `POST /queue` with `{"clear": true}` and/or `{"delete": [ids]}`: only waiting prompts go.
    fn edit_queue(&mut self, body: &[u8]) -> MockResponse {
        let Some(edit) = object_body(body) else {
            return bad_request();
        };
        let before = self.pending.len();
        if edit.get("clear").and_then(Value::as_bool) == Some(true) {
            self.pending.clear();
        }
        if let Some(ids) = edit.get("delete").and_then(Value::as_array) {
            self.pending
                .retain(|j| !ids.iter().any(|i| i.as_str() == Some(j.id.as_str())));
        }
        if self.pending.len() != before {
            self.broadcast_status();
        }
        empty()
    }

    /// `POST /interrupt`: `{}` stops whatever runs; `{"prompt_id": ID}` only that prompt.
    fn interrupt(&mut self, body: &[u8]) -> MockResponse {
        let Some(request) = object_body(body) else {
            return bad_request();
        };
        if let Some(run) = &mut self.running {
            let hit = match request.get("prompt_id") {
                None => true,
                Some(id) => id.as_str() == Some(run.prompt_id()),
            };
            if hit {
                run.interrupt();
            }
        }
        empty()
    }

    /// `GET /view?filename=&subfolder=&type=`: a file of the in-memory folders; never a path.
    fn view(&self, query: &Query) -> MockResponse {
        let Some(filename) = query.get("filename") else {
            return not_found();
        };
        let subfolder = query.get("subfolder").unwrap_or_default();
        let kind = query.get("type").unwrap_or("output");
        match self.file(kind, subfolder, filename) {
            Some(body) => MockResponse {
                status: 200,
                content_type: mime_of(filename),
                body,
            },
            None => not_found(),
        }
    }

    fn object_info_one(&self, class: &str) -> MockResponse {
        let mut out = Map::new();
        if let Some(info) = self.object_info.as_ref().and_then(|o| o.get(class)) {
            out.insert(class.to_owned(), info.clone());
        }
        json_response(200, &Value::Object(out))
    }
}
