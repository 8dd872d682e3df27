//! `execd attach`: re-attach to a process of a detached session: its output from the oldest
//! retained chunk on, then live, each chunk once (read by seq with `process/read`); our stdin
//! and signals go to it; exits with its exit code.

use std::io::{self, Write as _};
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use async_signal::{Signal as OsSignal, Signals};
use base64::Engine as _;
use execd_core::protocol::{method, ListResult, ReadResult, Stream};
use futures_lite::{AsyncReadExt as _, StreamExt as _};
use serde_json::json;

use crate::remote_session::{CallError, RemoteSession};
use crate::run::{RawMode, EXIT_BROKEN_PIPE, EXIT_EXECD_ERROR};

/// How long one `process/read` long poll waits for output, in ms.
const POLL_MS: u64 = 30_000;

#[derive(Debug, clap::Args)]
pub(crate) struct AttachArgs {
    /// Server URL (`ws://HOST:PORT` or `wss://…`).
    #[arg(long, value_name = "URL")]
    url: String,
    #[command(flatten)]
    security: crate::serve_auth::RunSecurityArgs,
    /// The detached session, as printed by `execd run --detach`.
    #[arg(value_name = "SESSION")]
    session: String,
    /// The process in it, as printed by `execd run --detach` (see `execd ps`).
    #[arg(value_name = "PROCESS")]
    process: String,
}

pub(crate) fn attach(args: AttachArgs) -> anyhow::Result<ExitCode> {
    smol::block_on(async {
        let security = args.security.client_security(&args.url)?;
        let signals = crate::run::forwarded_signals();
        let remote = RemoteSession::open(&args.url, &security, Some(&args.session)).await?;
        let outcome = follow(&remote, &args.process, signals).await;
        // Closing the connection detaches the session again (a closed process stays readable
        // until the session expires).
        remote.detach().await;
        match outcome {
            Ok(code) => Ok(ExitCode::from(code)),
            Err(e) => {
                eprintln!("execd: {e:#}");
                Ok(ExitCode::from(EXIT_EXECD_ERROR))
            }
        }
    })
}

/// Streams the process's output until it closes; returns the exit code to exit with.
async fn follow(
    remote: &RemoteSession,
    process_id: &str,
    signals: Option<Signals>,
) -> anyhow::Result<u8> {
    let listed: ListResult = serde_json::from_value(
        remote
            .call(method::PROCESS_LIST, json!({}))
            .await
            .map_err(|e| anyhow!("process/list failed: {e}"))?,
    )
    .context("unreadable process/list result")?;
    let info = listed
        .processes
        .iter()
        .find(|p| p.process_id == process_id)
        .with_context(|| {
            format!(
                "session {} has no process {process_id}",
                remote.session_id()
            )
        })?;
    let tty = info.tty;
    let raw = if tty {
        RawMode::enter().context("cannot put the terminal in raw mode")?
    } else {
        None
    };
    if tty {
        send_window_size(remote, process_id).await;
    }
    let _stdin = smol::spawn(forward_stdin(remote.clone(), process_id.to_owned(), tty));
    let _signals = signals.map(|signals| {
        smol::spawn(forward_signals(
            signals,
            remote.clone(),
            process_id.to_owned(),
            tty,
        ))
    });
    let code = print_output(remote, process_id).await;
    drop(raw);
    code
}

async fn print_output(remote: &RemoteSession, process_id: &str) -> anyhow::Result<u8> {
    let mut after_seq = 0;
    loop {
        let params = json!({"processId": process_id, "afterSeq": after_seq, "waitMs": POLL_MS});
        let result = match remote.call(method::PROCESS_READ, params).await {
            Ok(result) => result,
            Err(CallError::Closed) => return Err(anyhow!("connection to the server lost")),
            Err(e) => return Err(anyhow!("process/read failed: {e}")),
        };
        let read: ReadResult =
            serde_json::from_value(result).context("unreadable process/read result")?;
        if read.lost_chunks > 0 {
            eprintln!(
                "execd: {} chunks of output were lost (evicted on the server before they were read)",
                read.lost_chunks
            );
        }
        for chunk in &read.chunks {
            let written = if chunk.stream == Stream::Stderr {
                let mut stderr = io::stderr().lock();
                stderr
                    .write_all(&chunk.chunk.0)
                    .and_then(|()| stderr.flush())
            } else {
                let mut stdout = io::stdout().lock();
                stdout
                    .write_all(&chunk.chunk.0)
                    .and_then(|()| stdout.flush())
            };
            match written {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(EXIT_BROKEN_PIPE),
                other => other.context("cannot write the output")?,
            }
        }
        after_seq = read.next_seq.saturating_sub(1).max(after_seq);
        if read.closed {
            let code = read
                .exit_code
                .context("the process closed without an exit code")?;
            return Ok(u8::try_from(code & 0xff).unwrap_or(EXIT_EXECD_ERROR));
        }
    }
}

/// Forwards our stdin as `process/write`s; EOF closes the process's stdin (on a PTY: ^D).
async fn forward_stdin(remote: RemoteSession, process_id: String, tty: bool) {
    let mut stdin = blocking::Unblock::new(io::stdin());
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if !write(&remote, &process_id, &buf[..n]).await {
            return;
        }
    }
    if tty {
        write(&remote, &process_id, &[0x04]).await;
        return;
    }
    let _ = remote
        .call(
            method::PROCESS_CLOSE_STDIN,
            json!({"processId": process_id}),
        )
        .await;
}

/// One `process/write`; whether it was accepted.
async fn write(remote: &RemoteSession, process_id: &str, bytes: &[u8]) -> bool {
    let params = json!({
        "processId": process_id,
        "chunk": base64::engine::general_purpose::STANDARD.encode(bytes),
        "writeId": uuid::Uuid::new_v4().to_string(),
    });
    match remote.call(method::PROCESS_WRITE, params).await {
        Ok(result) => result["status"] == "accepted",
        Err(_) => false,
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the process group, and SIGWINCH as a
/// resize on a PTY.
async fn forward_signals(
    mut signals: Signals,
    remote: RemoteSession,
    process_id: String,
    tty: bool,
) {
    while let Some(Ok(signal)) = signals.next().await {
        let name = match signal {
            OsSignal::Int => "interrupt",
            OsSignal::Term => "SIGTERM",
            OsSignal::Hup => "SIGHUP",
            OsSignal::Quit => "SIGQUIT",
            OsSignal::Winch => {
                if tty {
                    send_window_size(&remote, &process_id).await;
                }
                continue;
            }
            _ => continue,
        };
        let _ = remote
            .call(
                method::PROCESS_SIGNAL,
                json!({"processId": process_id, "signal": name}),
            )
            .await;
    }
}

async fn send_window_size(remote: &RemoteSession, process_id: &str) {
    if let Ok(size) = rustix::termios::tcgetwinsize(io::stdout()) {
        if size.ws_row > 0 && size.ws_col > 0 {
            let _ = remote
                .call(
                    method::PROCESS_RESIZE,
                    json!({"processId": process_id, "rows": size.ws_row, "cols": size.ws_col}),
                )
                .await;
        }
    }
}
