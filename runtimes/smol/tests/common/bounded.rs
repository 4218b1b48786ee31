//! A bound on a test's wait, shared by the pool tests (`pool_faults.rs`, `pool_handles.rs`).

use std::future::Future;
use std::time::Duration;

/// Fails the test instead of hanging it: the bound is far above what any run here needs.
pub async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    let limit = Duration::from_secs(120);
    smol::future::or(async { Some(future.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what}: still running after {limit:?}"))
}
