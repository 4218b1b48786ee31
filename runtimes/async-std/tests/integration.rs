//! The shared integration suite on async-std, against mock servers on loopback.

use std::sync::Arc;

use comfy_proxy_async_std::{AsyncStd, http_client};
use comfy_proxy_testkit::Kit;

fn kit() -> Kit {
    Kit {
        rt: Arc::new(AsyncStd),
        http: Arc::new(http_client()),
    }
}

comfy_proxy_testkit::integration_suite!(kit(), async_std::task::block_on);
