//! TLS end to end: a mock server with a certificate from a private CA. The client verifies
//! certificates by default (the run fails, naming the certificate problem); given the CA, it
//! verifies and accepts the certificate; and it accepts any certificate only when the user opts
//! out explicitly. `https` and `wss` both carry the job in the last two cases.

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

/// A private CA (its PEM) and a server configuration with a `localhost` certificate it issued.
fn ca_and_server_config() -> (String, Arc<rustls::ServerConfig>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "comfy-proxy test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let cert = CertificateDer::from(leaf.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    (ca.pem(), Arc::new(config))
}

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyImage","inputs":{"width":64,"height":64,"batch_size":1,"color":0}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["1",0]}}}"#,
    )
    .unwrap()
}

#[test]
fn https_and_wss_verify_certificates_against_a_given_ca_unless_told_not_to() {
    smol::block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(Smol);
        let mut c = MockConfig::default();
        c.step = Duration::from_millis(1);
        c.job = Duration::from_millis(2);
        let (ca_pem, server_config) = ca_and_server_config();
        let mock = mock::serve_tls(rt, "127.0.0.1:0".parse().unwrap(), c, server_config)
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

        // Verified by default: a certificate from an unknown CA is refused.
        match connect(config.clone()).run(graph()).await {
            Err(ClientError::Failed(f @ Failure::Unreachable(_))) => {
                assert!(f.to_string().contains("certificate"), "{f}")
            }
            other => panic!("an unknown CA must be refused: {other:?}"),
        }
        // Refused with the reason, on HTTPS too.
        let request = comfy_proxy::wire::http::system_stats();
        match connect(config.clone()).request(request.clone()).await {
            Err(ClientError::Transport(e)) => {
                assert_eq!(e.kind, TransportErrorKind::Tls, "{e}");
                assert!(
                    std::error::Error::source(&e).is_some(),
                    "rustls's error is kept"
                );
                let text = e.to_string().to_lowercase();
                assert!(
                    text.contains("certificate") && text.contains("issuer"),
                    "{text}"
                );
            }
            other => panic!("an unknown CA must be refused: {other:?}"),
        }

        // Given the CA (as a file, as the command does): verified, and the job runs over wss
        // and https.
        let dir = std::env::temp_dir().join(format!("comfy-proxy-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        let with_ca = config.clone().with_root_ca_file(&ca_file).unwrap();
        assert!(with_ca.tls.verifies());
        assert_eq!(with_ca.tls.extra_roots(), 1);
        let client = connect(with_ca.clone());
        let result = client.run(graph()).await.expect("runs over verified TLS");
        assert_eq!(result.outputs.len(), 1);
        let stats = client.request(request).await.expect("verified https");
        assert_eq!(stats.status, 200);
        let _ = std::fs::remove_dir_all(&dir);

        // The CA does not vouch for another name: 127.0.0.1 is not in the certificate.
        let by_ip =
            ServerAddress::parse(&format!("https://127.0.0.1:{}", mock.addr().port())).unwrap();
        let mut by_ip_config = with_ca.clone();
        by_ip_config.server = by_ip;
        let wrong_name = connect(by_ip_config)
            .request(comfy_proxy::wire::http::system_stats())
            .await
            .unwrap_err()
            .to_string()
            .to_lowercase();
        assert!(wrong_name.contains("certificate"), "{wrong_name}");

        // Opted out explicitly: the job runs over wss and https.
        let result = connect(config.danger_accept_invalid_certs())
            .run(graph())
            .await
            .expect("runs over TLS");
        assert_eq!(result.outputs.len(), 1);
    });
}
