//! Pictures for the mock server: PNG outputs and JPEG previews drawn from the seed, so that
//! every job's image differs and is worth looking at.

use std::f32::consts::{PI, TAU};

use bytes::Bytes;

/// What to draw: a size, a seed and the image's position in its batch; previews also carry
/// the sampling step, and are drawn blurrier the earlier the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The job's seed.
    pub seed: u64,
    /// The position in the batch.
    pub index: u32,
    /// For previews: (step, steps).
    pub step: Option<(u32, u32)>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// RGB pixels of the picture: overlapping waves whose phases and colours come from the seed.
pub fn pixels(p: &Picture) -> Vec<u8> {
    let (w, h) = (
        p.width.clamp(1, 16384) as usize,
        p.height.clamp(1, 16384) as usize,
    );
    let r = splitmix(p.seed ^ u64::from(p.index).wrapping_mul(0x1000_0001));
    let f = |k: u32| ((r >> (k * 8)) & 0xFF) as f32 / 255.0;
    let (fx, fy, fd) = (2.0 + 6.0 * f(0), 2.0 + 6.0 * f(1), 1.0 + 4.0 * f(2));
    let (pa, pb, pc) = (TAU * f(3), TAU * f(4), TAU * f(5));
    let base = [f(6), f(7), 0.5 + 0.5 * f(0)];
    let sharp = match p.step {
        Some((step, steps)) if steps > 0 => (step as f32 / steps as f32).clamp(0.05, 1.0),
        _ => 1.0,
    };
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let v = y as f32 / h as f32;
        for x in 0..w {
            let u = x as f32 / w as f32;
            let a = (u * fx * PI + pa).sin();
            let b = (v * fy * PI + pb).sin();
            let c = (((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt() * fd * 12.0 + pc).sin();
            let t = (a + b + c) / 3.0 * sharp;
            for (i, base) in base.iter().enumerate() {
                let value = 0.5 + 0.5 * (t * 3.0 + base * TAU + i as f32 * 2.1).sin();
                out.push((value * 255.0) as u8);
            }
        }
    }
    out
}

/// The picture as a PNG.
pub fn png(p: &Picture) -> Bytes {
    let data = pixels(p);
    let mut out = Vec::new();
    let mut encoder =
        png::Encoder::new(&mut out, p.width.clamp(1, 16384), p.height.clamp(1, 16384));
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let written = encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&data));
    debug_assert!(written.is_ok());
    Bytes::from(out)
}

/// The picture as a small JPEG (previews are shrunk to at most 256 pixels a side, as ComfyUI's
/// latent previews are small).
pub fn jpeg(p: &Picture) -> Bytes {
    let scale = (p.width.max(p.height) as f32 / 256.0).max(1.0);
    let small = Picture {
        width: ((p.width as f32 / scale) as u32).max(1),
        height: ((p.height as f32 / scale) as u32).max(1),
        ..*p
    };
    let data = pixels(&small);
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, 75);
    let encoded = encoder.encode(
        &data,
        small.width as u16,
        small.height as u16,
        jpeg_encoder::ColorType::Rgb,
    );
    debug_assert!(encoded.is_ok());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use comfy_proxy::wire::ImageFormat;

    #[test]
    fn formats_and_seeds() {
        let p = Picture {
            width: 64,
            height: 48,
            seed: 7,
            index: 0,
            step: None,
        };
        assert_eq!(ImageFormat::sniff(&png(&p)), Some(ImageFormat::Png));
        assert_eq!(ImageFormat::sniff(&jpeg(&p)), Some(ImageFormat::Jpeg));
        assert_ne!(pixels(&p), pixels(&Picture { seed: 8, ..p }));
        assert_ne!(pixels(&p), pixels(&Picture { index: 1, ..p }));
    }
}
