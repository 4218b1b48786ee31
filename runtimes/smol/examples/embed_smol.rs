//! A smol program that runs one Flux job on a ComfyUI server and streams its events.
//!
//! `cargo run -p comfy-proxy-smol --example embed_smol -- 127.0.0.1:8188`
//! With no address, it starts a mock server on loopback and runs against that.

use std::sync::Arc;

use comfy_proxy::ServerAddress;
use comfy_proxy::session::Event;
use comfy_proxy::workflow::{FluxParams, Lora, Size};
use comfy_proxy_mock as mock;
use comfy_proxy_smol::{ClientConfig, Smol, connect};
use smol::stream::StreamExt;

fn main() {
    smol::block_on(async {
        let (address, _mock) = match std::env::args().nth(1) {
            Some(a) => (a, None),
            None => {
                let m = mock::serve(
                    Arc::new(Smol),
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
        let graph = FluxParams::new("a lighthouse at dusk, film photo", 1234)
            .size(Size::new(512, 512))
            .steps(4)
            .lora(Lora::new("film_grain.safetensors").weight(0.6))
            .build()
            .expect("valid parameters");
        let mut events = match client.submit(graph).await {
            Ok(stream) => stream,
            Err(e) => return eprintln!("{e}"),
        };
        while let Some(event) = events.next().await {
            match &event {
                Event::Output { image, .. } => {
                    let name = format!("flux-{}.{}", events.prompt_id(), image.format.extension());
                    match std::fs::write(&name, &image.data) {
                        Ok(()) => println!("wrote {name}"),
                        Err(e) => eprintln!("cannot write {name}: {e}"),
                    }
                }
                other => println!("{other}"),
            }
        }
    });
}
