//! The `scaling` scenario: how a server's numbers move with load, on one fresh server.
//!
//! - throughput: `--scale-bytes` of stdout split over 1, 8 and 64 concurrent streams, one
//!   session (connection) each, every byte and seq checked; aggregate MiB/s over the wall time;
//! - echo latency p50/p99 (`process/write` → echoed `process/output`) idle, and while 8 other
//!   sessions each stream `cat /dev/zero`;
//! - start `/bin/true` → `process/closed` p50 with 0, 100 and `--scale-processes` live
//!   `sleep 600` processes on another session, and the server's RSS at each count;
//! - the server's RSS with 0, 1,000 and `--scale-sessions` idle sessions (a local execd is
//!   started with `--max-connections` and `--max-sessions` above that count).
//!
//! The result serialises to JSON ([`Scaling`]); `--plot DIR` draws the curves of every server
//! measured in the run (`plot.rs`).

use std::cell::Cell;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{start_params, Conn};
use super::latency;
use super::report::{mib_s, percentile_ms, Report};
use super::rss;
use super::target::{self, Target};

/// Concurrent streams of the throughput curve.
pub(crate) const STREAMS: [usize; 3] = [1, 8, 64];
/// Streams running while the loaded echo latency is measured.
const LOAD_STREAMS: usize = 8;
/// How long the sleepers may take to close once terminated.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// One server's scaling curves. Points are `(x, y)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Scaling {
    /// Which server (`execd`, `reference`, or the target's description).
    pub(crate) server: String,
    /// (concurrent streams, aggregate MiB/s).
    pub(crate) throughput: Vec<(f64, f64)>,
    /// (streams running, echo p50 ms).
    pub(crate) echo_p50: Vec<(f64, f64)>,
    /// (streams running, echo p99 ms).
    pub(crate) echo_p99: Vec<(f64, f64)>,
    /// (live processes, start → closed p50 ms).
    pub(crate) spawn_closed_p50: Vec<(f64, f64)>,
    /// (live processes, server RSS MiB); empty without the server's pid.
    pub(crate) rss_processes: Vec<(f64, f64)>,
    /// (idle sessions, server RSS MiB); empty without the server's pid.
    pub(crate) rss_sessions: Vec<(f64, f64)>,
}

/// Sizes of the scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) bytes: u64,
    pub(crate) iterations: usize,
    pub(crate) processes: usize,
    pub(crate) sessions: usize,
}

/// Runs the scenario on a fresh server of `target`, reporting each number as it comes.
pub(crate) fn run(
    target: &Target,
    name: &str,
    sizes: Sizes,
    report: &mut Report,
) -> anyhow::Result<Scaling> {
    let server = match target {
        // Room for the idle sessions next to the detached ones of the earlier points
        // (`--max-connections` and `--max-sessions` default to 1,024).
        Target::Local => {
            let max = (sizes.sessions + 2 * STREAMS[2] + 1024).to_string();
            target::start_local(&[
                "--max-connections".as_ref(),
                max.as_ref(),
                "--max-sessions".as_ref(),
                max.as_ref(),
            ])?
        }
        _ => target.start()?,
    };
    let (url, pid) = (server.url.clone(), server.pid);
    let mut s = Scaling {
        server: name.to_owned(),
        throughput: Vec::new(),
        echo_p50: Vec::new(),
        echo_p99: Vec::new(),
        spawn_closed_p50: Vec::new(),
        rss_processes: Vec::new(),
        rss_sessions: Vec::new(),
    };
    smol::block_on(async {
        for streams in STREAMS {
            let rate = throughput(&url, streams, sizes.bytes).await?;
            report.scalar(
                "scaling_throughput",
                format!("{name}: stdout throughput, {streams} concurrent streams"),
                rate,
                "MiB/s",
                None,
            );
            s.throughput.push((streams as f64, rate));
        }
        for load in [0, LOAD_STREAMS] {
            let samples = echo_under_load(&url, load, sizes.iterations).await?;
            let (p50, p99) = (percentile_ms(&samples, 0.5), percentile_ms(&samples, 0.99));
            report.scalar(
                "scaling_echo",
                format!("{name}: echo p50 with {load} streams running"),
                p50,
                "ms",
                Some(format!("p99 {p99:.3} ms, n={}", samples.len())),
            );
            s.echo_p50.push((load as f64, p50));
            s.echo_p99.push((load as f64, p99));
        }
        spawn_with_live(&url, pid, name, sizes, report, &mut s).await?;
        if let Some(pid) = pid {
            rss_sessions(&url, pid, name, sizes.sessions, report, &mut s).await?;
        }
        anyhow::Ok(())
    })?;
    drop(server);
    Ok(s)
}

/// `bytes` of stdout over `streams` sessions at once: aggregate MiB/s.
async fn throughput(url: &str, streams: usize, bytes: u64) -> anyhow::Result<f64> {
    let per = bytes / streams as u64;
    let mut conns = open(url, streams).await?;
    let t0 = std::time::Instant::now();
    futures::future::try_join_all(conns.iter_mut().map(|c| latency::throughput(c, per))).await?;
    let secs = t0.elapsed().as_secs_f64();
    close(conns).await;
    Ok(mib_s(per * streams as u64, secs))
}

