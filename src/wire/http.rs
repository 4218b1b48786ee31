//! The HTTP requests a ComfyUI client makes, as plain descriptions, and their decoded responses.
//!
//! The core never opens a connection: it hands an [`HttpRequest`] to the adapter, which sends it
//! to the server's base URL (scheme, host, base path, auth headers and query are the adapter's)
//! and feeds back an [`HttpResponse`].

use bytes::Bytes;

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
