//! `execd`: the execd server and a command-line client.
//!
//! - `execd serve [--listen ws://127.0.0.1:0 | stdio] [--runtime smol|tokio] [--session-ttl
//!   SECONDS] [--ws-auth MODE …] [--tls-cert PEM --tls-key PEM]` prints the bound URL as its
//!   first stdout line and serves; logs go to stderr. See docs/SECURITY.md for the auth flags.
//! - `execd run [--url URL] [-t] [--cwd DIR] [--env K=V]… [--] CMD ARG…` runs one command and
//!   exits with its exit code. Without `--url` it starts `execd serve --listen stdio` as a child
//!   and talks to it over its stdin/stdout. `--detach` leaves it running in a detached session.
//! - `execd ps --url URL [SESSION]` and `execd attach --url URL SESSION PROCESS` list and
//!   re-attach to the processes of a detached session.
//! - `execd run --ssh [USER@]HOST …` runs it on HOST through `ssh HOST execd bridge`, which
//!   relays to (and first starts) a per-user `execd serve --listen unix:…` daemon there.
//! - `execd completions SHELL`, `execd man`: completion scripts and the man page.
//! - `execd fetch [--url URL] [-X METHOD] [-H 'Name: value']… [--data BODY] [--fail] URL`
//!   fetches URL from the server's host: status on stderr, body streamed to stdout.
//! - `execd cp [--url URL] [-r] SOURCE DEST` copies files and trees between this host and the
//!   server's (`:PATH` names the server side), like scp.

mod attach;
mod bench;
mod bridge;
mod cli_errors;
mod completions;
mod cp;
mod fetch;
mod help;
mod logging;
mod ps;
mod remote_session;
mod run;
mod run_sandbox;
mod serve_auth;
mod serve_limits;
mod shutdown;
mod ssh;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use execd_core::ServerConfig;
use execd_runtime::{DefaultRuntime, Server, ServerOptions, WsServer};
use execd_smol::SmolRuntime;
use execd_tokio::TokioRuntime;

#[derive(Debug, Parser)]
#[command(
    name = "execd",
    version,
    about = "A remote process executor speaking the Codex exec-server protocol",
    after_help = help::EXECD
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the protocol on a WebSocket address or on stdin/stdout.
    #[command(after_help = help::SERVE)]
    Serve(ServeArgs),
    /// Run one command through a server and exit with its exit code.
    #[command(after_help = help::RUN)]
    Run(run::RunArgs),
    /// Fetch a URL from the server's host, like curl (status on stderr, body on stdout).
    Fetch(fetch::FetchArgs),
    /// Copy files and directories between this host and the server's, like scp (`:PATH`).
    #[command(after_help = cp::HELP)]
    Cp(cp::CpArgs),
    /// List the processes of a detached session.
    #[command(after_help = help::PS)]
    Ps(ps::PsArgs),
    /// Re-attach to a process of a detached session: its output, stdin and exit code.
    #[command(after_help = help::ATTACH)]
    Attach(attach::AttachArgs),
    /// Measure latency, throughput and memory of a server, and the local floor.
    #[command(after_help = help::BENCH)]
    Bench(bench::BenchArgs),
    /// Relay stdin/stdout to this user's `execd serve` daemon, starting it if needed (what
    /// `execd run --ssh HOST` runs on HOST through ssh).
    #[command(after_help = help::BRIDGE)]
    Bridge(bridge::BridgeArgs),
    /// Print a shell completion script.
    #[command(after_help = help::COMPLETIONS)]
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff).
    #[command(after_help = help::MAN)]
    Man,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where to listen: `ws://IP:PORT` (port 0 picks a free one; the bound URL is the first
    /// stdout line), `unix:PATH` (WebSocket on a new `0600` Unix socket file, removed at exit)
    /// or `stdio` (one connection on stdin/stdout, newline-delimited JSON).
    #[arg(
        long,
        default_value = "ws://127.0.0.1:0",
        value_name = "ws://IP:PORT|unix:PATH|stdio"
    )]
    listen: String,
    /// Seconds a detached session lives before its processes are killed.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    session_ttl: u64,
    /// Largest inbound message, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    max_frame_bytes: usize,
    /// Output retained per process for clients that reconnect, in bytes (older output is
    /// evicted; the reference keeps 1 MiB).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    retained_bytes: usize,
    /// Allow binding a non-loopback address without --ws-auth: anyone who can reach the port
    /// can then run commands as this user.
    #[arg(long)]
    allow_non_loopback: bool,
    #[command(flatten)]
    security: serve_auth::ServeSecurityArgs,
    #[command(flatten)]
    limits: serve_limits::ServeLimitsArgs,
    /// The async runtime to serve on (same behaviour on both).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Smol)]
    runtime: RuntimeKind,
    /// Extra trusted CA certificates (PEM) for `http/request`, on top of the webpki roots.
    #[arg(long)]
    http_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// execd-smol
    Smol,
    /// execd-tokio (current-thread runtime)
    Tokio,
}

