//! A TCP proxy that cuts its connections on demand or on a period, to test recovery between a
//! real client and a real server (any runtime).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::runtime::{AsyncStream, Runtime, Task};
use crate::tcp::TcpListener;

/// A loopback TCP proxy in front of `target` that drops every open connection when told to.
///
/// A cut closes both sockets of every proxied connection at once (the client sees its
/// connection end, the server sees its peer leave); new connections are accepted as usual.
/// Dropping the proxy stops it and cuts everything.
#[derive(Debug)]
pub struct CuttingProxy {
    rt: Arc<dyn Runtime>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    _accept: Task,
    cutter: Mutex<Option<Task>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The pumps of the open connections; dropping them closes the sockets.
    live: Mutex<Vec<Task>>,
    accepted: AtomicU64,
    cuts: AtomicU64,
    /// Bytes carried from the server to clients.
    downstream: AtomicU64,
}

impl CuttingProxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `target`.
    ///
    /// # Errors
    /// The bind error.
    pub async fn start(rt: Arc<dyn Runtime>, target: SocketAddr) -> io::Result<CuttingProxy> {
        let listener = TcpListener::bind(rt.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr();
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let accept_rt = rt.clone();
        let accept = rt.spawn(Box::pin(async move {
            while let Ok((client, _)) = listener.accept().await {
                let connect = accept_rt.tcp_connect(target.ip().to_string(), target.port());
                let Ok(server) = connect.await else {
                    continue;
                };
                accept_shared.accepted.fetch_add(1, Ordering::Relaxed);
                let counter = accept_shared.clone();
                let pump = accept_rt.spawn(Box::pin(async move {
                    let (client_rx, client_tx) = futures_lite::io::split(client);
                    let (server_rx, server_tx) = futures_lite::io::split(server);
                    let up = pipe(client_rx, server_tx, None);
                    let down = pipe(server_rx, client_tx, Some(&counter.downstream));
                    futures_lite::future::zip(up, down).await;
                }));
                accept_shared
                    .live
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(pump);
            }
        }));
        Ok(CuttingProxy {
            rt,
            addr,
            shared,
            _accept: accept,
            cutter: Mutex::new(None),
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Closes every open connection now.
    pub fn cut(&self) {
        let live = std::mem::take(
            &mut *self
                .shared
                .live
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if !live.is_empty() {
            self.shared.cuts.fetch_add(1, Ordering::Relaxed);
        }
        drop(live);
    }

    /// Cuts every `period` from now on (replacing an earlier period).
    pub fn cut_every(self: &Arc<Self>, period: Duration) {
        let weak = Arc::downgrade(self);
        let rt = self.rt.clone();
        let task = self.rt.spawn(Box::pin(async move {
            loop {
                rt.sleep_until(rt.now() + period).await;
                match weak.upgrade() {
                    Some(proxy) => proxy.cut(),
                    None => return,
                }
            }
        }));
        *self.cutter.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Stops cutting on a period.
    pub fn stop_cutting(&self) {
        self.cutter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Cuts that closed at least one connection.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Bytes carried from the server to clients.
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.downstream.load(Ordering::Relaxed)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn pipe(
    mut from: ReadHalf<Box<dyn AsyncStream>>,
    mut to: WriteHalf<Box<dyn AsyncStream>>,
    counter: Option<&AtomicU64>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if let Some(c) = counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    let _ = to.close().await;
    drop(from);
}
