//! `execd bench`: latency and throughput of a server speaking the protocol (execd or the Codex
//! exec-server), and the same operations done locally as the floor.

use std::io::{Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_smol::transport::{self, FrameReader, FrameWriter, Inbound, Limits};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Server to measure (`ws://HOST:PORT`). Without it, a local `execd serve` is started.
    #[arg(long)]
    url: Option<String>,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Bytes of stdout for the throughput measurement.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Skip the local floor measurements.
    #[arg(long)]
    no_floor: bool,
}

pub(crate) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mut server_guard = None;
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let (child, url) = spawn_local_ws_server()?;
            server_guard = Some(child);
            url
        }
    };
    smol::block_on(async {
        let mut c = BenchClient::connect(&url).await?;
        let spawn = c.spawn_to_closed(args.iterations).await?;
        report("process/start /bin/true -> process/closed", &spawn);
        let echo = c.write_to_echo(args.iterations).await?;
        report("process/write -> echoed process/output", &echo);
        let (secs, bytes) = c.throughput(args.bytes).await?;
        println!(
            "{:<48} {:>9.1} MiB/s ({} bytes in {:.3} s)",
            "stdout throughput",
            mib_s(bytes, secs),
            bytes,
            secs
        );
        anyhow::Ok(())
    })?;
    drop(server_guard);
    if !args.no_floor {
        report(
            "floor: local spawn+wait /bin/true",
            &floor_spawn(args.iterations)?,
        );
        report(
            "floor: local pipe echo through cat",
            &floor_echo(args.iterations)?,
        );
        let (secs, bytes) = floor_throughput(args.bytes)?;
        println!(
            "{:<48} {:>9.1} MiB/s",
            "floor: local pipe throughput",
            mib_s(bytes, secs)
        );
    }
    Ok(())
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

