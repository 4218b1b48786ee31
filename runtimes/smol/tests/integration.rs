//! The shared integration suite on smol, against mock servers on loopback.

use std::sync::Arc;

use comfy_proxy_driver::testsuite::Kit;
use comfy_proxy_smol::{Hyper, Smol};

fn kit() -> Kit {
    Kit {
        rt: Arc::new(Smol),
        http: Arc::new(Hyper),
    }
}

comfy_proxy_driver::integration_suite!(kit(), smol::block_on);
