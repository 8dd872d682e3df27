//! `execd run`: start one command through a server, forward stdin and signals, stream its
//! output, exit with its code. Rides out dropped connections (`--url`) through the client's
//! recovery.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use async_signal::{Signal as OsSignal, Signals};
use execd_core::protocol::{Signal, StartParams, Stream, WriteStatus};
use execd_core::{PathUri, SpawnErrorKind};
use execd_runtime::{Client, ClientOptions, DefaultRuntime, Error, Event, Process, Runtime, Task};
use execd_smol::SmolRuntime;
use execd_tokio::TokioRuntime;

use crate::cli_errors::{self, Target};
use crate::RuntimeKind;
use futures_lite::{AsyncReadExt as _, StreamExt as _};

/// Exit code when execd itself fails (connection lost, protocol error), like ssh's 255.
pub(crate) const EXIT_EXECD_ERROR: u8 = 255;
/// Exit code when the command was not found (shell convention).
const EXIT_NOT_FOUND: u8 = 127;
/// Exit code when the command could not be started for another reason (shell convention).
const EXIT_CANNOT_RUN: u8 = 126;
/// Exit code when our stdout went away (128 + SIGPIPE, as a shell reports it).
pub(crate) const EXIT_BROKEN_PIPE: u8 = 141;

/// The warning printed when `--tty` is refused (ssh's words for `ssh -t`).
const NO_PTY_WARNING: &str =
    "execd: Pseudo-terminal will not be allocated because stdin is not a terminal.";

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Server URL (`ws://HOST:PORT`, `wss://…` or `unix:PATH`). Without it (and without
    /// `--ssh`), a local `execd serve --listen stdio` child is started and used.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Run the command on a PTY (its output arrives as one merged stream) and put this
    /// terminal in raw mode while it runs. Like `ssh -t`: refused with a warning when stdin is
    /// not a terminal; give it twice (`-tt`) to force a PTY anyway.
    #[arg(short = 't', long = "tty", action = clap::ArgAction::Count)]
    tty: u8,
    /// Force a PTY even when stdin is not a terminal (same as `-tt`).
    #[arg(long)]
    force_tty: bool,
    /// Working directory of the command (default: the current directory).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Set an environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Start from an empty environment instead of this one's.
    #[arg(long)]
    clear_env: bool,
    /// Seconds to keep reconnecting after the connection drops (`--url` and `--ssh`); 0 turns
    /// recovery off.
    #[arg(long, default_value_t = 25, value_name = "SECONDS")]
    recovery_window: u64,
    /// Print a summary (exit code, reconnects, elapsed time) to stderr at the end.
    #[arg(long)]
    stats: bool,
    /// Report lost connections and reconnects on stderr even when stderr is not a terminal.
    #[arg(short, long)]
    verbose: bool,
    /// Start the command, print `SESSION PROCESS` (its session and process ids) on stdout and
    /// exit, leaving the session detached with the command running (`--url` only). Re-attach
    /// with `execd attach`; the server kills the command once the session has stayed detached
    /// for its `--session-ttl` (default 30 s).
    #[arg(long, requires = "url")]
    detach: bool,
    /// The async runtime to run the client on (same behaviour on both).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Smol)]
    runtime: RuntimeKind,
    #[command(flatten)]
    security: crate::serve_auth::RunSecurityArgs,
    #[command(flatten)]
    ssh: crate::ssh::SshArgs,
    #[command(flatten)]
    sandbox: crate::run_sandbox::RunSandboxArgs,
    /// The command and its arguments. Everything from the first argument that is not an
    /// execd option on belongs to the command (`--` before it is optional).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        value_name = "CMD"
    )]
    argv: Vec<String>,
}

impl RunArgs {
    /// Whether to ask for a PTY: `-t` only when stdin is a terminal (else a warning), `-tt` or
    /// `--force-tty` always.
    fn wants_tty(&self) -> bool {
        if self.tty >= 2 || self.force_tty {
            return true;
        }
        if self.tty == 0 {
            return false;
        }
        if rustix::termios::isatty(io::stdin()) {
            return true;
        }
        eprintln!("{NO_PTY_WARNING}");
        false
    }

    fn target(&self) -> Target {
        // A host is named as ssh's URI form in messages: `ssh://alice@build1`.
        let url = match (&self.url, &self.ssh.ssh) {
            (Some(url), _) => url.clone(),
            (None, Some(host)) => format!("ssh://{host}"),
            (None, None) => return Target::Local,
        };
        Target::Url {
            url,
            recovery_window: self.recovery_window,
        }
    }

