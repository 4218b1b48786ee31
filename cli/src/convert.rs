//! `comfy-proxy workflow convert FILE`: any workflow file (API or UI-format JSON, a PNG or WebP
//! saved by ComfyUI) printed as an API-format graph; and the loader `run` and `validate` share.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use comfy_proxy::ServerAddress;
use comfy_proxy::wire::http;
use comfy_proxy::workflow::{FileKind, LoadError, ObjectInfo, Workflow, load_any};
use comfy_proxy_driver::ClientConfig;
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_driver::{HttpClient, Runtime};
use comfy_proxy_smol::Smol;

use crate::error::{Result, runtime, usage};
use crate::model::Model;

/// `comfy-proxy workflow ...`: the built-in graphs, and `convert`.
// Parsed once per run: the size of the larger variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Print the API-format graph of any workflow file: API or UI-format JSON, or a PNG or WebP
    /// saved by ComfyUI (its prompt, else its converted workflow).
    Convert(ConvertArgs),
    #[command(flatten)]
    Builtin(Model),
}

/// The flags of `workflow convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The workflow: API or UI-format JSON, or a PNG or WebP that ComfyUI saved.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub source: InfoSource,
}

/// Where a UI-format workflow's node classes come from.
#[derive(Args, Debug, Clone)]
pub struct InfoSource {
    /// An object_info document saved from a server (`GET /object_info`).
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    pub object_info: Option<PathBuf>,
    /// A server to fetch object_info from (needed only for UI-format workflows).
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// TLS for an `https://` --server: a private root CA, or no verification at all.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// Reads an object_info document from a file.
pub fn read_object_info(file: &Path) -> Result<ObjectInfo> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    ObjectInfo::from_json(&text).map_err(|e| {
        usage(format!(
            "{} is not an object_info document: {e}",
            file.display()
        ))
    })
}

/// `GET /object_info` with the client settings `config` (its server, token, timeouts).
pub fn fetch_object_info(config: &ClientConfig) -> Result<ObjectInfo> {
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    let client = Http1::new(rt);
    let server = config.server.clone();
    let json = smol::block_on(async {
        let response = client
            .send(comfy_proxy_driver::client::outgoing(
                config,
                http::object_info(None),
            ))
            .await
            .map_err(|e| runtime(format!("cannot fetch object_info from {server}: {e}")))?;
        http::decode_object_info(&response)
            .map_err(|e| runtime(format!("bad object_info from {server}: {e}")))
    })?;
    ObjectInfo::from_value(&json)
        .map_err(|e| runtime(format!("bad object_info from {server}: {e}")))
}

/// Reads any workflow file. `info` is asked for only when the file holds a UI-format workflow
/// (and no API graph), so API graphs never need a server.
pub fn load(path: &Path, info: impl FnOnce() -> Result<Option<ObjectInfo>>) -> Result<Workflow> {
    let bytes = std::fs::read(path)
        .map_err(|e| usage(format!("cannot read the graph {}: {e}", path.display())))?;
    let fail = |e: LoadError| match e {
        LoadError::Json { message } => usage(format!(
            "{} is not an API-format graph, a UI-format workflow or an image: not valid JSON: \
             {message}",
            path.display()
        )),
        e => usage(format!("{}: {e}", path.display())),
    };
    match load_any(&bytes, None) {
        Ok(loaded) => Ok(loaded.workflow),
        Err(LoadError::NeedsObjectInfo { kind }) => match info()? {
            Some(info) => load_any(&bytes, Some(&info))
                .map(|l| l.workflow)
                .map_err(fail),
            None => {
                let what = match kind {
                    FileKind::UiJson => "a UI-format workflow".to_owned(),
                    other => format!("{other} holding a UI-format workflow"),
                };
                Err(usage(format!(
                    "{} is {what}: converting it needs the server's node classes; give \
                     --object-info FILE or --server ADDR",
                    path.display()
                )))
            }
        },
        Err(e) => Err(fail(e)),
    }
}

impl InfoSource {
    /// The object_info these flags name, if any: the file, or a fetch from the server (with
    /// `$COMFY_TOKEN` as a bearer token when set).
    pub fn get(&self) -> Result<Option<ObjectInfo>> {
        match (&self.object_info, &self.server) {
            (Some(file), _) => read_object_info(file).map(Some),
            (None, Some(server)) => {
                let server = ServerAddress::parse(server)
                    .map_err(|e| usage(format!("bad --server: {e}")))?;
                let config = crate::tls::client_config(server, &self.tls)?;
                fetch_object_info(&config).map(Some)
            }
            (None, None) => Ok(None),
        }
    }
}

/// Prints the API-format graph, pretty, on stdout.
pub fn run(args: &ConvertArgs) -> Result<ExitCode> {
    let workflow = load(&args.file, || args.source.get())?;
    let text = serde_json::to_string_pretty(&workflow.to_json())
        .map_err(|e| runtime(format!("cannot write the graph: {e}")))?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(runtime(format!("cannot write the graph: {e}")))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
