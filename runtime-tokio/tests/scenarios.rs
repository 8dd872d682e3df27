//! The execd-runtime scenario suite on tokio: every scenario as a `#[test]`, on a
//! multi-threaded runtime (as in a `#[tokio::main]` application) and on a current-thread one
//! (as `execd serve --runtime tokio` uses).

use std::future::Future;
use std::sync::Arc;

use execd_runtime::Runtime;
use execd_tokio::TokioRuntime;

/// Runs one scenario to completion on `tokio` (built with all drivers); the scenario itself runs
/// on the calling thread (`block_on`), its spawned tasks on the runtime.
fn run_on<F: Future<Output = ()>>(
    tokio: tokio::runtime::Runtime,
    scenario: impl FnOnce(Arc<dyn Runtime>) -> F,
) {
    let runtime = Arc::new(TokioRuntime::new(tokio.handle().clone()));
    tokio.block_on(scenario(runtime));
}

mod multi_thread {
    use super::*;

    fn run<F: Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F) {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        run_on(tokio, scenario);
    }

    execd_runtime::scenario_tests!(run);
    execd_runtime::security_tests!(run);
}

mod current_thread {
    use super::*;

    fn run<F: Future<Output = ()>>(scenario: impl FnOnce(Arc<dyn Runtime>) -> F) {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        run_on(tokio, scenario);
    }

    execd_runtime::scenario_tests!(run);
    execd_runtime::security_tests!(run);
}

/// The crate's names (`WsServer::bind(addr, options)`, `Client::connect(url)`, …) on the
/// default runtime, under `TokioRuntime::block_on`.
#[test]
fn default_runtime_constructors_serve_and_connect() {
    execd_runtime::scenarios::client::default_runtime_constructors_serve_and_connect::<TokioRuntime>(
    );
}
