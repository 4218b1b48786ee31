//! Every output a prompt produced, typed: images (over the websocket or as files), animated
//! images, video, audio, 3D models, other files and texts, plus each node's `ui` data as the
//! server sent it.
//!
//! # How it works
//!
//! A session reports outputs as three events: [`Event::Output`] (an image: a
//! `SaveImageWebsocket` frame or a file fetched with `/view` whose bytes are PNG, JPEG or WebP),
//! [`Event::File`] (any other file fetched with `/view`: mp4, flac, glb...) and
//! [`Event::NodeOutput`] (a node's `executed` message: its file list, `animated` flags,
//! `PreviewAny`'s `{"text": ["..."]}` and whatever else a node returns). [`Outputs`] folds those
//! events into one list of [`Output`]s, each with a [`OutputKind`] told from the content (magic
//! bytes), then the server's file name, then the node's `animated` flag. ComfyUI reports videos
//! under `images` (with `animated: [true]`), so the name a node files a result under says
//! nothing reliable; the bytes do.
//!
//! Feed every event of one prompt to [`Outputs::handle_event`] in the order they came (a node's
//! `executed` precedes the download of its files, so its `animated` flag is known in time). The
//! client's `RunResult` and the pool's [`JobReport`](crate::pool::JobReport) both carry one.
//!
//! Previews are not outputs: websocket previews ([`Event::Preview`]) are only counted by their
//! callers, and `temp` files (`PreviewImage`, `PreviewAudio`) are never fetched; their entries
//! stay visible in [`Outputs::ui`].
//!
//! ```
//! use comfy_proxy::session::{Event, OutputKind, Outputs};
//! use comfy_proxy::PromptId;
//!
//! let mut outputs = Outputs::new();
//! let text: serde_json::Value = serde_json::json!({"text": ["hello from comfy-proxy"]});
//! outputs.handle_event(&Event::NodeOutput {
//!     prompt: PromptId::from("p"),
//!     node: "7".into(),
//!     output: text.as_object().unwrap().clone(),
//! });
//! assert_eq!(outputs.len(), 1);
//! assert_eq!(outputs[0].kind, OutputKind::Text);
//! assert_eq!(outputs[0].text(), Some("hello from comfy-proxy"));
//! ```

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::ids::NodeId;
use crate::wire::ImageFormat;
use crate::wire::message::FileRef;

use super::event::{Event, Image};

/// What an output is, told from its content, its file name and its node's `animated` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OutputKind {
    /// A still image (PNG, JPEG, WebP).
    Image,
    /// An animated image: APNG, animated WebP, GIF, or an image its node flags `animated`.
    AnimatedImage,
    /// A video (mp4, mov, webm, mkv, avi).
    Video,
    /// Audio (flac, wav, mp3, ogg, opus, m4a).
    Audio,
    /// A 3D model (glb, gltf, obj, fbx, ply, stl).
    Model3d,
    /// Any other file.
    File,
    /// A text (`PreviewAny` and other nodes' `executed` `text` lists).
    Text,
}

impl OutputKind {
    /// The name used in JSON and summaries: `image`, `animated_image`, `video`, `audio`,
    /// `model_3d`, `file`, `text`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::AnimatedImage => "animated_image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Model3d => "model_3d",
            Self::File => "file",
            Self::Text => "text",
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an output holds.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputBody {
    /// Bytes, sharing the buffer of the frame or `/view` response they came in (no copy).
    Data {
        /// The bytes.
        data: Bytes,
        /// The server-side file, for outputs fetched with `/view` (`None` for websocket
        /// images). Its name comes from the server: never use it as a local path unchecked.
        file: Option<FileRef>,
    },
    /// A text, as the node returned it (untrusted: escape it before it reaches a terminal).
    Text(String),
}

impl fmt::Debug for OutputBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Data { data, file } => {
                write!(f, "Data({} bytes", data.len())?;
                if let Some(file) = file {
                    write!(f, ", {:?}", file.filename)?;
                }
                f.write_str(")")
            }
            Self::Text(text) => f.debug_tuple("Text").field(text).finish(),
        }
    }
}

