//! Builders for every request: pure functions from arguments to an [`HttpRequest`].
//!
//! Path segments and query values are percent-encoded here (everything but `A-Z a-z 0-9 - . _ ~`),
//! so the adapter appends [`HttpRequest::path`] to its base URL as it is.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Body, HttpRequest, Method};
use crate::ids::{ClientId, NodeId, PromptId};
use crate::wire::message::FileRef;

const JSON: &str = "application/json";

/// A `POST /prompt`: the graph to run and how to queue it.
///
/// Build it with [`PromptRequest::new`], set the options you need, then send
/// [`PromptRequest::to_request`]. Choose `prompt_id` yourself: with it, `/history` and `/queue`
/// can find the prompt even if the response to the post is lost.
///
/// ```
/// use comfy_proxy::wire::http::PromptRequest;
/// use comfy_proxy::{ClientId, PromptId};
///
/// let graph = serde_json::json!({"1": {"class_type": "EmptyImage", "inputs": {}}});
/// let mut req = PromptRequest::new(graph, ClientId::new("c"));
/// req.prompt_id = Some(PromptId::new("p"));
/// let http = req.to_request();
/// assert_eq!(http.path, "/prompt");
/// let body = http.body.unwrap();
/// assert_eq!(body.content_type, "application/json");
/// assert_eq!(
///     String::from_utf8(body.bytes).unwrap(),
///     r#"{"prompt":{"1":{"class_type":"EmptyImage","inputs":{}}},"client_id":"c","prompt_id":"p"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PromptRequest {
    /// The graph in API format: node id -> `{"class_type", "inputs"}`.
    pub prompt: Value,
    /// The client whose websocket receives the run's messages. Open that socket first.
    pub client_id: ClientId,
    /// The prompt's id; the server makes one up when absent.
    pub prompt_id: Option<PromptId>,
    /// Extra data stored with the prompt (`preview_method`, `extra_pnginfo`, ...). The server
    /// adds `client_id` to it.
    pub extra_data: Option<Map<String, Value>>,
    /// Queue the prompt ahead of every waiting prompt. Sent only when `true`.
    pub front: bool,
    /// An explicit queue position (lower runs first). Must be finite.
    pub number: Option<f64>,
    /// Run only these output nodes (and what they depend on).
    pub partial_execution_targets: Option<Vec<NodeId>>,
}

/// The wire form of [`PromptRequest`], borrowing it; field order is the order on the wire.
#[derive(Serialize)]
struct PromptBody<'a, P: Serialize + ?Sized> {
    prompt: &'a P,
    client_id: &'a ClientId,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_id: Option<&'a PromptId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_data: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    front: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_execution_targets: Option<&'a [NodeId]>,
}

impl PromptRequest {
    /// A request for `prompt` on behalf of `client_id`, with no options set.
    pub fn new(prompt: Value, client_id: ClientId) -> Self {
        Self {
            prompt,
            client_id,
            prompt_id: None,
            extra_data: None,
            front: false,
            number: None,
            partial_execution_targets: None,
        }
    }

    /// The `POST /prompt` request. Decode its response with
    /// [`decode_prompt`](super::decode_prompt).
    pub fn to_request(&self) -> HttpRequest {
        let body = PromptBody {
            prompt: &self.prompt,
            client_id: &self.client_id,
            prompt_id: self.prompt_id.as_ref(),
            extra_data: self.extra_data.as_ref(),
            front: self.front,
            number: self.number,
            partial_execution_targets: self.partial_execution_targets.as_deref(),
        };
        post_json("/prompt", &body)
    }
}

/// The `POST /prompt` request for `workflow`, serialized straight from it (no intermediate
/// `Value` tree): what [`PromptRequest::to_request`] gives for the same fields.
pub(crate) fn post_prompt(
    workflow: &crate::Workflow,
    client_id: &ClientId,
    prompt_id: &PromptId,
    extra_data: Option<&Map<String, Value>>,
    front: bool,
) -> HttpRequest {
    let body = PromptBody {
        prompt: workflow,
        client_id,
        prompt_id: Some(prompt_id),
        extra_data,
        front,
        number: None,
        partial_execution_targets: None,
    };
    post_json("/prompt", &body)
}

