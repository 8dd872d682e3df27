//! The execd-runtime scenario suite on tokio: every scenario as a `#[test]`.

use std::future::Future;
use std::sync::Arc;

use execd_runtime::Runtime;
use execd_tokio::TokioRuntime;

/// Runs one scenario to completion on a fresh multi-threaded tokio runtime (two workers, all
/// drivers); the scenario itself runs on the calling thread (`block_on`).
fn run<F: Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F) {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime = Arc::new(TokioRuntime::new(tokio.handle().clone()));
    tokio.block_on(scenario(runtime));
}

execd_runtime::scenario_tests!(run);
