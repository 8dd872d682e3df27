//! Opening a pseudo-terminal pair and sizing it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

/// A freshly opened PTY: the master stays with the server, the slave becomes the child's
/// stdin, stdout and stderr. Both are close-on-exec; neither is anyone's controlling terminal
/// yet (the child claims the slave after `setsid`).
#[derive(Debug)]
pub(crate) struct Pty {
    /// The server's side: reads give the terminal's output, writes are typed input.
    pub(crate) master: OwnedFd,
    /// The child's side.
    pub(crate) slave: OwnedFd,
}

impl Pty {
    /// Opens a PTY pair sized `rows` × `cols` characters.
    pub(crate) fn open(rows: u16, cols: u16) -> io::Result<Pty> {
        let master = open_master()?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        let slave = open_slave(&master)?;
        set_size(&master, rows, cols)?;
        Ok(Pty { master, slave })
    }
}

/// Sets the terminal size of the PTY whose master is `master` (`TIOCSWINSZ`); the kernel sends
/// SIGWINCH to the terminal's foreground process group.
pub(crate) fn set_size(master: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(master, size)?)
}

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "netbsd"))]
fn open_master() -> io::Result<OwnedFd> {
    Ok(rustix::pty::openpt(
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?)
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "netbsd")))]
fn open_master() -> io::Result<OwnedFd> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
    rustix::io::fcntl_setfd(&master, rustix::io::FdFlags::CLOEXEC)?;
    Ok(master)
}

fn open_slave(master: &OwnedFd) -> io::Result<OwnedFd> {
    // TIOCGPTPEER opens the peer without a path lookup (no race with a replaced /dev/pts
    // entry); kernels before 4.13 lack it.
    #[cfg(target_os = "linux")]
    if let Ok(slave) = rustix::pty::ioctl_tiocgptpeer(
        master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    ) {
        return Ok(slave);
    }
    let name = rustix::pty::ptsname(master, Vec::new())?;
    let flags = rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC;
    Ok(rustix::fs::open(
        name.as_c_str(),
        flags,
        rustix::fs::Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opened_pty_has_requested_size() {
        let pty = Pty::open(24, 80).expect("open a pty");
        let size = rustix::termios::tcgetwinsize(&pty.slave).expect("get size");
        assert_eq!((size.ws_row, size.ws_col), (24, 80));
        set_size(&pty.master, 50, 132).expect("resize");
        let size = rustix::termios::tcgetwinsize(&pty.slave).expect("get size");
        assert_eq!((size.ws_row, size.ws_col), (50, 132));
    }
}
