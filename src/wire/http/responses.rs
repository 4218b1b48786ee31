//! The other endpoints: commands with empty answers (`/interrupt`, `POST /queue`, `/free`), files
//! (`/upload/image`, `/view`) and server information (`/system_stats`, `/features`,
//! `/object_info`, `/models`, `/embeddings`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::HttpResponse;
use super::decode::{Size, check_status, parse_any, parse_ok, text};
use crate::error::ProtocolError;
use crate::wire::message::FileRef;

/// Decodes `POST /interrupt` ([`interrupt`](super::interrupt)): any 2xx, whatever the body.
pub fn decode_interrupt(resp: &HttpResponse) -> Result<(), ProtocolError> {
    check_status(resp, "/interrupt response")
}

/// Decodes `POST /queue` ([`queue_delete`](super::queue_delete),
/// [`queue_clear`](super::queue_clear)): any 2xx, whatever the body.
pub fn decode_queue_edit(resp: &HttpResponse) -> Result<(), ProtocolError> {
    check_status(resp, "POST /queue response")
}

/// Decodes `POST /history` ([`history_delete`](super::history_delete),
/// [`history_clear`](super::history_clear)): any 2xx, whatever the body.
pub fn decode_history_edit(resp: &HttpResponse) -> Result<(), ProtocolError> {
    check_status(resp, "POST /history response")
}

/// Decodes `POST /free` ([`free`](super::free)): any 2xx, whatever the body.
pub fn decode_free(resp: &HttpResponse) -> Result<(), ProtocolError> {
    check_status(resp, "/free response")
}

// ---------------------------------------------------------------------------------------------
// Files

/// Where `/upload/image` or `/upload/mask` stored a file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct UploadedFile {
    /// The stored name: use this one, the server renames a file whose name was taken.
    pub name: String,
    /// The subfolder it went to.
    #[serde(default, deserialize_with = "text")]
    pub subfolder: String,
    /// `input`, `temp` or `output`.
    #[serde(rename = "type", default = "input_kind")]
    pub kind: String,
}

fn input_kind() -> String {
    "input".to_owned()
}

impl UploadedFile {
    /// The value a `LoadImage` node's `image` input takes for this file: `subfolder/name`, or
    /// `name` when there is no subfolder.
    pub fn input_value(&self) -> String {
        if self.subfolder.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.subfolder, self.name)
        }
    }

    /// The file as [`view`](super::view) names it.
    pub fn file_ref(&self) -> FileRef {
        FileRef {
            filename: self.name.clone(),
            subfolder: self.subfolder.clone(),
            kind: self.kind.clone(),
        }
    }
}

/// Decodes `POST /upload/image` ([`upload_image`](super::upload_image)) and `POST /upload/mask`
/// ([`upload_mask`](super::upload_mask)), whose answers have the same shape.
pub fn decode_upload(resp: &HttpResponse) -> Result<UploadedFile, ProtocolError> {
    parse_ok(resp, "/upload/image response")
}

/// Decodes `GET /view` ([`view`](super::view)): the file's bytes, as a handle to the response's
/// own buffer (no copy).
pub fn decode_view(resp: &HttpResponse) -> Result<Bytes, ProtocolError> {
    check_status(resp, "/view response")?;
    Ok(resp.body.clone())
}

// ---------------------------------------------------------------------------------------------
// Server information

/// One compute device of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Device {
    /// The device's name (`cpu`, `cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync`).
    pub name: String,
    /// `cpu`, `cuda`, `mps`, ...
    pub kind: String,
    /// Its memory in bytes (RAM for the CPU).
    pub vram_total: u64,
    /// Its free memory in bytes.
    pub vram_free: u64,
}

