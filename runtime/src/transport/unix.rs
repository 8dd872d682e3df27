//! Unix-domain stream sockets over [`Runtime::async_fd`]: the listener of a WebSocket server
//! on a socket file, and the client's connector. No runtime-specific code: the descriptors are
//! registered with whatever reactor the [`Runtime`] has, like pipes, and accepted streams are
//! [`FdStream`]s.

use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::net::SocketFlags;

use crate::runtime::{AsyncFd, AsyncStream, FdStream, Runtime};

/// The peer "address" reported for a connection accepted on a Unix socket (it has none): the
/// unspecified `0.0.0.0:0`.
pub(crate) const UNIX_PEER: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A listening Unix-domain socket registered with a runtime's reactor; the socket file is
/// removed when it drops.
#[derive(Debug)]
pub(crate) struct UnixListener {
    socket: Arc<dyn AsyncFd>,
    runtime: Arc<dyn Runtime>,
    path: PathBuf,
}

impl UnixListener {
    /// Binds a socket file at `path` (which must not exist), makes it `0600` (only this user
    /// may connect), listens, and registers it with `runtime`.
    ///
    /// # Errors
    /// The `bind(2)` error (`AddrInUse` when `path` exists), the `chmod` error, or the
    /// registration error.
    pub(crate) fn bind(runtime: Arc<dyn Runtime>, path: &Path) -> io::Result<UnixListener> {
        let listener = StdUnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(UnixListener {
            socket: runtime.async_fd(OwnedFd::from(listener))?,
            runtime,
            path: path.to_owned(),
        })
    }

    /// Waits for the next connection. Cancel-safe: a connection is taken from the kernel's
    /// queue only in the poll that returns it.
    ///
    /// # Errors
    /// The `accept4(2)` error or the stream's registration error; the listener stays usable.
    pub(crate) async fn accept(&self) -> io::Result<Box<dyn AsyncStream>> {
        let mut accepted = None;
        poll_fn(|cx| {
            self.socket.poll_read_with(cx, &mut |fd| {
                let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
                accepted = Some(rustix::net::accept_with(fd, flags)?);
                Ok(0)
            })
        })
        .await?;
        let fd = accepted
            .ok_or_else(|| io::Error::other("accept reported success without a connection"))?;
        Ok(Box::new(FdStream::new(&*self.runtime, fd)?))
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        // The socket file would refuse the next bind; it is this listener's, so it goes too.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connects to the Unix-domain socket at `path` and registers the stream with `runtime`.
///
/// The `connect(2)` itself blocks, which on a Unix socket means it returns at once unless the
/// listener's backlog is full.
///
/// # Errors
/// The connect error (`NotFound` without a socket file, `ConnectionRefused` when nobody
/// listens on it) or the registration error.
pub(crate) fn unix_connect(runtime: &dyn Runtime, path: &Path) -> io::Result<Box<dyn AsyncStream>> {
    let stream = UnixStream::connect(path)?;
    Ok(Box::new(FdStream::new(runtime, OwnedFd::from(stream))?))
}
