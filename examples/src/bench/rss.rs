//! Server memory: resident set size from `/proc/<pid>/status` at baseline, with many idle
//! sessions, and with many live processes.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use serde_json::json;

use super::client::{parse, start_params, windowed, Conn};

/// Parallel connection attempts while opening idle sessions.
const CONNECT_PARALLELISM: usize = 32;
/// Requests in flight on one connection while starting and stopping the live processes.
const WINDOW: usize = 32;
/// Time given to the server to settle (finish handshakes, free buffers) before reading RSS.
const SETTLE: Duration = Duration::from_millis(500);

/// One reading of `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rss {
    /// VmRSS, KiB.
    pub(crate) current_kib: u64,
    /// VmHWM (peak RSS since start or since the last reset), KiB.
    pub(crate) peak_kib: u64,
    pub(crate) threads: u64,
}

impl Rss {
    pub(crate) fn read(pid: u32) -> anyhow::Result<Rss> {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(Rss {
            current_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            threads: field("Threads:")?,
        })
    }

    /// Resets the peak (VmHWM) to the current RSS (`echo 5 > /proc/<pid>/clear_refs`).
    /// Returns false when not permitted; the peak then counts from the server's start.
    pub(crate) fn reset_peak(pid: u32) -> bool {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
    }
}

/// CPU time (user + system, all threads) the process has used so far, from
/// `/proc/<pid>/stat`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // Fields after the command name (which may hold spaces, so split after its `)`): state is
    // field 3, utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("unexpected {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("unexpected {path}"))
    };
    // SAFETY: sysconf only reads a constant.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_sec = u64::try_from(per_sec).unwrap_or(100).max(1);
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_secs_f64(total as f64 / per_sec as f64))
}

/// Waits for `SETTLE`, then reads.
pub(crate) async fn settled(pid: u32) -> anyhow::Result<Rss> {
    smol::Timer::after(SETTLE).await;
    Rss::read(pid)
}

/// Opens `n` sessions (WebSocket + `initialize` + `initialized`) and keeps them open.
pub(crate) async fn open_idle_sessions(url: &str, n: usize) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(n);
    let mut opening = futures::stream::iter(0..n)
        .map(|_| Conn::open(url))
        .buffer_unordered(CONNECT_PARALLELISM);
    while let Some(c) = opening.next().await {
        conns.push(c.with_context(|| format!("opening idle session {} of {n}", conns.len() + 1))?);
    }
    Ok(conns)
}

/// Closes the connections (WebSocket Close, then the socket).
pub(crate) async fn close_all(conns: Vec<Conn>) {
    futures::stream::iter(conns)
        .for_each_concurrent(CONNECT_PARALLELISM, Conn::close)
        .await;
}

/// Starts `n` `sleep 600` processes on `c`, at most `WINDOW` requests in flight (see
/// [`windowed`] for why), and waits for every start response.
pub(crate) async fn start_sleepers(c: &mut Conn, n: usize) -> anyhow::Result<()> {
    start_sleepers_from(c, 0, n).await
}

/// [`start_sleepers`] for sleepers `from..n` (ids `live-{from}` onwards), when `from` are
/// running already.
pub(crate) async fn start_sleepers_from(c: &mut Conn, from: usize, n: usize) -> anyhow::Result<()> {
    let request = |i| {
        let params = start_params(&format!("live-{}", from + i), &["sleep", "600"], false);
        ("process/start", params)
    };
    windowed(c, n.saturating_sub(from), WINDOW, request, |_, f| {
        let m = parse(f)?;
        if m.method == Some("process/closed") {
            bail!("a sleeper closed early: {:?}", m.process_id());
        }
        Ok(())
    })
    .await
    .context("process/start of a sleeper")
}

/// Terminates the `n` sleepers (at most `WINDOW` requests in flight) and waits for their
/// `process/closed`, at most `timeout` in all. Returns how many closed.
pub(crate) async fn stop_sleepers(c: &mut Conn, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let (mut sent, mut answered, mut closed) = (0, 0, 0);
    while closed < n && Instant::now() < deadline {
        while sent < n && sent - answered < WINDOW {
            let params = json!({"processId": format!("live-{sent}")});
            if c.queue_request("process/terminate", params).await.is_err() {
                return closed;
            }
            sent += 1;
        }
        let Ok(f) = async {
            c.flush().await?;
            c.frame().await
        }
        .await
        else {
            return closed;
        };
        let Ok(m) = parse(&f) else { continue };
        if m.is_response() {
            answered += 1;
        } else if m.method == Some("process/closed")
            && m.process_id().is_some_and(|p| p.starts_with("live-"))
        {
            closed += 1;
        }
    }
    closed
}
