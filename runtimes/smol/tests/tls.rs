//! TLS end to end: a mock server with a self-signed certificate. The client verifies
//! certificates by default (the run fails, naming the certificate) and accepts this one only
//! when the user opts out explicitly; then `https` and `wss` both carry the job.

use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::session::Failure;
use comfy_proxy::session::{Backoff, SessionConfig};
use comfy_proxy::{ServerAddress, TransportErrorKind};
use comfy_proxy::{Workflow, session::Deadlines};
use comfy_proxy_driver::Runtime;
use comfy_proxy_mock as mock;
use comfy_proxy_mock::MockConfig;
use comfy_proxy_smol::{ClientConfig, ClientError, Smol, connect};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use futures_rustls::rustls::{self, crypto::ring};

fn server_config() -> Arc<rustls::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    Arc::new(config)
}

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap()
}

#[test]
fn https_and_wss_verify_certificates_unless_told_not_to() {
    smol::block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(Smol);
        let mut c = MockConfig::default();
        c.step = Duration::from_millis(1);
        c.job = Duration::from_millis(2);
        let mock = mock::serve_tls(rt, "127.0.0.1:0".parse().unwrap(), c, server_config())
            .await
            .unwrap();
        let server =
            ServerAddress::parse(&format!("https://localhost:{}", mock.addr().port())).unwrap();
        let quick = SessionConfig::default().with_backoff(Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
            2,
        ));
        let config = ClientConfig::new(server)
            .with_session(quick)
            .with_deadlines(Deadlines::none().total(Duration::from_secs(20)));

        // Verified by default: a self-signed certificate is refused.
        match connect(config.clone()).run(graph()).await {
            Err(ClientError::Failed(Failure::Disconnected { .. } | Failure::Unreachable(_))) => {}
            other => panic!("a self-signed certificate must be refused: {other:?}"),
        }
        // Refused with the reason, on HTTPS too.
        let request = comfy_proxy::wire::http::system_stats();
        match connect(config.clone()).request(request).await {
            Err(ClientError::Transport(e)) => {
                assert_eq!(e.kind, TransportErrorKind::Tls, "{e}");
                assert!(
                    std::error::Error::source(&e).is_some(),
                    "rustls's error is kept"
                );
            }
            other => panic!("a self-signed certificate must be refused: {other:?}"),
        }

        // Opted out explicitly: the job runs over wss and https.
        let result = connect(config.danger_accept_invalid_certs())
            .run(graph())
            .await
            .expect("runs over TLS");
        assert_eq!(result.outputs.len(), 1);
    });
}
