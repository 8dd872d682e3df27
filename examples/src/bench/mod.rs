//! `execd bench`: latency, throughput and memory of a server speaking the protocol (execd or
//! the Codex exec-server), and the same operations done locally as the floor.
//!
//! Scenarios (`--only` picks some; all run by default, in this order):
//!
//! - `floor`: the operations below done locally with `std::process` and pipes.
//! - `rss`: the server's VmRSS/VmHWM (`/proc/<pid>/status`) at baseline, with `--sessions`
//!   idle sessions open, and with `--processes` live `sleep 600` processes in one session
//!   (started with at most 32 requests in flight, terminated afterwards). Needs the server's
//!   pid: known for a local server and `--server-cmd`, given by `--server-pid` with `--url`.
//!   Owned servers are restarted fresh for each stage.
//! - `spawn`: sequential `process/start` of `/bin/true` → response, and → `process/closed`.
//! - `concurrent`: `--concurrent` starts of `/bin/true` sent back to back in one flush → every
//!   `process/closed`: wall time and per-process latency.
//! - `echo`: `process/write` of 5 bytes to `cat` → the `process/output` echoing them.
//! - `throughput`: `--bytes` of stdout from `head -c N /dev/zero`, every byte and seq checked;
//!   also the server's CPU time (user + system, `/proc/<pid>/stat`) per GiB when its pid is
//!   known.
//!
//! - `sandbox`: sequential starts of `/bin/true` → `process/closed` without a sandbox and under
//!   Codex's read-only and workspace-write `sandbox` objects, and the ratios of the p50s
//!   (`sandbox.rs`; the server must run on this machine).
//!
//! - `http`: a `--http-bytes` streamed download (`http/request`, `streamResponse: true`) from a
//!   local HTTP source, every byte and delta seq checked, next to the same download read
//!   directly over loopback TCP (its floor), with the server's peak RSS during the download.
//!
//! - `tls`: what TLS adds to a connect, on two local `execd serve` (this binary, whatever the
//!   target), one plain and one with `--tls-cert/--tls-key` from a throwaway CA: TCP connect +
//!   WebSocket handshake, and that + `initialize` round trip, for `ws://` and `wss://` (full
//!   handshakes, no resumption), and the differences. Runs by default only against a local
//!   server (it measures execd, not the target).
//!
//! - `scaling` (only when named in `--only`, or with `--plot`): throughput with 1, 8 and 64
//!   concurrent streams, echo p50/p99 idle and while 8 streams run, start → closed p50 and RSS
//!   with 0, 100 and `--scale-processes` live processes, RSS with 0, 1,000 and
//!   `--scale-sessions` idle sessions (`scaling.rs`). `--plot DIR` draws these curves as SVG
//!   (`plot.rs`); with `--server-cmd` the run measures a local execd too, so each plot shows
//!   both servers.
//!
//! - `fs`: `fs/readFile` and block-read throughput of a `--fs-bytes` file (256 MiB),
//!   `fs/writeFile` of up to 8 MiB, `fs/getMetadata` round trips and 1,000 pipelined, and
//!   `fs/walk` of 10,000 files, next to a local `cat`, write, `stat` and walk (`fs.rs`; its
//!   floors run unless `--no-floor`).
//!
//! - `--soak SECONDS` runs only the soak (`soak.rs`): hostile clients against the server while
//!   a bystander measures echo round trips; reports echo p50/p99 and the server's peak RSS.
//!
//! Latencies report p50 and p95. `--json` prints one JSON object at the end instead of lines.

mod client;
mod floor;
mod fs;
mod http;
mod latency;
mod plot;
mod report;
mod rss;
mod sandbox;
mod scaling;
mod soak;
mod target;
mod tls;

use std::time::{Duration, Instant};

use anyhow::Context as _;

