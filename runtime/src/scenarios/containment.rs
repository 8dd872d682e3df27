//! Process-tree containment and clean shutdown: a kill reaches every descendant (also after
//! the process closed, and with cgroups also `setsid` escapees), and a shutdown closes the
//! connections with 1001 and leaves no descendant behind. Each scenario reports the
//! [`Containment`] it ran with on stderr.
//!
//! Descendants are found by a unique `sleep` argument in `/proc/*/cmdline`, and their end is
//! awaited by polling `/proc` within [`TIMEOUT`](super::TIMEOUT).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use execd_core::protocol::SandboxType;
use execd_core::{ProcessEvent, ServerConfig, SpawnSpec};
use futures::StreamExt as _;
use serde_json::json;

use super::server::{start_server, Client};
use super::{sleep, tcp_connect, timeout, within};
use crate::process::{Containment, ProcessTable};
use crate::runtime::Runtime;
use crate::{ServerOptions, WsServer};

static MARKERS: AtomicU32 = AtomicU32::new(0);

/// A `sleep` duration unique to this test process and call, to find its processes by.
fn marker() -> String {
    let n = MARKERS.fetch_add(1, Ordering::Relaxed);
    format!("1000.{}{n:03}", std::process::id())
}

/// Live (not zombie) processes with `arg` in their command line.
fn pids_with_arg(arg: &str) -> Vec<u32> {
    pids_where(arg, false)
}

/// Live processes with `arg` in their command line; with `sleeping`, only once they run
/// `sleep` (not yet `setsid` or `nohup` before their exec).
fn pids_where(arg: &str, sleeping: bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
            let mut args = cmdline.split(|b| *b == 0);
            let is_sleep = args.next().is_some_and(|a| a.ends_with(b"sleep"));
            !zombie && (is_sleep || !sleeping) && args.any(|a| a == arg.as_bytes())
        })
        .collect()
}

async fn until_running(rt: &Arc<dyn Runtime>, arg: &str) {
    timeout(rt, "the descendant to start", async {
        while pids_where(arg, true).is_empty() {
            sleep(rt, Duration::from_millis(10)).await;
        }
    })
    .await;
}

