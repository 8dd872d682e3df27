//! [`TcpListener`]: a listening TCP socket served by any [`Runtime`], written once over
//! [`Runtime::async_fd`]; accepted streams become the runtime's own through
//! [`Runtime::tcp_stream`].

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::net::SocketFlags;

use crate::runtime::{AsyncFd, AsyncStream, Runtime};

/// A bound, listening TCP socket registered with a runtime's reactor.
#[derive(Debug)]
pub struct TcpListener {
    socket: Arc<dyn AsyncFd>,
    runtime: Arc<dyn Runtime>,
    local_addr: SocketAddr,
}

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port), listens, and registers the socket with
    /// `runtime`.
    ///
    /// # Errors
    /// The `bind(2)`/`listen(2)` or registration error.
    pub fn bind(runtime: Arc<dyn Runtime>, addr: SocketAddr) -> io::Result<TcpListener> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        Ok(TcpListener {
            socket: runtime.async_fd(OwnedFd::from(listener))?,
            runtime,
            local_addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the next connection; returns the stream (non-blocking, close-on-exec,
    /// `TCP_NODELAY` set) and the peer's address. Cancel-safe: a connection is taken from the
    /// kernel's queue only in the poll that returns it.
    ///
    /// # Errors
    /// The `accept4(2)` error (e.g. `ECONNABORTED`, `EMFILE`) or the stream's registration
    /// error; the listener stays usable.
    pub async fn accept(&self) -> io::Result<(Box<dyn AsyncStream>, SocketAddr)> {
        let mut accepted = None;
        poll_fn(|cx| {
            self.socket.poll_read_with(cx, &mut |fd| {
                let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
                accepted = Some(rustix::net::accept_with(fd, flags)?);
                Ok(0)
            })
        })
        .await?;
        let stream = std::net::TcpStream::from(
            accepted
                .ok_or_else(|| io::Error::other("accept reported success without a connection"))?,
        );
        let peer = stream.peer_addr()?;
        Ok((self.runtime.tcp_stream(stream)?, peer))
    }
}
