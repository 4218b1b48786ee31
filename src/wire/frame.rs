//! Binary websocket frames, decoded without copying the image.
//!
//! Every frame starts with a big-endian `u32` event type:
//!
//! | type | after the type |
//! | --- | --- |
//! | 1 `PREVIEW_IMAGE` | `u32` format (1 JPEG, 2 PNG), then the image |
//! | 3 `TEXT` | `u32` length of the node id, the node id, UTF-8 text |
//! | 4 `PREVIEW_IMAGE_WITH_METADATA` | `u32` length of a JSON object, the JSON, then the image |
//!
//! [`BinaryFrame::decode`] borrows every part from the frame: decoding a 64 MiB image costs
//! what decoding a 1 KiB one does.

use std::fmt;

use serde::Deserialize;

/// Frame type 1: an image without metadata.
pub const PREVIEW_IMAGE: u32 = 1;
/// Frame type 2: the unencoded preview of old servers; never sent by current ones.
pub const UNENCODED_PREVIEW_IMAGE: u32 = 2;
/// Frame type 3: progress text from a node.
pub const TEXT: u32 = 3;
/// Frame type 4: an image with a JSON metadata header.
pub const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// The default upper bound on a frame's size: 64 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;

/// The upper bound on a type 3 node id or a type 4 metadata header; real ones are tens of bytes.
const MAX_HEADER_LEN: usize = 64 << 10;

/// An image format ComfyUI sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageFormat {
    /// `image/png`
    Png,
    /// `image/jpeg`
    Jpeg,
    /// `image/webp`
    Webp,
}

impl ImageFormat {
    /// The upper-case name used in summaries: `PNG`, `JPEG`, `WEBP`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Webp => "WEBP",
        }
    }

    /// The usual file extension, without a dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    /// The format of a type 1 frame's format code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Jpeg),
            2 => Some(Self::Png),
            _ => None,
        }
    }

    /// The format named by a MIME type (`image/png`).
    pub fn from_mime(mime: &str) -> Option<Self> {
        match mime.trim().to_ascii_lowercase().as_str() {
            "image/png" => Some(Self::Png),
            "image/jpeg" | "image/jpg" => Some(Self::Jpeg),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }

    /// The format told by an image's first bytes, if it is one of ours.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    /// The format told by a file name's extension (`ComfyUI_00001_.png`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(Self::Png),
            "jpg" | "jpeg" => Some(Self::Jpeg),
            "webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The JSON header of a type 4 frame.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct PreviewMetadata {
    /// The node that produced the image.
    pub node_id: String,
    /// The prompt it belongs to.
    pub prompt_id: String,
    /// The node shown in the UI (differs inside subgraphs).
    #[serde(default)]
    pub display_node_id: Option<String>,
    /// The enclosing node of a subgraph, if any.
    #[serde(default)]
    pub parent_node_id: Option<String>,
    /// The node id in the expanded graph.
    #[serde(default)]
    pub real_node_id: Option<String>,
    /// The MIME type of the image (`image/png`).
    pub image_type: String,
}

/// A decoded binary frame; every slice borrows from the frame.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BinaryFrame<'a> {
    /// Type 1: an image whose node is the running prompt's last `executing` node.
    Image {
        /// The image's format.
        format: ImageFormat,
        /// The encoded image, borrowed from the frame.
        image: &'a [u8],
    },
    /// Type 4: an image with its prompt and node.
    ImageWithMetadata {
        /// Who sent it and in which format.
        metadata: PreviewMetadata,
        /// The format named by `metadata.image_type`.
        format: ImageFormat,
        /// The encoded image, borrowed from the frame.
        image: &'a [u8],
    },
    /// Type 3: text from a node.
    Text {
        /// The node's id.
        node_id: &'a str,
        /// The text.
        text: &'a str,
    },
}

/// Why a binary frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ends before a field it must hold.
    Truncated {
        /// The field that was cut short.
        field: &'static str,
        /// Bytes the field needs from where it starts.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The frame is larger than the configured limit.
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An event type this client does not know.
    UnknownType(u32),
    /// A type 1 image format code other than 1 (JPEG) or 2 (PNG).
    UnknownImageFormat(u32),
    /// A type 4 frame whose `image_type` is not PNG, JPEG or WEBP.
    UnknownMimeType(String),
    /// A type 4 header that is not the documented JSON object.
    BadMetadata(String),
    /// A type 3 node id or text that is not UTF-8.
    BadUtf8(&'static str),
    /// A declared header length over 64 KiB.
    HeaderTooLarge {
        /// The declared length.
        len: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated {
                field,
                needed,
                available,
            } => {
                write!(
                    f,
                    "truncated frame: {field} needs {needed} bytes, {available} left"
                )
            }
            Self::TooLarge { len, limit } => {
                write!(f, "frame of {len} bytes is over the limit of {limit} bytes")
            }
            Self::UnknownType(t) => write!(f, "unknown binary frame type {t}"),
            Self::UnknownImageFormat(c) => write!(f, "unknown image format code {c}"),
            Self::UnknownMimeType(m) => write!(f, "unknown image type {m:?}"),
            Self::BadMetadata(e) => write!(f, "bad frame metadata: {e}"),
            Self::BadUtf8(what) => write!(f, "{what} is not valid UTF-8"),
            Self::HeaderTooLarge { len } => write!(f, "frame header length {len} is implausible"),
        }
    }
}