use client::Conn;
use report::{mib_s, percentile_ms, Report};
use rss::Rss;
use target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    Floor,
    Rss,
    Spawn,
    Concurrent,
    Echo,
    Throughput,
    Sandbox,
    Http,
    Tls,
    Scaling,
    Fs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Server to measure (`ws://HOST:PORT`). Without it (and without --server-cmd), a local
    /// `execd serve` is started.
    #[arg(long, conflicts_with = "server_cmd")]
    url: Option<String>,
    /// Pid of the server behind --url, for the memory measurements.
    #[arg(long, requires = "url")]
    server_pid: Option<u32>,
    /// Start the server with this shell command (it must print its ws:// URL as its first
    /// stdout line; its stderr is discarded), e.g. the reference:
    /// `env CODEX_HOME=/tmp/ch codex exec-server --listen ws://127.0.0.1:0`.
    #[arg(long)]
    server_cmd: Option<String>,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Print one JSON object at the end instead of text lines.
    #[arg(long)]
    json: bool,
    /// Round trips per sequential latency measurement.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Processes started back to back by the `concurrent` scenario.
    #[arg(long, default_value_t = 200)]
    concurrent: usize,
    /// Idle sessions held open by the `rss` scenario.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Live processes held by the `rss` scenario.
    #[arg(long, default_value_t = 1000)]
    processes: usize,
    /// Bytes of stdout for the throughput measurement.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Bytes of the `http` scenario's streamed download.
    #[arg(long, default_value_t = 1 << 30)]
    http_bytes: u64,
    /// Bytes of the file the `fs` scenario reads (and writes, up to 8 MiB).
    #[arg(long, default_value_t = 256 << 20)]
    fs_bytes: usize,
    /// `fs/readBlock` requests of 1 MiB the `fs` scenario keeps in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    fs_window: u16,
    /// Skip the local floor measurements (same as leaving `floor` out of --only).
    #[arg(long)]
    no_floor: bool,
    /// Run only the soak, for this many seconds: hostile clients plus a bystander's echo
    /// round trips; reports echo p50/p99 and the server's peak RSS.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Bytes of stdout per point of the `scaling` throughput curve, split over the streams.
    #[arg(long, default_value_t = 256 << 20)]
    scale_bytes: u64,
    /// Live processes at the last point of the `scaling` spawn and RSS curves.
    #[arg(long, default_value_t = 1000)]
    scale_processes: usize,
    /// Idle sessions at the last point of the `scaling` RSS curve.
    #[arg(long, default_value_t = 10_000)]
    scale_sessions: usize,
    /// Run the `scaling` scenario and write its curves as SVG (and `scaling.json`) into this
    /// directory; with --server-cmd, a local execd is measured too and drawn next to it.
    #[arg(long, value_name = "DIR")]
    plot: Option<std::path::PathBuf>,
}

impl BenchArgs {
    fn selected(&self, s: Scenario) -> bool {
        if s == Scenario::Floor && self.no_floor {
            return false;
        }
        if s == Scenario::Scaling {
            return self.plot.is_some() || self.only.contains(&s);
        }
        self.only.is_empty() || self.only.contains(&s)
    }
}

pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let target = match (&args.url, &args.server_cmd) {
        (Some(url), _) => Target::Url {
            url: url.clone(),
            pid: args.server_pid,
        },
        (None, Some(cmd)) => Target::Cmd(cmd.clone()),
        (None, None) => Target::Local,
    };
    let mut report = Report::new(args.json, target.describe());
    // Idle sessions need one socket each on both sides; processes need pipes in the server.
    // Servers started from here inherit the raised limit.
    let mut needed = (args.sessions.max(args.processes) as u64) * 3 + 64;
    if args.selected(Scenario::Scaling) {
        needed = needed.max((args.scale_sessions.max(args.scale_processes) as u64) * 3 + 64);
    }
    match crate::raise_fd_limit() {
        Ok(limit) if limit < needed => report.note(format!(
            "open-file limit is {limit}, the rss scenario may need {needed}: raise the hard limit"
        )),
        Ok(_) => {}
        Err(e) => report.note(format!("cannot raise the open-file limit: {e}")),
    }

    if let Some(secs) = args.soak {
        let server = target.start()?;
        let s = smol::block_on(soak::soak(
            &server.url,
            server.pid,
            Duration::from_secs(secs),
            args.sessions,
        ))?;
        soak::report(&mut report, &s, secs);
        drop(server);
        return report.finish();
    }

    // The floors first, while this process is small: `fork` gets slower as the forking
    // process grows (its page tables are copied).
    if args.selected(Scenario::Floor) {
        floors(&args, &mut report)?;
    }
    if args.selected(Scenario::Rss) {
        memory(&target, &args, &mut report)?;
    }
    let through_server = [
        Scenario::Spawn,
        Scenario::Concurrent,
        Scenario::Echo,
        Scenario::Throughput,
        Scenario::Sandbox,
    ];
    if through_server.iter().any(|s| args.selected(*s)) {
        let server = target.start()?;
        smol::block_on(through(&server.url, server.pid, &args, &mut report))?;
        drop(server);
    }
    if args.selected(Scenario::Http) {
        http_download(&target, args.http_bytes, &mut report)?;
    }
    if args.selected(Scenario::Fs) {
        let server = target.start()?;
        let fs_args = fs::FsArgs {
            bytes: args.fs_bytes,
            window: usize::from(args.fs_window),
            iterations: args.iterations,
            floor: !args.no_floor,
        };
        smol::block_on(fs::run(&server.url, &fs_args, &mut report))?;
        drop(server);
    }
    let tls_selected = if args.only.is_empty() {
        matches!(target, Target::Local)
    } else {
        args.selected(Scenario::Tls)
    };
    if tls_selected {
        tls_cost(&args, &mut report)?;
    }
    if args.selected(Scenario::Scaling) {
        scaling_curves(&target, &args, &mut report)?;
    }
    report.finish()
}

/// The `scaling` scenario on the target (and on a local execd next to a `--server-cmd`
/// target when plotting), and the plots.
fn scaling_curves(target: &Target, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let sizes = scaling::Sizes {
        bytes: args.scale_bytes,
        iterations: args.iterations,
        processes: args.scale_processes,
        sessions: args.scale_sessions,
    };
    let mut targets = Vec::new();
    if args.plot.is_some() && matches!(target, Target::Cmd(_)) {
        targets.push((&Target::Local, "execd"));
    }
    targets.push((
        target,
        match target {
            Target::Local => "execd",
            Target::Cmd(_) => "reference",
            Target::Url { .. } => "server",
        },
    ));
    let mut runs = Vec::new();
    for (t, name) in targets {
        runs.push(scaling::run(t, name, sizes, report)?);
    }
    if let Some(dir) = &args.plot {
        plot::write(dir, &runs)?;
        report.note(format!("scaling plots written to {}", dir.display()));
    }
    Ok(())
}