/// glibc's allocator serves allocations over its mmap threshold (128 KiB at first, rising to
/// the largest freed one) with a fresh `mmap` each: every page of a 1 MiB block, frame or body
/// delta is faulted in and zeroed again, and unmapped when freed (perf: a fifth of the server's
/// time in block reads). Up to 8 MiB they come from the heap instead and are reused; the heap
/// is trimmed only past 32 MiB free, so the memory kept for reuse is bounded.
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 32 << 20);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Cmd::Serve(args) => {
            // A server holds a socket per connection and pipes per process.
            if let Err(e) = raise_fd_limit() {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
            serve(args).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Run(args) => run::run(args),
        Cmd::Fetch(args) => fetch::fetch(args),
        Cmd::Cp(args) => cp::cp(args),
        Cmd::Ps(args) => ps::ps(args),
        Cmd::Attach(args) => attach::attach(args),
        Cmd::Bench(args) => bench::bench(args).map(|()| ExitCode::SUCCESS),
        Cmd::Bridge(args) => bridge::bridge(&args),
        Cmd::Completions(args) => {
            completions::completions(&args);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => completions::man()
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::eprint_line(&format!("execd: {e:#}"));
            ExitCode::from(serve_auth::exit_code(&e, run::EXIT_EXECD_ERROR))
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut core = ServerConfig::default();
    core.session_ttl = Duration::from_secs(args.session_ttl);
    core.max_frame_bytes = args.max_frame_bytes;
    core.retained_bytes = args.retained_bytes;
    let http_ca = match &args.http_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --http-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let limits = args.limits.apply(&mut core)?;
    let options = ServerOptions {
        core,
        http_ca,
        limits,
        ..ServerOptions::default()
    };
    let listen = match args.listen.as_str() {
        "stdio" => Listen::Stdio,
        listen => match listen.strip_prefix("unix:") {
            Some(path) => Listen::Unix(PathBuf::from(path)),
            None => Listen::Ws(parse_listen(listen)?),
        },
    };
    let addr = match listen {
        Listen::Ws(addr) => Some(addr),
        Listen::Stdio | Listen::Unix(_) => None,
    };
    let options = ServerOptions {
        security: args
            .security
            .server_security(addr, args.allow_non_loopback)?,
        ..options
    };
    match args.runtime {
        RuntimeKind::Smol => serve_on::<SmolRuntime>(listen, options),
        // One thread runs the event loop, pumps and connections (the loop is the serial part
        // anyway); measured cheaper and faster than a multi-threaded runtime here. It forks the
        // children, and lives as long as they may (PDEATHSIG).
        RuntimeKind::Tokio => serve_on::<TokioRuntime>(listen, options),
    }
}

/// What `execd serve --listen` names.
enum Listen {
    Stdio,
    Ws(SocketAddr),
    Unix(PathBuf),
}

/// Serves on `listen` on runtime `R`, on this thread until the server stops.
fn serve_on<R: DefaultRuntime>(listen: Listen, options: ServerOptions) -> anyhow::Result<()> {
    R::block_on(async {
        let shutdown = shutdown::on_signal().context("cannot catch SIGTERM, SIGINT and SIGHUP")?;
        let server = match listen {
            Listen::Stdio => {
                return Server::<R>::serve_stdio_until(options, shutdown)
                    .await
                    .context("stdio server failed")
            }
            Listen::Ws(addr) => WsServer::<R>::bind(addr, options)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?,
            Listen::Unix(path) => WsServer::<R>::bind_unix(&path, options)
                .await
                .with_context(|| format!("cannot listen on unix:{}", path.display()))?,
        };
        // Nobody reading the URL (stdout closed) is no reason to stop serving.
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, "{}", server.url()).and_then(|()| stdout.flush()) {
            tracing::warn!(error = %e, "cannot print the URL");
        }
        drop(stdout);
        let result = server.run_until(shutdown).await.context("server failed");
        if logging::dropped() > 0 {
            tracing::debug!(dropped = logging::dropped(), "log lines dropped");
        }
        result
    })
    .context("cannot start the async runtime")?
}

fn parse_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    let rest = listen.strip_prefix("ws://").with_context(|| {
        format!("--listen takes ws://IP:PORT, unix:PATH or stdio, not {listen:?}")
    })?;
    let rest = rest.trim_end_matches('/');
    let rest = rest
        .strip_prefix("localhost:")
        .map_or_else(|| rest.to_owned(), |port| format!("127.0.0.1:{port}"));
    rest.parse()
        .with_context(|| format!("invalid listen address {listen:?}"))
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// The `execd` binary next to this one, for launching `execd serve --listen stdio`.
pub(crate) fn self_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the execd executable")
}

/// A client of a local `execd serve --listen stdio` started from this binary (`execd cp` and
/// `execd fetch` without `--url`).
///
/// # Errors
/// This binary cannot be found or the server cannot be started.
pub(crate) async fn local_stdio_client<R: DefaultRuntime>(
) -> anyhow::Result<execd_runtime::Client<R>> {
    let argv: Vec<std::ffi::OsString> = vec![
        self_exe()?.into(),
        "serve".into(),
        "--listen".into(),
        "stdio".into(),
    ];
    execd_runtime::Client::<R>::spawn_stdio(&argv, None, None)
        .await
        .context("cannot start a local execd server")
}