fn report(name: &str, samples: &[Duration]) {
    let mut s = samples.to_vec();
    s.sort();
    let pct = |p: f64| s[((s.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{name:<48} p50 {:>8.3} ms  p95 {:>8.3} ms  (n={})",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.95).as_secs_f64() * 1e3,
        s.len()
    );
}

struct ServerChild(std::process::Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_local_ws_server() -> anyhow::Result<(ServerChild, String)> {
    let mut child = Command::new(crate::self_exe()?)
        .args(["serve", "--listen", "ws://127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start execd serve")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let guard = ServerChild(child);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let url = String::from_utf8(line)?;
    ensure!(url.starts_with("ws://"), "execd serve printed {url:?}");
    Ok((guard, url))
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default, borrow)]
    method: Option<&'a str>,
    #[serde(default, borrow)]
    params: Option<Params<'a>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    #[serde(borrow)]
    process_id: &'a str,
    seq: u64,
    #[serde(default, borrow)]
    chunk: Option<&'a str>,
}

struct BenchClient {
    reader: FrameReader,
    writer: FrameWriter,
    next_id: i64,
}

impl BenchClient {
    async fn connect(url: &str) -> anyhow::Result<BenchClient> {
        let (reader, writer) = transport::ws_connect(url, Limits::default()).await?;
        let mut c = BenchClient {
            reader,
            writer,
            next_id: 1,
        };
        c.request("initialize", json!({"clientName": "execd-bench"}))
            .await?;
        c.wait_response().await?;
        c.send(json!({"method": "initialized", "params": {}}))
            .await?;
        Ok(c)
    }

    async fn send(&mut self, msg: Value) -> anyhow::Result<()> {
        self.writer.send(msg.to_string()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<i64> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"id": id, "method": method, "params": params}))
            .await?;
        Ok(id)
    }

    async fn frame(&mut self) -> anyhow::Result<Vec<u8>> {
        let recv = async {
            match self.reader.recv().await {
                Some(Ok(Inbound::Frame(b))) => Ok(b),
                Some(Ok(_)) => Err(anyhow!("unexpected inbound")),
                Some(Err(e)) => Err(e.into()),
                None => Err(anyhow!("server closed the connection")),
            }
        };
        futures_lite::future::or(recv, async {
            smol::Timer::after(Duration::from_secs(60)).await;
            Err(anyhow!("no message from the server within 60 s"))
        })
        .await
    }

    async fn wait_response(&mut self) -> anyhow::Result<()> {
        loop {
            let f = self.frame().await?;
            let m: Msg<'_> = serde_json::from_slice(&f)?;
            if m.id.is_some() && m.method.is_none() {
                if let Some(e) = m.error {
                    bail!("request failed: {e}");
                }
                return Ok(());
            }
        }
    }

    fn start_params(process_id: &str, argv: &[&str], pipe_stdin: bool) -> Value {
        json!({
            "processId": process_id, "argv": argv, "cwd": "file:///tmp",
            "env": {"PATH": "/usr/bin:/bin"}, "tty": false, "pipeStdin": pipe_stdin,
        })
    }

    async fn spawn_to_closed(&mut self, n: usize) -> anyhow::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let pid = format!("true-{i}");
            let t0 = Instant::now();
            self.request(
                "process/start",
                Self::start_params(&pid, &["/bin/true"], false),
            )
            .await?;
            loop {
                let f = self.frame().await?;
                let m: Msg<'_> = serde_json::from_slice(&f)?;
                if let Some(e) = m.error {
                    bail!("process/start failed: {e}");
                }
                if m.method == Some("process/closed")
                    && m.params.as_ref().is_some_and(|p| p.process_id == pid)
                {
                    break;
                }
            }
            samples.push(t0.elapsed());
        }
        Ok(samples)
    }

    async fn write_to_echo(&mut self, n: usize) -> anyhow::Result<Vec<Duration>> {
        self.request("process/start", Self::start_params("echo", &["cat"], true))
            .await?;
        self.wait_response().await?;
        let mut samples = Vec::with_capacity(n);
        let chunk = STANDARD.encode(b"ping\n");
        for i in 0..n {
            let t0 = Instant::now();
            let params = json!({"processId": "echo", "chunk": chunk, "writeId": format!("w{i}")});
            self.request("process/write", params).await?;
            loop {
                let f = self.frame().await?;
                let m: Msg<'_> = serde_json::from_slice(&f)?;
                if m.method == Some("process/output") {
                    break;
                }
            }
            samples.push(t0.elapsed());
        }
        self.request("process/terminate", json!({"processId": "echo"}))
            .await?;
        Ok(samples)
    }

    /// Streams `bytes` of zeros through the server; checks every byte and every seq arrives.
    async fn throughput(&mut self, bytes: u64) -> anyhow::Result<(f64, u64)> {
        let count = bytes.to_string();
        let t0 = Instant::now();
        self.request(
            "process/start",
            Self::start_params("flood", &["head", "-c", &count, "/dev/zero"], false),
        )
        .await?;
        let mut received: u64 = 0;
        let mut next_seq = 1;
        let mut buf = Vec::with_capacity(1 << 20);
        loop {
            let f = self.frame().await?;
            let m: Msg<'_> = serde_json::from_slice(&f)?;
            let Some(p) = m.params.filter(|p| p.process_id == "flood") else {
                continue;
            };
            ensure!(
                p.seq == next_seq,
                "seq {} arrived, {next_seq} expected",
                p.seq
            );
            next_seq += 1;
            match m.method {
                Some("process/output") => {
                    buf.clear();
                    base64_simd::STANDARD
                        .decode_append(p.chunk.unwrap_or(""), &mut buf)
                        .map_err(|e| anyhow!("invalid base64: {e}"))?;
                    ensure!(buf.iter().all(|b| *b == 0), "corrupt output");
                    received += buf.len() as u64;
                }
                Some("process/closed") => break,
                _ => {}
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        ensure!(received == bytes, "received {received} of {bytes} bytes");
        Ok((secs, received))
    }
}

fn floor_spawn(n: usize) -> anyhow::Result<Vec<Duration>> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            Command::new("/bin/true").status()?;
            Ok(t0.elapsed())
        })
        .collect()
}

fn floor_echo(n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        stdin.write_all(b"ping\n")?;
        let _ = stdout.read(&mut buf)?;
        samples.push(t0.elapsed());
    }
    drop(stdin);
    child.wait()?;
    Ok(samples)
}

fn floor_throughput(bytes: u64) -> anyhow::Result<(f64, u64)> {
    let t0 = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    child.wait()?;
    Ok((t0.elapsed().as_secs_f64(), total))
}
