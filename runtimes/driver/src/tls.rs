//! TLS for `https`/`wss` servers: rustls with the ring crypto provider, webpki's roots and any
//! root CA the caller adds. Certificates are verified unless the caller opts out explicitly.
//!
//! A [`TlsConfig`] is built once, when the [`ClientConfig`](crate::ClientConfig) is, and shared
//! by every HTTP exchange and websocket of that client (and by the clones of the config): a
//! connection costs a handshake, never a new root store.

use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

use futures_rustls::TlsConnector;
use futures_rustls::pki_types::pem::PemObject;
use futures_rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use futures_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use futures_rustls::rustls::crypto::{
    CryptoProvider, ring, verify_tls12_signature, verify_tls13_signature,
};
use futures_rustls::rustls::{self, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::auth::{CertificateProblem, ConfigError};
use crate::runtime::Stream;

/// The TLS settings of one client: a shared rustls configuration and how it was made.
/// Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    rustls: Arc<rustls::ClientConfig>,
    /// Root CAs added to webpki's, kept so that a later change rebuilds with them.
    extra_roots: Arc<[CertificateDer<'static>]>,
    verify: bool,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("verify", &self.verify)
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl Default for TlsConfig {
    /// Verifies certificates against webpki's roots. Every default config in the process shares
    /// one rustls configuration.
    fn default() -> Self {
        static WEBPKI: OnceLock<TlsConfig> = OnceLock::new();
        WEBPKI
            .get_or_init(|| Self::build(Arc::from(Vec::new()), true))
            .clone()
    }
}

impl TlsConfig {
    /// Verifies certificates against webpki's roots (the default).
    pub fn webpki() -> Self {
        Self::default()
    }

    /// These settings with the root CAs in `pem` (one or more `CERTIFICATE` sections) trusted
    /// besides webpki's. `origin` names where the bytes came from (a file name) in errors.
    pub fn with_root_ca_pem(&self, origin: &str, pem: &[u8]) -> Result<Self, ConfigError> {
        let problem = |problem| ConfigError::CaCertificate {
            origin: origin.to_owned(),
            problem,
        };
        let mut added = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem) {
            added.push(cert.map_err(|e| problem(CertificateProblem::Pem(e)))?);
        }
        if added.is_empty() {
            return Err(problem(CertificateProblem::NoCertificate));
        }
        // Each certificate must be usable as a trust anchor; a broken one is refused now,
        // rather than failing every handshake later.
        let mut probe = RootCertStore::empty();
        for cert in &added {
            probe
                .add(cert.clone())
                .map_err(|e| problem(CertificateProblem::Unusable(e)))?;
        }
        let roots: Vec<_> = self.extra_roots.iter().cloned().chain(added).collect();
        Ok(Self::build(Arc::from(roots), self.verify))
    }

    /// These settings, accepting any certificate: only for servers the user trusts by other
    /// means (a self-signed certificate on a private farm), and only when asked for.
    pub fn danger_accept_invalid_certs(&self) -> Self {
        Self::build(self.extra_roots.clone(), false)
    }

    /// Whether certificates are verified.
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// How many root CAs were added to webpki's.
    pub fn extra_roots(&self) -> usize {
        self.extra_roots.len()
    }

    /// The shared rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ClientConfig> {
        &self.rustls
    }

    /// A connector over the shared configuration.
    pub fn connector(&self) -> TlsConnector {
        TlsConnector::from(self.rustls.clone())
    }

    /// Wraps `tcp` in TLS for `host`. A certificate that fails verification is an error whose
    /// message names the problem (`invalid peer certificate: UnknownIssuer`, ...).
    pub async fn connect(&self, host: &str, tcp: Box<dyn Stream>) -> io::Result<Box<dyn Stream>> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad TLS server name {host:?}: {e}"),
            )
        })?;
        let stream = self.connector().connect(name, tcp).await?;
        Ok(Box::new(stream))
    }

    fn build(extra_roots: Arc<[CertificateDer<'static>]>, verify: bool) -> Self {
        let provider = Arc::new(ring::default_provider());
        // The ring provider supports TLS 1.2 and 1.3 with its default suites, so this cannot
        // fail: `with_safe_default_protocol_versions` only refuses a provider without suites.
        #[allow(clippy::expect_used)]
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions");
        let config = if verify {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            // Checked when they were added (`with_root_ca_pem`).
            roots.add_parsable_certificates(extra_roots.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        };
        Self {
            rustls: Arc::new(config),
            extra_roots,
            verify,
        }
    }
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configs_share_one_rustls_config() {
        let a = TlsConfig::default();
        let b = TlsConfig::webpki();
        assert!(Arc::ptr_eq(a.rustls(), b.rustls()));
        assert!(a.verifies());
        assert!(!a.danger_accept_invalid_certs().verifies());
    }

    #[test]
    fn bad_pem_is_refused_naming_its_origin() {
        let none = TlsConfig::default()
            .with_root_ca_pem("ca.pem", b"not a certificate")
            .unwrap_err();
        assert!(matches!(
            none,
            ConfigError::CaCertificate {
                problem: CertificateProblem::NoCertificate,
                ..
            }
        ));
        assert!(none.to_string().contains("ca.pem"), "{none}");
        let broken = TlsConfig::default()
            .with_root_ca_pem(
                "ca.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .unwrap_err();
        assert!(
            matches!(broken, ConfigError::CaCertificate { .. }),
            "{broken:?}"
        );
    }
}
