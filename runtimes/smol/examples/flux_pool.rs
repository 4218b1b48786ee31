//! Flux on a pool of servers: eight jobs with distinct seeds, spread over every server, each
//! image written as it is reported.
//!
//! `cargo run -p comfy-proxy-smol --example flux_pool -- "host-a:8188,host-b:8188-8189"`
//! With no address, it starts four mock servers on loopback and runs against those.

use comfy_proxy::address::parse_addresses;
use comfy_proxy::workflow::{FluxParams, Size};
use comfy_proxy_mock::{self as mock, MockHandle};
use comfy_proxy_smol::{ClientConfig, PoolConfig, Smol, pool};

fn main() {
    let rt = std::sync::Arc::new(Smol);
    smol::block_on(async {
        let mut mocks: Vec<MockHandle> = Vec::new();
        let spec = match std::env::args().nth(1) {
            Some(spec) => spec,
            None => {
                for _ in 0..4 {
                    let m = mock::serve(
                        rt.clone(),
                        "127.0.0.1:0".parse().unwrap(),
                        Default::default(),
                    )
                    .await
                    .expect("start a mock server");
                    mocks.push(m);
                }
                mocks
                    .iter()
                    .map(MockHandle::address)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let servers = match parse_addresses(&spec) {
            Ok(s) => s,
            Err(e) => return eprintln!("{e}"),
        };
        let template = ClientConfig::new(servers[0].clone());
        let (pool, _events) = pool(PoolConfig::new(&servers, &template));
        let mut jobs = Vec::new();
        for seed in 0..8 {
            let graph = FluxParams::new("a lighthouse at dusk", seed)
                .size(Size::new(256, 256))
                .steps(4)
                .build()
                .expect("valid");
            match pool.submit(graph).await {
                Ok(job) => jobs.push(job),
                Err(e) => return eprintln!("{e}"),
            }
        }
        pool.close();
        for job in jobs {
            {
                // Each job's report, in submission order.
                let report = job.result().await;
                let server = report
                    .address
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                match &report.outcome {
                    Ok(()) => {
                        for output in &report.outputs {
                            // Node ids come from the server: keep them out of the path.
                            let node: String = (output.node.as_str().chars())
                                .filter(char::is_ascii_alphanumeric)
                                .collect();
                            let name = format!(
                                "pool-{}-{node}-{}.{}",
                                report.job, output.index, output.extension
                            );
                            if let Err(e) = std::fs::write(&name, output.bytes()) {
                                eprintln!("cannot write {name}: {e}");
                            }
                        }
                        println!(
                            "job {} done on {server} in {:?}",
                            report.job, report.elapsed
                        );
                    }
                    Err(e) => println!("job {} failed: {e}", report.job),
                }
            }
        }
    });
}
