//! Reaching a server over ssh: each connection is an `ssh HOST execd bridge` child whose stdin
//! and stdout carry a WebSocket to a per-user `execd serve` daemon on HOST (started by the
//! first bridge, listening on a `0600` Unix socket). When ssh dies, the next connection is a
//! new ssh child and the session is resumed on the daemon, which kept the processes running.
//!
//! Why a WebSocket over ssh's pipes rather than newline-delimited JSON: a connection cut
//! mid-message must never deliver the truncated message (the stdio framing hands a final line
//! without newline to the core as a frame); WebSocket frames are complete or the connection
//! fails. The daemon's shutdown arrives as close code 1001 and ends the session at once, a
//! hung ssh is noticed by the pings, and the bridge relays bytes without parsing them.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite};

use super::{with_timeout, ClientOptions};
use crate::runtime::{BoxFuture, BoxRead, BoxWrite, ChildCommand, Runtime};
use crate::transport::{self, FrameReader, FrameWriter};

/// How [`Client::connect_ssh`](super::Client::connect_ssh) reaches a host: the ssh command,
/// its options and the remote `execd`.
///
/// Each connection runs `SSH SSH_ARGS… -T -o BatchMode=yes -o ServerAliveInterval=10 -o
/// ServerAliveCountMax=3 -- HOST 'REMOTE_EXECD bridge'` in a process group of its own (a
/// terminal's Ctrl-C reaches only the caller, not ssh). ssh takes the first value it sees for
/// an option, so `-o` options in `ssh_args` override those defaults. `BatchMode=yes`: a
/// reconnect happens while nobody may be watching, so authentication must not prompt (keys or
/// an agent); ssh's own messages go to this process's stderr.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SshOptions {
    /// The ssh program. Default `ssh` (looked up on `PATH`).
    pub ssh_program: OsString,
    /// Arguments for ssh before the destination, one argv entry each (e.g. `["-p", "2222",
    /// "-i", "key", "-o", "StrictHostKeyChecking=no"]`). Default none.
    pub ssh_args: Vec<OsString>,
    /// The remote `execd`, as words for the remote shell (`bridge` is appended; not quoted, so
    /// `env XDG_RUNTIME_DIR=/run/me ~/bin/execd` works). Default `execd`, found on the remote
    /// `PATH`.
    pub remote_execd: String,
    /// The client's settings. `connect_timeout` bounds one ssh connection up to the end of
    /// the WebSocket handshake (including starting the daemon); 30 s by default here.
    pub client: ClientOptions,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            ssh_program: OsString::from("ssh"),
            ssh_args: Vec::new(),
            remote_execd: "execd".to_owned(),
            client: ClientOptions {
                connect_timeout: Duration::from_secs(30),
                ..ClientOptions::default()
            },
        }
    }
}

/// ssh's exit status when it could not connect or authenticate.
const SSH_FAILED: i32 = 255;
/// A shell's exit status for a command it did not find.
const NOT_FOUND: i32 = 127;
/// How long to wait for a failed ssh child's exit status before reporting the failure without it.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// Opens connections through `ssh HOST execd bridge` children.
pub(super) struct SshConnector {
    rt: Arc<dyn Runtime>,
    host: String,
    options: SshOptions,
}

impl SshConnector {
    pub(super) fn new(rt: Arc<dyn Runtime>, host: &str, options: SshOptions) -> Self {
        SshConnector {
            rt,
            host: host.to_owned(),
            options,
        }
    }

    /// The ssh command line of one connection (see [`SshOptions`]).
    fn command(&self) -> std::process::Command {
        let o = &self.options;
        let mut command = std::process::Command::new(&o.ssh_program);
        command
            .args(&o.ssh_args)
            .args(["-T", "-o", "BatchMode=yes"])
            .args([
                "-o",
                "ServerAliveInterval=10",
                "-o",
                "ServerAliveCountMax=3",
            ])
            .arg("--")
            .arg(&self.host)
            .arg(format!("{} bridge", o.remote_execd));
        // Its own process group: Ctrl-C on the caller's terminal must not kill ssh.
        command.process_group(0);
        command
    }

    /// Starts an ssh child and performs the WebSocket handshake over its pipes, within the
    /// connect timeout. The transport owns the child: dropping both halves kills it.
    ///
    /// # Errors
    /// ssh cannot be started (`NotFound`); ssh exited before the handshake (`ConnectionRefused`,
    /// naming its exit status and, for 127, the remote execd); the handshake failed or timed out.
    pub(super) async fn connect(&self) -> io::Result<(FrameReader, FrameWriter)> {
        let mut child = self.rt.spawn_child(ChildCommand {
            command: self.command(),
            stdin: Stdio::piped(),
            stdout: Stdio::piped(),
            stderr: Stdio::inherit(),
            kill_on_drop: true,
        })?;
        let (Some(write), Some(read)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the ssh child has no stdio pipes"));
        };
        let status = Arc::new(ChildStatus(Mutex::new(Some(child.status))));
        let stream = Box::new(SshStream {
            read,
            write,
            _status: Arc::clone(&status),
        });
        let timeout = self.options.client.connect_timeout;
        let security = &self.options.client.security;
        let limits = self.options.client.limits.clone();
        let handshake = transport::ws_handshake_over(&self.rt, stream, limits, security);
        let error = match with_timeout(&*self.rt, timeout, handshake).await {
            Some(Ok(connection)) => return Ok(connection),
            Some(Err(e)) => e,
            None => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no answer from `{} bridge` within {timeout:?}",
                    self.options.remote_execd
                ),
            ),
        };
        // The stream is gone with the failed handshake; ssh's exit status says why.
        let exit = status.take();
        let exited = match exit {
            Some(exit) => with_timeout(&*self.rt, EXIT_WAIT, exit).await,
            None => None,
        };
        Err(match exited {
            Some(Ok(status)) => self.exit_error(status),
            _ => error,
        })
    }

    fn exit_error(&self, status: ExitStatus) -> io::Error {
        let execd = &self.options.remote_execd;
        let why = match status.code() {
            Some(SSH_FAILED) => format!("ssh to {} failed (exit status 255)", self.host),
            Some(NOT_FOUND) => format!(
                "`{execd}` was not found on {} (exit status 127); install execd there or name it \
                 with --ssh-execd",
                self.host
            ),
            Some(code) => format!(
                "`{execd} bridge` on {} exited with status {code}",
                self.host
            ),
            None => format!("ssh was killed ({status})"),
        };
        io::Error::new(io::ErrorKind::ConnectionRefused, why)
    }
}

/// The exit of an ssh child, shared by its stream (dropping the future kills the child) and
/// the connector (which reads it when the handshake fails).
struct ChildStatus(Mutex<Option<BoxFuture<'static, io::Result<ExitStatus>>>>);

impl ChildStatus {
    fn take(&self) -> Option<BoxFuture<'static, io::Result<ExitStatus>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// An ssh child's stdout and stdin as one byte stream.
struct SshStream {
    read: BoxRead,
    write: BoxWrite,
    _status: Arc<ChildStatus>,
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_close(cx)
    }
}
