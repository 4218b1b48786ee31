//! Everything that crosses the wire, decoded and encoded without IO.
//!
//! - [`message`]: the server's websocket text messages ([`ServerMessage`]) and the client's
//!   `feature_flags` hello.
//! - [`frame`]: binary websocket frames ([`BinaryFrame`]), decoded without copying the image.
//! - [`http`]: the HTTP requests the client makes ([`HttpRequest`]) and their decoded responses.

pub mod frame;
pub mod http;
pub mod message;

pub use frame::{BinaryFrame, FrameError, ImageFormat, PreviewMetadata};
pub use http::{HttpRequest, HttpResponse, Method, PromptOutcome, PromptRequest};
pub use message::{FileRef, NodeProgress, ProgressNodes, ServerMessage};