/// Reports the CPU (user + system) the server spent per GiB of `bytes` since `before`: its
/// efficiency, whatever else loads the machine. Skipped when the pid is unknown.
fn cpu_per_gib(
    report: &mut Report,
    (key, label): (&'static str, &str),
    pid_and_before: Option<(u32, Duration)>,
    bytes: u64,
) -> anyhow::Result<()> {
    match pid_and_before {
        Some((pid, before)) => {
            let cpu = rss::cpu_time(pid)?.saturating_sub(before).as_secs_f64();
            let gib = bytes as f64 / f64::from(1u32 << 30);
            report.scalar(key, label, cpu / gib, "s/GiB", None);
        }
        None => report.skipped(
            key,
            label,
            "the server's pid is unknown (pass --server-pid)",
        ),
    }
    Ok(())
}

/// The `http` scenario.
fn http_download(target: &Target, bytes: u64, report: &mut Report) -> anyhow::Result<()> {
    let source = http::Source::start(bytes)?;
    let floor = http::floor(&source, bytes)?;
    report.scalar(
        "http_floor",
        "HTTP download read directly over loopback TCP (floor)",
        mib_s(bytes, floor),
        "MiB/s",
        None,
    );
    // The reference's JSON deltas, then (when the server grants them) binary frames; a
    // fresh server for each, so the peak RSS is each one's own.
    for binary in [false, true] {
        let keys: [&'static str; 3] = if binary {
            [
                "http_stream_binary",
                "http_stream_binary_server_cpu",
                "http_stream_binary_peak_rss",
            ]
        } else {
            [
                "http_stream",
                "http_stream_server_cpu",
                "http_stream_peak_rss",
            ]
        };
        let suffix = if binary { ", binary frames" } else { "" };
        let server = target.start()?;
        let peak_reset = server.pid.is_some_and(Rss::reset_peak);
        let cpu_before = server.pid.map(rss::cpu_time).transpose()?;
        let d = smol::block_on(async {
            let (mut c, on) = if binary {
                Conn::open_preferring_binary(&server.url).await?
            } else {
                (Conn::open(&server.url).await?, false)
            };
            if binary && !on {
                c.close().await;
                return Ok(None);
            }
            let d = http::download(&mut c, &source, bytes).await;
            c.close().await;
            d.map(Some)
        })?;
        let Some(d) = d else {
            break;
        };
        report.scalar(
            keys[0],
            format!("http/request streamed download (bodyDelta{suffix})"),
            mib_s(bytes, d.secs),
            "MiB/s",
            Some(format!(
                "{bytes} bytes in {:.3} s, {} deltas of {} bytes on average",
                d.secs,
                d.deltas,
                bytes / d.deltas.max(1)
            )),
        );
        cpu_per_gib(
            report,
            (keys[1], "server CPU per GiB downloaded (user+sys)"),
            server.pid.zip(cpu_before),
            bytes,
        )?;
        match server.pid.map(Rss::read).transpose()? {
            Some(rss) => report.scalar(
                keys[2],
                "server peak RSS during the download",
                rss.peak_kib as f64 / 1024.0,
                "MiB",
                (!peak_reset).then(|| "peak since the server started".to_owned()),
            ),
            None => report.skipped(
                keys[2],
                "server peak RSS during the download",
                "the server's pid is unknown (pass --server-pid)",
            ),
        }
        drop(server);
    }
    Ok(())
}

/// The `tls` scenario.
fn tls_cost(args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let s = tls::connect_cost(args.iterations)?;
    let what = "TCP + WebSocket handshake";
    report.latency(
        "tls_connect_ws",
        format!("connect ws:// ({what})"),
        &s.plain.connect,
    );
    report.latency(
        "tls_connect_wss",
        format!("connect wss:// ({what} + TLS)"),
        &s.tls.connect,
    );
    report.latency(
        "tls_open_ws",
        "connect + initialize round trip, ws://",
        &s.plain.open,
    );
    report.latency(
        "tls_open_wss",
        "connect + initialize round trip, wss://",
        &s.tls.open,
    );
    for (key, label, plain, tls) in [
        (
            "tls_connect_added",
            "TLS adds to a connect (p50)",
            &s.plain.connect,
            &s.tls.connect,
        ),
        (
            "tls_open_added",
            "TLS adds to connect + initialize (p50)",
            &s.plain.open,
            &s.tls.open,
        ),
    ] {
        let added = |p| percentile_ms(tls, p) - percentile_ms(plain, p);
        report.scalar(
            key,
            label,
            added(0.5),
            "ms",
            Some(format!("p95 {:+.3} ms", added(0.95))),
        );
    }
    Ok(())
}

/// The latency and throughput scenarios, on one session.
async fn through(
    url: &str,
    pid: Option<u32>,
    args: &BenchArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut c = Conn::open(url).await?;
    if args.selected(Scenario::Spawn) {
        let s = latency::spawn_to_closed(&mut c, args.iterations, "true", None).await?;
        report.latency(
            "spawn_response",
            "process/start /bin/true -> start response",
            &s.to_response,
        );
        report.latency(
            "spawn_closed",
            "process/start /bin/true -> process/closed",
            &s.to_closed,
        );
    }
    if args.selected(Scenario::Concurrent) {
        let n = args.concurrent;
        let s = latency::concurrent_spawn(&mut c, n).await?;
        report.scalar(
            "concurrent_wall",
            format!("{n} x /bin/true at once -> all closed, wall"),
            s.wall.as_secs_f64() * 1e3,
            "ms",
            None,
        );
        report.latency(
            "concurrent_closed",
            format!("{n} x /bin/true at once, each start -> closed"),
            &s.to_closed,
        );
    }
    if args.selected(Scenario::Echo) {
        let s = latency::write_to_echo(&mut c, args.iterations).await?;
        report.latency("echo", "process/write -> echoed process/output", &s);
    }
    if args.selected(Scenario::Throughput) {
        throughput(&mut c, pid, args, report, "throughput", "").await?;
        match Conn::open_binary(url).await? {
            Some(mut b) => {
                throughput(
                    &mut b,
                    pid,
                    args,
                    report,
                    "throughput_binary",
                    ", binary frames",
                )
                .await?;
                b.close().await;
            }
            None => report.skipped(
                "throughput_binary",
                "stdout throughput (head -c N /dev/zero), binary frames",
                "the server did not negotiate binary frames",
            ),
        }
    }
    if args.selected(Scenario::Sandbox) {
        sandbox::measure(&mut c, args.iterations, report).await?;
    }
    c.close().await;
    Ok(())
}

/// One `throughput` measurement on `c` (JSON, or binary frames when `c` negotiated them),
/// reported under `key` (and `key` + `_server_cpu`), labels suffixed with `what`.
async fn throughput(
    c: &mut Conn,
    pid: Option<u32>,
    args: &BenchArgs,
    report: &mut Report,
    key: &'static str,
    what: &str,
) -> anyhow::Result<()> {
    let cpu_before = pid.map(rss::cpu_time).transpose()?;
    let t = latency::throughput(c, args.bytes).await?;
    report.scalar(
        key,
        format!("stdout throughput (head -c N /dev/zero){what}"),
        mib_s(args.bytes, t.secs),
        "MiB/s",
        Some(format!(
            "{} bytes in {:.3} s, {} frames of {} bytes on average, {} seqs out of order",
            args.bytes,
            t.secs,
            t.frames,
            args.bytes / t.frames.max(1),
            t.out_of_order
        )),
    );
    // CPU the server spent per GiB: its efficiency, whatever else loads the machine.
    let cpu_key = if key == "throughput" {
        "throughput_server_cpu"
    } else {
        "throughput_binary_server_cpu"
    };
    let label = format!("server CPU per GiB of stdout (user+sys){what}");
    cpu_per_gib(report, (cpu_key, &label), pid.zip(cpu_before), args.bytes)?;
    Ok(())
}

/// The `rss` scenario.
fn memory(target: &Target, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    const KEYS: [(&str, &str); 5] = [
        ("rss_baseline", "server RSS: baseline"),
        ("rss_idle_sessions", "server RSS: idle sessions"),
        (
            "rss_idle_sessions_peak",
            "server peak RSS: opening idle sessions",
        ),
        ("rss_live_processes", "server RSS: live processes"),
        (
            "rss_live_processes_peak",
            "server peak RSS: starting live processes",
        ),
    ];
    if !target.owned() && matches!(target, Target::Url { pid: None, .. }) {
        for (key, label) in KEYS {
            report.skipped(
                key,
                label,
                "the server's pid is unknown (pass --server-pid)",
            );
        }
        return Ok(());
    }
    if !target.owned() {
        report.note(
            "rss: --url server is shared by all stages, so later stages include what earlier \
             ones left behind (detached sessions, allocator caches)",
        );
    }
    smol::block_on(async {
        // Baseline, then idle sessions.
        let server = target.start()?;
        let pid = server.pid.context("the server's pid is unknown")?;
        let base = rss::settled(pid).await?;
        report.scalar(
            KEYS[0].0,
            KEYS[0].1,
            mib(base.current_kib),
            "MiB",
            Some(format!(
                "peak {:.1} MiB, {} threads",
                mib(base.peak_kib),
                base.threads
            )),
        );
        let reset = Rss::reset_peak(pid);
        if !reset {
            report
                .note("rss: cannot reset VmHWM (clear_refs); peaks count from the server's start");
        }
        let n = args.sessions;
        let t0 = Instant::now();
        let conns = rss::open_idle_sessions(&server.url, n).await?;
        let opened = t0.elapsed();
        let idle = rss::settled(pid).await?;
        report.scalar(
            KEYS[1].0,
            format!("{} ({n} open)", KEYS[1].1),
            mib(idle.current_kib),
            "MiB",
            Some(format!(
                "{:+.1} KiB per session over baseline, opened in {:.2} s, {} threads",
                per_item_kib(idle.current_kib, base.current_kib, n),
                opened.as_secs_f64(),
                idle.threads
            )),
        );
        report.scalar(KEYS[2].0, KEYS[2].1, mib(idle.peak_kib), "MiB", None);
        rss::close_all(conns).await;

        // Live processes, on a fresh server when it is ours.
        let server = if target.owned() {
            drop(server);
            target.start()?
        } else {
            server
        };
        let pid = server.pid.context("the server's pid is unknown")?;
        let base = rss::settled(pid).await?;
        Rss::reset_peak(pid);
        let n = args.processes;
        let mut c = Conn::open(&server.url).await?;
        let t0 = Instant::now();
        let started = rss::start_sleepers(&mut c, n).await;
        let start_time = t0.elapsed();
        let live = match &started {
            Ok(()) => Some(rss::settled(pid).await?),
            Err(_) => None,
        };
        // Clean up whatever started, also after a failure (the reference leaves children
        // running when it exits).
        let closed = rss::stop_sleepers(&mut c, n, Duration::from_secs(120)).await;
        started.context("starting the live processes")?;
        let live = live.context("no reading")?;
        report.scalar(
            KEYS[3].0,
            format!("{} ({n} x sleep 600)", KEYS[3].1),
            mib(live.current_kib),
            "MiB",
            Some(format!(
                "{:+.1} KiB per process over baseline, started in {:.2} s, {} threads",
                per_item_kib(live.current_kib, base.current_kib, n),
                start_time.as_secs_f64(),
                live.threads
            )),
        );
        report.scalar(KEYS[4].0, KEYS[4].1, mib(live.peak_kib), "MiB", None);
        if closed < n {
            report.note(format!(
                "rss: only {closed} of {n} live processes reported process/closed after \
                 process/terminate"
            ));
        }
        c.close().await;
        anyhow::Ok(())
    })
}

fn floors(args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let n = args.iterations;
    report.latency(
        "floor_spawn",
        "floor: local spawn+wait /bin/true (posix_spawn)",
        &floor::spawn(n)?,
    );
    report.latency(
        "floor_fork_spawn",
        "floor: local fork+exec+wait /bin/true (pre_exec)",
        &floor::fork_spawn(n)?,
    );
    let k = args.concurrent;
    report.scalar(
        "floor_concurrent_wall",
        format!("floor: local {k} x /bin/true at once, wall"),
        floor::concurrent_spawn(k)?.as_secs_f64() * 1e3,
        "ms",
        None,
    );
    report.latency(
        "floor_echo",
        "floor: local pipe echo through cat",
        &floor::echo(n)?,
    );
    let (secs, bytes) = floor::throughput(args.bytes)?;
    report.scalar(
        "floor_throughput",
        "floor: local pipe throughput",
        mib_s(bytes, secs),
        "MiB/s",
        None,
    );
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn per_item_kib(now_kib: u64, base_kib: u64, n: usize) -> f64 {
    (now_kib as f64 - base_kib as f64) / n.max(1) as f64
}
