//! `comfy-proxy validate`: check a graph against a server's `object_info` before sending it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use comfy_proxy::ServerAddress;
use comfy_proxy::text::{terminal_safe, terminal_safe_json};
use comfy_proxy::wire::http;
use comfy_proxy::workflow::{ObjectInfo, validate};
use comfy_proxy_driver::ClientConfig;
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{HttpClient, Runtime};
use comfy_proxy_smol::Smol;

use crate::error::{Result, runtime, usage};

/// Arguments of `validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The workflow to check: API or UI-format JSON, or a PNG or WebP saved by ComfyUI.
    #[arg(value_name = "FILE")]
    pub graph: PathBuf,
    /// An object_info document saved from a server (`GET /object_info`).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "server",
        required_unless_present = "server"
    )]
    pub object_info: Option<PathBuf>,
    /// A server to fetch object_info from.
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// Print `{"valid", "error", "node_errors"}` as one JSON line instead of sentences.
    #[arg(long)]
    pub json: bool,
    /// `--ca-cert`, `--insecure` (with --server).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// Loads the object_info document named by the arguments.
fn object_info(args: &ValidateArgs) -> Result<ObjectInfo> {
    let json: serde_json::Value = match (&args.object_info, &args.server) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
            serde_json::from_str(&text)
                .map_err(|e| usage(format!("{} is not JSON: {e}", file.display())))?
        }
        (None, Some(server)) => {
            let server =
                ServerAddress::parse(server).map_err(|e| usage(format!("bad --server: {e}")))?;
            fetch(&args.tls.apply(ClientConfig::new(server))?)?
        }
        (None, None) => return Err(usage("give --object-info FILE or --server ADDR")),
    };
    ObjectInfo::from_value(&json).map_err(|e| usage(format!("not an object_info document: {e}")))
}

/// `GET /object_info` from the server of `config`.
pub fn fetch(config: &ClientConfig) -> Result<serde_json::Value> {
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let http = Http1::new(rt);
    let server = &config.server;
    smol::block_on(async {
        let response = http
            .send(comfy_proxy_driver::client::outgoing(
                config,
                http::object_info(None),
            ))
            .await
            .map_err(|e| runtime(format!("cannot fetch object_info: {e}")))?;
        http::decode_object_info(&response)
            .map_err(|e| runtime(format!("bad object_info from {server}: {e}")))
    })
}

/// Exit 0 when the graph is valid, 1 with the errors when not, 2 when it cannot be checked.
pub fn run(args: &ValidateArgs) -> Result<ExitCode> {
    let info = object_info(args)?;
    let workflow = crate::convert::load(&args.graph, || Ok(Some(info.clone())))?;
    let report = validate(&workflow, &info);
    // The report quotes the graph and the server's object_info: printed safely.
    if args.json {
        println!("{}", terminal_safe_json(&report.to_json().to_string()));
    } else if report.is_valid() {
        println!("valid");
    } else {
        println!("invalid: {}", terminal_safe(&report.to_string()));
    }
    Ok(if report.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
