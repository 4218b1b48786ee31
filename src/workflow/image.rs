//! The workflow metadata in PNG and WebP images that ComfyUI writes, read without an image
//! library.
//!
//! - **PNG** (`SaveImage`, `PreviewImage`): `tEXt` chunks `prompt` (the API graph as JSON) and
//!   `workflow` (the UI graph), and any other `extra_pnginfo` key. Uncompressed `iTXt` chunks are
//!   read too; compressed text (`zTXt`, compressed `iTXt`) is not (the core has no inflater), and
//!   is reported as [`ImageError::CompressedText`] when nothing else was found.
//! - **WebP** (`SaveAnimatedWEBP`): an `EXIF` chunk whose first IFD holds ASCII strings
//!   `prompt:{...}` (tag 0x0110) and `workflow:{...}` (0x010F, then downwards for other keys).

use std::fmt;

/// What an image carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageMetadata {
    /// The API-format graph (JSON text), if present.
    pub prompt: Option<String>,
    /// The UI-format workflow (JSON text), if present.
    pub workflow: Option<String>,
}

/// An image whose metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageError {
    /// Neither a PNG nor a WebP file.
    NotAnImage,
    /// The file ends inside a chunk (or the chunk's length is wrong).
    Truncated {
        /// `"PNG"` or `"WebP"`.
        format: &'static str,
        /// The byte offset of the chunk.
        offset: usize,
    },
    /// The metadata is stored compressed, which this reader does not inflate.
    CompressedText {
        /// The key (`"prompt"`, `"workflow"`).
        key: String,
    },
    /// A WebP `EXIF` chunk that is not a TIFF structure.
    BadExif {
        /// What was wrong.
        reason: &'static str,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnImage => f.write_str("not a PNG or WebP image"),
            Self::Truncated { format, offset } => {
                write!(f, "the {format} file is cut short (chunk at byte {offset})")
            }
            Self::CompressedText { key } => write!(
                f,
                "the image's {key:?} metadata is compressed, which is not supported"
            ),
            Self::BadExif { reason } => write!(f, "the WebP EXIF chunk is damaged: {reason}"),
        }
    }
}

impl std::error::Error for ImageError {}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Whether `bytes` start like a PNG file.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(PNG_MAGIC)
}

/// Whether `bytes` start like a WebP file (`RIFF....WEBP`).
pub fn is_webp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP"
}

