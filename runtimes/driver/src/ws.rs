//! Opening the websocket with async-tungstenite over whatever stream the runtime connects.

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use comfy_proxy::ServerAddress;

use crate::auth::Auth;
use crate::headers::Headers;
use crate::runtime::{Runtime, Stream};
use crate::tls::TlsConfig;

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
    let mut request = url.as_str().into_client_request().map_err(|e| {
        // The URL carries the query token, if any: show the redacted form.
        let shown = server.ws_url(&o.auth.shown_query(path));
        format!("websocket URL {shown}: {e}")
    })?;
    for (name, value) in o.headers.iter() {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(o.max_frame_len))
        .max_frame_size(Some(o.max_frame_len));
    let (socket, _) = async_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("websocket handshake with {}: {e}", server.authority()))?;
    Ok(socket)
}
