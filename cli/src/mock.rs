//! `comfy-proxy mock`: mock ComfyUI servers on consecutive ports, replaying recordings or
//! simulating any other graph, until the process is killed.

use std::fs;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use comfy_proxy::transcript::Transcript;
use comfy_proxy_mock::{self as mock, MockHandle};
use comfy_proxy_mock::{Faults, MockConfig};

use crate::error::{Result, usage};
use crate::jobs;

/// The flags of `mock`.
#[derive(Args, Debug, Clone)]
pub struct MockArgs {
    /// Address of the first instance; the others take the next ports (port 0: any free ports).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8188")]
    pub listen: String,
    /// How many servers to run.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub instances: u16,
    /// A folder of recordings (every *.jsonl, comfy-transcript/1): a posted graph of the same
    /// shape as a recorded one replays that recording. DIR/object_info.json, when present, is
    /// served as /object_info and used to refuse unknown node classes.
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Factor on recorded timing when replaying (1 as recorded, 0 without delays).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub speed: f64,
    /// Milliseconds per sampling step of a simulated graph.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub step_ms: u64,
    /// Milliseconds per simulated job, besides its steps.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub job_ms: u64,
    /// Faults to inject, as NAME=RATE items separated by commas (rates from 0 to 1): refuse,
    /// drop-ws, stall, http500, restart, slow, oversize, bad-json, bad-utf8, unknown-type,
    /// truncated, wrong-id. Example: `--faults drop-ws=0.05,http500=0.02,truncated=0.01`.
    #[arg(long, value_name = "LIST", default_value = "")]
    pub faults: String,
    /// Seed of the fault generator (instance i uses SEED + i), so a faulty run can be repeated.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

/// Loads every `*.jsonl` recording of `dir`, in name order, and `object_info.json` if present.
fn load_fixtures(dir: &Path, config: &mut MockConfig) -> Result<()> {
    let entries = fs::read_dir(dir)
        .map_err(|e| usage(format!("cannot read --fixtures {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for file in files {
        let text = fs::read_to_string(&file)
            .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
        let t = Transcript::parse(&text).map_err(|e| {
            usage(format!(
                "{} is not a comfy-transcript/1 file: {e}",
                file.display()
            ))
        })?;
        config.recordings.push(t);
    }
    let info = dir.join("object_info.json");
    if info.exists() {
        let text = fs::read_to_string(&info)
            .map_err(|e| usage(format!("cannot read {}: {e}", info.display())))?;
        let value = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{} is not JSON: {e}", info.display())))?;
        config.object_info = Some(value);
    }
    Ok(())
}

/// The first address to listen on.
fn listen_addr(text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| usage(format!("--listen {text:?} is not HOST:PORT")))
}

/// Starts the servers, prints their addresses (one a line, on stdout) and blocks forever.
pub fn run(args: &MockArgs) -> Result<ExitCode> {
    if !args.speed.is_finite() {
        return Err(usage("--speed must be a finite number"));
    }
    let first = listen_addr(&args.listen)?;
    let count = u32::from(args.instances);
    if first.port() != 0 && u32::from(first.port()) + count - 1 > 65535 {
        return Err(usage(format!(
            "{count} instances from port {} run past port 65535; lower --listen's port",
            first.port()
        )));
    }
    let faults = Faults::parse(&args.faults).map_err(|e| usage(format!("bad --faults: {e}")))?;
    let mut config = MockConfig::default();
    config.faults = faults;
    config.step = Duration::from_millis(args.step_ms);
    config.job = Duration::from_millis(args.job_ms);
    config.speed = args.speed;
    if let Some(dir) = &args.fixtures {
        load_fixtures(dir, &mut config)?;
        eprintln!(
            "{} recording(s) loaded from {}{}",
            config.recordings.len(),
            dir.display(),
            if config.object_info.is_some() {
                ", with object_info.json"
            } else {
                ""
            }
        );
    }
    let (rt, _) = jobs::kit();
    smol::block_on(async move {
        let mut handles: Vec<MockHandle> = Vec::new();
        for i in 0..count {
            let mut addr = first;
            if first.port() != 0 {
                addr.set_port(first.port() + i as u16);
            }
            let mut c = config.clone();
            c.seed = u64::from(i);
            c.faults.seed = args.seed.wrapping_add(u64::from(i));
            let handle = mock::serve(rt.clone(), addr, c).await.map_err(|e| {
                usage(format!(
                    "cannot listen on {addr}: {e}; choose another --listen"
                ))
            })?;
            println!("http://{}", handle.addr());
            handles.push(handle);
        }
        eprintln!("{count} mock server(s) running; stop with Ctrl-C");
        std::future::pending::<Result<ExitCode>>().await
    })
}
