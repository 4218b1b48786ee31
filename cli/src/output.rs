//! Output files (`DIR/<job>-<node>-<index>.<ext>`), their digests, and the JSON line printed per
//! finished job.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use comfy_proxy::session::Image;
use comfy_proxy::{NodeId, ServerAddress};
use comfy_proxy_smol::JobReport;
use serde_json::{Value, json};
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

/// One output image, written.
#[derive(Debug, Clone)]
pub struct Saved {
    /// The node that made it (as reported, unsanitised: it is only printed, inside JSON).
    pub node: NodeId,
    /// Its index among the node's outputs.
    pub index: u32,
    /// `PNG`, `JPEG` or `WEBP`.
    pub format: &'static str,
    /// Its length.
    pub bytes: usize,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Where it was written.
    pub path: PathBuf,
}

/// Writes every output of job `job` into `dir` (which exists). Two nodes whose names sanitise
/// alike get distinct files. Existing files of the same name are replaced.
pub fn save(dir: &Path, job: u64, outputs: &[(NodeId, u32, Image)]) -> Result<Vec<Saved>, String> {
    let mut taken = HashSet::new();
    let mut saved = Vec::with_capacity(outputs.len());
    for (node, index, image) in outputs {
        let ext = image.format.extension();
        let base = sanitize(node.as_str());
        let mut name = format!("{job}-{base}-{index}.{ext}");
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{job}-{base}_{n}-{index}.{ext}");
            n += 1;
        }
        let path = dir.join(&name);
        fs::write(&path, &image.data)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        saved.push(Saved {
            node: node.clone(),
            index: *index,
            format: image.format.name(),
            bytes: image.data.len(),
            sha256: sha256_hex(&image.data),
            path,
        });
    }
    Ok(saved)
}

/// The `--json` line of a finished job: `{"job", "server", "prompt_id", "outcome", "outputs",
/// "previews", "error"}`.
pub fn job_line(report: &JobReport, saved: &[Saved], error: Option<&str>) -> Value {
    let outputs: Vec<Value> = saved
        .iter()
        .map(|s| {
            json!({
                "node": s.node.as_str(),
                "index": s.index,
                "format": s.format,
                "bytes": s.bytes,
                "sha256": s.sha256,
                "path": s.path.display().to_string(),
            })
        })
        .collect();
    json!({
        "job": report.job.0,
        "server": report.address.as_ref().map(ServerAddress::to_string),
        "prompt_id": report.prompt_id.as_ref().map(|p| p.as_str()),
        "outcome": if error.is_none() { "success" } else { "error" },
        "outputs": outputs,
        "previews": report.previews,
        "error": error,
    })
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
    fn sha256_of_nothing() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