/// One output of a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The node that produced it.
    pub node: NodeId,
    /// Its position among the node's outputs of the same body: bytes are numbered 0, 1, ...
    /// in arrival order (websocket frames and files alike), texts by their place in the node's
    /// `text` list.
    pub index: u32,
    /// What it is.
    pub kind: OutputKind,
    /// The file extension that fits its content, without a dot: `png`, `webp`, `mp4`, `flac`,
    /// `glb`, `txt` for texts; for content not recognised, the server file name's extension
    /// when it is 1 to 10 ASCII letters and digits, else `bin`. Always lowercase ASCII
    /// alphanumerics, safe in a file name.
    pub extension: String,
    /// Its bytes or its text.
    pub body: OutputBody,
}

impl Output {
    /// An output of bytes, classified with [`classify`].
    pub fn from_data(
        node: NodeId,
        index: u32,
        data: Bytes,
        file: Option<FileRef>,
        animated: bool,
    ) -> Self {
        let (kind, extension) = classify(&data, file.as_ref().map(|f| f.filename.as_str()));
        let kind = match kind {
            OutputKind::Image if animated => OutputKind::AnimatedImage,
            kind => kind,
        };
        Self {
            node,
            index,
            kind,
            extension,
            body: OutputBody::Data { data, file },
        }
    }

    /// A text output.
    pub fn text_output(node: NodeId, index: u32, text: String) -> Self {
        Self {
            node,
            index,
            kind: OutputKind::Text,
            extension: "txt".to_owned(),
            body: OutputBody::Text(text),
        }
    }

    /// The bytes, for every kind but text.
    pub fn data(&self) -> Option<&Bytes> {
        match &self.body {
            OutputBody::Data { data, .. } => Some(data),
            OutputBody::Text(_) => None,
        }
    }

    /// The text, for [`OutputKind::Text`].
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            OutputBody::Text(text) => Some(text),
            OutputBody::Data { .. } => None,
        }
    }

    /// The server-side file it was fetched from, if any.
    pub fn file(&self) -> Option<&FileRef> {
        match &self.body {
            OutputBody::Data { file, .. } => file.as_ref(),
            OutputBody::Text(_) => None,
        }
    }

    /// Its bytes as they would be written: the data, or the text in UTF-8.
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            OutputBody::Data { data, .. } => data,
            OutputBody::Text(text) => text.as_bytes(),
        }
    }

    /// The output as an [`Image`] when its bytes are PNG, JPEG or WebP (still or animated).
    pub fn image(&self) -> Option<Image> {
        let data = self.data()?;
        let format = ImageFormat::sniff(data)?;
        Some(Image {
            format,
            data: data.clone(),
        })
    }
}

/// The kind and extension of an output's bytes, told from the content first (magic bytes),
/// then from `file_name`'s extension. See [`Output::extension`] for the extension's form.
///
/// ```
/// use comfy_proxy::session::{OutputKind, classify};
///
/// assert_eq!(classify(b"fLaC\0\0\0\x22", None), (OutputKind::Audio, "flac".to_owned()));
/// assert_eq!(classify(b"", Some("clip.MP4")), (OutputKind::Video, "mp4".to_owned()));
/// assert_eq!(classify(b"?", Some("../x.sh;rm")), (OutputKind::File, "bin".to_owned()));
/// ```
pub fn classify(data: &[u8], file_name: Option<&str>) -> (OutputKind, String) {
    let named = file_name.and_then(extension_of);
    if let Some((kind, ext)) = sniff(data) {
        // Ogg carries audio or video: the name tells which.
        if ext == "ogg" && named.as_deref() == Some("ogv") {
            return (OutputKind::Video, "ogv".to_owned());
        }
        return (kind, ext.to_owned());
    }
    match named {
        Some(ext) => (kind_of_extension(&ext), ext),
        None => (OutputKind::File, "bin".to_owned()),
    }
}

/// The lowercase extension of a file name, when it is 1 to 10 ASCII alphanumerics.
fn extension_of(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    let ok = (1..=10).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then(|| ext.to_ascii_lowercase())
}

fn kind_of_extension(ext: &str) -> OutputKind {
    match ext {
        "png" | "jpg" | "jpeg" | "webp" | "bmp" | "tif" | "tiff" | "avif" => OutputKind::Image,
        "gif" | "apng" => OutputKind::AnimatedImage,
        "mp4" | "m4v" | "mov" | "webm" | "mkv" | "avi" | "ogv" => OutputKind::Video,
        "flac" | "wav" | "mp3" | "ogg" | "opus" | "m4a" | "aac" => OutputKind::Audio,
        "glb" | "gltf" | "obj" | "fbx" | "ply" | "stl" | "usdz" => OutputKind::Model3d,
        _ => OutputKind::File,
    }
}

