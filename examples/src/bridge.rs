//! `execd bridge`: relays stdin and stdout to this user's `execd serve` daemon on its Unix
//! socket, starting the daemon first when none answers. `execd run --ssh HOST` runs it on HOST
//! as `ssh HOST execd bridge`; the bytes relayed are a WebSocket the client speaks end to end,
//! so the bridge never parses them.
//!
//! Files, in `--dir` (default `$XDG_RUNTIME_DIR/execd`, else `~/.execd`; created `0700`):
//! `serve.sock` (the daemon's socket, `0600`), `serve.lock` (held while a bridge checks for
//! and starts the daemon, so two bridges start one), `serve.log` (the daemon's stdout and
//! stderr), `serve.pid`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a new daemon may take to accept its first connection.
const DAEMON_START_LIMIT: Duration = Duration::from_secs(10);
/// How often a starting daemon's socket is tried.
const DAEMON_POLL: Duration = Duration::from_millis(10);
/// Bytes moved per read in each direction.
const RELAY_BUFFER: usize = 64 << 10;
/// After stdin ends (the ssh connection is gone), how long the daemon has to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub(crate) struct BridgeArgs {
    /// The daemon's directory (socket, lock, log, pid file). Default
    /// `$XDG_RUNTIME_DIR/execd`, else `~/.execd`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Flags for `execd serve` when this bridge starts the daemon (after `--`), e.g. `--
    /// --session-ttl 300`; a running daemon keeps its own.
    #[arg(last = true, value_name = "SERVE_FLAG")]
    serve_flags: Vec<String>,
}

pub(crate) fn bridge(args: &BridgeArgs) -> anyhow::Result<ExitCode> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => default_dir()?,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // Only this user may reach the socket, whatever the directory was created with.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))?;
    let socket = connect_or_start(&dir, &args.serve_flags)?;
    relay(socket)?;
    Ok(ExitCode::SUCCESS)
}

/// `$XDG_RUNTIME_DIR/execd` when that is set (a per-user tmpfs), else `~/.execd`.
fn default_dir() -> anyhow::Result<PathBuf> {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(runtime).join("execd"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_RUNTIME_DIR nor HOME is set; pass --dir")?;
    Ok(PathBuf::from(home).join(".execd"))
}

/// A connection to the daemon in `dir`, started first (under the lock) if none answers.
fn connect_or_start(dir: &Path, serve_flags: &[String]) -> anyhow::Result<UnixStream> {
    let socket = dir.join("serve.sock");
    if let Ok(stream) = UnixStream::connect(&socket) {
        return Ok(stream);
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("serve.lock"))
        .context("cannot open the daemon's lock file")?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("cannot lock the daemon's lock file")?;
    // Another bridge may have started it while this one waited for the lock.
    if let Ok(stream) = UnixStream::connect(&socket) {
        return Ok(stream);
    }
    // A socket file nobody accepts on is left from a daemon that died.
    match fs::remove_file(&socket) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}", socket.display()))
        }
        _ => {}
    }
    let stream = start_daemon(dir, &socket, serve_flags)?;
    drop(lock);
    Ok(stream)
}

/// Starts `execd serve --listen unix:SOCKET SERVE_FLAGS…` in a session of its own (it
/// outlives this bridge and the ssh connection) and waits until it accepts.
fn start_daemon(dir: &Path, socket: &Path, serve_flags: &[String]) -> anyhow::Result<UnixStream> {
    let log_path = dir.join("serve.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = std::process::Command::new(crate::self_exe()?);
    command
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .args(serve_flags)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the hook only calls setsid(2), which is async-signal-safe and touches no memory
    // shared with the parent.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    let mut daemon = command.spawn().context("cannot start the execd daemon")?;
    fs::write(dir.join("serve.pid"), format!("{}\n", daemon.id()))
        .context("cannot write the daemon's pid file")?;
    let started = Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(stream) => return Ok(stream),
            Err(_) if started.elapsed() < DAEMON_START_LIMIT => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("the execd daemon did not accept on {}", socket.display())
                })
            }
        }
        if let Some(status) = daemon.try_wait()? {
            bail!(
                "the execd daemon exited ({status}); see {}",
                log_path.display()
            );
        }
        std::thread::sleep(DAEMON_POLL);
    }
}

/// Copies stdin to the socket and the socket to stdout until the daemon closes its side; at
/// stdin EOF the socket's write side is shut down, and the daemon gets [`CLOSE_GRACE`] to
/// close.
fn relay(socket: UnixStream) -> anyhow::Result<()> {
    // Unbuffered duplicates of descriptors 0 and 1: std's stdout would hold bytes until a
    // newline.
    let mut stdin = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    let mut stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    let mut to_daemon = socket.try_clone()?;
    std::thread::spawn(move || {
        let _ = copy(&mut stdin, &mut to_daemon);
        let _ = to_daemon.shutdown(std::net::Shutdown::Write);
        std::thread::sleep(CLOSE_GRACE);
        // The daemon did not close; nobody is left to read what it sends.
        std::process::exit(0);
    });
    let mut from_daemon = socket;
    match copy(&mut from_daemon, &mut stdout) {
        Ok(_) => Ok(()),
        // ssh is gone: nothing to relay to.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e).context("relay failed"),
    }
}

/// Copies `from` to `to` until EOF with plain reads and writes. Not `io::copy`: on Linux it
/// moves socket data into sshd's pipe with `splice(2)`, and sshd then forwarded nothing until
/// the pipe closed.
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}
