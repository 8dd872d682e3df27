//! The execd-runtime security scenarios (authentication, TLS) on smol.

use std::future::Future;
use std::sync::Arc;

use execd_runtime::Runtime;
use execd_smol::SmolRuntime;

/// Runs one scenario to completion on the calling thread (`smol::block_on`); spawned tasks run
/// on smol's global executor.
fn run<F: Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F) {
    smol::block_on(scenario(Arc::new(SmolRuntime)));
}

execd_runtime::security_tests!(run);
