//! Recording a client's traffic in the `comfy-transcript/1` format, so that users build their
//! own fixtures from their own servers. `comfy-proxy replay` and the core's `replay` read it.
//!
//! A transcript holds no secret: requests are recorded by path (without the auth query token),
//! headers are not recorded, and every line is scrubbed of the config's secrets before it is
//! written, in case an error message or a server's reply echoed one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use comfy_proxy::wire::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use crate::auth::Redactor;
use crate::runtime::Runtime;

/// Writes one transcript: a header line, then one line per event.
pub(crate) struct Recorder {
    out: BufWriter<File>,
    /// The runtime's clock: `t_ms` counts from `epoch` on it.
    clock: Arc<dyn Runtime>,
    epoch: Instant,
    redactor: Redactor,
}

/// `value` with every secret scrubbed from its strings and keys. Base64 and hex fields are
/// left alone: a short secret may occur in encoded image bytes by chance, and scrubbing it
/// there would corrupt the image without hiding anything.
fn scrub(redactor: &Redactor, value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(redactor.redact(&s).into_owned()),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| scrub(redactor, v)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if k.ends_with("b64") || k.ends_with("hex") {
                        v
                    } else {
                        scrub(redactor, v)
                    };
                    (redactor.redact(&k).into_owned(), v)
                })
                .collect(),
        ),
        other => other,
    }
}

impl Recorder {
    /// Creates `dir/<host>_<port>-<client id>.jsonl` and writes its header.
    pub(crate) fn create(
        dir: &Path,
        server: &comfy_proxy::ServerAddress,
        client_id: &str,
        redactor: Redactor,
        clock: Arc<dyn Runtime>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let host: String = server
            .host()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{host}_{}-{client_id}.jsonl", server.port());
        let mut out = BufWriter::new(File::create(dir.join(name))?);
        let header = json!({
            "format": comfy_proxy::transcript::FORMAT,
            "scenario": "recorded",
            "client_id": client_id,
            "description": format!("recorded by comfy-proxy from {server}"),
        });
        writeln!(out, "{header}")?;
        Ok(Self {
            out,
            epoch: clock.now(),
            clock,
            redactor,
        })
    }

    fn write(&mut self, mut line: Value) {
        let elapsed = self.clock.now().saturating_duration_since(self.epoch);
        if let Value::Object(map) = &mut line {
            map.insert("t_ms".into(), json!(elapsed.as_millis() as u64));
        }
        // Each line is flushed whole: a process that exits while the client task still runs
        // (a command-line tool, once its jobs are done) leaves a transcript that parses. A
        // recording that cannot be written must not stop the client, so errors are ignored.
        if !self.redactor.is_empty() {
            line = scrub(&self.redactor, line);
        }
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    pub(crate) fn ws_open(&mut self, path: &str) {
        self.write(json!({"kind": "ws_open", "path": path}));
    }

    pub(crate) fn ws_send_text(&mut self, text: &str) {
        self.write(json!({"kind": "ws_send_text", "text": text}));
    }

    pub(crate) fn ws_text(&mut self, text: &str) {
        self.write(json!({"kind": "ws_text", "text": text}));
    }

    pub(crate) fn ws_binary(&mut self, data: &[u8]) {
        let head: String = data.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        self.write(json!({"kind": "ws_binary", "b64": b64, "len": data.len(), "head_hex": head}));
    }

    pub(crate) fn ws_close(&mut self, reason: &str, initiator: &str) {
        self.write(
            json!({"kind": "ws_close", "code": null, "reason": reason, "initiator": initiator}),
        );
        let _ = self.out.flush();
    }

    /// A request and its response, written together so that replay pairs them even when
    /// requests overlapped.
    pub(crate) fn http(&mut self, request: &HttpRequest, response: Result<&HttpResponse, &str>) {
        let body = request
            .body
            .as_ref()
            .map(|b| serde_json::from_slice::<Value>(&b.bytes).unwrap_or(Value::Null));
        self.write(json!({"kind": "http_request", "method": request.method.as_str(), "path": request.path, "body": body}));
        match response {
            Ok(r) => {
                let line = match serde_json::from_slice::<Value>(&r.body) {
                    Ok(json) if !r.body.is_empty() => json!({"kind": "http_response", "status": r.status, "headers": {"content-type": "application/json"}, "body": json}),
                    _ if r.body.is_empty() => json!({"kind": "http_response", "status": r.status, "headers": {}, "body": ""}),
                    _ => json!({"kind": "http_response", "status": r.status, "headers": {}, "body_b64": base64::engine::general_purpose::STANDARD.encode(&r.body)}),
                };
                self.write(line);
            }
            Err(e) => self.write(json!({"kind": "http_response", "status": 599, "headers": {}, "body": "", "error": e})),
        }
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Auth;

    #[test]
    fn a_transcript_holds_no_secret_even_when_an_error_echoed_one() {
        let dir = std::env::temp_dir().join(format!(
            "comfy-proxy-record-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let server: comfy_proxy::ServerAddress = "127.0.0.1:8188".parse().unwrap();
        let auth = Auth::Query {
            name: "token".into(),
            value: "s3cret/query".into(),
        };
        let redactor = Redactor::new(auth.secrets().into_iter().chain(["s3cret-bearer".into()]));
        let rt = crate::fake::FakeRuntime::new();
        let mut r = Recorder::create(&dir, &server, "c1", redactor, rt.clone()).unwrap();
        r.ws_open("/ws?clientId=c1");
        // Times count on the runtime's clock.
        rt.advance(std::time::Duration::from_millis(1_500));
        r.ws_text(r#"{"type":"status","echo":"Bearer s3cret-bearer"}"#);
        // Image bytes are left alone: scrubbing them would corrupt the image.
        r.ws_binary(b"\0\0\0\x01s3cret-bearer");
        r.http(
            &comfy_proxy::wire::http::system_stats(),
            Err("GET http://127.0.0.1:8188/system_stats?token=s3cret%2Fquery: refused (s3cret/query)"),
        );
        r.ws_close("closed by s3cret-bearer", "server");
        drop(r);
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(text.lines().count(), 7, "{text}");
        for line in text.lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            let without_b64 = match value {
                Value::Object(mut map) => {
                    map.remove("b64");
                    Value::Object(map).to_string()
                }
                other => other.to_string(),
            };
            assert!(!without_b64.contains("s3cret"), "{line}");
        }
        assert!(text.contains("token=<redacted>"), "{text}");
        // The image was recorded as received.
        let frame = text.lines().find(|l| l.contains("ws_binary")).unwrap();
        let frame: Value = serde_json::from_str(frame).unwrap();
        let b64 = frame["b64"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, b"\0\0\0\x01s3cret-bearer");
        let times: Vec<u64> = text
            .lines()
            .skip(1)
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["t_ms"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(times[..2], [0, 1_500], "t_ms follows the runtime's clock");
    }
}
