//! The server under test: a local `execd serve`, any command printing its URL, or a URL.

use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

/// Where the server comes from.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// `execd serve --listen ws://127.0.0.1:0` from this binary.
    Local,
    /// A shell command that serves and prints its `ws://` URL as its first stdout line.
    Cmd(String),
    /// A running server; its pid (for RSS) if given.
    Url { url: String, pid: Option<u32> },
}

/// One running server. An owned server is killed when this is dropped.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) url: String,
    pub(crate) pid: Option<u32>,
    child: Option<Child>,
}

impl Target {
    /// Whether [`start`](Self::start) launches a fresh server each time.
    pub(crate) fn owned(&self) -> bool {
        !matches!(self, Target::Url { .. })
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Local => "local execd serve".to_owned(),
            Target::Cmd(cmd) => format!("`{cmd}`"),
            Target::Url { url, .. } => url.clone(),
        }
    }

    /// Starts a fresh server (owned targets) or returns the given one.
    pub(crate) fn start(&self) -> anyhow::Result<Running> {
        let command = match self {
            Target::Url { url, pid } => {
                return Ok(Running {
                    url: url.clone(),
                    pid: *pid,
                    child: None,
                })
            }
            Target::Local => return start_local(&[]),
            Target::Cmd(cmd) => {
                // `exec` so that the pid is the server's, not the shell's.
                let mut c = Command::new("/bin/sh");
                c.args(["-c", &format!("exec {cmd}")]).stderr(Stdio::null());
                c
            }
        };
        spawn(command, &self.describe())
    }
}

/// A local `execd serve --listen ws://127.0.0.1:0` from this binary with `extra` arguments
/// (e.g. `--tls-cert`/`--tls-key`, when its URL is `wss://`).
pub(crate) fn start_local(extra: &[&std::ffi::OsStr]) -> anyhow::Result<Running> {
    let mut c = Command::new(crate::self_exe()?);
    c.args(["serve", "--listen", "ws://127.0.0.1:0"])
        .args(extra);
    spawn(c, &Target::Local.describe())
}

/// Starts `command`, which prints its `ws://` or `wss://` URL as its first stdout line.
fn spawn(mut command: Command, describe: &str) -> anyhow::Result<Running> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {describe}"))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let pid = child.id();
    let mut running = Running {
        url: String::new(),
        pid: Some(pid),
        child: Some(child),
    };
    running.url = first_line(stdout).with_context(|| {
        format!("{describe} printed no URL (its stderr is discarded; run it by hand to see why)")
    })?;
    ensure!(
        running.url.starts_with("ws://") || running.url.starts_with("wss://"),
        "{describe} printed {:?}, not a ws:// URL",
        running.url
    );
    Ok(running)
}

/// Reads the first line; the rest of the pipe is left open (closing it could kill a server
/// that logs to stdout with SIGPIPE) by leaking the handle into a thread that drains it.
fn first_line(mut stdout: std::process::ChildStdout) -> anyhow::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Ok(String::from_utf8(line)?.trim().to_owned())
}

impl Drop for Running {
    /// SIGTERM first, so that a server that cleans up on SIGTERM does (the reference kills
    /// its children then, but not on SIGKILL); SIGKILL after 3 s.
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
