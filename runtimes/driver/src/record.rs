//! Recording a client's traffic in the `comfy-transcript/1` format, so that users build their
//! own fixtures from their own servers. `comfy-proxy replay` and the core's `replay` read it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use base64::Engine as _;
use comfy_proxy::wire::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

/// Writes one transcript: a header line, then one line per event.
pub(crate) struct Recorder {
    out: BufWriter<File>,
    epoch: Instant,
}

impl Recorder {
    /// Creates `dir/<host>_<port>-<client id>.jsonl` and writes its header.
    pub(crate) fn create(
        dir: &Path,
        server: &comfy_proxy::ServerAddress,
        client_id: &str,
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
            epoch: Instant::now(),
        })
    }

    fn write(&mut self, mut line: Value) {
        if let Value::Object(map) = &mut line {
            map.insert(
                "t_ms".into(),
                json!(self.epoch.elapsed().as_millis() as u64),
            );
        }
        // Each line is flushed whole: a process that exits while the client task still runs
        // (a command-line tool, once its jobs are done) leaves a transcript that parses. A
        // recording that cannot be written must not stop the client, so errors are ignored.
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