impl std::error::Error for FrameError {}

fn read_u32(bytes: &[u8], at: usize, field: &'static str) -> Result<u32, FrameError> {
    match bytes.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(FrameError::Truncated {
            field,
            needed: 4,
            available: bytes.len().saturating_sub(at),
        }),
    }
}

/// Splits `len` bytes off `bytes` at `at`, or says which field was cut short.
fn take<'a>(
    bytes: &'a [u8],
    at: usize,
    len: usize,
    field: &'static str,
) -> Result<&'a [u8], FrameError> {
    let available = bytes.len().saturating_sub(at);
    if len > MAX_HEADER_LEN {
        return Err(FrameError::HeaderTooLarge { len });
    }
    if len > available {
        return Err(FrameError::Truncated {
            field,
            needed: len,
            available,
        });
    }
    Ok(&bytes[at..at + len])
}

impl<'a> BinaryFrame<'a> {
    /// Decodes a frame no larger than [`DEFAULT_MAX_FRAME_LEN`].
    ///
    /// ```
    /// use comfy_proxy::wire::{BinaryFrame, ImageFormat};
    /// let frame = [0, 0, 0, 1, 0, 0, 0, 2, 0x89, b'P', b'N', b'G'];
    /// let BinaryFrame::Image { format, image } = BinaryFrame::decode(&frame).unwrap() else {
    ///     panic!("a type 1 frame")
    /// };
    /// assert_eq!(format, ImageFormat::Png);
    /// assert_eq!(image.as_ptr(), frame[8..].as_ptr()); // borrowed, not copied
    /// ```
    pub fn decode(frame: &'a [u8]) -> Result<Self, FrameError> {
        Self::decode_with_limit(frame, DEFAULT_MAX_FRAME_LEN)
    }

