//! `execd serve`'s shutdown on SIGTERM, SIGINT or SIGHUP.
//!
//! The signals are caught from start-up; the first one makes the server stop accepting, kill
//! every process tree, close each connection (WebSocket code 1001 "going away") and exit 0, as
//! daemons conventionally do after a clean shutdown. A second signal while shutting down is
//! caught too (the shutdown is bounded: about 2 s for peers that do not read).

use async_signal::{Signal, Signals};
use futures_lite::StreamExt as _;

/// Catches SIGTERM, SIGINT and SIGHUP from now on; the returned future completes on the first
/// one.
pub(crate) fn on_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    let mut signals = Signals::new([Signal::Term, Signal::Int, Signal::Hup])?;
    Ok(async move {
        match signals.next().await {
            Some(Ok(signal)) => tracing::info!(?signal, "signal received; shutting down"),
            Some(Err(e)) => tracing::warn!(error = %e, "waiting for signals failed; shutting down"),
            None => {}
        }
        // Keep the handlers installed (and further signals caught) until the process exits.
        std::mem::forget(signals);
    })
}
