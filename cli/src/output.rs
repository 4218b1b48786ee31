//! Output files (`DIR/<job>-<node>-<index>.<ext>`, the extension told by the content), texts,
//! their digests, and the JSON line printed per finished job.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use comfy_proxy::session::{OutputKind, Outputs};
use comfy_proxy::{NodeId, ServerAddress};
use comfy_proxy_smol::JobReport;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The longest node part of a file name, in characters.
const MAX_NODE_CHARS: usize = 64;

/// `node` with every character outside `[A-Za-z0-9_-]` replaced by `_`, cut to 64 characters,
/// and `node` when nothing is left. Node ids arrive from the server: they never reach the file
/// system as given.
pub fn sanitize(node: &str) -> String {
    let clean: String = node
        .chars()
        .take(MAX_NODE_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "node".into()
    } else {
        clean
    }
}

/// The lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One output of a job: a file written, or a text.
#[derive(Debug, Clone)]
pub struct Saved {
    /// What it is.
    pub kind: OutputKind,
    /// The node that made it (as reported, unsanitised: it is only printed, inside JSON).
    pub node: NodeId,
    /// Its index among the node's outputs (files and frames; texts apart).
    pub index: u32,
    /// The extension of the file written, upper case (`PNG`, `MP4`); `None` for a text.
    pub format: Option<String>,
    /// The file name the server gave it, if any (unsanitised: only printed, inside JSON).
    pub name: Option<String>,
    /// Its length (a text's in UTF-8 bytes).
    pub bytes: usize,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Where it was written (`None` for a text, which is printed instead).
    pub path: Option<PathBuf>,
    /// The text, for a text output (untrusted: printed through `terminal_safe*` only).
    pub text: Option<String>,
}

/// Writes every file output of job `job` into `dir` (which exists) as
/// `<job>-<node>-<index>.<ext>`, the extension told by the content (never the server's file
/// name, which is not trusted as a path); texts are listed, not written. Two nodes whose names
/// sanitise alike get distinct files. Existing files of the same name are replaced.
pub fn save(dir: &Path, job: u64, outputs: &Outputs) -> Result<Vec<Saved>, String> {
    let mut taken = HashSet::new();
    let mut saved = Vec::with_capacity(outputs.len());
    for output in outputs {
        let bytes = output.bytes();
        let path = match output.text() {
            Some(_) => None,
            None => {
                // `extension` is lowercase ASCII alphanumerics by construction; checked again
                // here because it becomes part of a path.
                let ext = sanitize(&output.extension);
                let base = sanitize(output.node.as_str());
                let index = output.index;
                let mut name = format!("{job}-{base}-{index}.{ext}");
                let mut n = 2;
                while !taken.insert(name.clone()) {
                    name = format!("{job}-{base}_{n}-{index}.{ext}");
                    n += 1;
                }
                let path = dir.join(&name);
                fs::write(&path, bytes)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Some(path)
            }
        };
        saved.push(Saved {
            kind: output.kind,
            node: output.node.clone(),
            index: output.index,
            format: path.as_ref().map(|_| output.extension.to_ascii_uppercase()),
            name: output.file().map(|f| f.filename.clone()),
            bytes: bytes.len(),
            sha256: sha256_hex(bytes),
            path,
            text: output.text().map(str::to_owned),
        });
    }
    Ok(saved)
}