    /// The client's options for `--url` and `--ssh`: recovery per `--recovery-window`.
    fn client_options(&self) -> ClientOptions {
        let mut options = ClientOptions::default();
        options.core.client_name = "execd-run".to_owned();
        options.core.recovery = self.recovery_window > 0;
        options.core.recovery_window = Duration::from_secs(self.recovery_window);
        // A detached command's output is for `execd attach`: this client never prints it, so
        // it must not acknowledge it either (the server keeps it all, holding the command).
        options.core.acknowledge_output = !self.detach;
        options
    }
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    match args.runtime {
        RuntimeKind::Smol => run_on::<SmolRuntime>(args),
        RuntimeKind::Tokio => run_on::<TokioRuntime>(args),
    }
}

/// Runs the command on runtime `R` (a current-thread one for tokio), on this thread.
fn run_on<R: DefaultRuntime>(args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let tty = args.wants_tty();
    R::block_on(async {
        let target = args.target();
        let client = match (&args.url, &args.ssh.ssh) {
            (Some(url), _) => {
                let mut options = args.client_options();
                options.security = args.security.client_security(url)?;
                Client::<R>::connect_with(url, options)
                    .await
                    .map_err(|e| cli_errors::connect_failed(&target, &e))?
            }
            (None, Some(host)) => {
                Client::<R>::connect_ssh(host, args.ssh.options(args.client_options()))
                    .await
                    .map_err(|e| cli_errors::connect_failed(&target, &e))?
            }
            (None, None) => Client::<R>::spawn_stdio_command(local_server()?)
                .await
                .map_err(|e| cli_errors::connect_failed(&target, &e))?,
        };
        let run = Run {
            report: Report {
                target,
                verbose: args.verbose || rustix::termios::isatty(io::stderr()),
            },
            args,
            tty,
        };
        run.run(client, R::default_runtime()?, started).await
    })
    .context("cannot start the async runtime")?
}

/// `execd serve --listen stdio` in a session of its own: a terminal's Ctrl-C (SIGINT to the
/// foreground process group) then reaches only this execd, which forwards it to the command,
/// instead of also killing the server (as `ssh host cmd` behaves).
fn local_server() -> anyhow::Result<std::process::Command> {
    use std::os::unix::process::CommandExt as _;
    let mut command = std::process::Command::new(crate::self_exe()?);
    command.args(["serve", "--listen", "stdio"]);
    // SAFETY: the hook only calls setsid(2), which is async-signal-safe and touches no memory
    // shared with the parent.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
    }
    Ok(command)
}

/// What `execd run` reports about the connection on stderr.
struct Report {
    target: Target,
    /// Print reconnects (stderr is a terminal, or `--verbose`); the final error always is.
    verbose: bool,
}

struct Run {
    args: RunArgs,
    tty: bool,
    report: Report,
}

