//! Latency and throughput through the server, on one session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use execd_core::protocol::binary;

use super::client::{base64_zeros_len, check_response, parse, start_params, Conn, Frame};

/// Sequential `process/start` of `/bin/true`, each awaited to its `process/closed`.
pub(crate) struct SpawnSamples {
    /// Request sent → `process/start` response (the spawn itself).
    pub(crate) to_response: Vec<Duration>,
    /// Request sent → `process/closed`.
    pub(crate) to_closed: Vec<Duration>,
}

/// `n` sequential starts of `/bin/true`, each with `sandbox` as its `sandbox` member when
/// given: then each start must answer `sandboxType: "linuxSeccomp"` and exit 0 (a server
/// that cannot build the sandbox fails the run instead of being timed).
pub(crate) async fn spawn_to_closed(
    c: &mut Conn,
    n: usize,
    tag: &str,
    sandbox: Option<&serde_json::Value>,
) -> anyhow::Result<SpawnSamples> {
    let mut out = SpawnSamples {
        to_response: Vec::with_capacity(n),
        to_closed: Vec::with_capacity(n),
    };
    for i in 0..n {
        let pid = format!("{tag}-{i}");
        let mut params = start_params(&pid, &["/bin/true"], false);
        if let Some(sandbox) = sandbox {
            params["sandbox"] = sandbox.clone();
        }
        let t0 = Instant::now();
        let id = c.request("process/start", params).await?;
        loop {
            let f = c.frame().await?;
            let m = parse(&f)?;
            if m.is_response() && m.id == Some(id) {
                check_response(&m, "process/start")?;
                out.to_response.push(t0.elapsed());
                let kind = m.result.as_ref().and_then(|r| r.get("sandboxType"));
                ensure!(
                    sandbox.is_none() || kind.is_some_and(|k| k == "linuxSeccomp"),
                    "a sandboxed start answered sandboxType {kind:?}"
                );
            } else if m.process_id() != Some(pid.as_str()) {
                continue;
            } else if m.method == Some("process/exited") {
                let code = m.params.as_ref().and_then(|p| p.exit_code);
                ensure!(
                    code == Some(0),
                    "/bin/true exited {code:?} (sandbox: {}): the server did not run it",
                    sandbox.is_some()
                );
            } else if m.method == Some("process/closed") {
                break;
            }
        }
        out.to_closed.push(t0.elapsed());
    }
    Ok(out)
}

/// `n` `process/start` of `/bin/true` sent back to back in one flush.
pub(crate) struct ConcurrentSamples {
    /// First request written → last `process/closed`.
    pub(crate) wall: Duration,
    /// Per process: its request queued → its `process/closed`.
    pub(crate) to_closed: Vec<Duration>,
}

pub(crate) async fn concurrent_spawn(c: &mut Conn, n: usize) -> anyhow::Result<ConcurrentSamples> {
    let mut sent = HashMap::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let pid = format!("burst-{i}");
        c.queue_request("process/start", start_params(&pid, &["/bin/true"], false))
            .await?;
        sent.insert(pid, Instant::now());
    }
    c.flush().await?;
    let mut to_closed = Vec::with_capacity(n);
    while to_closed.len() < n {
        let f = c.frame().await?;
        let m = parse(&f)?;
        if m.is_response() {
            check_response(&m, "process/start")?;
        } else if m.method == Some("process/closed") {
            if let Some(start) = m.process_id().and_then(|p| sent.get(p)) {
                to_closed.push(start.elapsed());
            }
        }
    }
    Ok(ConcurrentSamples {
        wall: t0.elapsed(),
        to_closed,
    })
}

/// `process/write` of 5 bytes to `cat` → the first `process/output` echoing them.
pub(crate) async fn write_to_echo(c: &mut Conn, n: usize) -> anyhow::Result<Vec<Duration>> {
    let id = c
        .request("process/start", start_params("echo", &["cat"], true))
        .await?;
    c.wait_response(id).await?;
    let mut samples = Vec::with_capacity(n);
    let chunk = STANDARD.encode(b"ping\n");
    for i in 0..n {
        let t0 = Instant::now();
        let params = json!({"processId": "echo", "chunk": chunk, "writeId": format!("w{i}")});
        c.request("process/write", params).await?;
        loop {
            let f = c.frame().await?;
            let m = parse(&f)?;
            if m.is_response() {
                check_response(&m, "process/write")?;
            } else if m.method == Some("process/output") && m.process_id() == Some("echo") {
                break;
            }
        }
        samples.push(t0.elapsed());
    }
    c.request("process/terminate", json!({"processId": "echo"}))
        .await?;
    wait_closed(c, "echo").await?;
    Ok(samples)
}