/// The kind and usual extension told by the first bytes, if known.
fn sniff(d: &[u8]) -> Option<(OutputKind, &'static str)> {
    let at = |range: std::ops::Range<usize>| d.get(range);
    Some(if d.starts_with(b"\x89PNG\r\n\x1a\n") {
        let kind = if png_is_animated(d) {
            OutputKind::AnimatedImage
        } else {
            OutputKind::Image
        };
        (kind, "png")
    } else if d.starts_with(&[0xFF, 0xD8, 0xFF]) {
        (OutputKind::Image, "jpg")
    } else if at(0..4) == Some(b"RIFF") && at(8..12) == Some(b"WEBP") {
        // VP8X's flags byte: bit 1 is "animation".
        let animated = at(12..16) == Some(b"VP8X") && d.get(20).is_some_and(|f| f & 0x02 != 0);
        let kind = if animated {
            OutputKind::AnimatedImage
        } else {
            OutputKind::Image
        };
        (kind, "webp")
    } else if at(0..4) == Some(b"RIFF") && at(8..12) == Some(b"WAVE") {
        (OutputKind::Audio, "wav")
    } else if d.starts_with(b"GIF87a") || d.starts_with(b"GIF89a") {
        (OutputKind::AnimatedImage, "gif")
    } else if at(4..8) == Some(b"ftyp") {
        match at(8..12) {
            Some(b"qt  ") => (OutputKind::Video, "mov"),
            Some(b"M4A " | b"M4B ") => (OutputKind::Audio, "m4a"),
            Some(b"avif" | b"avis") => (OutputKind::Image, "avif"),
            _ => (OutputKind::Video, "mp4"),
        }
    } else if d.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML: the doctype, near the start, says WebM or Matroska.
        let head = &d[..d.len().min(64)];
        let webm = head.windows(4).any(|w| w == b"webm");
        (OutputKind::Video, if webm { "webm" } else { "mkv" })
    } else if at(0..4) == Some(b"RIFF") && at(8..12) == Some(b"AVI ") {
        (OutputKind::Video, "avi")
    } else if d.starts_with(b"fLaC") {
        (OutputKind::Audio, "flac")
    } else if d.starts_with(b"OggS") {
        let head = &d[..d.len().min(64)];
        let opus = head.windows(8).any(|w| w == b"OpusHead");
        (OutputKind::Audio, if opus { "opus" } else { "ogg" })
    } else if d.starts_with(b"ID3")
        || (d.len() >= 2 && d[0] == 0xFF && matches!(d[1], 0xFB | 0xF3 | 0xF2 | 0xFA))
    {
        (OutputKind::Audio, "mp3")
    } else if d.starts_with(b"glTF") {
        (OutputKind::Model3d, "glb")
    } else if d.starts_with(b"ply\n") || d.starts_with(b"ply\r\n") {
        (OutputKind::Model3d, "ply")
    } else if d.starts_with(b"Kaydara FBX Binary") {
        (OutputKind::Model3d, "fbx")
    } else {
        return None;
    })
}

/// Whether a PNG has an `acTL` chunk before its first `IDAT` (an APNG). Walks at most 64
/// chunks; a damaged chunk list reads as not animated.
fn png_is_animated(d: &[u8]) -> bool {
    let mut at = 8usize;
    for _ in 0..64 {
        let Some(head) = d.get(at..at + 8) else {
            return false;
        };
        match &head[4..8] {
            b"acTL" => return true,
            b"IDAT" | b"IEND" => return false,
            _ => {}
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        at = match at.checked_add(12).and_then(|a| a.checked_add(len)) {
            Some(next) => next,
            None => return false,
        };
    }
    false
}

/// Every output of one prompt, in arrival order, and each node's `ui` data. Built from the
/// prompt's events with [`Outputs::handle_event`]; it reads as a slice of [`Output`]s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    items: Vec<Output>,
    ui: Vec<(NodeId, Map<String, Value>)>,
}

impl Deref for Outputs {
    type Target = [Output];

