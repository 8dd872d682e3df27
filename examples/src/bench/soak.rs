//! `execd bench --soak SECONDS`: hostile clients against one server while a well-behaved
//! bystander measures echo round trips (docs/BENCHMARKS.md "Soak").
//!
//! The hostile mix, all running for the whole soak:
//!
//! - a client that never reads while its process (`yes`) floods it; replaced every 10 s (the
//!   server drops a connection congested for 30 s);
//! - four raw sockets that each declare a 256 MiB WebSocket frame and trickle 1 KiB into it
//!   every 10 ms;
//! - a client that sends `process/read` requests as fast as the socket takes them and never
//!   reads a reply;
//! - `--sessions` idle sessions (default 1,000, here capped at 500 to stay under the server's
//!   session and connection limits with the others).
//!
//! Reported: the bystander's echo round trip (`process/write` to `cat` → the echoed
//! `process/output`) p50 and p99, and the server's peak RSS (VmHWM of `/proc/<pid>/status`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_lite::io::{AsyncReadExt as _, AsyncWriteExt as _};
use serde_json::json;
use smol::net::TcpStream;

use super::client::{check_response, parse, start_params, Conn};
use super::report::Report;
use super::rss::{self, Rss};

/// Idle sessions held during the soak, at most.
const MAX_IDLE: usize = 500;
/// Frame-header tricklers.
const TRICKLERS: usize = 4;
/// How often the never-reading client is replaced.
const HOG_PERIOD: Duration = Duration::from_secs(10);

/// The bystander's echo round trips and the server's peak memory.
pub(crate) struct Soak {
    pub(crate) echo: Vec<Duration>,
    pub(crate) peak_kib: Option<u64>,
}

/// Runs the soak against the server at `url` (pid `pid`) for `duration`.
pub(crate) async fn soak(
    url: &str,
    pid: Option<u32>,
    duration: Duration,
    idle: usize,
) -> anyhow::Result<Soak> {
    let idle = rss::open_idle_sessions(url, idle.min(MAX_IDLE))
        .await
        .context("opening the idle sessions")?;
    let mut bystander = Conn::open(url).await?;
    let id = bystander
        .request("process/start", start_params("echo", &["cat"], true))
        .await?;
    bystander.wait_response(id).await?;

    let mut hostile = Vec::new();
    hostile.push(smol::spawn(never_reading_hogs(url.to_owned())));
    for _ in 0..TRICKLERS {
        hostile.push(smol::spawn(header_trickler(url.to_owned())));
    }
    hostile.push(smol::spawn(read_flood(url.to_owned())));

    let end = Instant::now() + duration;
    let chunk = STANDARD.encode(b"ping\n");
    let mut echo = Vec::new();
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let t0 = Instant::now();
        let params = json!({"processId": "echo", "chunk": chunk, "writeId": format!("w{i}")});
        bystander.request("process/write", params).await?;
        loop {
            let f = bystander.frame().await?;
            let m = parse(&f)?;
            if m.is_response() {
                check_response(&m, "process/write")?;
            } else if m.method == Some("process/output") && m.process_id() == Some("echo") {
                break;
            }
        }
        echo.push(t0.elapsed());
        smol::Timer::after(Duration::from_millis(5)).await;
    }
    let peak_kib = pid.map(Rss::read).transpose()?.map(|r| r.peak_kib);
    drop(hostile);
    bystander.close().await;
    rss::close_all(idle).await;
    Ok(Soak { echo, peak_kib })
}

/// Reports a soak: echo p50/p99 and the peak RSS.
pub(crate) fn report(report: &mut Report, s: &Soak, secs: u64) {
    let mut sorted = s.echo.clone();
    sorted.sort();
    let pct = |p: f64| -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i].as_secs_f64() * 1e3
    };
    let n = sorted.len();
    report.scalar(
        "soak_echo_p50",
        format!("soak {secs} s: bystander echo p50"),
        pct(0.5),
        "ms",
        Some(format!("n={n}")),
    );
    report.scalar(
        "soak_echo_p99",
        format!("soak {secs} s: bystander echo p99"),
        pct(0.99),
        "ms",
        Some(format!("max {:.3} ms", pct(1.0))),
    );
    match s.peak_kib {
        Some(kib) => report.scalar(
            "soak_peak_rss",
            format!("soak {secs} s: server peak RSS (VmHWM)"),
            kib as f64 / 1024.0,
            "MiB",
            None,
        ),
        None => report.skipped(
            "soak_peak_rss",
            format!("soak {secs} s: server peak RSS (VmHWM)"),
            "the server's pid is unknown (pass --server-pid)",
        ),
    }
}

/// Opens a session whose `yes` floods it and never reads; replaces it every [`HOG_PERIOD`].
async fn never_reading_hogs(url: String) {
    loop {
        let hog = async {
            let mut c = Conn::open(&url).await?;
            c.request("process/start", start_params("chatty", &["yes"], false))
                .await?;
            anyhow::Ok(c)
        }
        .await;
        smol::Timer::after(HOG_PERIOD).await;
        drop(hog);
    }
}

/// Declares a 256 MiB frame and trickles 1 KiB into it every 10 ms, reconnecting when the
/// server ends the connection.
async fn header_trickler(url: String) {
    loop {
        if let Err(e) = trickle_once(&url).await {
            tracing::debug!(error = %e, "trickler reconnects");
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

async fn trickle_once(url: &str) -> anyhow::Result<()> {
    let authority = url
        .strip_prefix("ws://")
        .context("not a ws:// URL")?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut tcp = TcpStream::connect(&authority).await?;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        anyhow::ensure!(tcp.read(&mut byte).await? == 1, "closed in the handshake");
        head.push(byte[0]);
    }
    // FIN + binary, masked, 64-bit length 256 MiB, mask key 0.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(256u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0; 4]);
    tcp.write_all(&header).await?;
    let bytes = [b'x'; 1024];
    loop {
        tcp.write_all(&bytes).await?;
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

/// Sends `process/read` requests as fast as the socket takes them, never reading a reply.
async fn read_flood(url: String) {
    let flood = async {
        let mut c = Conn::open(&url).await?;
        c.request(
            "process/start",
            start_params("idle", &["sleep", "600"], false),
        )
        .await?;
        loop {
            for _ in 0..64 {
                c.queue_request(
                    "process/read",
                    json!({"processId": "idle", "afterSeq": 0, "waitMs": 0}),
                )
                .await?;
            }
            c.flush().await?;
        }
        #[allow(unreachable_code)]
        anyhow::Ok(())
    };
    if let Err(e) = flood.await {
        tracing::debug!(error = %e, "read flood ended");
    }
}
