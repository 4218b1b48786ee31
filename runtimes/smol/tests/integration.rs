//! The shared integration suite on smol, against mock servers on loopback.

use std::sync::Arc;

use comfy_proxy_driver::Runtime;
use comfy_proxy_driver::http1::Http1;
use comfy_proxy_smol::Smol;
use comfy_proxy_testkit::Kit;

fn kit() -> Kit {
    let rt: Arc<dyn Runtime> = Arc::new(Smol);
    Kit {
        rt: rt.clone(),
        http: Arc::new(Http1::new(rt)),
    }
}

comfy_proxy_testkit::integration_suite!(kit(), smol::block_on);
