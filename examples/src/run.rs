//! `execd run`: start one command through a server, stream its output, exit with its code.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_core::PathUri;
use execd_smol::transport::{self, FrameReader, FrameWriter, Inbound, Limits};
use serde_json::{json, Value};

/// Exit code when execd itself fails (connection lost, protocol error), like ssh's 255.
pub(crate) const EXIT_EXECD_ERROR: u8 = 255;
/// Exit code when the command was not found (shell convention).
const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when the command could not be started for another reason (shell convention).
const EXIT_CANNOT_RUN: u8 = 126;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Server URL (`ws://HOST:PORT`). Without it, a local `execd serve --listen stdio` child
    /// is started and used.
    #[arg(long)]
    url: Option<String>,
    /// Run the command on a PTY (its output arrives as one merged stream).
    #[arg(long)]
    tty: bool,
    /// Working directory of the command (default: the current directory).
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Set an environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Start from an empty environment instead of this one's.
    #[arg(long)]
    clear_env: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    argv: Vec<String>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    smol::block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut env: BTreeMap<String, String> = if args.clear_env {
        BTreeMap::new()
    } else {
        std::env::vars().collect()
    };
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env takes K=V, not {kv:?}"))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    let cwd = match args.cwd {
        Some(dir) => std::path::absolute(dir)?,
        None => std::env::current_dir().context("no current directory")?,
    };
    let cwd = PathUri::from_host_path(&cwd).map_err(|e| anyhow!("{e}"))?;

    let mut conn = match &args.url {
        Some(url) => {
            let (reader, writer) = transport::ws_connect(url, Limits::default())
                .await
                .with_context(|| format!("cannot connect to {url}"))?;
            Conn {
                reader,
                writer,
                _child: None,
            }
        }
        None => spawn_local_server()?,
    };

    let init = conn
        .call(1, "initialize", json!({"clientName": "execd-run"}))
        .await?;
    init.get("sessionId")
        .context("initialize result has no sessionId")?;
    conn.notify("initialized", json!({})).await?;

    let process_id = format!("run-{}", uuid::Uuid::new_v4());
    let params = json!({
        "processId": process_id, "argv": args.argv, "cwd": cwd, "env": env, "tty": args.tty,
    });
    conn.send_request(2, "process/start", params).await?;

    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut exit_code: Option<i32> = None;
    loop {
        let msg = conn.recv().await?;
        if msg.get("id") == Some(&json!(2)) {
            if let Some(err) = msg.get("error") {
                let message = err["message"].as_str().unwrap_or("unknown error");
                eprintln!("execd: cannot run {:?}: {message}", args.argv[0]);
                let code = if message.contains("os error 2") {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_CANNOT_RUN
                };
                return Ok(ExitCode::from(code));
            }
            continue;
        }
        let params = &msg["params"];
        if params["processId"].as_str() != Some(process_id.as_str()) {
            continue;
        }
        match msg["method"].as_str() {
            Some("process/output") => {
                let chunk = STANDARD
                    .decode(params["chunk"].as_str().unwrap_or(""))
                    .context("server sent invalid base64")?;
                if params["stream"] == "stderr" {
                    stderr.write_all(&chunk)?;
                    stderr.flush()?;
                } else {
                    stdout.write_all(&chunk)?;
                    stdout.flush()?;
                }
            }
            Some("process/exited") => exit_code = params["exitCode"].as_i64().map(|c| c as i32),
            Some("process/closed") => break,
            _ => {}
        }
    }
    let code = exit_code.context("process closed without an exit code")?;
    Ok(ExitCode::from(
        u8::try_from(code & 0xff).unwrap_or(EXIT_EXECD_ERROR),
    ))
}

struct Conn {
    reader: FrameReader,
    writer: FrameWriter,
    _child: Option<ChildGuard>,
}

/// Kills the local server child when the client is done.
struct ChildGuard(async_process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

fn spawn_local_server() -> anyhow::Result<Conn> {
    let mut child = async_process::Command::new(crate::self_exe()?)
        .args(["serve", "--listen", "stdio"])
        .stdin(async_process::Stdio::piped())
        .stdout(async_process::Stdio::piped())
        .stderr(async_process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a local execd server")?;
    let stdin = child.stdin.take().context("no stdin pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (reader, writer) = transport::stdio_transport(stdout, stdin, Limits::default());
    Ok(Conn {
        reader,
        writer,
        _child: Some(ChildGuard(child)),
    })
}

impl Conn {
    async fn send_request(&mut self, id: i64, method: &str, params: Value) -> anyhow::Result<()> {
        self.writer
            .send(json!({"id": id, "method": method, "params": params}).to_string())
            .await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn notify(&mut self, method: &str, params: Value) -> anyhow::Result<()> {
        self.writer
            .send(json!({"method": method, "params": params}).to_string())
            .await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Sends a request and waits for its result, skipping other messages.
    async fn call(&mut self, id: i64, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send_request(id, method, params).await?;
        let deadline = Duration::from_secs(30);
        let wait = async {
            loop {
                let msg = self.recv().await?;
                if msg.get("id") == Some(&json!(id)) {
                    if let Some(err) = msg.get("error") {
                        bail!(
                            "{method} failed: {}",
                            err["message"].as_str().unwrap_or("?")
                        );
                    }
                    return Ok(msg["result"].clone());
                }
            }
        };
        futures_lite::future::or(wait, async {
            smol::Timer::after(deadline).await;
            Err(anyhow!("{method}: no answer within {deadline:?}"))
        })
        .await
    }

    async fn recv(&mut self) -> anyhow::Result<Value> {
        loop {
            match self.reader.recv().await {
                Some(Ok(Inbound::Frame(bytes))) => {
                    return serde_json::from_slice(&bytes).context("server sent invalid JSON");
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("connection to the server failed"),
                None => bail!("the server closed the connection"),
            }
        }
    }
}