/// The `ui` data of a job's nodes beyond what its outputs already show (file lists, `text`
/// lists, `animated` flags): whatever else a node returned, by node id.
pub fn extra_ui(outputs: &Outputs) -> Map<String, Value> {
    const SHOWN: [&str; 2] = ["text", "animated"];
    let mut extra = Map::new();
    for (node, ui) in outputs.ui() {
        let rest: Map<String, Value> = ui
            .iter()
            .filter(|(k, v)| !(SHOWN.contains(&k.as_str()) || is_file_list(v)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rest.is_empty() {
            extra.insert(node.as_str().to_owned(), Value::Object(rest));
        }
    }
    extra
}

/// A list of `{"filename", "subfolder", "type": "output"}` entries (the files were fetched).
fn is_file_list(v: &Value) -> bool {
    v.as_array().is_some_and(|items| {
        !items.is_empty()
            && items.iter().all(|i| {
                i.get("filename").is_some_and(Value::is_string)
                    && i.get("type").and_then(Value::as_str).unwrap_or("output") == "output"
            })
    })
}

/// The `--json` line of a finished job: `{"job", "server", "prompt_id", "outcome", "outputs",
/// "previews", "error"}`, plus `"ui"` when nodes returned data no output shows. Each output:
/// `{"kind", "node", "index", "name", "format", "bytes", "sha256", "path"}` for a file, `"text"`
/// instead of `"path"` for a text.
pub fn job_line(report: &JobReport, saved: &[Saved], error: Option<&str>) -> Value {
    let outputs: Vec<Value> = saved
        .iter()
        .map(|s| {
            let mut o = json!({
                "kind": s.kind.name(),
                "node": s.node.as_str(),
                "index": s.index,
                "name": s.name,
                "format": s.format,
                "bytes": s.bytes,
                "sha256": s.sha256,
            });
            match (&s.path, &s.text) {
                (Some(path), _) => o["path"] = path.display().to_string().into(),
                (None, Some(text)) => o["text"] = text.as_str().into(),
                (None, None) => {}
            }
            o
        })
        .collect();
    let mut line = json!({
        "job": report.job.0,
        "server": report.address.as_ref().map(ServerAddress::to_string),
        "prompt_id": report.prompt_id.as_ref().map(|p| p.as_str()),
        "outcome": if error.is_none() { "success" } else { "error" },
        "outputs": outputs,
        "previews": report.previews,
        "error": error,
    });
    let extra = extra_ui(&report.outputs);
    if !extra.is_empty() {
        line["ui"] = Value::Object(extra);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_servers_are_sanitised() {
        assert_eq!(
            sanitize("save_image_websocket_node"),
            "save_image_websocket_node"
        );
        assert_eq!(sanitize("../../etc/passwd"), "______etc_passwd");
        assert_eq!(sanitize(""), "node");
        assert_eq!(sanitize("a b\u{e9}"), "a_b_");
        assert_eq!(sanitize(&"x".repeat(500)).len(), MAX_NODE_CHARS);
    }

    #[test]
    fn every_kind_is_written_with_its_real_extension_and_listed() {
        use comfy_proxy::wire::FileRef;
        let mut outputs = Outputs::new();
        let ui = |v: Value| v.as_object().cloned().unwrap();
        outputs.handle_ui(&"7".into(), &ui(json!({"text": ["hello \u{1b}[31mred"]})));
        outputs.handle_ui(
            &"9".into(),
            &ui(
                json!({"images": [{"filename": "t.png", "subfolder": "", "type": "temp"}],
                       "custom": 1}),
            ),
        );
        let file = |name: &str| FileRef {
            filename: name.into(),
            subfolder: "video".into(),
            kind: "output".into(),
        };
        let mp4 =
            bytes::Bytes::from_static(include_bytes!("../../fixtures/outputs/saved_video.mp4"));
        // The server's name is hostile and says png: the file is an mp4, written as one.
        outputs.push_data("../5".into(), 0, mp4.clone(), Some(file("../../x.png")));
        outputs.push_data(
            "8".into(),
            0,
            bytes::Bytes::from_static(b"?"),
            Some(file("a.sh;rm")),
        );
        let dir = std::env::temp_dir().join(format!("comfy-proxy-output-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let saved = save(&dir, 3, &outputs).unwrap();
        let names: Vec<Option<String>> = saved
            .iter()
            .map(|s| {
                let p = s.path.as_ref()?;
                assert_eq!(p.parent(), Some(dir.as_path()));
                Some(p.file_name()?.to_str()?.to_owned())
            })
            .collect();
        assert_eq!(
            names,
            [None, Some("3-___5-0.mp4".into()), Some("3-8-0.bin".into())]
        );
        assert_eq!(fs::read(dir.join("3-___5-0.mp4")).unwrap(), mp4);
        let _ = fs::remove_dir_all(&dir);
        let kinds: Vec<OutputKind> = saved.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [OutputKind::Text, OutputKind::Video, OutputKind::File]
        );
        assert_eq!(saved[1].sha256, sha256_hex(&mp4));
        assert_eq!(saved[1].name.as_deref(), Some("../../x.png"));
        assert_eq!(saved[0].text.as_deref(), Some("hello \u{1b}[31mred"));
        assert_eq!(saved[0].bytes, "hello \u{1b}[31mred".len());
        let extra = extra_ui(&outputs);
        assert_eq!(
            Value::Object(extra),
            json!({"9": {"images": [{"filename": "t.png", "subfolder": "", "type": "temp"}],
                         "custom": 1}}),
            "the temp preview and custom data are listed; texts are outputs already"
        );
    }

    #[test]
    fn sha256_of_nothing() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
