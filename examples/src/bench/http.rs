//! The `http` scenario: a streamed download through `http/request` (`streamResponse: true`)
//! from a local HTTP source, next to the same download read directly over TCP (the floor), with
//! the server's peak RSS during the download (flow control keeps it bounded).

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use serde::Deserialize;
use serde_json::json;

use super::client::{base64_zeros_len, Conn};

/// Bytes the source writes per `write(2)`.
const SOURCE_WRITE: usize = 1 << 20;

/// An HTTP/1.1 source on loopback answering every request with `bytes` zero bytes
/// (`Content-Length`, `Connection: close`). A bench fixture: it reads the request head up to
/// its blank line and does not interpret it.
pub(crate) struct Source {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Source {
    pub(crate) fn start(bytes: u64) -> io::Result<Source> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if thread_stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(conn) = conn {
                    thread::spawn(move || {
                        // A client that goes away mid-body ends its connection; nothing to do.
                        let _ = serve(conn, bytes);
                    });
                }
            }
        });
        Ok(Source {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/download", self.addr)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        drop(TcpStream::connect(self.addr));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut conn: TcpStream, bytes: u64) -> io::Result<()> {
    read_head(&mut conn)?;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
    )?;
    let block = vec![0u8; SOURCE_WRITE];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(block.len());
        conn.write_all(&block[..n])?;
        left -= n as u64;
    }
    conn.flush()
}

/// Reads up to and including the blank line that ends a request or response head; returns the
/// bytes read after it.
fn read_head(conn: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(head.split_off(end + 4));
        }
        if head.len() > 64 << 10 {
            return Err(io::Error::other("head longer than 64 KiB"));
        }
    }
}

/// The floor: the same download read directly from the source over loopback TCP in 64 KiB
/// reads, as `curl -o /dev/null` would. Seconds.
pub(crate) fn floor(source: &Source, bytes: u64) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut conn = TcpStream::connect(source.addr)?;
    conn.write_all(b"GET /download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut total = read_head(&mut conn)?.len() as u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    ensure!(total == bytes, "read {total} of {bytes} bytes");
    Ok(t0.elapsed().as_secs_f64())
}

/// The members of an `http/request/bodyDelta` the measurement looks at (`deltaBase64` is cut
/// out of the frame before parsing).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Delta<'a> {
    #[serde(borrow)]
    request_id: &'a str,
    seq: u64,
    done: bool,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct DeltaMsg<'a> {
    #[serde(default)]
    id: Option<i64>,
    #[serde(default, borrow)]
    method: Option<&'a str>,
    #[serde(default, borrow)]
    params: Option<Delta<'a>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// One streamed download through the server.
pub(crate) struct Download {
    pub(crate) secs: f64,
    pub(crate) deltas: u64,
}

/// Downloads `bytes` from `source` through `http/request` with `streamResponse: true`; checks
/// that every byte is zero, the total exact, and the seqs contiguous from 1 to the `done` delta.
pub(crate) async fn download(
    c: &mut Conn,
    source: &Source,
    bytes: u64,
) -> anyhow::Result<Download> {
    const ID: &str = "bench-download";
    let t0 = Instant::now();
    let request = c
        .request(
            "http/request",
            json!({
                "requestId": ID,
                "method": "GET",
                "url": source.url(),
                "headers": [],
                "streamResponse": true,
            }),
        )
        .await?;
    let (mut received, mut deltas, mut next_seq) = (0u64, 0u64, 1u64);
    loop {
        let f = c.frame().await?;
        // (requestId, seq, done, bytes) of a delta, checked alike for both encodings.
        let (request_id, seq, done, len) = if execd_core::protocol::binary::is_binary_frame(&f) {
            // ext: a binary body-delta frame (PROTOCOL.md §2.5): the raw bytes.
            let d = match execd_core::protocol::binary::decode_server_frame(&f) {
                Ok(execd_core::protocol::binary::ServerFrame::BodyDelta(d)) => d,
                other => bail!("unexpected binary frame: {other:?}"),
            };
            // OR-folded without an early exit, so it vectorises.
            ensure!(
                d.delta.iter().fold(0u8, |acc, &b| acc | b) == 0,
                "delta {} is not all zeros",
                d.seq
            );
            (d.request_id.to_owned(), d.seq, d.done, d.delta.len() as u64)
        } else {
            let split = f.split_string(r#""deltaBase64":""#, false);
            let (delta, rest) = match &split {
                Some((delta, rest)) => (Some(*delta), rest.as_bytes()),
                None => (None, &f[..]),
            };
            let m: DeltaMsg<'_> = serde_json::from_slice(rest).with_context(|| {
                format!(
                    "unexpected server message: {}",
                    String::from_utf8_lossy(&rest[..rest.len().min(200)])
                )
            })?;
            if m.id == Some(request) {
                if let Some(e) = m.error {
                    bail!("http/request failed: {e}");
                }
                continue;
            }
            let Some(d) = m
                .params
                .filter(|_| m.method == Some("http/request/bodyDelta"))
            else {
                continue;
            };
            if let Some(e) = d.error {
                bail!("the download failed at delta {}: {e}", d.seq);
            }
            let len = base64_zeros_len(delta.unwrap_or("").as_bytes())
                .with_context(|| format!("delta {} is not the base64 of zeros", d.seq))?;
            (d.request_id.to_owned(), d.seq, d.done, len)
        };
        ensure!(request_id == ID, "delta for unknown request {request_id}");
        ensure!(seq == next_seq, "delta seq {seq} where {next_seq} was due");
        next_seq += 1;
        received += len;
        deltas += 1;
        if done {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    ensure!(received == bytes, "received {received} of {bytes} bytes");
    Ok(Download { secs, deltas })
}