/// Serializes a body that cannot fail to serialize: its maps have string keys and its numbers
/// are written as `null` when not finite, so `serde_json` has no error to report.
fn post_json<T: Serialize>(path: &str, body: &T) -> HttpRequest {
    HttpRequest {
        method: Method::Post,
        path: path.to_owned(),
        body: Some(Body {
            content_type: JSON.to_owned(),
            bytes: serde_json::to_vec(body).unwrap_or_default(),
        }),
    }
}

fn get(path: String) -> HttpRequest {
    HttpRequest {
        method: Method::Get,
        path,
        body: None,
    }
}

/// Appends `s` percent-encoded: every byte but the unreserved ones of RFC 3986.
fn push_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
}

/// Path and query of the websocket endpoint for `client_id`: `/ws?clientId=ID`.
pub fn websocket_path(client_id: &crate::ids::ClientId) -> String {
    let mut path = "/ws?clientId=".to_owned();
    push_encoded(&mut path, client_id.as_str());
    path
}

/// `prefix` followed by `segment` as one encoded path segment. A segment of only dots would be
/// read as `.` or `..` by whatever normalizes the path on the way, so its dots are encoded too.
fn with_segment(prefix: &str, segment: &str) -> String {
    let mut path = prefix.to_owned();
    if !segment.is_empty() && segment.bytes().all(|b| b == b'.') {
        path.extend(std::iter::repeat_n("%2E", segment.len()));
    } else {
        push_encoded(&mut path, segment);
    }
    path
}

/// `POST /interrupt`: stop the running prompt. With `Some(id)` the server stops it only if that
/// prompt is the one running, which avoids interrupting someone else's prompt by a race; with
/// `None` it stops whatever runs. `execution_interrupted` arrives on the websocket afterwards.
pub fn interrupt(prompt: Option<&PromptId>) -> HttpRequest {
    #[derive(Serialize)]
    struct Interrupt<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt_id: Option<&'a PromptId>,
    }
    post_json("/interrupt", &Interrupt { prompt_id: prompt })
}

/// `POST /queue` with `{"delete": ids}`: remove pending prompts. A running prompt is not
/// affected; use [`interrupt`] for it.
pub fn queue_delete(ids: &[PromptId]) -> HttpRequest {
    delete_from("/queue", ids)
}

/// `POST /queue` with `{"clear": true}`: remove every pending prompt, of every client.
pub fn queue_clear() -> HttpRequest {
    clear("/queue")
}

/// `POST {path}` with `{"delete": ids}`, as `/queue` and `/history` take it.
fn delete_from(path: &str, ids: &[PromptId]) -> HttpRequest {
    #[derive(Serialize)]
    struct Delete<'a> {
        delete: &'a [PromptId],
    }
    post_json(path, &Delete { delete: ids })
}

/// `POST {path}` with `{"clear": true}`, as `/queue` and `/history` take it.
fn clear(path: &str) -> HttpRequest {
    #[derive(Serialize)]
    struct Clear {
        clear: bool,
    }
    post_json(path, &Clear { clear: true })
}

/// `GET /queue`: the running and pending prompts of every client.
pub fn queue() -> HttpRequest {
    get("/queue".to_owned())
}

/// `GET /history/{id}`: the prompt's outputs and status once it finished (`{}` before).
pub fn history(id: &PromptId) -> HttpRequest {
    get(with_segment("/history/", id.as_str()))
}

/// `GET /history?max_items=N`: the last `max_items` finished prompts, oldest first.
pub fn history_recent(max_items: u32) -> HttpRequest {
    get(format!("/history?max_items={max_items}"))
}

/// `POST /history` with `{"delete": ids}`: forget finished prompts (their files stay on disk).
pub fn history_delete(ids: &[PromptId]) -> HttpRequest {
    delete_from("/history", ids)
}

/// `POST /history` with `{"clear": true}`: forget every finished prompt, of every client.
pub fn history_clear() -> HttpRequest {
    clear("/history")
}

/// `GET /view?filename=&subfolder=&type=`: the bytes of a file the server wrote or holds.
pub fn view(file: &FileRef) -> HttpRequest {
    let mut path = "/view?filename=".to_owned();
    push_encoded(&mut path, &file.filename);
    path.push_str("&subfolder=");
    push_encoded(&mut path, &file.subfolder);
    path.push_str("&type=");
    push_encoded(&mut path, &file.kind);
    get(path)
}

