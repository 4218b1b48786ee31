//! Secrets over real sockets: a client configured with a query token, a bearer token and a
//! secret header runs its jobs, yet no secret appears in an error's `Display`, a config's or
//! client's `Debug`, or a `--record` transcript.

use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::ServerAddress;
use comfy_proxy_driver::Runtime;
use comfy_proxy_mock::{self as mock, MockConfig};
use comfy_proxy_smol::{Auth, Smol, connect};

#[path = "common/secrets.rs"]
mod common;
use common::{BEARER_SECRET, QUERY_SECRET, config, dead_port, graph, leaked};

fn assert_no_secret(text: &str) {
    if let Some(secret) = leaked(text) {
        panic!("{secret} leaked: {text}");
    }
}

#[test]
fn a_refused_request_names_the_url_without_its_token() {
    smol::block_on(async {
        let port = dead_port();
        let server = ServerAddress::parse(&format!("127.0.0.1:{port}")).unwrap();
        let auth = Auth::Query {
            name: "token".into(),
            value: QUERY_SECRET.into(),
        };
        let config = config(server, auth);
        assert_no_secret(&format!("{config:?}"));
        let client = connect(config);
        assert_no_secret(&format!("{client:?}"));
        let error = client
            .request(comfy_proxy::wire::http::system_stats())
            .await
            .unwrap_err();
        let shown = error.to_string();
        assert_no_secret(&shown);
        assert_no_secret(&format!("{error:?}"));
        assert!(shown.contains("token=<redacted>"), "{shown}");
        assert!(shown.contains(&format!("127.0.0.1:{port}")), "{shown}");
    });
}

#[test]
fn a_recorded_transcript_holds_no_secret() {
    smol::block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(Smol);
        let mut c = MockConfig::default();
        c.step = Duration::from_millis(1);
        c.job = Duration::from_millis(2);
        let mock = mock::serve(rt, "127.0.0.1:0".parse().unwrap(), c)
            .await
            .unwrap();
        let server = ServerAddress::parse(&mock.address()).unwrap();
        let dir = std::env::temp_dir().join(format!("comfy-proxy-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for auth in [
            Auth::Query {
                name: "token".into(),
                value: QUERY_SECRET.into(),
            },
            Auth::Bearer(BEARER_SECRET.into()),
        ] {
            let client = connect(config(server.clone(), auth).with_recording(&dir));
            let result = client.run(graph()).await.expect("the job runs");
            assert_eq!(result.outputs.len(), 1);
        }
        let mut transcripts = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(text.contains("/prompt"), "{text}");
            assert_no_secret(&text);
            transcripts += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(transcripts, 2);
    });
}