impl Run {
    async fn run<R: Runtime>(
        self,
        client: Client<R>,
        rt: R,
        started: Instant,
    ) -> anyhow::Result<ExitCode> {
        let Run { args, tty, report } = self;
        let mut params = start_params(&args, tty)?;
        if args.ssh.ssh.is_some() {
            let env = env_overrides(&args)?;
            crate::ssh::remote_params(&client, &mut params, args.cwd.as_ref(), env, args.clear_env)
                .await?;
        }
        // Built from the final `cwd` (the remote home directory with `--ssh`): its workspace.
        params.sandbox = args.sandbox.params(&params.cwd)?;
        params.env.extend(args.sandbox.env());
        // Caught from before the start: a Ctrl-C as soon as the command runs is forwarded,
        // never the default action (killing execd).
        let signals = forwarded_signals();

        let process = match client.start(params).await {
            Ok(p) => p,
            Err(Error::Rpc(e)) => {
                // The server names the kind of spawn failure (PROTOCOL.md §5.1, ext
                // `data.kind`).
                let kind = e
                    .data
                    .as_ref()
                    .and_then(|d| d.get("kind"))
                    .and_then(serde_json::Value::as_str)
                    .map_or(SpawnErrorKind::Other, SpawnErrorKind::from_name);
                let program = &args.argv[0];
                let why = cli_errors::start_failed(&e.message);
                match kind {
                    SpawnErrorKind::BadCwd => eprintln!(
                        "execd: cannot run {program:?}: working directory {:?} does not exist \
                         or is not a directory ({why})",
                        args.cwd.as_deref().unwrap_or(std::path::Path::new(".")),
                    ),
                    SpawnErrorKind::NotFound => {
                        eprintln!("execd: {program:?}: command not found ({why})");
                    }
                    SpawnErrorKind::PermissionDenied => {
                        eprintln!("execd: {program:?}: cannot execute ({why})");
                    }
                    _ => eprintln!("execd: cannot run {program:?}: {why}"),
                }
                return Ok(ExitCode::from(match kind {
                    SpawnErrorKind::NotFound => EXIT_NOT_FOUND,
                    _ => EXIT_CANNOT_RUN,
                }));
            }
            Err(e) => return Err(anyhow!(e).context("process/start failed")),
        };
        if args.detach {
            let session = client.session_id().context("no session id")?;
            println!("{session} {}", process.id());
            // Closing the connection detaches the session; the command keeps running.
            client.close().await;
            return Ok(ExitCode::SUCCESS);
        }

        // Raw mode only when this side is a terminal; restored on every path out (Drop).
        let raw = if tty {
            RawMode::enter().context("cannot put the terminal in raw mode")?
        } else {
            None
        };
        if tty {
            send_window_size(&process).await;
        }
        // Dropping the tasks (at return) stops the forwarding.
        let _stdin: Task = rt.spawn(Box::pin(forward_stdin(process.clone(), tty)));
        let _signals: Task = match signals {
            Some(signals) => rt.spawn(Box::pin(forward_signals(signals, process.clone(), tty))),
            None => rt.spawn(Box::pin(async {})),
        };

        let outcome = print_events(&process, &report).await;
        drop(raw);
        let code = match outcome {
            Ok(Outcome::Exited {
                code,
                sandbox_denied,
            }) => {
                if sandbox_denied && args.sandbox.enabled() {
                    eprintln!(
                        "execd: {:?} exited with {code}, probably blocked by the sandbox \
                         (the server flagged it sandboxDenied)",
                        args.argv[0]
                    );
                }
                u8::try_from(code & 0xff).unwrap_or(EXIT_EXECD_ERROR)
            }
            Ok(Outcome::BrokenPipe) => {
                let _ = process.terminate().await;
                EXIT_BROKEN_PIPE
            }
            Err(e) => {
                eprintln!("execd: {e:#}");
                EXIT_EXECD_ERROR
            }
        };
        if args.stats {
            eprintln!(
                "execd: exit code {code}, reconnects {}, elapsed {} ms",
                client.reconnects(),
                started.elapsed().as_millis()
            );
        }
        Ok(ExitCode::from(code))
    }
}

fn start_params(args: &RunArgs, tty: bool) -> anyhow::Result<StartParams> {
    let mut env: BTreeMap<String, String> = if args.clear_env {
        BTreeMap::new()
    } else {
        std::env::vars().collect()
    };
    env.extend(env_overrides(args)?);
    let cwd = match &args.cwd {
        Some(dir) => std::path::absolute(dir)?,
        None => std::env::current_dir().context("no current directory")?,
    };
    Ok(StartParams {
        process_id: format!("run-{}", uuid::Uuid::new_v4()),
        argv: args.argv.clone(),
        cwd: PathUri::from_host_path(&cwd).map_err(|e| anyhow!("{e}"))?,
        env,
        tty,
        pipe_stdin: !tty,
        arg0: None,
        env_policy: None,
        sandbox: None,
        enforce_managed_network: false,
    })
}

