//! An async-std program that runs Qwen Image jobs and waits for their images.
//!
//! `cargo run -p comfy-proxy-async-std --example embed_async_std -- 127.0.0.1:8188`
//! With no address, it starts a mock server on loopback and runs against that.

use std::sync::Arc;

use comfy_proxy::ServerAddress;
use comfy_proxy::workflow::{QwenParams, Size};
use comfy_proxy_async_std::{AsyncStd, ClientConfig, connect};
use comfy_proxy_mock as mock;

fn main() {
    async_std::task::block_on(async {
        let (address, _mock) = match std::env::args().nth(1) {
            Some(a) => (a, None),
            None => {
                let m = mock::serve(
                    Arc::new(AsyncStd),
                    "127.0.0.1:0".parse().unwrap(),
                    Default::default(),
                )
                .await
                .expect("start a mock server");
                (m.address(), Some(m))
            }
        };
        let server = match ServerAddress::parse(&address) {
            Ok(s) => s,
            Err(e) => return eprintln!("{e}"),
        };
        let client = connect(ClientConfig::new(server));
        for seed in 0..3 {
            let graph = QwenParams::new("a tea house in the rain", seed)
                .size(Size::new(512, 384))
                .steps(4)
                .build()
                .expect("valid parameters");
            match client.run(graph).await {
                Ok(result) => println!(
                    "seed {seed}: {} image(s), {} previews",
                    result.outputs.len(),
                    result.previews
                ),
                Err(e) => eprintln!("seed {seed}: {e}"),
            }
        }
    });
}
