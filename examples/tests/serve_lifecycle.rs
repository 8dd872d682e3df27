//! `execd serve` under hostile conditions: stderr that cannot be written, and SIGTERM, SIGINT
//! or SIGHUP with a connected client and running process trees. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message;
use futures::StreamExt as _;
use serde_json::{json, Value};

mod common;

use common::{KillOnDrop, EXECD};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `execd serve` with `EXECD_LOG=debug` and the given stderr; returns it and its URL.
fn serve(stderr: Stdio) -> (KillOnDrop, String) {
    let mut cmd = Command::new(EXECD);
    cmd.args(["serve", "--listen", "ws://127.0.0.1:0"])
        .env("EXECD_LOG", "debug")
        .stderr(stderr);
    common::serve_with(cmd, TIMEOUT)
}

/// `execd run --url URL -- echo hi` succeeds: the server initializes a session and runs.
fn assert_serves(url: &str) {
    let mut child = Command::new(EXECD)
        .args(["run", "--url", url, "--", "echo", "hi"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn execd run");
    let status = wait_within(&mut child);
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out);
    assert_eq!((status, out.as_str()), (Some(0), "hi\n"));
}

/// Waits for `child` to exit (polling), killing it after [`TIMEOUT`]; its exit code.
fn wait_within(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pids_with_arg(arg: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
            let mut args = cmdline.split(|b| *b == 0);
            let is_sleep = args.next().is_some_and(|a| a.ends_with(b"sleep"));
            !zombie && is_sleep && args.any(|a| a == arg.as_bytes())
        })
        .collect()
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serve_keeps_serving_when_stderr_is_dev_full() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let (_server, url) = serve(Stdio::from(full));
    assert_serves(&url);
}

#[test]
fn serve_keeps_serving_when_stderr_is_a_closed_pipe() {
    let (_server, url) = {
        let mut child = Command::new(EXECD)
            .args(["serve", "--listen", "ws://127.0.0.1:0"])
            .env("EXECD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn execd serve");
        // Nobody reads stderr: every log line meets EPIPE.
        drop(child.stderr.take());
        let stdout = child.stdout.take().expect("stdout");
        let guard = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("execd serve printed its URL");
        (guard, line.trim().to_owned())
    };
    assert_serves(&url);
}

#[test]
fn sigterm_closes_clients_with_1001_kills_every_tree_and_exits_0() {
    shutdown_on(libc::SIGTERM);
}

#[test]
fn sigint_and_sighup_shut_down_cleanly_too() {
    shutdown_on(libc::SIGINT);
    shutdown_on(libc::SIGHUP);
}

fn shutdown_on(signo: i32) {
    let (mut server, url) = serve(Stdio::null());
    let pid = std::process::id();
    let waited = format!("1000.{pid}{signo:02}1");
    let job = format!("1000.{pid}{signo:02}2");
    let close = smol::block_on(async {
        let addr = url.trim_start_matches("ws://").to_owned();
        let tcp = smol::net::TcpStream::connect(addr).await.expect("tcp");
        let (mut ws, _) = async_tungstenite::client_async(url.as_str(), tcp)
            .await
            .expect("handshake");
        let mut next_id = 0;
        let mut call = |method: &str, params: Value| {
            next_id += 1;
            Message::text(json!({"id": next_id, "method": method, "params": params}).to_string())
        };
        let start = |id: &str, script: String| {
            json!({"processId": id, "argv": ["sh", "-c", script], "cwd": "file:///tmp",
                   "env": {"PATH": "/usr/bin:/bin"}, "tty": false})
        };
        ws.send(call("initialize", json!({"clientName": "test"})))
            .await
            .expect("send");
        let initialized = json!({"method": "initialized", "params": {}}).to_string();
        ws.send(Message::text(initialized)).await.expect("send");
        ws.send(call(
            "process/start",
            start("w", format!("yes | cat >/dev/null & sleep {waited} & wait")),
        ))
        .await
        .expect("send");
        ws.send(call(
            "process/start",
            start("b", format!("nohup sleep {job} >/dev/null 2>&1 &")),
        ))
        .await
        .expect("send");
        let running = || !pids_with_arg(&waited).is_empty() && !pids_with_arg(&job).is_empty();
        let deadline = Instant::now() + TIMEOUT;
        while !running() {
            assert!(Instant::now() < deadline, "processes did not start");
            smol::Timer::after(Duration::from_millis(10)).await;
        }

        // SAFETY: kill(2) on the server child this test started and still holds.
        unsafe { libc::kill(server.0.id() as i32, signo) };

        let read_close = async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => {}
                    other => panic!("connection ended without a close frame: {other:?}"),
                }
            }
        };
        let limit = async {
            smol::Timer::after(TIMEOUT).await;
            panic!("no close frame within {TIMEOUT:?}");
        };
        futures_lite::future::or(read_close, limit).await
    });
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let started = Instant::now();
    assert_eq!(wait_within(&mut server.0), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit was not prompt"
    );
    until("no descendant left", || {
        pids_with_arg(&waited).is_empty() && pids_with_arg(&job).is_empty()
    });
}

/// SIGKILL of `execd serve` (no clean-up runs) still leaves none of its children behind: each
/// child dies with the thread that started it (`PR_SET_PDEATHSIG`), on both runtimes, with and
/// without a terminal, also when many were started at once.
#[test]
fn sigkill_of_the_server_leaves_no_child_behind() {
    for runtime in ["smol", "tokio"] {
        let (mut server, url) = common::serve_on(runtime, TIMEOUT);
        let marker = format!("1000.{}{}", std::process::id(), runtime.len());
        const N: usize = 16;
        let started = async {
            let addr = url.trim_start_matches("ws://").to_owned();
            let tcp = smol::net::TcpStream::connect(addr).await.expect("tcp");
            let (mut ws, _) = async_tungstenite::client_async(url.as_str(), tcp)
                .await
                .expect("handshake");
            let call = |id: usize, method: &str, params: Value| {
                Message::text(json!({"id": id, "method": method, "params": params}).to_string())
            };
            ws.send(call(0, "initialize", json!({"clientName": "test"})))
                .await
                .expect("send");
            let initialized = json!({"method": "initialized", "params": {}}).to_string();
            ws.send(Message::text(initialized)).await.expect("send");
            for i in 1..=N {
                let params = json!({"processId": format!("p{i}"), "argv": ["sleep", marker],
                                    "cwd": "file:///tmp", "env": {}, "tty": i % 2 == 0});
                ws.send(call(i, "process/start", params))
                    .await
                    .expect("send");
            }
            while pids_with_arg(&marker).len() < N {
                smol::Timer::after(Duration::from_millis(10)).await;
            }
            ws
        };
        let limit = async {
            smol::Timer::after(TIMEOUT).await;
            panic!("{N} processes did not start within {TIMEOUT:?} on {runtime}");
        };
        let _ws = smol::block_on(futures_lite::future::or(started, limit));
        // SAFETY: kill(2) on the server child this test started and still holds.
        unsafe { libc::kill(server.0.id() as i32, libc::SIGKILL) };
        assert_eq!(wait_within(&mut server.0), None, "killed by a signal");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = pids_with_arg(&marker);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for pid in &left {
                    // SAFETY: kill(2) of a `sleep` carrying this test's marker argument.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
                panic!("{runtime}: children {left:?} survived the server's SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
