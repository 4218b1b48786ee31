//! Opening the websocket with async-tungstenite over whatever stream the runtime connects.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use comfy_proxy::ServerAddress;

use crate::auth::Auth;
use crate::runtime::{Runtime, Stream};
use crate::tls::TlsConfig;

/// An open websocket.
pub(crate) type Socket = WebSocketStream<Box<dyn Stream>>;

/// What the websocket needs besides the path.
pub(crate) struct WsOptions<'a> {
    pub server: &'a ServerAddress,
    pub auth: &'a Auth,
    pub headers: &'a [(String, String)],
    pub tls: &'a TlsConfig,
    pub max_frame_len: usize,
}

/// Connects TCP (and TLS for `wss`), then performs the websocket handshake at `path`.
pub(crate) async fn open(
    rt: &dyn Runtime,
    o: &WsOptions<'_>,
    path: &str,
) -> Result<Socket, String> {
    let server = o.server;
    let tcp = rt
        .connect(server.host(), server.port())
        .await
        .map_err(|e| format!("connect to {}: {e}", server.authority()))?;
    let stream = if server.tls() {
        o.tls
            .connect(server.host(), tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", server.authority()))?
    } else {
        tcp
    };
    let url = server.ws_url(&o.auth.apply_query(path));
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("websocket URL: {e}"))?;
    for (name, value) in o.auth.headers().iter().chain(o.headers) {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header name {name:?}: {e}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|e| format!("header value for {name}: {e}"))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(o.max_frame_len))
        .max_frame_size(Some(o.max_frame_len));
    let (socket, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("websocket handshake with {}: {e}", server.authority()))?;
    Ok(socket)
}