/// `GET /system_stats`: versions and memory. Fields a server leaves out are `None` or 0.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SystemStats {
    /// ComfyUI's version (`0.3.64`).
    pub comfyui_version: Option<String>,
    /// Python's version string.
    pub python_version: Option<String>,
    /// PyTorch's version (`2.8.0+cu128`).
    pub pytorch_version: Option<String>,
    /// The compute devices.
    pub devices: Vec<Device>,
    /// The machine's RAM in bytes.
    pub ram_total: u64,
    /// Its free RAM in bytes.
    pub ram_free: u64,
}

#[derive(Deserialize)]
struct DeviceWire {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    vram_total: Option<Size>,
    #[serde(default)]
    vram_free: Option<Size>,
}

#[derive(Deserialize, Default)]
struct SystemWire {
    #[serde(default)]
    comfyui_version: Option<String>,
    #[serde(default)]
    python_version: Option<String>,
    #[serde(default)]
    pytorch_version: Option<String>,
    #[serde(default)]
    ram_total: Option<Size>,
    #[serde(default)]
    ram_free: Option<Size>,
}

#[derive(Deserialize)]
struct StatsWire {
    #[serde(default)]
    system: Option<SystemWire>,
    #[serde(default)]
    devices: Option<Vec<DeviceWire>>,
}

fn size(s: Option<Size>) -> u64 {
    s.map_or(0, |s| s.0)
}

/// Decodes `GET /system_stats` ([`system_stats`](super::system_stats)).
pub fn decode_system_stats(resp: &HttpResponse) -> Result<SystemStats, ProtocolError> {
    let wire: StatsWire = parse_ok(resp, "/system_stats response")?;
    let system = wire.system.unwrap_or_default();
    Ok(SystemStats {
        comfyui_version: system.comfyui_version,
        python_version: system.python_version,
        pytorch_version: system.pytorch_version,
        devices: (wire.devices.unwrap_or_default().into_iter())
            .map(|d| Device {
                name: d.name.unwrap_or_default(),
                kind: d.kind.unwrap_or_default(),
                vram_total: size(d.vram_total),
                vram_free: size(d.vram_free),
            })
            .collect(),
        ram_total: size(system.ram_total),
        ram_free: size(system.ram_free),
    })
}

/// `GET /features`: what the server supports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerFeatures {
    /// Whether the server sends type 4 preview frames to clients that send the feature flag.
    pub supports_preview_metadata: bool,
    /// The largest upload it accepts, in bytes.
    pub max_upload_size: Option<u64>,
}

#[derive(Deserialize)]
struct FeaturesWire {
    #[serde(default)]
    supports_preview_metadata: Option<bool>,
    #[serde(default)]
    max_upload_size: Option<Size>,
}

/// Decodes `GET /features` ([`features`](super::features)).
pub fn decode_features(resp: &HttpResponse) -> Result<ServerFeatures, ProtocolError> {
    let wire: FeaturesWire = parse_ok(resp, "/features response")?;
    Ok(ServerFeatures {
        supports_preview_metadata: wire.supports_preview_metadata.unwrap_or(false),
        max_upload_size: wire.max_upload_size.map(|s| s.0),
    })
}

/// Decodes `GET /object_info[/{class}]` ([`object_info`](super::object_info)): checks that the
/// body is a JSON object (class name -> description) and returns it as is.
pub fn decode_object_info(resp: &HttpResponse) -> Result<Value, ProtocolError> {
    parse_ok(resp, "/object_info response")
}

/// Decodes `GET /models` or `GET /models/{folder}` ([`models`](super::models)): folder names or
/// file names.
pub fn decode_models(resp: &HttpResponse) -> Result<Vec<String>, ProtocolError> {
    check_status(resp, "/models response")?;
    parse_any(resp, "/models response")
}

/// Decodes `GET /embeddings` ([`embeddings`](super::embeddings)): embedding names.
pub fn decode_embeddings(resp: &HttpResponse) -> Result<Vec<String>, ProtocolError> {
    check_status(resp, "/embeddings response")?;
    parse_any(resp, "/embeddings response")
}
