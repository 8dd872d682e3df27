//! The execd-runtime security scenarios (authentication, TLS) on tokio, multi-threaded and
//! current-thread.

use std::future::Future;
use std::sync::Arc;

use execd_runtime::Runtime;
use execd_tokio::TokioRuntime;

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

    execd_runtime::security_tests!(run);
}