/// The `--env K=V` flags.
fn env_overrides(args: &RunArgs) -> anyhow::Result<BTreeMap<String, String>> {
    args.env
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env takes K=V, not {kv:?}"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

enum Outcome {
    /// The exit code and whether the server classified the exit as a sandbox denial.
    Exited {
        code: i32,
        sandbox_denied: bool,
    },
    BrokenPipe,
}

/// Writes the process's output to ours until it closes; reports reconnects.
async fn print_events(process: &Process, report: &Report) -> anyhow::Result<Outcome> {
    let mut stdout = io::stdout().lock();
    let mut exited = None;
    while let Some(event) = process.next_event().await {
        match event {
            Event::Output { stream, chunk, .. } => {
                let written = if stream == Stream::Stderr {
                    let mut stderr = io::stderr().lock();
                    stderr.write_all(&chunk).and_then(|()| stderr.flush())
                } else {
                    stdout.write_all(&chunk).and_then(|()| stdout.flush())
                };
                match written {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                        return Ok(Outcome::BrokenPipe)
                    }
                    other => other.context("cannot write the output")?,
                }
            }
            Event::Exited {
                exit_code: code,
                sandbox_denied,
                ..
            } => {
                exited = Some(Outcome::Exited {
                    code,
                    sandbox_denied,
                });
            }
            Event::Closed { .. } => break,
            Event::Gap { lost_chunks, .. } => {
                eprintln!("execd: {lost_chunks} chunks of output were lost (evicted on the server while disconnected)");
            }
            Event::ProcessLost => return Err(anyhow!("the server no longer knows the process")),
            Event::SessionLost(reason) => {
                return Err(anyhow!(cli_errors::session_lost(&report.target, &reason)))
            }
            Event::Reconnecting if report.verbose => {
                eprintln!("execd: {}", cli_errors::reconnecting(&report.target));
            }
            Event::Resumed if report.verbose => {
                eprintln!("execd: {}", cli_errors::reconnected(&report.target));
            }
            _ => {}
        }
    }
    exited.context("the process closed without an exit code")
}

/// Forwards our stdin as writes; EOF closes the child's stdin (on a PTY: sends ^D).
async fn forward_stdin(process: Process, tty: bool) {
    let mut stdin = blocking::Unblock::new(io::stdin());
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        loop {
            match process.write(buf[..n].to_vec()).await {
                Ok(WriteStatus::Accepted) => break,
                // execd accepts writes while a spawn is pending; a server that answers
                // `starting` (the reference's status) did not take it: send it again shortly.
                Ok(WriteStatus::Starting) => {
                    smol::Timer::after(Duration::from_millis(5)).await;
                }
                // The child closed its stdin or is gone; nothing more to forward.
                Ok(_) | Err(_) => return,
            }
        }
    }
    if tty {
        let _ = process.write(vec![0x04]).await;
        return;
    }
    // closeStdin is idempotent on the server: a call cut off by a reconnect is sent again.
    while let Err(Error::Closed) = process.close_stdin().await {
        if process.client().is_closed() {
            return;
        }
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the remote process group, and SIGWINCH as
/// a resize on a PTY; a third SIGINT kills the process group. (In raw mode Ctrl-C is a byte on stdin and reaches the PTY that way.)
async fn forward_signals(mut signals: Signals, process: Process, tty: bool) {
    let mut interrupts = 0;
    while let Some(Ok(signal)) = signals.next().await {
        let remote = match signal {
            OsSignal::Int => {
                interrupts += 1;
                if interrupts >= 3 {
                    // The command ignores Ctrl-C; the third one kills its process group.
                    let _ = process.terminate().await;
                    continue;
                }
                Signal::Int
            }
            OsSignal::Term => Signal::Term,
            OsSignal::Hup => Signal::Hup,
            OsSignal::Quit => Signal::Quit,
            OsSignal::Winch => {
                if tty {
                    send_window_size(&process).await;
                }
                continue;
            }
            _ => continue,
        };
        let _ = process.signal(remote).await;
    }
}

/// Catches SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGWINCH for forwarding; `None` if they
/// cannot be caught (then they act as usual).
pub(crate) fn forwarded_signals() -> Option<Signals> {
    Signals::new([
        OsSignal::Int,
        OsSignal::Term,
        OsSignal::Hup,
        OsSignal::Quit,
        OsSignal::Winch,
    ])
    .ok()
}

async fn send_window_size(process: &Process) {
    if let Ok(size) = rustix::termios::tcgetwinsize(io::stdout()) {
        if size.ws_row > 0 && size.ws_col > 0 {
            let _ = process.resize(size.ws_row, size.ws_col).await;
        }
    }
}

/// The terminal in raw mode; the saved settings come back on drop (every return path and
/// unwinding; `execd` never calls `process::exit` while this is alive).
pub(crate) struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    /// `None` when stdin is not a terminal.
    pub(crate) fn enter() -> io::Result<Option<RawMode>> {
        let stdin = io::stdin();
        if !rustix::termios::isatty(&stdin) {
            return Ok(None);
        }
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
