//! Clean shutdown of a server on request ([`WsServer::run_until`], [`serve_stdio_until`]).
//!
//! When the shutdown future completes, the server
//! 1. stops accepting (the listener is dropped),
//! 2. kills every process tree it started, released ones included (see
//!    [`ProcessTable::kill_all`]),
//! 3. flushes what each connection has queued and closes it: WebSocket close code 1001 "going
//!    away", stdio by closing stdout,
//! 4. returns `Ok(())` once every connection is closed, or after [`FLUSH_LIMIT`] if a peer does
//!    not read.
//!
//! [`WsServer::run_until`]: crate::WsServer::run_until
//! [`serve_stdio_until`]: crate::serve_stdio_until
//! [`ProcessTable::kill_all`]: crate::process::ProcessTable::kill_all

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::future;
use tracing::{debug, info};

use crate::runtime::Runtime;

/// How long a shutdown waits for the connections to flush and close.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Resolves once `shutdown` has, then sends `stop` to the event loop; never resolves after
/// that (the loop's end ends the server).
pub(crate) async fn forward<E>(shutdown: impl Future<Output = ()>, loop_tx: Sender<E>, stop: E) {
    shutdown.await;
    info!("shutting down");
    let _ = loop_tx.send(stop).await;
    future::pending::<()>().await;
}

/// Waits until every receiver in `done` has closed (each connection's writer task drops its
/// sender once its close is sent, or its write failed), or `limit` has passed.
pub(crate) async fn wait_for_connections(
    runtime: &Arc<dyn Runtime>,
    done: Vec<Receiver<()>>,
    limit: Duration,
) {
    let all_closed = async {
        for rx in done {
            // Nothing is sent: `recv` fails once the sender is gone.
            let _ = rx.recv().await;
        }
        true
    };
    let deadline = runtime.now() + limit;
    let timeout = async {
        runtime.sleep_until(deadline).await;
        false
    };
    if future::or(all_closed, timeout).await {
        debug!("all connections closed");
    } else {
        debug!("connections not closed within {limit:?}; shutting down anyway");
    }
}
