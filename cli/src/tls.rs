//! The TLS flags of every command that connects to servers: `--ca-cert FILE` and `--insecure`.

use std::path::PathBuf;

use clap::Args;
use comfy_proxy::ServerAddress;
use comfy_proxy_driver::{Auth, ClientConfig};

use crate::error::{Result, usage};

/// How to check the servers' TLS certificates (`https://` servers).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Trust the root CA certificates in this PEM file besides the usual web roots, for servers
    /// whose certificates come from a private CA. Certificates are still verified.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Accept any TLS certificate without verifying it. Only for servers you trust by other
    /// means: anyone on the path can read and change the traffic, tokens included.
    #[arg(long, conflicts_with = "ca_cert")]
    pub insecure: bool,
}

impl TlsArgs {
    /// `config` with these settings applied. A CA file that cannot be read or holds no usable
    /// certificate is a usage error naming the file and the problem.
    pub fn apply(&self, mut config: ClientConfig) -> Result<ClientConfig> {
        if let Some(file) = &self.ca_cert {
            config = config
                .with_root_ca_file(file)
                .map_err(|e| usage(format!("bad --ca-cert: {e}")))?;
        }
        if self.insecure {
            eprintln!("warning: --insecure: TLS certificates are not verified");
            config = config.danger_accept_invalid_certs();
        }
        Ok(config)
    }
}

/// A client configuration for `server`: these TLS settings, and `$COMFY_TOKEN` as a bearer
/// token when it is set. Every command that connects builds its configuration here.
pub fn client_config(server: ServerAddress, tls: &TlsArgs) -> Result<ClientConfig> {
    let mut config = tls.apply(ClientConfig::new(server))?;
    let token = std::env::var("COMFY_TOKEN").unwrap_or_default();
    if !token.trim().is_empty() {
        config = config
            .with_auth(Auth::Bearer(token.trim().to_owned()))
            .map_err(|e| usage(format!("bad COMFY_TOKEN: {e}")))?;
    }
    Ok(config)
}
