//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a subset

use std::future::Future;
use std::time::Duration;

/// How long any single await in a test may take before the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test (naming `what`) after [`TIMEOUT`].
pub(crate) async fn timeout<T>(what: &str, fut: impl Future<Output = T>) -> T {
    let out = futures_lite::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(TIMEOUT).await;
        None
    })
    .await;
    match out {
        Some(out) => out,
        None => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// Awaits `fut`, failing the test after [`TIMEOUT`].
pub(crate) async fn within<T>(fut: impl Future<Output = T>) -> T {
    timeout("a future", fut).await
}