/// `GET /object_info` (every node class) or `GET /object_info/{class}` (one).
pub fn object_info(class: Option<&str>) -> HttpRequest {
    match class {
        Some(class) => get(with_segment("/object_info/", class)),
        None => get("/object_info".to_owned()),
    }
}

/// `GET /system_stats`: versions, RAM and devices.
pub fn system_stats() -> HttpRequest {
    get("/system_stats".to_owned())
}

/// `GET /features`: the server's feature flags.
pub fn features() -> HttpRequest {
    get("/features".to_owned())
}

/// `GET /models` (the model folder names) or `GET /models/{folder}` (the files in one, such as
/// `loras`).
pub fn models(folder: Option<&str>) -> HttpRequest {
    match folder {
        Some(folder) => get(with_segment("/models/", folder)),
        None => get("/models".to_owned()),
    }
}

/// `GET /embeddings`: the names of the installed textual-inversion embeddings.
pub fn embeddings() -> HttpRequest {
    get("/embeddings".to_owned())
}

/// `POST /free`: ask the server to unload models and/or free cached memory.
pub fn free(unload_models: bool, free_memory: bool) -> HttpRequest {
    #[derive(Serialize)]
    struct Free {
        unload_models: bool,
        free_memory: bool,
    }
    post_json(
        "/free",
        &Free {
            unload_models,
            free_memory,
        },
    )
}

/// Why [`upload_image`] or [`upload_mask`] refused to build a request. Nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UploadError {
    /// The boundary is empty, longer than 70 bytes, or has a byte other than ASCII letters,
    /// digits, `-`, `_` and `.`.
    BadBoundary,
    /// The boundary occurs inside the file or a field: draw another one.
    BoundaryInContent,
    /// The file name is empty or has a `"`, a `\` or a control character (CR, LF, ...).
    BadFileName,
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadBoundary => {
                "multipart boundary must be 1 to 70 ASCII letters, digits, '-', '_' or '.'"
            }
            Self::BoundaryInContent => "multipart boundary occurs inside the upload",
            Self::BadFileName => {
                "upload file name is empty or contains a quote, a backslash or a control character"
            }
        })
    }
}

impl std::error::Error for UploadError {}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The media type of an upload, from its extension.
fn content_type_of(file_name: &str) -> &'static str {
    let ext = file_name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// `POST /upload/image`: a `multipart/form-data` body with the parts `image` (the file), `type`
/// (`kind`: `"input"`, `"temp"` or `"output"`), `subfolder` (empty when `None`) and `overwrite`
/// (`"true"`/`"false"`). Use the name in the response ([`decode_upload`](super::decode_upload)):
/// unless `overwrite`, the server renames a file whose name is taken.
///
/// The caller draws `boundary` (the core has no randomness): 1 to 70 ASCII letters, digits, `-`,
/// `_` or `.`; 32 random alphanumerics are plenty. It must not occur in the file or the fields,
/// else [`UploadError::BoundaryInContent`]: draw again. File names are sent as UTF-8 inside
/// quotes; a name with `"`, `\`, CR, LF or another control character is refused
/// ([`UploadError::BadFileName`]) rather than escaped, since servers unescape it differently.
///
/// ```
/// use comfy_proxy::wire::http::upload_image;
/// let req = upload_image("cat.png", b"\x89PNG", None, "input", false, "XyZ123").unwrap();
/// assert_eq!(req.path, "/upload/image");
/// assert_eq!(req.body.unwrap().content_type, "multipart/form-data; boundary=XyZ123");
/// assert!(upload_image("cat.png", b"..XyZ..", None, "input", false, "XyZ").is_err());
/// ```
pub fn upload_image(
    file_name: &str,
    bytes: &[u8],
    subfolder: Option<&str>,
    kind: &str,
    overwrite: bool,
    boundary: &str,
) -> Result<HttpRequest, UploadError> {
    let overwrite = if overwrite { "true" } else { "false" };
    let fields = [
        ("type", kind),
        ("subfolder", subfolder.unwrap_or("")),
        ("overwrite", overwrite),
    ];
    multipart("/upload/image", file_name, bytes, &fields, boundary)
}

