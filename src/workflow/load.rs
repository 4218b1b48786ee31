//! [`load_any`]: one entry point for every workflow file a user has: API-format JSON, UI-format
//! JSON, and PNG or WebP images written by ComfyUI.

use std::fmt;

use serde_json::Value;

use super::image::{self, ImageError};
use super::ui::{self, UiError};
use super::{ObjectInfo, Workflow, WorkflowError};

/// The kind of file a workflow was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// API-format JSON ("Export (API)").
    ApiJson,
    /// UI-format JSON ("Save" in the frontend).
    UiJson,
    /// A PNG image with ComfyUI's metadata.
    Png,
    /// A WebP image with ComfyUI's metadata.
    Webp,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ApiJson => "an API-format graph",
            Self::UiJson => "a UI-format workflow",
            Self::Png => "a PNG image",
            Self::Webp => "a WebP image",
        })
    }
}

/// A graph read by [`load_any`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadedWorkflow {
    /// The API-format graph, ready to validate and send.
    pub workflow: Workflow,
    /// What the file was.
    pub kind: FileKind,
    /// Whether the graph was converted from a UI-format workflow (else it was stored as an API
    /// graph: the JSON itself, or an image's `prompt`).
    pub converted: bool,
}

/// Why [`load_any`] could not produce a graph.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LoadError {
    /// Not JSON, PNG or WebP.
    Unrecognized,
    /// JSON that does not parse.
    Json {
        /// serde_json's account.
        message: String,
    },
    /// JSON (or an image's `prompt`) that is not a well-formed API graph.
    Api(WorkflowError),
    /// A UI-format workflow (from a file or an image) that could not be converted.
    Ui(UiError),
    /// A UI-format workflow, and no `object_info` to convert it with. Fetch the server's
    /// `GET /object_info` and call again.
    NeedsObjectInfo {
        /// Where the UI workflow came from.
        kind: FileKind,
    },
    /// An image whose metadata could not be read.
    Image(ImageError),
    /// An image with neither a `prompt` nor a `workflow` (saved with `--disable-metadata`, or
    /// not by ComfyUI).
    NoWorkflowInImage {
        /// PNG or WebP.
        kind: FileKind,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unrecognized => f.write_str(
                "not a workflow: expected API or UI-format JSON, or a PNG or WebP saved by ComfyUI",
            ),
            Self::Json { message } => write!(f, "not valid JSON: {message}"),
            Self::Api(e) => write!(f, "not an API-format graph: {e}"),
            Self::Ui(e) => write!(f, "cannot convert the UI-format workflow: {e}"),
            Self::NeedsObjectInfo { kind } => write!(
                f,
                "{kind} holds a UI-format workflow: converting it needs the server's object_info"
            ),
            Self::Image(e) => e.fmt(f),
            Self::NoWorkflowInImage { kind } => {
                write!(
                    f,
                    "{kind} without a ComfyUI prompt or workflow in its metadata"
                )
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Api(e) => Some(e),
            Self::Ui(e) => Some(e),
            Self::Image(e) => Some(e),
            _ => None,
        }
    }
}

/// What kind of file `bytes` are, from their first bytes: PNG and WebP by signature, JSON by a
/// leading `{` (after a byte-order mark and white space), told apart as UI-format when the
/// object has a `nodes` list. `None` when it is none of these (or JSON that does not parse).
pub fn detect(bytes: &[u8]) -> Option<FileKind> {
    if image::is_png(bytes) {
        return Some(FileKind::Png);
    }
    if image::is_webp(bytes) {
        return Some(FileKind::Webp);
    }
    let value = parse_json(bytes).ok()?;
    Some(if ui::is_ui_workflow(&value) {
        FileKind::UiJson
    } else {
        FileKind::ApiJson
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, LoadError> {
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if text
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_none_or(|&b| b != b'{')
    {
        return Err(LoadError::Unrecognized);
    }
    serde_json::from_slice(text).map_err(|e| LoadError::Json {
        message: e.to_string(),
    })
}

fn convert(
    doc: &Value,
    kind: FileKind,
    info: Option<&ObjectInfo>,
) -> Result<LoadedWorkflow, LoadError> {
    let info = info.ok_or(LoadError::NeedsObjectInfo { kind })?;
    Ok(LoadedWorkflow {
        workflow: ui::to_api(doc, info).map_err(LoadError::Ui)?,
        kind,
        converted: true,
    })
}

/// Reads any workflow file: API-format JSON as it is; UI-format JSON converted with
/// `object_info` ([`ui::to_api`]); a ComfyUI PNG or WebP by its `prompt` (the API graph the
/// server ran), else by converting its `workflow`.
///
/// `object_info` is needed only for UI-format workflows: without it they fail with
/// [`LoadError::NeedsObjectInfo`], so a caller can try without, and fetch it only then.
///
/// ```
/// use comfy_proxy::workflow::{FileKind, load_any};
/// let loaded = load_any(br#"{"1": {"class_type": "EmptyImage", "inputs": {}}}"#, None)?;
/// assert_eq!(loaded.kind, FileKind::ApiJson);
/// assert_eq!(loaded.workflow.len(), 1);
/// # Ok::<(), comfy_proxy::workflow::LoadError>(())
/// ```
pub fn load_any(
    bytes: &[u8],
    object_info: Option<&ObjectInfo>,
) -> Result<LoadedWorkflow, LoadError> {
    let kind = if image::is_png(bytes) {
        FileKind::Png
    } else if image::is_webp(bytes) {
        FileKind::Webp
    } else {
        let doc = parse_json(bytes)?;
        if ui::is_ui_workflow(&doc) {
            return convert(&doc, FileKind::UiJson, object_info);
        }
        return Ok(LoadedWorkflow {
            workflow: Workflow::from_value(doc).map_err(LoadError::Api)?,
            kind: FileKind::ApiJson,
            converted: false,
        });
    };
    let meta = image::read_metadata(bytes).map_err(LoadError::Image)?;
    let prompt = meta.prompt.as_deref().map(Workflow::from_json);
    match (prompt, meta.workflow) {
        (Some(Ok(workflow)), _) => Ok(LoadedWorkflow {
            workflow,
            kind,
            converted: false,
        }),
        (prompt, Some(text)) => {
            let doc: Value = match serde_json::from_str(&text) {
                Ok(doc) => doc,
                Err(e) => {
                    return Err(match prompt {
                        Some(Err(api)) => LoadError::Api(api),
                        _ => LoadError::Json {
                            message: e.to_string(),
                        },
                    });
                }
            };
            convert(&doc, kind, object_info)
        }
        (Some(Err(e)), None) => Err(LoadError::Api(e)),
        (None, None) => Err(LoadError::NoWorkflowInImage { kind }),
    }
}