/// Reads the `prompt` and `workflow` a PNG or WebP image carries (either may be absent).
pub fn read_metadata(bytes: &[u8]) -> Result<ImageMetadata, ImageError> {
    let pairs = if is_png(bytes) {
        png_text(bytes)?
    } else if is_webp(bytes) {
        webp_exif_strings(bytes)?
            .into_iter()
            .filter_map(|s| {
                let (key, value) = s.split_once(':')?;
                Some((key.to_owned(), value.to_owned()))
            })
            .collect()
    } else {
        return Err(ImageError::NotAnImage);
    };
    let mut meta = ImageMetadata::default();
    for (key, value) in pairs {
        match key.as_str() {
            "prompt" if meta.prompt.is_none() => meta.prompt = Some(value),
            "workflow" if meta.workflow.is_none() => meta.workflow = Some(value),
            _ => {}
        }
    }
    Ok(meta)
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// A PNG's text chunks as (keyword, text), in file order.
pub fn png_text(bytes: &[u8]) -> Result<Vec<(String, String)>, ImageError> {
    if !is_png(bytes) {
        return Err(ImageError::NotAnImage);
    }
    let mut out = Vec::new();
    let mut compressed = None;
    let mut at = PNG_MAGIC.len();
    let mut ended = false;
    while at + 8 <= bytes.len() {
        let len = be32(&bytes[at..]);
        let kind = &bytes[at + 4..at + 8];
        let start = at + 8;
        let end =
            start
                .checked_add(len)
                .filter(|&e| e <= bytes.len())
                .ok_or(ImageError::Truncated {
                    format: "PNG",
                    offset: at,
                })?;
        let data = &bytes[start..end];
        match kind {
            b"tEXt" => {
                if let Some((key, text)) = split_nul(data) {
                    // Latin-1: every byte is the character of that code point.
                    out.push((latin1(key), text.iter().map(|&b| char::from(b)).collect()));
                }
            }
            b"iTXt" => match itxt(data) {
                Itxt::Text { key, text } => out.push((key, text)),
                Itxt::Compressed { key } => compressed = compressed.or(Some(key)),
                Itxt::Malformed => {}
            },
            b"zTXt" => {
                if let Some((key, _)) = split_nul(data) {
                    compressed = compressed.or(Some(latin1(key)));
                }
            }
            b"IEND" => {
                ended = true;
                break;
            }
            _ => {}
        }
        at = end + 4; // the CRC
    }
    if !ended && at < bytes.len() {
        return Err(ImageError::Truncated {
            format: "PNG",
            offset: at,
        });
    }
    if let Some(key) = compressed {
        let wanted = |k: &str| k == "prompt" || k == "workflow";
        if wanted(&key) && !out.iter().any(|(k, _)| wanted(k)) {
            return Err(ImageError::CompressedText { key });
        }
    }
    Ok(out)
}

fn split_nul(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// What an `iTXt` chunk holds, as far as reading its text goes.
#[derive(Debug, PartialEq, Eq)]
enum Itxt {
    /// Uncompressed text under a keyword.
    Text { key: String, text: String },
    /// Compressed text (not inflated here) under a keyword.
    Compressed { key: String },
    /// Too short or missing a separator: skipped.
    Malformed,
}

/// An `iTXt` chunk: keyword, compression flag and method, language, translated keyword, text.
fn itxt(data: &[u8]) -> Itxt {
    let parts = || {
        let (key, rest) = split_nul(data)?;
        let (&flag, rest) = rest.split_first()?;
        let (_method, rest) = rest.split_first()?;
        let (_language, rest) = split_nul(rest)?;
        let (_translated, text) = split_nul(rest)?;
        Some((latin1(key), flag, text))
    };
    match parts() {
        None => Itxt::Malformed,
        Some((key, 0, text)) => Itxt::Text {
            key,
            text: String::from_utf8_lossy(text).into_owned(),
        },
        Some((key, _, _)) => Itxt::Compressed { key },
    }
}

/// The ASCII strings in the first IFD of a WebP's `EXIF` chunk (none if it has no such chunk).
pub fn webp_exif_strings(bytes: &[u8]) -> Result<Vec<String>, ImageError> {
    if !is_webp(bytes) {
        return Err(ImageError::NotAnImage);
    }
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let kind = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let start = at + 8;
        let end =
            start
                .checked_add(len)
                .filter(|&e| e <= bytes.len())
                .ok_or(ImageError::Truncated {
                    format: "WebP",
                    offset: at,
                })?;
        if kind == b"EXIF" {
            return tiff_strings(&bytes[start..end]);
        }
        at = end + (len & 1);
    }
    Ok(Vec::new())
}

/// The ASCII (and undefined-byte) values of a TIFF structure's first IFD.
fn tiff_strings(exif: &[u8]) -> Result<Vec<String>, ImageError> {
    let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let bad = |reason| ImageError::BadExif { reason };
    let little = match tiff.get(0..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return Err(bad("no byte order mark")),
    };
    let u16_at = |o: usize| -> Option<usize> {
        let b = tiff.get(o..o + 2)?;
        Some(usize::from(if little {
            u16::from_le_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        }))
    };
    let u32_at = |o: usize| -> Option<usize> {
        let b: [u8; 4] = tiff.get(o..o + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize)
    };
    if u16_at(2) != Some(42) {
        return Err(bad("not a TIFF header"));
    }
    let ifd = u32_at(4).ok_or(bad("no IFD offset"))?;
    let count = u16_at(ifd).ok_or(bad("the IFD is outside the chunk"))?;
    let mut out = Vec::new();
    for i in 0..count {
        let entry = ifd + 2 + i * 12;
        let (Some(ty), Some(n)) = (u16_at(entry + 2), u32_at(entry + 4)) else {
            return Err(bad("an IFD entry is outside the chunk"));
        };
        // 1 BYTE, 2 ASCII, 7 UNDEFINED: one byte per count.
        if !matches!(ty, 1 | 2 | 7) {
            continue;
        }
        let offset = if n <= 4 {
            entry + 8
        } else {
            u32_at(entry + 8).ok_or(bad("an IFD entry is outside the chunk"))?
        };
        let value = offset
            .checked_add(n)
            .and_then(|end| tiff.get(offset..end))
            .ok_or(bad("a value is outside the chunk"))?;
        let value = value.strip_suffix(b"\0").unwrap_or(value);
        out.push(String::from_utf8_lossy(value).into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itxt_outcomes() {
        let chunk = |flag: u8| [b"prompt\0".as_slice(), &[flag, 0], b"en\0\0{}"].concat();
        assert_eq!(
            itxt(&chunk(0)),
            Itxt::Text {
                key: "prompt".into(),
                text: "{}".into()
            }
        );
        assert_eq!(
            itxt(&chunk(1)),
            Itxt::Compressed {
                key: "prompt".into()
            }
        );
        assert_eq!(itxt(b"prompt"), Itxt::Malformed);
        assert_eq!(itxt(b"prompt\0\x00\x00en"), Itxt::Malformed);
    }
}
