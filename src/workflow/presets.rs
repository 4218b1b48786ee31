//! Image sizes ([`Size`] and its presets) and LoRA specs ([`Lora`]).

use std::fmt;
use std::str::FromStr;

use super::WorkflowError;

/// An image size in pixels.
///
/// ```
/// use comfy_proxy::workflow::Size;
/// assert_eq!(Size::parse("portrait-3-4")?, Size::new(896, 1152));
/// assert_eq!(Size::parse("1024x768")?, Size::new(1024, 768));
/// assert!(Size::parse("huge").unwrap_err().to_string().contains("square-1k"));
/// # Ok::<(), comfy_proxy::WorkflowError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Size {
    /// A size of `width` x `height` pixels.
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// `square-1k`: 1024x1024 (1:1), the Flux default.
    pub const SQUARE_1K: Self = Self::new(1024, 1024);
    /// `square-2k`: 2048x2048 (1:1).
    pub const SQUARE_2K: Self = Self::new(2048, 2048);
    /// `landscape-8-5`: 1216x768.
    pub const LANDSCAPE_8_5: Self = Self::new(1216, 768);
    /// `landscape-4-3`: 1152x896.
    pub const LANDSCAPE_4_3: Self = Self::new(1152, 896);
    /// `landscape-3-2`: 1216x832.
    pub const LANDSCAPE_3_2: Self = Self::new(1216, 832);
    /// `landscape-7-5`: 1176x840.
    pub const LANDSCAPE_7_5: Self = Self::new(1176, 840);
    /// `landscape-16-9`: 1344x768.
    pub const LANDSCAPE_16_9: Self = Self::new(1344, 768);
    /// `landscape-21-9`: 1536x640.
    pub const LANDSCAPE_21_9: Self = Self::new(1536, 640);
    /// `landscape-19-9`: 1472x704.
    pub const LANDSCAPE_19_9: Self = Self::new(1472, 704);
    /// `portrait-3-4`: 896x1152, the Qwen Image default.
    pub const PORTRAIT_3_4: Self = Self::new(896, 1152);
    /// `portrait-2-3`: 832x1216.
    pub const PORTRAIT_2_3: Self = Self::new(832, 1216);
    /// `portrait-5-7`: 840x1176.
    pub const PORTRAIT_5_7: Self = Self::new(840, 1176);
    /// `portrait-9-16`: 768x1344.
    pub const PORTRAIT_9_16: Self = Self::new(768, 1344);
    /// `portrait-9-21`: 640x1536.
    pub const PORTRAIT_9_21: Self = Self::new(640, 1536);
    /// `portrait-5-8`: 768x1216.
    pub const PORTRAIT_5_8: Self = Self::new(768, 1216);
    /// `portrait-9-19`: 704x1472.
    pub const PORTRAIT_9_19: Self = Self::new(704, 1472);
    /// `video-480p-landscape`: 854x480.
    pub const VIDEO_480P_LANDSCAPE: Self = Self::new(854, 480);
    /// `video-720p-landscape`: 1280x720.
    pub const VIDEO_720P_LANDSCAPE: Self = Self::new(1280, 720);
    /// `video-1080p-landscape`: 1920x1080.
    pub const VIDEO_1080P_LANDSCAPE: Self = Self::new(1920, 1080);

    /// Every preset of the original library's `Sizes`, by name, in its order.
    pub const PRESETS: &'static [(&'static str, Size)] = &[
        ("square-1k", Self::SQUARE_1K),
        ("square-2k", Self::SQUARE_2K),
        ("landscape-8-5", Self::LANDSCAPE_8_5),
        ("landscape-4-3", Self::LANDSCAPE_4_3),
        ("landscape-3-2", Self::LANDSCAPE_3_2),
        ("landscape-7-5", Self::LANDSCAPE_7_5),
        ("landscape-16-9", Self::LANDSCAPE_16_9),
        ("landscape-21-9", Self::LANDSCAPE_21_9),
        ("landscape-19-9", Self::LANDSCAPE_19_9),
        ("portrait-3-4", Self::PORTRAIT_3_4),
        ("portrait-2-3", Self::PORTRAIT_2_3),
        ("portrait-5-7", Self::PORTRAIT_5_7),
        ("portrait-9-16", Self::PORTRAIT_9_16),
        ("portrait-9-21", Self::PORTRAIT_9_21),
        ("portrait-5-8", Self::PORTRAIT_5_8),
        ("portrait-9-19", Self::PORTRAIT_9_19),
        ("video-480p-landscape", Self::VIDEO_480P_LANDSCAPE),
        ("video-720p-landscape", Self::VIDEO_720P_LANDSCAPE),
        ("video-1080p-landscape", Self::VIDEO_1080P_LANDSCAPE),
    ];

    /// The preset called `name` (`"square-1k"`; case and `_` for `-` do not matter).
    pub fn preset(name: &str) -> Option<Self> {
        let name = name.trim().to_ascii_lowercase().replace('_', "-");
        Self::PRESETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, size)| size)
    }

    /// Reads `WIDTHxHEIGHT` (`"1024x768"`, also with `X`) or a preset name (see
    /// [`Size::preset`]). The range the server accepts is checked when a workflow is built, not
    /// here.
    pub fn parse(text: &str) -> Result<Self, WorkflowError> {
        if let Some(size) = Self::preset(text) {
            return Ok(size);
        }
        let bad = || WorkflowError::BadSize {
            text: text.to_owned(),
        };
        let (w, h) = text.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let w = w.trim().parse().map_err(|_| bad())?;
        let h = h.trim().parse().map_err(|_| bad())?;
        Ok(Self::new(w, h))
    }
}

impl FromStr for Size {
    type Err = WorkflowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `WIDTHxHEIGHT`, which [`Size::parse`] reads back.
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A LoRA to apply, by file name, and its weight (1.0 unless set).
///
/// ```
/// use comfy_proxy::workflow::Lora;
/// let lora = Lora::new("detail.safetensors").weight(0.8);
/// assert_eq!((lora.name.as_str(), lora.weight), ("detail.safetensors", 0.8));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Lora {
    /// The LoRA's file name as the server lists it (`GET /models/loras`).
    pub name: String,
    /// How strongly it applies; the server accepts -100 to 100.
    pub weight: f64,
}

impl Lora {
    /// The LoRA `name` at weight 1.0.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: 1.0,
        }
    }

    /// This LoRA at weight `weight`.
    #[must_use]
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_by_name() {
        assert_eq!(Size::PRESETS.len(), 19);
        for &(name, size) in Size::PRESETS {
            assert_eq!(Size::parse(name), Ok(size));
            assert_eq!(Size::parse(&size.to_string()), Ok(size));
        }
        assert_eq!(Size::preset("SQUARE_2K"), Some(Size::SQUARE_2K));
    }

    #[test]
    fn parse_sizes_and_refusals() {
        assert_eq!(Size::parse(" 640 X 480 "), Ok(Size::new(640, 480)));
        assert_eq!("16x9".parse(), Ok(Size::new(16, 9)));
        for bad in ["", "1024", "x768", "1024x", "-1x5", "1.5x2", "big"] {
            let err = Size::parse(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("video-1080p-landscape"), "{msg}");
        }
    }
}