    fn deref(&self) -> &[Output] {
        &self.items
    }
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = &'a Output;
    type IntoIter = std::slice::Iter<'a, Output>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl Outputs {
    /// No outputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in one event of the prompt: [`Event::Output`] and [`Event::File`] add an output,
    /// [`Event::NodeOutput`] adds the node's texts and keeps its `ui` data. Returns whether the
    /// event was one of those; every other event is ignored.
    pub fn handle_event(&mut self, event: &Event) -> bool {
        match event {
            Event::Output {
                node,
                index,
                image,
                file,
                ..
            } => self.push_data(node.clone(), *index, image.data.clone(), file.clone()),
            Event::File {
                node,
                index,
                file,
                data,
                ..
            } => self.push_data(node.clone(), *index, data.clone(), Some(file.clone())),
            Event::NodeOutput { node, output, .. } => self.handle_ui(node, output),
            _ => return false,
        }
        true
    }

    /// Takes in a node's `ui` data (an `executed` message's `output`, or a `/history` entry's
    /// `outputs[node]`): each string of its `text` list (or a bare `text` string) becomes a
    /// text output, and the whole map is kept in [`Outputs::ui`]. A node reported twice has
    /// its lists joined and other values replaced.
    pub fn handle_ui(&mut self, node: &NodeId, ui: &Map<String, Value>) {
        let first = self.texts_of(node);
        let texts: Vec<String> = match ui.get("text") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        for (i, text) in texts.into_iter().enumerate() {
            let index = u32::try_from(first + i).unwrap_or(u32::MAX);
            self.items
                .push(Output::text_output(node.clone(), index, text));
        }
        match self.ui.iter_mut().find(|(n, _)| n == node) {
            None => self.ui.push((node.clone(), ui.clone())),
            Some((_, kept)) => {
                for (key, value) in ui {
                    match (kept.get_mut(key), value) {
                        (Some(Value::Array(old)), Value::Array(new)) => {
                            old.extend(new.iter().cloned())
                        }
                        _ => {
                            kept.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
        }
    }

    /// Adds an output of bytes (a websocket image, a fetched file), classified by
    /// [`Output::from_data`] with the `animated` flag of the node's `ui` data seen so far.
    pub fn push_data(&mut self, node: NodeId, index: u32, data: Bytes, file: Option<FileRef>) {
        let animated = self.is_animated(&node);
        self.items
            .push(Output::from_data(node, index, data, file, animated));
    }

    /// Whether the node's `ui` data says `animated: [true]` (how `SaveAnimatedWEBP`,
    /// `SaveAnimatedPNG` and `SaveVideo` mark their files).
    fn is_animated(&self, node: &NodeId) -> bool {
        self.ui_of(node)
            .and_then(|ui| ui.get("animated"))
            .is_some_and(|v| match v {
                Value::Array(flags) => flags.iter().any(|f| f.as_bool() == Some(true)),
                Value::Bool(b) => *b,
                _ => false,
            })
    }

    fn texts_of(&self, node: &NodeId) -> usize {
        self.items
            .iter()
            .filter(|o| o.kind == OutputKind::Text && o.node == *node)
            .count()
    }

    /// Each node's `ui` data as the server sent it (file lists, `animated`, `text` and
    /// anything else a node returns), in the order the nodes reported.
    pub fn ui(&self) -> &[(NodeId, Map<String, Value>)] {
        &self.ui
    }

    /// One node's `ui` data.
    pub fn ui_of(&self, node: &NodeId) -> Option<&Map<String, Value>> {
        self.ui.iter().find(|(n, _)| n == node).map(|(_, m)| m)
    }

    /// The outputs of one kind.
    pub fn of_kind(&self, kind: OutputKind) -> impl Iterator<Item = &Output> {
        self.items.iter().filter(move |o| o.kind == kind)
    }

    /// Every output whose bytes are PNG, JPEG or WebP (still or animated), as images.
    pub fn images(&self) -> impl Iterator<Item = (&NodeId, u32, Image)> {
        self.items
            .iter()
            .filter_map(|o| o.image().map(|i| (&o.node, o.index, i)))
    }

    /// Every text output, with its node.
    pub fn texts(&self) -> impl Iterator<Item = (&NodeId, &str)> {
        self.items
            .iter()
            .filter_map(|o| o.text().map(|t| (&o.node, t)))
    }

    /// The outputs, leaving the `ui` data.
    pub fn into_vec(self) -> Vec<Output> {
        self.items
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