    /// Decodes a frame, refusing one longer than `max_len` bytes.
    pub fn decode_with_limit(frame: &'a [u8], max_len: usize) -> Result<Self, FrameError> {
        if frame.len() > max_len {
            return Err(FrameError::TooLarge {
                len: frame.len(),
                limit: max_len,
            });
        }
        match read_u32(frame, 0, "event type")? {
            PREVIEW_IMAGE => {
                let code = read_u32(frame, 4, "image format")?;
                let format =
                    ImageFormat::from_code(code).ok_or(FrameError::UnknownImageFormat(code))?;
                Ok(Self::Image {
                    format,
                    image: &frame[8..],
                })
            }
            TEXT => {
                let len = read_u32(frame, 4, "node id length")? as usize;
                let node = take(frame, 8, len, "node id")?;
                let node_id =
                    std::str::from_utf8(node).map_err(|_| FrameError::BadUtf8("node id"))?;
                let text = std::str::from_utf8(&frame[8 + len..])
                    .map_err(|_| FrameError::BadUtf8("progress text"))?;
                Ok(Self::Text { node_id, text })
            }
            PREVIEW_IMAGE_WITH_METADATA => {
                let len = read_u32(frame, 4, "metadata length")? as usize;
                let json = take(frame, 8, len, "metadata")?;
                let metadata: PreviewMetadata = serde_json::from_slice(json)
                    .map_err(|e| FrameError::BadMetadata(e.to_string()))?;
                let format = ImageFormat::from_mime(&metadata.image_type)
                    .ok_or_else(|| FrameError::UnknownMimeType(metadata.image_type.clone()))?;
                Ok(Self::ImageWithMetadata {
                    metadata,
                    format,
                    image: &frame[8 + len..],
                })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }

    /// The image this frame carries, if it carries one.
    pub fn image(&self) -> Option<(ImageFormat, &'a [u8])> {
        match self {
            Self::Image { format, image } | Self::ImageWithMetadata { format, image, .. } => {
                Some((*format, image))
            }
            Self::Text { .. } => None,
        }
    }
}

/// Encodes a type 1 frame (used by the mock server and tests).
pub fn encode_image(format: ImageFormat, image: &[u8]) -> Vec<u8> {
    let code: u32 = match format {
        ImageFormat::Jpeg => 1,
        _ => 2,
    };
    let mut out = Vec::with_capacity(8 + image.len());
    out.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(image);
    out
}

/// Encodes a type 4 frame (used by the mock server and tests).
pub fn encode_image_with_metadata(metadata_json: &str, image: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + metadata_json.len() + image.len());
    out.extend_from_slice(&PREVIEW_IMAGE_WITH_METADATA.to_be_bytes());
    out.extend_from_slice(&(metadata_json.len() as u32).to_be_bytes());
    out.extend_from_slice(metadata_json.as_bytes());
    out.extend_from_slice(image);
    out
}

/// Encodes a type 3 frame (used by the mock server and tests).
pub fn encode_text(node_id: &str, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + node_id.len() + text.len());
    out.extend_from_slice(&TEXT.to_be_bytes());
    out.extend_from_slice(&(node_id.len() as u32).to_be_bytes());
    out.extend_from_slice(node_id.as_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest";

    #[test]
    fn table() {
        let meta = r#"{"node_id":"9","prompt_id":"p","display_node_id":"9","parent_node_id":null,"real_node_id":"9","image_type":"image/png"}"#;
        let cases: Vec<(&str, Vec<u8>, Result<&str, FrameError>)> = vec![
            (
                "type 1 png",
                encode_image(ImageFormat::Png, PNG),
                Ok("image PNG 12"),
            ),
            (
                "type 1 jpeg",
                encode_image(ImageFormat::Jpeg, b"\xff\xd8\xff"),
                Ok("image JPEG 3"),
            ),
            (
                "type 1 empty image",
                encode_image(ImageFormat::Png, b""),
                Ok("image PNG 0"),
            ),
            (
                "type 4",
                encode_image_with_metadata(meta, PNG),
                Ok("meta 9 p PNG 12"),
            ),
            (
                "type 3",
                encode_text("2", "width: 40"),
                Ok("text 2 width: 40"),
            ),
            (
                "empty",
                vec![],
                Err(FrameError::Truncated {
                    field: "event type",
                    needed: 4,
                    available: 0,
                }),
            ),
            (
                "short type",
                vec![0, 0, 1],
                Err(FrameError::Truncated {
                    field: "event type",
                    needed: 4,
                    available: 3,
                }),
            ),
            (
                "no format",
                vec![0, 0, 0, 1, 0, 0],
                Err(FrameError::Truncated {
                    field: "image format",
                    needed: 4,
                    available: 2,
                }),
            ),
            (
                "format 7",
                vec![0, 0, 0, 1, 0, 0, 0, 7],
                Err(FrameError::UnknownImageFormat(7)),
            ),
            (
                "type 9",
                vec![0, 0, 0, 9, 0, 0, 0, 0],
                Err(FrameError::UnknownType(9)),
            ),
            (
                "text cut",
                vec![0, 0, 0, 3, 0, 0, 0, 5, b'a'],
                Err(FrameError::Truncated {
                    field: "node id",
                    needed: 5,
                    available: 1,
                }),
            ),
            (
                "meta huge",
                vec![0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
                Err(FrameError::HeaderTooLarge {
                    len: u32::MAX as usize,
                }),
            ),
            (
                "meta cut",
                vec![0, 0, 0, 4, 0, 0, 0, 9, b'{'],
                Err(FrameError::Truncated {
                    field: "metadata",
                    needed: 9,
                    available: 1,
                }),
            ),
            (
                "text bad utf8",
                vec![0, 0, 0, 3, 0, 0, 0, 1, b'1', 0xff],
                Err(FrameError::BadUtf8("progress text")),
            ),
            (
                "meta bad mime",
                encode_image_with_metadata(&meta.replace("image/png", "image/gif"), PNG),
                Err(FrameError::UnknownMimeType("image/gif".into())),
            ),
        ];
        for (name, frame, want) in cases {
            let got = BinaryFrame::decode(&frame).map(|f| match f {
                BinaryFrame::Image { format, image } => format!("image {format} {}", image.len()),
                BinaryFrame::ImageWithMetadata {
                    metadata,
                    format,
                    image,
                } => {
                    format!(
                        "meta {} {} {format} {}",
                        metadata.node_id,
                        metadata.prompt_id,
                        image.len()
                    )
                }
                BinaryFrame::Text { node_id, text } => format!("text {node_id} {text}"),
            });
            assert_eq!(got, want.map(str::to_owned), "{name}");
        }
    }

    #[test]
    fn bad_metadata_json_is_an_error() {
        let frame = encode_image_with_metadata("{nope", PNG);
        assert!(matches!(
            BinaryFrame::decode(&frame),
            Err(FrameError::BadMetadata(_))
        ));
    }

    #[test]
    fn limit_is_enforced() {
        let frame = encode_image(ImageFormat::Png, &[0; 100]);
        assert_eq!(
            BinaryFrame::decode_with_limit(&frame, 50),
            Err(FrameError::TooLarge {
                len: 108,
                limit: 50
            })
        );
    }

    #[test]
    fn image_is_borrowed() {
        let frame = encode_image(ImageFormat::Png, &[7; 4096]);
        let (_, image) = BinaryFrame::decode(&frame).unwrap().image().unwrap();
        assert_eq!(image.as_ptr(), frame[8..].as_ptr());
    }

    #[test]
    fn sniffing() {
        assert_eq!(ImageFormat::sniff(PNG), Some(ImageFormat::Png));
        assert_eq!(
            ImageFormat::sniff(b"\xff\xd8\xff\xe0"),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(
            ImageFormat::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageFormat::Webp)
        );
        assert_eq!(ImageFormat::sniff(b"GIF89a"), None);
        assert_eq!(
            ImageFormat::from_file_name("a_00001_.PNG"),
            Some(ImageFormat::Png)
        );
    }
}