/// `POST /upload/mask`: a mask painted over an image the server holds. The server takes the
/// alpha channel of `bytes` (a PNG with transparency), puts it on the image `original` names,
/// and stores the result as `file_name` in `kind`/`subfolder`, like [`upload_image`]. The parts
/// are those of [`upload_image`] plus `original_ref`, the JSON
/// `{"filename", "subfolder", "type"}` of `original`. Refusals are those of [`upload_image`].
///
/// The server answers with the stored name even when `original` does not exist (it then
/// stores nothing), so check the original first if that matters (`GET /view`).
///
/// ```
/// use comfy_proxy::wire::FileRef;
/// use comfy_proxy::wire::http::upload_mask;
/// let original = FileRef {
///     filename: "cat.png".into(),
///     subfolder: String::new(),
///     kind: "input".into(),
/// };
/// let req = upload_mask("cat-mask.png", b"\x89PNG", &original, None, "input", true, "B0")
///     .unwrap();
/// assert_eq!(req.path, "/upload/mask");
/// let body = String::from_utf8_lossy(&req.body.unwrap().bytes).into_owned();
/// assert!(body.contains(r#"{"filename":"cat.png","subfolder":"","type":"input"}"#));
/// ```
pub fn upload_mask(
    file_name: &str,
    bytes: &[u8],
    original: &FileRef,
    subfolder: Option<&str>,
    kind: &str,
    overwrite: bool,
    boundary: &str,
) -> Result<HttpRequest, UploadError> {
    #[derive(Serialize)]
    struct OriginalRef<'a> {
        filename: &'a str,
        subfolder: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
    }
    let original_ref = serde_json::to_string(&OriginalRef {
        filename: &original.filename,
        subfolder: &original.subfolder,
        kind: &original.kind,
    })
    .unwrap_or_default();
    let overwrite = if overwrite { "true" } else { "false" };
    let fields = [
        ("type", kind),
        ("subfolder", subfolder.unwrap_or("")),
        ("overwrite", overwrite),
        ("original_ref", original_ref.as_str()),
    ];
    multipart("/upload/mask", file_name, bytes, &fields, boundary)
}

