//! `POST /upload/image` (multipart), and the check the real server's `LoadImage` makes: the
//! image it names must be in the input folder.

use bytes::Bytes;
use serde_json::{Value, json};

use super::replay::FileKey;
use super::{MockResponse, MockServer};

/// One part of a multipart body: its name, its file name if any, and its content.
struct Part<'a> {
    name: String,
    filename: Option<String>,
    content: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A quoted parameter (`name="image"`) of a `Content-Disposition` line.
fn param(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// The parts of a multipart body, the boundary read from its first line.
fn parts(body: &[u8]) -> Option<Vec<Part<'_>>> {
    let first_end = find(body, b"\r\n", 0)?;
    let delimiter = body.get(..first_end)?.to_vec();
    if !delimiter.starts_with(b"--") || delimiter.len() < 3 {
        return None;
    }
    let mut out = Vec::new();
    let mut at = first_end + 2;
    loop {
        let head_end = find(body, b"\r\n\r\n", at)?;
        let head = std::str::from_utf8(&body[at..head_end]).ok()?;
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let name = param(disposition, "name")?;
        let filename = param(disposition, "filename");
        let mut next = b"\r\n".to_vec();
        next.extend_from_slice(&delimiter);
        let end = find(body, &next, head_end + 4)?;
        out.push(Part {
            name,
            filename,
            content: &body[head_end + 4..end],
        });
        at = end + next.len();
        match body.get(at..at + 2) {
            Some(b"--") => return Some(out),
            Some(b"\r\n") => at += 2,
            _ => return None,
        }
    }
}

fn bad(message: &str) -> MockResponse {
    MockResponse {
        status: 400,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from(message.to_owned()),
    }
}

impl MockServer {
    /// Stores an uploaded image in the input (or named) folder and answers
    /// `{name, subfolder, type}`; a clash without `overwrite` is renamed `name (1).ext`, as the
    /// real server does. File names that try to leave the folder are refused.
    pub(super) fn upload_image(&mut self, body: &[u8]) -> MockResponse {
        let Some(parts) = parts(body) else {
            return bad("not a multipart body");
        };
        let field = |n: &str| {
            parts
                .iter()
                .find(|p| p.name == n && p.filename.is_none())
                .map(|p| String::from_utf8_lossy(p.content).into_owned())
        };
        let Some(image) = parts
            .iter()
            .find(|p| p.name == "image" && p.filename.is_some())
        else {
            return bad("no image part");
        };
        let name = image.filename.clone().unwrap_or_default();
        let subfolder = field("subfolder").unwrap_or_default();
        let kind = field("type").unwrap_or_else(|| "input".to_owned());
        let overwrite = field("overwrite").is_some_and(|v| v == "true" || v == "1");
        let unsafe_path = |s: &str| s.split(['/', '\\']).any(|c| c == "..") || s.starts_with('/');
        if name.is_empty()
            || name.contains(['/', '\\'])
            || unsafe_path(&subfolder)
            || !["input", "temp", "output"].contains(&kind.as_str())
        {
            return bad("bad file name, subfolder or type");
        }
        let mut stored = name.clone();
        let mut n = 1;
        while !overwrite
            && self
                .files
                .contains_key(&(kind.clone(), subfolder.clone(), stored.clone()))
        {
            stored = match name.rsplit_once('.') {
                Some((stem, ext)) => format!("{stem} ({n}).{ext}"),
                None => format!("{name} ({n})"),
            };
            n += 1;
        }
        let key: FileKey = (kind.clone(), subfolder.clone(), stored.clone());
        self.files
            .insert(key, Bytes::copy_from_slice(image.content));
        super::http::json_response(
            200,
            &json!({"name": stored, "subfolder": subfolder, "type": kind}),
        )
    }

    /// Node errors for `LoadImage` nodes whose image is not in the input folder, shaped as the
    /// real server's `custom_validation_failed`.
    pub(super) fn missing_inputs(&self, prompt: &Value) -> Option<Value> {
        let mut errors = serde_json::Map::new();
        for (id, node) in prompt.as_object()? {
            if node.get("class_type").and_then(Value::as_str) != Some("LoadImage") {
                continue;
            }
            let Some(image) = node.pointer("/inputs/image").and_then(Value::as_str) else {
                continue;
            };
            let (subfolder, name) = image.rsplit_once('/').unwrap_or(("", image));
            if self
                .files
                .contains_key(&("input".to_owned(), subfolder.to_owned(), name.to_owned()))
            {
                continue;
            }
            errors.insert(
                id.clone(),
                json!({
                    "errors": [{
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": format!("image - Invalid image file: {image}"),
                        "extra_info": {},
                    }],
                    "dependent_outputs": [],
                    "class_type": "LoadImage",
                }),
            );
        }
        (!errors.is_empty()).then_some(Value::Object(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nPNG\r\n--b\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n--b--\r\n";
        let p = parts(body).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].filename.as_deref(), p[0].content),
            ("image", Some("a.png"), &b"PNG"[..])
        );
        assert_eq!(p[1].content, b"input");
        for bad in [
            &b""[..],
            b"nope",
            b"--b\r\nno head end",
            b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated",
        ] {
            assert!(parts(bad).is_none());
        }
    }
}