async fn until_gone(rt: &Arc<dyn Runtime>, arg: &str) {
    timeout(rt, "the descendants to die", async {
        while !pids_with_arg(arg).is_empty() {
            sleep(rt, Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn kill_leftovers(arg: &str) {
    for pid in pids_with_arg(arg) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

fn sh(script: &str) -> SpawnSpec {
    SpawnSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        arg0: None,
        cwd: PathBuf::from("/"),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        tty: false,
        pty_size: execd_core::PtySize { rows: 24, cols: 80 },
        pipe_stdin: false,
        sandbox: SandboxType::None,
        sandbox_policy: None,
    }
}

/// Runs `script` as process 1 of `table` until it closes.
async fn run_to_close(
    rt: &Arc<dyn Runtime>,
    table: &mut ProcessTable<u64>,
    events: &async_channel::Receiver<(u64, ProcessEvent)>,
    script: &str,
) {
    match table.spawn(1, sh(script)) {
        ProcessEvent::Spawned { .. } => {}
        other => panic!("spawn failed: {other:?}"),
    }
    let (mut exited, mut eofs) = (false, 0);
    while !(exited && eofs == 2) {
        match timeout(rt, "a process event", events.recv()).await {
            Ok((_, ProcessEvent::Exited { .. })) => exited = true,
            Ok((_, ProcessEvent::Eof { .. })) => eofs += 1,
            Ok(_) => {}
            Err(_) => panic!("event channel closed"),
        }
    }
}

/// After a process closed, `kill` still kills its background job with redirected output, in
/// either containment (with process groups only too).
pub async fn kill_after_close_reaches_a_redirected_background_job(rt: Arc<dyn Runtime>) {
    for cgroups in [true, false] {
        let (tx, events) = async_channel::unbounded();
        let mut table = ProcessTable::<u64>::with_runtime(Arc::clone(&rt), tx);
        if !cgroups {
            table = table.without_cgroups();
        }
        eprintln!("containment: {:?}", table.containment());
        let arg = marker();
        run_to_close(
            &rt,
            &mut table,
            &events,
            &format!("nohup sleep {arg} >/dev/null 2>&1 &"),
        )
        .await;
        until_running(&rt, &arg).await;

        table.kill(1);

        until_gone(&rt, &arg).await;
    }
}

/// A `setsid` escapee of a closed process dies with the process's tree where cgroups are
/// available; with process groups only it survives (the documented limit of the fallback).
pub async fn setsid_escapee_dies_with_cgroups_and_survives_process_groups(rt: Arc<dyn Runtime>) {
    for cgroups in [true, false] {
        let (tx, events) = async_channel::unbounded();
        let mut table = ProcessTable::<u64>::with_runtime(Arc::clone(&rt), tx);
        if !cgroups {
            table = table.without_cgroups();
        }
        let mode = table.containment();
        eprintln!("containment: {mode:?}");
        let arg = marker();
        run_to_close(
            &rt,
            &mut table,
            &events,
            &format!("setsid sleep {arg} </dev/null >/dev/null 2>&1 &"),
        )
        .await;
        until_running(&rt, &arg).await;

        table.kill(1);

        if mode == Containment::Cgroup {
            until_gone(&rt, &arg).await;
        } else {
            // Give a wrong kill time to land before asserting survival.
            sleep(&rt, Duration::from_millis(200)).await;
            let alive = pids_with_arg(&arg);
            kill_leftovers(&arg);
            assert!(
                !alive.is_empty(),
                "process groups cannot reach a setsid escapee"
            );
        }
    }
}

/// `process/terminate` kills a `sh -c 'sleep & wait'` grandchild, and, after the process
/// closed, its background job with redirected output.
pub async fn terminate_kills_grandchildren_and_background_jobs(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    let waited = marker();
    c.start(
        "w",
        &["sh", "-c", &format!("sleep {waited} & wait")],
        json!({}),
    )
    .await;
    until_running(&rt, &waited).await;
    c.call("process/terminate", json!({"processId": "w"})).await;
    until_gone(&rt, &waited).await;

    let job = marker();
    let script = format!("nohup sleep {job} >/dev/null 2>&1 &");
    c.start("b", &["sh", "-c", &script], json!({})).await;
    c.until_closed("b").await;
    until_running(&rt, &job).await;
    let r = c.call("process/terminate", json!({"processId": "b"})).await;
    assert_eq!(r["result"], json!({"running": false}));
    until_gone(&rt, &job).await;
}

/// When a detached session's TTL expires, the background job of its closed process dies.
pub async fn ttl_expiry_kills_a_closed_processes_background_job(rt: Arc<dyn Runtime>) {
    let mut config = ServerConfig::default();
    config.session_ttl = Duration::from_millis(200);
    let server = start_server(&rt, config).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    let job = marker();
    let script = format!("nohup sleep {job} >/dev/null 2>&1 &");
    c.start("b", &["sh", "-c", &script], json!({})).await;
    c.until_closed("b").await;
    until_running(&rt, &job).await;

    drop(c);

    until_gone(&rt, &job).await;
}

/// `run_until`: when the shutdown future completes, a connected client's WebSocket is closed
/// with 1001 "going away", the server returns `Ok`, and no descendant is left (a waited
/// grandchild and a closed process's background job).
pub async fn shutdown_closes_with_1001_and_kills_every_tree(rt: Arc<dyn Runtime>) {
    let server = within(
        &rt,
        WsServer::bind_with_runtime(
            Arc::clone(&rt),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerOptions::default(),
        ),
    )
    .await
    .expect("bind");
    let (url, addr) = (server.url(), server.local_addr());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let (done_tx, done_rx) = async_channel::bounded(1);
    rt.spawn(Box::pin(async move {
        let result = server
            .run_until(async move {
                let _ = stop_rx.recv().await;
            })
            .await;
        let _ = done_tx.send(result.map_err(|e| e.to_string())).await;
    }))
    .detach();

    // A client that stays connected, seeing frames as tungstenite does (with close codes).
    let tcp = within(&rt, tcp_connect(&rt, addr)).await.expect("tcp");
    let (mut ws, _) = within(&rt, async_tungstenite::client_async(url.as_str(), tcp))
        .await
        .expect("handshake");
    // A second client starts the processes.
    let (mut c, _) = Client::session(&rt, &url).await;
    let (waited, job) = (marker(), marker());
    c.start(
        "w",
        &["sh", "-c", &format!("sleep {waited} & wait")],
        json!({}),
    )
    .await;
    let script = format!("nohup sleep {job} >/dev/null 2>&1 &");
    c.start("b", &["sh", "-c", &script], json!({})).await;
    c.until_closed("b").await;
    until_running(&rt, &waited).await;
    until_running(&rt, &job).await;

    let _ = stop_tx.send(()).await;

    let close = timeout(&rt, "the close frame", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let result = timeout(&rt, "the server to return", done_rx.recv()).await;
    assert_eq!(result, Ok(Ok(())));
    until_gone(&rt, &waited).await;
    until_gone(&rt, &job).await;
}