/// Echo round trips on one session while `load` others each stream `cat /dev/zero`.
async fn echo_under_load(url: &str, load: usize, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut flooders = open(url, load).await?;
    for c in &mut flooders {
        c.request(
            "process/start",
            start_params("flood", &["cat", "/dev/zero"], false),
        )
        .await?;
    }
    let mut echo = Conn::open(url).await?;
    let done = Cell::new(false);
    let measure = async {
        let samples = latency::write_to_echo(&mut echo, n).await;
        done.set(true);
        samples
    };
    let drains = futures::future::try_join_all(flooders.iter_mut().map(|c| drain(c, &done)));
    let (samples, drained) = futures::future::join(measure, drains).await;
    drained?;
    echo.close().await;
    close(flooders).await;
    samples
}

/// Reads `c`'s frames until `done`, then terminates its flood and waits for it to close.
async fn drain(c: &mut Conn, done: &Cell<bool>) -> anyhow::Result<()> {
    while !done.get() {
        c.frame().await?;
    }
    c.request("process/terminate", json!({"processId": "flood"}))
        .await?;
    latency::wait_closed(c, "flood").await
}

/// Start → closed p50 (and RSS) with 0, 100 and `sizes.processes` live sleepers.
async fn spawn_with_live(
    url: &str,
    pid: Option<u32>,
    name: &str,
    sizes: Sizes,
    report: &mut Report,
    s: &mut Scaling,
) -> anyhow::Result<()> {
    let mut sleepers = Conn::open(url).await?;
    let mut live = 0;
    let mut points = vec![0, 100, sizes.processes];
    points.dedup();
    let result = async {
        for n in points {
            rss::start_sleepers_from(&mut sleepers, live, n)
                .await
                .with_context(|| format!("starting {n} live processes"))?;
            live = n;
            // A fresh session per point: process ids stay taken in the session that used them.
            let mut probe = Conn::open(url).await?;
            let samples =
                latency::spawn_to_closed(&mut probe, sizes.iterations, "true", None).await?;
            probe.close().await;
            let p50 = percentile_ms(&samples.to_closed, 0.5);
            report.scalar(
                "scaling_spawn_live",
                format!("{name}: start -> closed p50 with {n} live processes"),
                p50,
                "ms",
                None,
            );
            s.spawn_closed_p50.push((n as f64, p50));
            if let Some(pid) = pid {
                let rss = rss::settled(pid).await?;
                s.rss_processes.push((n as f64, mib(rss.current_kib)));
            }
        }
        anyhow::Ok(())
    }
    .await;
    let closed = rss::stop_sleepers(&mut sleepers, live, STOP_TIMEOUT).await;
    if closed < live {
        report.note(format!(
            "scaling: {name}: only {closed} of {live} sleepers closed after terminate"
        ));
    }
    result?;
    if let Some((n, kib, _)) = growth_kib(&s.rss_processes) {
        report.scalar(
            "scaling_rss_per_process",
            format!("{name}: RSS per live process ({n} live)"),
            kib,
            "KiB",
            None,
        );
    }
    sleepers.close().await;
    Ok(())
}

/// RSS with 0, 1,000 and `sessions` idle sessions.
async fn rss_sessions(
    url: &str,
    pid: u32,
    name: &str,
    sessions: usize,
    report: &mut Report,
    s: &mut Scaling,
) -> anyhow::Result<()> {
    let mut conns = Vec::new();
    let mut points = vec![0, 1000.min(sessions), sessions];
    points.dedup();
    for n in points {
        let more = rss::open_idle_sessions(url, n - conns.len())
            .await
            .with_context(|| format!("opening {n} idle sessions"))?;
        conns.extend(more);
        let rss = rss::settled(pid).await?;
        s.rss_sessions.push((n as f64, mib(rss.current_kib)));
    }
    rss::close_all(conns).await;
    if let Some((n, kib, top)) = growth_kib(&s.rss_sessions) {
        report.scalar(
            "scaling_rss_per_session",
            format!("{name}: RSS per idle session ({n} open)"),
            kib,
            "KiB",
            Some(format!("{top:.1} MiB in all")),
        );
    }
    Ok(())
}

async fn open(url: &str, n: usize) -> anyhow::Result<Vec<Conn>> {
    futures::future::try_join_all((0..n).map(|_| Conn::open(url))).await
}

async fn close(conns: Vec<Conn>) {
    futures::future::join_all(conns.into_iter().map(Conn::close)).await;
}

/// From (count, RSS MiB) points: the last count, the KiB of RSS per unit between the first and
/// the last point, and the last RSS in MiB.
fn growth_kib(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let (&(_, base), &(n, top)) = (points.first()?, points.last()?);
    Some((n, (top - base) * 1024.0 / n.max(1.0), top))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
