//! Opening the websocket with async-tungstenite over whatever stream the runtime connects.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use comfy_proxy::{ServerAddress, TransportError, TransportErrorKind};

use crate::auth::Auth;
use crate::headers::Headers;
use crate::runtime::{Runtime, Stream};
use crate::tls::TlsConfig;

/// The websocket's read buffer: see [`open`].
const READ_BUFFER: usize = 16 << 10;

/// An open websocket.
pub(crate) type Socket = WebSocketStream<Box<dyn Stream>>;

/// What the websocket needs besides the path.
pub(crate) struct WsOptions<'a> {
    pub server: &'a ServerAddress,
    pub auth: &'a Auth,
    /// The auth's headers and the user's, checked when the config was built.
    pub headers: &'a Headers,
    pub tls: &'a TlsConfig,
    pub max_frame_len: usize,
}

/// Connects TCP (and TLS for `wss`), then performs the websocket handshake at `path`. A
/// failure says which step failed and names the server (never the auth query token).
pub(crate) async fn open(
    rt: &dyn Runtime,
    o: &WsOptions<'_>,
    path: &str,
) -> Result<Socket, TransportError> {
    let server = o.server;
    let what = format!("connect to {}", server.authority());
    let tcp = rt
        .connect(server.host(), server.port())
        .await
        .map_err(|e| TransportError::from_io(what.as_str(), e))?;
    let stream = if server.tls() {
        o.tls.connect(server.host(), tcp).await.map_err(|e| {
            TransportError::new(TransportErrorKind::Tls, what.as_str()).with_source(e)
        })?
    } else {
        tcp
    };
    // The URL and headers are the caller's: a failure here is named, not sent.
    let refused = |detail: String| {
        TransportError::new(TransportErrorKind::Handshake, what.as_str()).with_detail(detail)
    };
    let url = server.ws_url(&o.auth.apply_query(path));
    let mut request = url.as_str().into_client_request().map_err(|e| {
        // The URL carries the query token, if any: show the redacted form.
        let shown = server.ws_url(&o.auth.shown_query(path));
        refused(format!("websocket URL {shown}: {e}"))
    })?;
    for (name, value) in o.headers.iter() {
        request.headers_mut().append(name.clone(), value.clone());
    }
    // Reads of 16 KiB instead of tungstenite's 128 KiB: it zeroes the spare room of its read
    // buffer before every read, so small frames (every message but images) cost an eighth; a
    // large image is read in more, smaller reads (256 for 4 MiB).
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(o.max_frame_len))
        .max_frame_size(Some(o.max_frame_len));
    let (socket, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| handshake_error(&what, e))?;
    Ok(socket)
}

/// Sorts a failed websocket handshake: the socket's own failure, or an answer that was not an
/// upgrade.
fn handshake_error(what: &str, e: WsError) -> TransportError {
    match e {
        WsError::Io(io) => TransportError::from_io(what, io),
        WsError::Tls(_) => TransportError::new(TransportErrorKind::Tls, what).with_source(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            TransportError::new(TransportErrorKind::Reset, what).with_source(e)
        }
        WsError::Capacity(_) => {
            TransportError::new(TransportErrorKind::Malformed, what).with_source(e)
        }
        _ => TransportError::new(TransportErrorKind::Handshake, what).with_source(e),
    }
}
