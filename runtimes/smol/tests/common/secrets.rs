//! What the secret-handling tests (`logs.rs`, `secrets.rs`) share (each includes this file as
//! its `common` module): the secrets, a client configured with all of them, a one-image graph
//! and a port where nothing listens.

use std::time::Duration;

use comfy_proxy::session::{Backoff, Deadlines, SessionConfig};
use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_smol::{Auth, ClientConfig};

pub const QUERY_SECRET: &str = "q-s3cret/value";
pub const BEARER_SECRET: &str = "b-s3cret-value";
pub const HEADER_SECRET: &str = "h-s3cret-value";

/// Every form a secret could show in: the query token also percent-encoded.
pub const SECRETS: [&str; 4] = [
    QUERY_SECRET,
    "q-s3cret%2Fvalue",
    BEARER_SECRET,
    HEADER_SECRET,
];

/// The secret `text` shows, if any.
pub fn leaked(text: &str) -> Option<&'static str> {
    SECRETS.into_iter().find(|s| text.contains(s))
}

/// One `SaveImageWebsocket` image.
pub fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap()
}

/// A client for `server` with `auth`, the secret header, quick reconnects and a 20 s deadline.
pub fn config(server: ServerAddress, auth: Auth) -> ClientConfig {
    let quick = SessionConfig::default().with_backoff(Backoff::new(
        Duration::from_millis(5),
        Duration::from_millis(20),
        2,
    ));
    ClientConfig::new(server)
        .with_session(quick)
        .with_deadlines(Deadlines::none().total(Duration::from_secs(20)))
        .with_auth(auth)
        .unwrap()
        .with_header("X-Api-Key", HEADER_SECRET)
        .unwrap()
}

/// A loopback port nothing listens on: bound, then let go.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