/// What [`throughput`] measured.
pub(crate) struct Throughput {
    /// Request sent → `process/closed`.
    pub(crate) secs: f64,
    /// `process/output` notifications received.
    pub(crate) frames: u64,
    /// Notifications whose seq was not one more than the highest seen before.
    pub(crate) out_of_order: u64,
}

/// Streams `bytes` zero bytes from `head -c N /dev/zero` through the server; checks that every
/// byte is zero, that the total is exact, and that each seq from 1 to that of `process/closed`
/// arrived exactly once. Seqs arriving out of order are counted, not refused: the reference
/// may send `process/exited` after output with a higher seq. Output arrives as JSON, or as
/// binary frames (PROTOCOL.md §2.5) on a connection that negotiated them.
pub(crate) async fn throughput(c: &mut Conn, bytes: u64) -> anyhow::Result<Throughput> {
    let count = bytes.to_string();
    let t0 = Instant::now();
    c.request(
        "process/start",
        start_params("flood", &["head", "-c", &count, "/dev/zero"], false),
    )
    .await?;
    let mut received: u64 = 0;
    let mut frames: u64 = 0;
    let mut seqs = Seqs::default();
    let mut buf = Vec::with_capacity(1 << 20);
    loop {
        let f = c.frame().await?;
        if let Frame::Binary(b) = &f {
            if binary::is_binary_frame(b) {
                let out = binary::decode_output(b)?;
                ensure!(out.process_id == "flood", "output of {}", out.process_id);
                seqs.see(out.seq)?;
                // An OR over all bytes vectorizes; `all` with its early exit does not.
                let or = out.chunk.iter().fold(0, |acc, b| acc | b);
                ensure!(or == 0, "corrupt output in seq {}", out.seq);
                received += out.chunk.len() as u64;
                frames += 1;
                continue;
            }
        }
        // Output frames: parse only what surrounds the chunk.
        let mut split = f.split_chunk(true);
        if split
            .as_ref()
            .is_some_and(|(chunk, _)| base64_zeros_len(chunk.as_bytes()).is_none())
        {
            split = f.split_chunk(false);
        }
        let (chunk, rest) = match split {
            Some((chunk, rest)) => (Some(chunk), Some(rest)),
            None => (None, None),
        };
        let m = parse(rest.as_deref().map_or(&f[..], str::as_bytes))?;
        if m.is_response() {
            check_response(&m, "process/start")?;
            continue;
        }
        let Some(p) = m.params.filter(|p| p.process_id == "flood") else {
            continue;
        };
        let seq = p.seq;
        seqs.see(seq)?;
        match m.method {
            Some("process/output") => {
                let chunk = chunk.unwrap_or("");
                received += match base64_zeros_len(chunk.as_bytes()) {
                    Some(n) => n,
                    None => {
                        // Not the base64 of zeros: decode, for a precise error.
                        buf.clear();
                        base64_simd::STANDARD
                            .decode_append(chunk, &mut buf)
                            .map_err(|e| anyhow!("invalid base64 in seq {seq}: {e}"))?;
                        bail!("corrupt output in seq {seq}");
                    }
                };
                frames += 1;
            }
            Some("process/closed") => break,
            _ => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    ensure!(received == bytes, "received {received} of {bytes} bytes");
    seqs.check_complete()?;
    Ok(Throughput {
        secs,
        frames,
        out_of_order: seqs.out_of_order,
    })
}

/// The seqs of one process seen so far: each once, all from 1 to the last.
#[derive(Default)]
struct Seqs {
    seen: Vec<bool>,
    out_of_order: u64,
}

impl Seqs {
    fn see(&mut self, seq: u64) -> anyhow::Result<()> {
        let seq = usize::try_from(seq)?;
        ensure!(seq > 0, "seq 0 arrived");
        if self.seen.is_empty() {
            self.seen.push(false);
        }
        if seq != self.seen.len() {
            self.out_of_order += 1;
        }
        if seq >= self.seen.len() {
            self.seen.resize(seq + 1, false);
        }
        ensure!(!self.seen[seq], "seq {seq} arrived twice");
        self.seen[seq] = true;
        Ok(())
    }

    fn check_complete(&self) -> anyhow::Result<()> {
        if let Some(missing) = self.seen.iter().skip(1).position(|s| !s) {
            bail!("seq {} never arrived", missing + 1);
        }
        Ok(())
    }
}

/// Waits for `process/closed` of `process_id`.
pub(crate) async fn wait_closed(c: &mut Conn, process_id: &str) -> anyhow::Result<()> {
    loop {
        let f = c.frame().await?;
        let m = parse(&f)?;
        if m.is_response() {
            if let Some(e) = m.error {
                bail!("request failed: {e}");
            }
        } else if m.method == Some("process/closed") && m.process_id() == Some(process_id) {
            return Ok(());
        }
    }
}
