//! The execd-runtime scenario suite on smol: every scenario as a `#[test]`.

use std::future::Future;
use std::sync::Arc;

use execd_runtime::Runtime;
use execd_smol::SmolRuntime;

/// Runs one scenario to completion on the calling thread (`smol::block_on`); spawned tasks run
/// on smol's global executor.
fn run<F: Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F) {
    smol::block_on(scenario(Arc::new(SmolRuntime)));
}

execd_runtime::scenario_tests!(run);
execd_runtime::security_tests!(run);

/// The crate's names (`WsServer::bind(addr, options)`, `Client::connect(url)`, …) on the
/// default runtime, under `SmolRuntime::block_on`.
#[test]
fn default_runtime_constructors_serve_and_connect() {
    execd_runtime::scenarios::client::default_runtime_constructors_serve_and_connect::<SmolRuntime>(
    );
}
