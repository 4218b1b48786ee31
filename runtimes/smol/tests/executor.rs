//! The smol runtime on an executor the program owns: the client's tasks are spawned on it, a
//! job runs to its end while the program runs it, and every task finishes on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use comfy_proxy::{ServerAddress, Workflow};
use comfy_proxy_driver::{ClientConfig, Runtime};
use comfy_proxy_mock::{self as mock, MockConfig};
use comfy_proxy_smol::{Smol, connect_with};

fn graph() -> Workflow {
    Workflow::from_json(
        r#"{"1":{"class_type":"EmptyLatentImage","inputs":{"width":64,"height":48,"batch_size":2}},
            "2":{"class_type":"KSampler","inputs":{"seed":5,"steps":3,"cfg":1.0,"sampler_name":"euler","scheduler":"normal","denoise":1.0,"latent_image":["1",0]}},
            "3":{"class_type":"VAEDecode","inputs":{"samples":["2",0]}},
            "save":{"class_type":"SaveImageWebsocket","inputs":{"images":["3",0]}}}"#,
    )
    .expect("test graph")
}

#[test]
fn a_job_runs_on_the_programs_executor() {
    let executor = Arc::new(smol::Executor::new());
    // The mock server runs on smol's global executor, apart from the program's.
    let mock = smol::block_on(async {
        let mut config = MockConfig::default();
        config.step = Duration::from_millis(2);
        config.job = Duration::from_millis(5);
        let global: Arc<dyn Runtime> = Arc::new(Smol);
        mock::serve(global, SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .expect("bind a loopback port")
    });
    let server = ServerAddress::parse(&mock.address()).expect("mock address");

    assert!(executor.is_empty());
    let rt: Arc<dyn Runtime> = Arc::new(Smol::with_executor(executor.clone()));
    let client = connect_with(rt, ClientConfig::new(server));
    assert!(
        !executor.is_empty(),
        "the client's connection task was spawned on the program's executor"
    );

    let result = smol::block_on(executor.run(client.run(graph()))).expect("the job succeeds");
    assert_eq!(result.outputs.len(), 2);
    assert!(
        result
            .outputs
            .iter()
            .all(|output| output.bytes().len() > 100)
    );

    // Dropping the last handle closes the connection: its tasks end on the same executor.
    drop(client);
    smol::block_on(executor.run(async {
        for _ in 0..500 {
            if executor.is_empty() {
                break;
            }
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    }));
    assert!(executor.is_empty(), "every task of the client finished");
}
