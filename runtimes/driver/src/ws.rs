//! Opening the websocket with async-tungstenite over whatever stream the runtime connects.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use comfy_proxy::{ServerAddress, TransportError, TransportErrorKind};

use crate::auth::Auth;
use crate::runtime::{Runtime, Stream};

/// An open websocket.
pub(crate) type Socket = WebSocketStream<Box<dyn Stream>>;

/// What the websocket needs besides the path.
pub(crate) struct WsOptions<'a> {
    pub server: &'a ServerAddress,
    pub auth: &'a Auth,
    pub headers: &'a [(String, String)],
    pub verify_tls: bool,
    pub max_frame_len: usize,
}

/// Connects TCP (and TLS for `wss`), then performs the websocket handshake at `path`.
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
        crate::tls::connect(server.host(), tcp, o.verify_tls)
            .await
            .map_err(|e| {
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
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| refused(format!("websocket URL: {e}")))?;
    for (name, value) in o.auth.headers().iter().chain(o.headers) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| refused(format!("header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| refused(format!("header value for {name}: {e}")))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
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
