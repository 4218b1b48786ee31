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

/// Connects TCP (and TLS for `wss`), then performs the websocket handshake at `path`. A
/// failure says which step failed and names the server (never the auth query token).
pub(crate) async fn open(
    rt: &dyn Runtime,
    o: &WsOptions<'_>,
    path: &str,
) -> Result<Socket, TransportError> {
    let server = o.server;
    let what = || format!("connect to {}", server.authority());
    let tcp = rt
        .connect(server.host(), server.port())
        .await
        .map_err(|e| TransportError::from_io(what(), e))?;
    let stream = if server.tls() {
        crate::tls::connect(server.host(), tcp, o.verify_tls)
            .await
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Tls,
                    format!("TLS with {}", server.authority()),
                )
                .with_source(e)
            })?
    } else {
        tcp
    };
    let url = server.ws_url(&o.auth.apply_query(path));
    let local =
        |detail: String| TransportError::new(TransportErrorKind::Io, what()).with_detail(detail);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| local(format!("websocket URL: {e}")))?;
    for (name, value) in o.auth.headers().iter().chain(o.headers) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| local(format!("header name {name:?}: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| local(format!("header value for {name}: {e}")))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(o.max_frame_len))
        .max_frame_size(Some(o.max_frame_len));
    let (socket, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| handshake_error(server, e))?;
    Ok(socket)
}

fn handshake_error(server: &ServerAddress, e: WsError) -> TransportError {
    let what = format!("websocket handshake with {}", server.authority());
    let kind = match &e {
        WsError::Io(io) => return TransportError::from_io(what, std::io::Error::new(io.kind(), e)),
        WsError::Tls(_) => TransportErrorKind::Tls,
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportErrorKind::Reset,
        _ => TransportErrorKind::Handshake,
    };
    TransportError::new(kind, what).with_source(e)
}
