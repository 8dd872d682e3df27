//! Helpers shared by the tests that drive the real `execd` binary: bounded waits (a test never
//! hangs: a command that overruns is killed and the test fails with its stderr) and a server
//! child that dies with the test.

// Each test file uses a subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub(crate) const EXECD: &str = env!("CARGO_BIN_EXE_execd");

/// Waits for `child`'s output; after `timeout` kills it and fails the test, printing what it
/// wrote to stderr.
pub(crate) fn wait_within(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let stderr = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok)
                .map(|out| String::from_utf8_lossy(&out.stderr).into_owned());
            panic!("command timed out after {timeout:?}; its stderr: {stderr:?}");
        }
    }
}

/// Runs `cmd` to completion with stdin from /dev/null, as [`wait_within`].
pub(crate) fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_within(child, timeout)
}

/// A child killed and reaped when the test ends, however it ends.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (an `execd serve` command line; its stdout is taken) and returns it with the
/// URL it prints first, failing the test if none comes within `timeout`.
pub(crate) fn serve_with(mut cmd: Command, timeout: Duration) -> (KillOnDrop, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn execd serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let guard = KillOnDrop(child);
    let line = rx
        .recv_timeout(timeout)
        .expect("execd serve printed its URL");
    let url = line.trim().to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url:?}");
    (guard, url)
}

/// Starts `execd serve --listen ws://127.0.0.1:0 --runtime RUNTIME` (stderr inherited) and
/// returns it with its printed URL.
pub(crate) fn serve_on(runtime: &str, timeout: Duration) -> (KillOnDrop, String) {
    let mut cmd = Command::new(EXECD);
    cmd.args([
        "serve",
        "--listen",
        "ws://127.0.0.1:0",
        "--runtime",
        runtime,
    ])
    .stderr(Stdio::inherit());
    serve_with(cmd, timeout)
}
