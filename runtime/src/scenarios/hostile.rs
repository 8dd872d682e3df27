//! Hostile peers over real sockets: no client can hurt another, and the server never dies of
//! its input. Every await has a timeout (`within`); bystanders must be served within
//! [`BYSTANDER_BOUND`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_core::ServerConfig;
use futures::StreamExt as _;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use serde_json::json;

use super::server::{pid_alive, start_server_with, Client};
use super::{sleep, tcp_connect, within};
use crate::runtime::{AsyncStream, Runtime};
use crate::transport::{Limits, WsListener};
use crate::ServerOptions;

/// The longest a bystander's echo round trip may take while a hostile peer is connected.
const BYSTANDER_BOUND: Duration = Duration::from_secs(2);

/// A declared 1 GiB frame trickled in byte by byte costs the server no memory and does not
/// slow a bystander; a 1 TiB declaration is refused at its header with Close 1009.
pub async fn a_huge_frame_header_costs_no_memory_and_a_bystander_keeps_its_echo(
    rt: Arc<dyn Runtime>,
) {
    let options = ServerOptions {
        limits: Limits {
            ws_hard_limit_bytes: 1 << 30,
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let server = start_server_with(&rt, options).await;
    let mut bystander = Bystander::start(&rt, &server.url).await;
    let rss_before = vm_rss_bytes();

    let mut hog = raw_ws(&rt, server.addr).await;
    write(&rt, &mut hog, &masked_header(0x2, true, 1 << 30)).await;
    for _ in 0..20 {
        write(&rt, &mut hog, &[b'x'; 512]).await;
        bystander.echo().await;
    }
    let grown = vm_rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 256 << 20,
        "resident memory grew by {grown} bytes for a frame header"
    );

    let mut huge = raw_ws(&rt, server.addr).await;
    write(&rt, &mut huge, &masked_header(0x2, true, 1 << 40)).await;
    assert_eq!(close_code(&rt, &mut huge).await, Some(1009));
    bystander.echo().await;
}

/// A text frame that is not UTF-8 fails the connection with Close 1007 (RFC 6455 §7.4.1).
pub async fn invalid_utf8_in_a_text_frame_closes_with_1007(rt: Arc<dyn Runtime>) {
    let server = start_server_with(&rt, ServerOptions::default()).await;
    let mut peer = raw_ws(&rt, server.addr).await;
    let mut frame = masked_header(0x1, true, 2);
    frame.extend_from_slice(&[0xff, 0xfe]);
    write(&rt, &mut peer, &frame).await;
    assert_eq!(close_code(&rt, &mut peer).await, Some(1007));
}

/// A peer that completes the handshake and then reads nothing (so never answers a ping) is
/// dropped after the ping interval plus the pong timeout; a peer that reads stays connected.
pub async fn a_peer_that_never_answers_pings_is_dropped_after_the_pong_timeout(
    rt: Arc<dyn Runtime>,
) {
    let limits = Limits {
        ping_interval: Some(Duration::from_millis(50)),
        pong_timeout: Some(Duration::from_millis(100)),
        ..Limits::default()
    };
    let listener = within(
        &rt,
        WsListener::bind_with_runtime(
            Arc::clone(&rt),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            limits,
        ),
    )
    .await
    .expect("bind");
    let _silent = raw_ws(&rt, listener.local_addr()).await;
    let (mut silent_reader, _w, _peer) = within(&rt, listener.accept()).await.expect("accept");
    let tcp = within(&rt, tcp_connect(&rt, listener.local_addr()))
        .await
        .expect("tcp connect");
    let url = format!("ws://{}/", listener.local_addr());
    let (mut live, _) = within(&rt, async_tungstenite::client_async(url, tcp))
        .await
        .expect("client handshake");
    let (mut live_reader, _lw, _peer) = within(&rt, listener.accept()).await.expect("accept");

    let started = rt.now();
    let ended = within(&rt, silent_reader.recv()).await;
    match ended {
        Some(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
        other => panic!("expected a pong timeout, got {other:?}"),
    }
    assert!(rt.now() - started < Duration::from_secs(5));

    // The reading peer answers every ping (tungstenite replies as it reads) and is kept well
    // past several timeouts.
    let keep_reading = async {
        while let Some(message) = live.next().await {
            message.expect("live peer read");
        }
        panic!("the live peer was closed");
    };
    let server_side = async {
        let item = live_reader.recv().await;
        panic!("the live peer was dropped: {item:?}");
    };
    let waited = futures_lite::future::or(
        async {
            sleep(&rt, Duration::from_millis(600)).await;
        },
        futures_lite::future::or(keep_reading, server_side),
    );
    within(&rt, waited).await;
}

/// A client that never reads while its process floods it is congested: its process is paused,
/// and a bystander's echo round trips stay fast meanwhile.
pub async fn a_client_that_never_reads_does_not_stall_a_bystander(rt: Arc<dyn Runtime>) {
    // Small marks congest the hog sooner (less output to encode in a debug build); the rule
    // is the same at the defaults.
    let mut core = ServerConfig::default();
    core.congestion_high_bytes = 1 << 20;
    core.congestion_low_bytes = 256 << 10;
    let server = start_server_with(
        &rt,
        ServerOptions {
            core,
            ..ServerOptions::default()
        },
    )
    .await;
    let mut bystander = Bystander::start(&rt, &server.url).await;
    let (mut hog, _) = Client::session(&rt, &server.url).await;
    // Unique per run: both runtimes' variants of this scenario share one test process.
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "execd-hog-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pidfile = dir.join("pid");
    let script = format!("echo $$ > {}; exec yes chatty-output", pidfile.display());
    // The start reply arrives before the output floods the connection.
    hog.start("chatty", &["sh", "-c", &script], json!({})).await;
    let pid: u64 = within(&rt, async {
        loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            sleep(&rt, Duration::from_millis(10)).await;
        }
    })
    .await;
    // Paused: nothing written for a second (socket buffers may drain in bursts before).
    let stalled = within(&rt, async {
        let (mut previous, mut quiet) = (u64::MAX, 0);
        loop {
            sleep(&rt, Duration::from_millis(200)).await;
            let now = written(pid);
            quiet = if now == previous { quiet + 1 } else { 0 };
            if quiet == 5 {
                return now;
            }
            previous = now;
        }
    })
    .await;

    for _ in 0..5 {
        bystander.echo().await;
    }
    assert!(pid_alive(pid), "the hog's process ended");
    assert_eq!(written(pid), stalled, "the hog's process was not paused");
    drop(hog);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A well-behaved client running `cat`: each echo writes a line and waits for it to come back.
struct Bystander {
    rt: Arc<dyn Runtime>,
    client: Client,
    round: u64,
}

impl Bystander {
    async fn start(rt: &Arc<dyn Runtime>, url: &str) -> Bystander {
        let (mut client, _) = Client::session(rt, url).await;
        let r = client
            .start("echo", &["cat"], json!({"pipeStdin": true}))
            .await;
        assert!(r.get("result").is_some(), "{r}");
        Bystander {
            rt: Arc::clone(rt),
            client,
            round: 0,
        }
    }

    /// One echo round trip, which must take less than [`BYSTANDER_BOUND`].
    async fn echo(&mut self) {
        self.round += 1;
        let line = format!("round {}\n", self.round);
        let started = self.rt.now();
        let r = self
            .client
            .call(
                "process/write",
                json!({"processId": "echo", "chunk": STANDARD.encode(&line),
                       "writeId": format!("w{}", self.round)}),
            )
            .await;
        assert!(r.get("result").is_some(), "{r}");
        let mut got = Vec::new();
        while got != line.as_bytes() {
            let n = self.client.notification().await;
            if n["method"] == "process/output" && n["params"]["processId"] == "echo" {
                let chunk = n["params"]["chunk"].as_str().expect("chunk");
                got.extend(STANDARD.decode(chunk).expect("base64"));
            }
        }
        let took = self.rt.now() - started;
        assert!(
            took < BYSTANDER_BOUND,
            "bystander echo took {took:?} (bound {BYSTANDER_BOUND:?})"
        );
    }
}

/// Connects over TCP and completes a WebSocket handshake by hand; the caller speaks raw frames.
async fn raw_ws(rt: &Arc<dyn Runtime>, addr: SocketAddr) -> Box<dyn AsyncStream> {
    let mut tcp = within(rt, tcp_connect(rt, addr))
        .await
        .expect("tcp connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    write(rt, &mut tcp, request.as_bytes()).await;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        let n = within(rt, tcp.read(&mut byte)).await.expect("read head");
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    tcp
}

/// A masked frame header (mask key 0, so the payload goes as is).
fn masked_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    out
}

async fn write(rt: &Arc<dyn Runtime>, stream: &mut Box<dyn AsyncStream>, bytes: &[u8]) {
    within(rt, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .expect("write");
}

/// Reads until EOF; returns the status code of the first Close frame the server sent.
async fn close_code(rt: &Arc<dyn Runtime>, stream: &mut Box<dyn AsyncStream>) -> Option<u16> {
    let mut bytes = Vec::new();
    // A reset after the Close frame is fine: what was read still counts.
    let _ = within(rt, stream.read_to_end(&mut bytes)).await;
    let mut rest = &bytes[..];
    while rest.len() >= 2 {
        let len = usize::from(rest[1] & 0x7f);
        if rest[0] & 0x0f == 0x8 {
            return (len >= 2 && rest.len() >= 4).then(|| u16::from_be_bytes([rest[2], rest[3]]));
        }
        if len > 125 {
            return None;
        }
        rest = &rest[(2 + len).min(rest.len())..];
    }
    None
}

/// The process's `VmRSS`, in bytes.
fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes process `pid` has written so far (`wchar` of /proc/PID/io).
fn written(pid: u64) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u64::MAX)
}
