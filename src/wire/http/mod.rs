//! The HTTP requests a ComfyUI client makes, as plain descriptions, and their decoded responses.
//!
//! The core never opens a connection: it hands an [`HttpRequest`] to the adapter, which sends it
//! to the server's base URL (scheme, host, base path, auth headers and query are the adapter's)
//! and feeds back an [`HttpResponse`].
//!
//! Every endpoint has a builder and a decoder:
//!
//! | endpoint | builder | decoder |
//! | --- | --- | --- |
//! | `POST /prompt` | [`PromptRequest::to_request`] | [`decode_prompt`] -> [`PromptOutcome`] |
//! | `POST /interrupt` | [`interrupt`] | [`decode_interrupt`] |
//! | `GET /queue` | [`queue`] | [`decode_queue`] -> [`QueueState`] |
//! | `POST /queue` | [`queue_delete`], [`queue_clear`] | [`decode_queue_edit`] |
//! | `GET /history/{id}` | [`history`] | [`decode_history`] -> [`HistoryEntry`] |
//! | `GET /history?max_items=` | [`history_recent`] | [`decode_history_all`] |
//! | `POST /history` | [`history_delete`], [`history_clear`] | [`decode_history_edit`] |
//! | `GET /view` | [`view`] | [`decode_view`] (the bytes, not copied) |
//! | `POST /upload/image` | [`upload_image`] | [`decode_upload`] -> [`UploadedFile`] |
//! | `POST /upload/mask` | [`upload_mask`] | [`decode_upload`] -> [`UploadedFile`] |
//! | `GET /object_info` | [`object_info`] | [`decode_object_info`] |
//! | `GET /system_stats` | [`system_stats`] | [`decode_system_stats`] -> [`SystemStats`] |
//! | `GET /features` | [`features`] | [`decode_features`] -> [`ServerFeatures`] |
//! | `GET /models`, `/models/{folder}` | [`models`] | [`decode_models`] |
//! | `GET /embeddings` | [`embeddings`] | [`decode_embeddings`] |
//! | `POST /free` | [`free`] | [`decode_free`] |
//!
//! Decoders never panic. A status the endpoint does not document, a body that is not UTF-8, or
//! JSON of the wrong shape is a [`ProtocolError`](crate::ProtocolError) naming the endpoint. A
//! `400` from `/prompt` is not an error of the protocol: it is the server's typed answer,
//! [`PromptOutcome::Rejected`]. Fields a server leaves out, or has added since, do not make a
//! response fail: missing ones take a default, unknown ones are ignored. Numbers are accepted as
//! integers or floats (`1` and `1.0`).

use bytes::Bytes;

mod decode;
mod history;
mod prompt;
mod requests;
mod responses;

pub use history::{
    HistoryEntry, HistoryStatus, QueueItem, QueuePosition, QueueState, decode_history,
    decode_history_all, decode_queue,
};
pub use prompt::{
    ErrorInfo, NodeError, NodeErrors, PromptAccepted, PromptOutcome, PromptRejected, decode_prompt,
};
pub(crate) use requests::post_prompt;
pub use requests::{
    PromptRequest, UploadError, embeddings, features, free, history, history_clear, history_delete,
    history_recent, interrupt, models, object_info, queue, queue_clear, queue_delete, system_stats,
    upload_image, upload_mask, view, websocket_path,
};
pub use responses::{
    Device, ServerFeatures, SystemStats, UploadedFile, decode_embeddings, decode_features,
    decode_free, decode_history_edit, decode_interrupt, decode_models, decode_object_info,
    decode_queue_edit, decode_system_stats, decode_upload, decode_view,
};

/// An HTTP method the ComfyUI API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
}

impl Method {
    /// The method's name as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// One request to the server, relative to its base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// Path and query below the server's base path, starting with `/` (`/history/ID`,
    /// `/view?filename=a.png&subfolder=&type=output`). Query values are already percent-encoded.
    pub path: String,
    /// The body, if any.
    pub body: Option<Body>,
}

/// A request body and its media type.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// The `Content-Type` header value.
    pub content_type: String,
    /// The bytes to send.
    pub bytes: Vec<u8>,
}

/// A response as the adapter received it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A response with the given status and body.
    pub fn new(status: u16, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            body: body.into(),
        }
    }
}