/// A `multipart/form-data` POST to `path`: the file as the part `image`, then `fields` in order.
fn multipart(
    path: &str,
    file_name: &str,
    bytes: &[u8],
    fields: &[(&str, &str)],
    boundary: &str,
) -> Result<HttpRequest, UploadError> {
    let b = boundary.as_bytes();
    let boundary_ok = !b.is_empty()
        && b.len() <= 70
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !boundary_ok {
        return Err(UploadError::BadBoundary);
    }
    if file_name.is_empty()
        || file_name
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(UploadError::BadFileName);
    }
    if contains(bytes, b)
        || contains(file_name.as_bytes(), b)
        || fields.iter().any(|(_, v)| contains(v.as_bytes(), b))
    {
        return Err(UploadError::BoundaryInContent);
    }

    let mut out = Vec::with_capacity(bytes.len() + 512);
    let part_head = |out: &mut Vec<u8>, disposition: &str| {
        out.extend_from_slice(b"--");
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\nContent-Disposition: form-data; ");
        out.extend_from_slice(disposition.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    part_head(
        &mut out,
        &format!("name=\"image\"; filename=\"{file_name}\""),
    );
    out.extend_from_slice(b"Content-Type: ");
    out.extend_from_slice(content_type_of(file_name).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        part_head(&mut out, &format!("name=\"{name}\""));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(b);
    out.extend_from_slice(b"--\r\n");

    Ok(HttpRequest {
        method: Method::Post,
        path: path.to_owned(),
        body: Some(Body {
            content_type: format!("multipart/form-data; boundary={boundary}"),
            bytes: out,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &HttpRequest) -> &str {
        r.body
            .as_ref()
            .and_then(|b| std::str::from_utf8(&b.bytes).ok())
            .unwrap_or("<none>")
    }

    /// The session's post, serialized straight from the workflow, is byte for byte what the
    /// public request gives through a `Value`.
    #[test]
    fn post_prompt_matches_the_public_request() {
        let wf = crate::Workflow::from_json(
            r#"{"9":{"class_type":"X","inputs":{"z":1.5,"a":["2",0]},"_meta":{"title":"t"}},"2":{"class_type":"Y","inputs":{}}}"#,
        )
        .unwrap();
        let mut extra = Map::new();
        extra.insert("k".into(), "v".into());
        let (cid, pid) = (ClientId::new("cid"), PromptId::new("pid"));
        for (extra, front) in [(None, false), (Some(extra), true)] {
            let direct = post_prompt(&wf, &cid, &pid, extra.as_ref(), front);
            let mut public = PromptRequest::new(serde_json::to_value(&wf).unwrap(), cid.clone());
            public.prompt_id = Some(pid.clone());
            public.extra_data = extra;
            public.front = front;
            assert_eq!(direct, public.to_request());
        }
    }

    #[test]
    fn prompt_with_every_option() {
        let mut extra = Map::new();
        extra.insert("preview_method".into(), "auto".into());
        let req = PromptRequest {
            prompt: serde_json::json!({"1": {"class_type": "X", "inputs": {"a": ["2", 0]}}}),
            client_id: ClientId::new("cid"),
            prompt_id: Some(PromptId::new("pid")),
            extra_data: Some(extra),
            front: true,
            number: Some(-1.5),
            partial_execution_targets: Some(vec![NodeId::new("9"), NodeId::new("save")]),
        }
        .to_request();
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/prompt");
        assert_eq!(
            body(&req),
            r#"{"prompt":{"1":{"class_type":"X","inputs":{"a":["2",0]}}},"client_id":"cid","prompt_id":"pid","extra_data":{"preview_method":"auto"},"front":true,"number":-1.5,"partial_execution_targets":["9","save"]}"#
        );
        let plain = PromptRequest::new(serde_json::json!({}), ClientId::new("c")).to_request();
        assert_eq!(body(&plain), r#"{"prompt":{},"client_id":"c"}"#);
    }

    #[test]
    fn small_requests() {
        let id = PromptId::new("a/b c");
        let cases: Vec<(HttpRequest, Method, &str, &str)> = vec![
            (interrupt(None), Method::Post, "/interrupt", "{}"),
            (
                interrupt(Some(&id)),
                Method::Post,
                "/interrupt",
                r#"{"prompt_id":"a/b c"}"#,
            ),
            (
                queue_delete(&[id.clone(), PromptId::new("x")]),
                Method::Post,
                "/queue",
                r#"{"delete":["a/b c","x"]}"#,
            ),
            (queue_clear(), Method::Post, "/queue", r#"{"clear":true}"#),
            (queue(), Method::Get, "/queue", "<none>"),
            (history(&id), Method::Get, "/history/a%2Fb%20c", "<none>"),
            (
                history(&PromptId::new("..")),
                Method::Get,
                "/history/%2E%2E",
                "<none>",
            ),
            (
                history_recent(3),
                Method::Get,
                "/history?max_items=3",
                "<none>",
            ),
            (object_info(None), Method::Get, "/object_info", "<none>"),
            (
                object_info(Some("Save Image/ü")),
                Method::Get,
                "/object_info/Save%20Image%2F%C3%BC",
                "<none>",
            ),
            (system_stats(), Method::Get, "/system_stats", "<none>"),
            (features(), Method::Get, "/features", "<none>"),
            (models(None), Method::Get, "/models", "<none>"),
            (
                models(Some("loras")),
                Method::Get,
                "/models/loras",
                "<none>",
            ),
            (embeddings(), Method::Get, "/embeddings", "<none>"),
            (
                history_delete(std::slice::from_ref(&id)),
                Method::Post,
                "/history",
                r#"{"delete":["a/b c"]}"#,
            ),
            (
                history_clear(),
                Method::Post,
                "/history",
                r#"{"clear":true}"#,
            ),
            (
                free(false, true),
                Method::Post,
                "/free",
                r#"{"unload_models":false,"free_memory":true}"#,
            ),
            (
                free(true, false),
                Method::Post,
                "/free",
                r#"{"unload_models":true,"free_memory":false}"#,
            ),
        ];
        for (req, method, path, text) in cases {
            assert_eq!(
                (req.method, req.path.as_str(), body(&req)),
                (method, path, text)
            );
            if let Some(b) = &req.body {
                assert_eq!(b.content_type, "application/json");
            }
        }
    }

    #[test]
    fn view_encodes_query_values() {
        let file = FileRef {
            filename: "a b&.png".into(),
            subfolder: "x=y?".into(),
            kind: "output".into(),
        };
        assert_eq!(
            view(&file).path,
            "/view?filename=a%20b%26.png&subfolder=x%3Dy%3F&type=output"
        );
    }

    #[test]
    fn multipart_layout() {
        let req = upload_image("a.png", b"\x00\x01", Some("sub"), "input", true, "BND").unwrap();
        assert_eq!(req.path, "/upload/image");
        let body = req.body.unwrap();
        assert_eq!(body.content_type, "multipart/form-data; boundary=BND");
        let expected: &[u8] = b"--BND\r\n\
Content-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
Content-Type: image/png\r\n\
\r\n\
\x00\x01\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"type\"\r\n\
\r\n\
input\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"subfolder\"\r\n\
\r\n\
sub\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"overwrite\"\r\n\
\r\n\
true\r\n\
--BND--\r\n";
        assert_eq!(body.bytes, expected);
        let other = upload_image("x.bin", b"", None, "temp", false, "Q7").unwrap();
        let text = String::from_utf8(other.body.unwrap().bytes).unwrap();
        assert!(text.contains("Content-Type: application/octet-stream\r\n"));
        assert!(text.contains("name=\"subfolder\"\r\n\r\n\r\n"));
        assert!(text.contains("false\r\n--Q7--\r\n"));
    }

    #[test]
    fn mask_layout() {
        let original = FileRef {
            filename: "cat \"1\".png".into(),
            subfolder: "pets".into(),
            kind: "input".into(),
        };
        let req = upload_mask(
            "m.png",
            b"\x89",
            &original,
            Some("masks"),
            "input",
            false,
            "BND",
        )
        .unwrap();
        assert_eq!(req.path, "/upload/mask");
        let body = req.body.unwrap();
        assert_eq!(body.content_type, "multipart/form-data; boundary=BND");
        let expected: &[u8] = b"--BND\r\n\
Content-Disposition: form-data; name=\"image\"; filename=\"m.png\"\r\n\
Content-Type: image/png\r\n\
\r\n\
\x89\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"type\"\r\n\
\r\n\
input\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"subfolder\"\r\n\
\r\n\
masks\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"overwrite\"\r\n\
\r\n\
false\r\n\
--BND\r\n\
Content-Disposition: form-data; name=\"original_ref\"\r\n\
\r\n\
{\"filename\":\"cat \\\"1\\\".png\",\"subfolder\":\"pets\",\"type\":\"input\"}\r\n\
--BND--\r\n";
        assert_eq!(body.bytes, expected);
        // The original's reference is a field like the others: the boundary may not occur in it.
        let clash = FileRef {
            filename: "BND.png".into(),
            subfolder: String::new(),
            kind: "input".into(),
        };
        assert_eq!(
            upload_mask("m.png", b"x", &clash, None, "input", false, "BND"),
            Err(UploadError::BoundaryInContent)
        );
        assert_eq!(
            upload_mask("", b"x", &original, None, "input", false, "BND"),
            Err(UploadError::BadFileName)
        );
    }

    #[test]
    fn multipart_refusals() {
        use UploadError::*;
        let cases: &[(&str, &[u8], &str, &str, UploadError)] = &[
            ("a.png", b"x", "input", "", BadBoundary),
            ("a.png", b"x", "input", "has space", BadBoundary),
            ("a.png", b"x", "input", "quo\"te", BadBoundary),
            ("a.png", b"x", "input", &"x".repeat(71), BadBoundary),
            ("a.png", b"..--BND..", "input", "BND", BoundaryInContent),
            ("BND.png", b"x", "input", "BND", BoundaryInContent),
            ("a.png", b"x", "inBNDput", "BND", BoundaryInContent),
            ("", b"x", "input", "BND", BadFileName),
            ("a\".png", b"x", "input", "BND", BadFileName),
            ("a\r\nX: y.png", b"x", "input", "BND", BadFileName),
            ("a\\b.png", b"x", "input", "BND", BadFileName),
        ];
        for (name, bytes, kind, boundary, err) in cases {
            assert_eq!(
                upload_image(name, bytes, None, kind, false, boundary).as_ref(),
                Err(err),
                "{name:?} {boundary:?}"
            );
        }
        assert!(upload_image("ümlaut.PNG", b"x", None, "input", false, "B").is_ok());
    }
}
