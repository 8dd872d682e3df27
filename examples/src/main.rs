//! `execd`: the execd server and a command-line client.
//!
//! - `execd serve [--listen ws://127.0.0.1:0 | stdio] [--runtime smol|tokio] [--session-ttl
//!   SECONDS] [--ws-auth MODE …] [--tls-cert PEM --tls-key PEM]` prints the bound URL as its
//!   first stdout line and serves; logs go to stderr. See docs/SECURITY.md for the auth flags.
//! - `execd run [--url URL] [--tty] [--cwd DIR] [--env K=V]… -- CMD ARG…` runs one command and
//!   exits with its exit code. Without `--url` it starts `execd serve --listen stdio` as a child
//!   and talks to it over its stdin/stdout.

mod bench;
mod run;
mod serve_auth;
mod serve_limits;

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
    about = "A remote process executor speaking the Codex exec-server protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the protocol on a WebSocket address or on stdin/stdout.
    Serve(ServeArgs),
    /// Run one command through a server and exit with its exit code.
    Run(run::RunArgs),
    /// Measure latency, throughput and memory of a server, and the local floor.
    Bench(bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// `ws://IP:PORT` (port 0 picks a free one) or `stdio`.
    #[arg(long, default_value = "ws://127.0.0.1:0")]
    listen: String,
    /// Seconds a detached session lives before its processes are killed.
    #[arg(long, default_value_t = 30)]
    session_ttl: u64,
    /// Largest inbound message, in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_frame_bytes: usize,
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum RuntimeKind {
    /// execd-smol
    Smol,
    /// execd-tokio (current-thread runtime)
    Tokio,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EXECD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Cmd::Serve(args) => {
            // A server holds a socket per connection and pipes per process.
            if let Err(e) = raise_fd_limit() {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
            serve(args).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Run(args) => run::run(args),
        Cmd::Bench(args) => bench::bench(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("execd: {e:#}");
            ExitCode::from(serve_auth::exit_code(&e, run::EXIT_EXECD_ERROR))
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut core = ServerConfig::default();
    core.session_ttl = Duration::from_secs(args.session_ttl);
    core.max_frame_bytes = args.max_frame_bytes;
    let limits = args.limits.apply(&mut core)?;
    let options = ServerOptions {
        core,
        limits,
        ..ServerOptions::default()
    };
    let addr = match args.listen.as_str() {
        "stdio" => None,
        listen => Some(parse_listen(listen)?),
    };
    let options = ServerOptions {
        security: args
            .security
            .server_security(addr, args.allow_non_loopback)?,
        ..options
    };
    match args.runtime {
        RuntimeKind::Smol => serve_on::<SmolRuntime>(addr, options),
        // One thread runs the event loop, pumps and connections (the loop is the serial part
        // anyway); measured cheaper and faster than a multi-threaded runtime here. It forks the
        // children, and lives as long as they may (PDEATHSIG).
        RuntimeKind::Tokio => serve_on::<TokioRuntime>(addr, options),
    }
}

/// Serves on `addr` (or stdio when `None`) on runtime `R`, on this thread until the server
/// stops.
fn serve_on<R: DefaultRuntime>(
    addr: Option<SocketAddr>,
    options: ServerOptions,
) -> anyhow::Result<()> {
    R::block_on(async {
        let Some(addr) = addr else {
            return Server::<R>::serve_stdio(options)
                .await
                .context("stdio server failed");
        };
        let server = WsServer::<R>::bind(addr, options)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", server.url())?;
        stdout.flush()?;
        drop(stdout);
        server.run().await.context("server failed")
    })
    .context("cannot start the async runtime")?
}

fn parse_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    let rest = listen
        .strip_prefix("ws://")
        .with_context(|| format!("--listen takes ws://IP:PORT or stdio, not {listen:?}"))?;
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
