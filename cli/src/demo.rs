//! `comfy-proxy demo`: four simulating mock servers in this process, sixteen Flux jobs across
//! them with progress bars, the images in `./comfy-proxy-demo/`. No GPU, done in seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use comfy_proxy::ServerAddress;
use comfy_proxy::session::Deadlines;
use comfy_proxy::workflow::{FluxParams, Size};
use comfy_proxy_driver::ClientConfig;
use comfy_proxy_mock::MockConfig;
use comfy_proxy_mock::{self as mock, MockHandle};

use crate::error::{Result, runtime};
use crate::jobs::{self, Plan};

const SERVERS: usize = 4;
const JOBS: u64 = 16;
const STEPS: u32 = 6;
const OUT: &str = "comfy-proxy-demo";

/// The recorded server's node definitions and model lists, so that the demo's mocks refuse what
/// a real server would and the pool routes jobs by them.
const OBJECT_INFO: &str = include_str!("../../fixtures/object_info.json");

/// Runs the demo.
pub fn run() -> Result<ExitCode> {
    let (rt, _) = jobs::kit();
    let object_info: serde_json::Value = serde_json::from_str(OBJECT_INFO)
        .map_err(|e| runtime(format!("the embedded object_info does not parse: {e}")))?;
    let mocks: Vec<MockHandle> = smol::block_on(async {
        let mut mocks = Vec::new();
        for i in 0..SERVERS {
            let mut config = MockConfig::default();
            config.step = Duration::from_millis(60);
            config.job = Duration::from_millis(150);
            config.previews = true;
            config.seed = i as u64;
            config.object_info = Some(object_info.clone());
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let handle = mock::serve(rt.clone(), loopback, config)
                .await
                .map_err(|e| runtime(format!("cannot start a mock server on loopback: {e}")))?;
            mocks.push(handle);
        }
        Ok::<_, crate::error::Fail>(mocks)
    })?;
    let servers = mocks
        .iter()
        .map(|m| ServerAddress::parse(&m.address()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| runtime(format!("a mock's address does not parse: {e}")))?;
    eprintln!(
        "{SERVERS} mock servers: {}",
        servers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!("{JOBS} Flux jobs, 512x512, {STEPS} steps each, images into ./{OUT}/");
    let template = ClientConfig::new(servers[0].clone())
        .with_deadlines(Deadlines::none().total(Duration::from_secs(60)));
    let plan = Plan {
        servers,
        template,
        out: PathBuf::from(OUT),
        json: false,
        quiet: false,
        timeout: Some(Duration::from_secs(60)),
        validate: true,
    };
    let workflows = (1..=JOBS)
        .map(|seed| {
            FluxParams::new("a lighthouse at dusk, comfy-proxy demo", seed)
                .size(Size::new(512, 512))
                .steps(STEPS)
                .build()
                .map_err(|e| runtime(format!("the demo graph does not build: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let tally = jobs::run(&plan, workflows)?;
    drop(mocks);
    Ok(tally.exit_code())
}
