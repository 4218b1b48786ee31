//! The hidden `serve` mode: N simulating mock servers on loopback, until standard input closes.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use comfy_proxy_driver::Runtime;
use comfy_proxy_mock as mock;
use comfy_proxy_mock::{ImageSpec, MockConfig, Renderer};
use comfy_proxy_smol::Smol;

use crate::Args;

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Sends the same blob for every image: a PNG signature and deterministic noise, made once, so
/// that the server spends nothing encoding (it need not decode as a PNG).
struct Blob {
    png: Bytes,
}

impl Blob {
    fn new(len: usize, seed: u64) -> Self {
        let mut data = Vec::with_capacity(len);
        data.extend_from_slice(PNG_SIGNATURE);
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while data.len() < len {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            let take = (len - data.len()).min(word.len());
            data.extend_from_slice(&word[..take]);
        }
        Self {
            png: Bytes::from(data),
        }
    }
}

impl Renderer for Blob {
    fn png(&self, _: &ImageSpec) -> Bytes {
        self.png.clone()
    }

    fn jpeg(&self, _: &ImageSpec) -> Bytes {
        // Previews are off in every scenario; a bare JPEG start and end marker if asked anyway.
        Bytes::from_static(b"\xff\xd8\xff\xd9")
    }
}

/// Parses a comma-separated list of job times in milliseconds, one for all or one per instance.
pub fn job_times(list: &str, instances: usize) -> Result<Vec<u64>, String> {
    let times = list
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<u64>()
                .map_err(|_| format!("job time {t:?} is not a number of milliseconds"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match times.len() {
        1 => Ok(vec![times[0]; instances]),
        n if n == instances => Ok(times),
        n => Err(format!("{n} job times for {instances} instances")),
    }
}

/// `serve --instances N --job-ms LIST --image-bytes B`.
pub fn main(args: &Args) -> Result<(), String> {
    let instances: usize = args.num("instances")?;
    let times = job_times(args.get("job-ms")?, instances)?;
    let image_bytes: usize = args.num("image-bytes")?;
    if instances == 0 || image_bytes < PNG_SIGNATURE.len() {
        return Err("serve needs at least one instance and images of 8 bytes or more".into());
    }
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let handles = smol::block_on(async {
        let mut handles = Vec::new();
        for (i, ms) in times.iter().enumerate() {
            let mut config = MockConfig::default();
            // A fixed time per job: no sampler in the graph, so `job` is the whole run.
            config.job = Duration::from_millis(*ms);
            config.step = Duration::ZERO;
            config.previews = false;
            config.seed = i as u64 + 1;
            let renderer = Box::new(Blob::new(image_bytes, i as u64 + 1));
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let handle = mock::serve_with_renderer(rt.clone(), loopback, config, renderer)
                .await
                .map_err(|e| format!("bind a loopback port: {e}"))?;
            handles.push(handle);
        }
        Ok::<_, String>(handles)
    })?;
    let line: Vec<String> = handles.iter().map(|h| h.address()).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", line.join(",")).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    // The servers run on smol's executor threads; this one waits for the harness to go.
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()).map_err(|e| e.to_string())?;
    drop(handles);
    Ok(())
}
