//! The server over real loopback WebSockets (and stdio pipes) and real child processes. Every
//! await has a timeout (`within`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_core::protocol::binary;
use execd_core::ServerConfig;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use serde_json::{json, Value};

use super::{sleep, tcp_connect, within};
use crate::runtime::{FdStream, Runtime, Task};
use crate::transport::{stdio_transport, ws_connect, FrameReader, FrameWriter, Inbound, Limits};
use crate::{serve_connection, ServerOptions, WsServer};

pub(crate) struct TestServer {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    /// Dropping it stops the server, which kills its children.
    _task: Task,
}

pub(crate) async fn start_server(rt: &Arc<dyn Runtime>, core: ServerConfig) -> TestServer {
    let options = ServerOptions {
        core,
        ..ServerOptions::default()
    };
    start_server_with(rt, options).await
}

/// Starts a WebSocket server with `options` on a free loopback port.
pub(super) async fn start_server_with(rt: &Arc<dyn Runtime>, options: ServerOptions) -> TestServer {
    let server = within(
        rt,
        WsServer::bind_with_runtime(
            Arc::clone(rt),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            options,
        ),
    )
    .await
    .expect("bind");
    let url = server.url();
    let addr = server.local_addr();
    let task = rt.spawn(Box::pin(async move {
        if let Err(e) = server.run().await {
            panic!("server failed: {e}");
        }
    }));
    TestServer {
        url,
        addr,
        _task: task,
    }
}

pub(crate) struct Client {
    rt: Arc<dyn Runtime>,
    reader: FrameReader,
    writer: FrameWriter,
    next_id: i64,
    pub(crate) notifications: VecDeque<Value>,
}

impl Client {
    pub(crate) async fn connect(rt: &Arc<dyn Runtime>, url: &str) -> Client {
        let (reader, writer) = within(rt, ws_connect(Arc::clone(rt), url, Limits::default()))
            .await
            .expect("connect");
        Client::over(rt, reader, writer)
    }

    fn over(rt: &Arc<dyn Runtime>, reader: FrameReader, writer: FrameWriter) -> Client {
        Client {
            rt: Arc::clone(rt),
            reader,
            writer,
            next_id: 1,
            notifications: VecDeque::new(),
        }
    }

    /// Connects and opens (or resumes) a session; returns the session id.
    pub(crate) async fn initialize(&mut self, resume: Option<&str>) -> Value {
        let mut params = json!({"clientName": "test"});
        if let Some(sid) = resume {
            params["resumeSessionId"] = json!(sid);
        }
        let r = self.call("initialize", params).await;
        if r.get("result").is_some() {
            self.send_raw(&json!({"method": "initialized", "params": {}}).to_string())
                .await;
        }
        r
    }

    pub(crate) async fn session(rt: &Arc<dyn Runtime>, url: &str) -> (Client, String) {
        let mut c = Client::connect(rt, url).await;
        let r = c.initialize(None).await;
        let sid = r["result"]["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        (c, sid)
    }

    pub(crate) async fn send_raw(&mut self, text: &str) {
        within(&self.rt, self.writer.send(text.to_owned()))
            .await
            .expect("send");
        within(&self.rt, self.writer.flush()).await.expect("flush");
    }

    /// Sends one binary frame (ext, PROTOCOL.md §2.5).
    pub(crate) async fn send_binary(&mut self, frame: Vec<u8>) {
        within(&self.rt, self.writer.send_binary(frame))
            .await
            .expect("send");
        within(&self.rt, self.writer.flush()).await.expect("flush");
    }

    /// The next message; a binary `process/output` frame becomes the JSON notification it
    /// stands for, marked `"binary": true`.
    pub(crate) async fn recv(&mut self) -> Value {
        match within(&self.rt, self.reader.recv()).await {
            Some(Ok(Inbound::Frame(bytes))) if binary::is_binary_frame(&bytes) => {
                let out = binary::decode_output(&bytes).expect("valid binary output frame");
                json!({"method": "process/output", "binary": true, "params": {
                    "processId": out.process_id, "seq": out.seq, "stream": out.stream,
                    "chunk": STANDARD.encode(out.chunk),
                }})
            }
            Some(Ok(Inbound::Frame(bytes))) => {
                serde_json::from_slice(&bytes).expect("server sends JSON")
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(e)) => panic!("transport error {e}"),
            None => panic!("server closed the connection"),
        }
    }

    /// Sends a request; returns its response (result or error), queueing notifications.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(&json!({"id": id, "method": method, "params": params}).to_string())
            .await;
        loop {
            let msg = self.recv().await;
            if msg.get("method").is_some() && msg.get("id").is_none() {
                self.notifications.push_back(msg);
            } else {
                assert_eq!(msg["id"], id, "responses arrive for the request sent");
                return msg;
            }
        }
    }

    pub(crate) async fn notification(&mut self) -> Value {
        if let Some(n) = self.notifications.pop_front() {
            return n;
        }
        let msg = self.recv().await;
        assert!(msg.get("id").is_none(), "unexpected response {msg}");
        msg
    }

    pub(crate) async fn start(&mut self, process_id: &str, argv: &[&str], extra: Value) -> Value {
        let mut params = json!({
            "processId": process_id, "argv": argv, "cwd": "file:///tmp",
            "env": {"PATH": "/usr/bin:/bin"}, "tty": false,
        });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        self.call("process/start", params).await
    }

    /// Collects notifications for `process_id` until its `process/closed`.
    pub(crate) async fn until_closed(&mut self, process_id: &str) -> Run {
        let mut run = Run::default();
        loop {
            let n = self.notification().await;
            if n["params"]["processId"] != process_id {
                continue;
            }
            run.seqs.push(n["params"]["seq"].as_u64().expect("seq"));
            match n["method"].as_str().expect("method") {
                "process/output" => {
                    let bytes = STANDARD
                        .decode(n["params"]["chunk"].as_str().expect("chunk"))
                        .expect("base64");
                    match n["params"]["stream"].as_str() {
                        Some("stderr") => run.stderr.extend(bytes),
                        _ => run.stdout.extend(bytes),
                    }
                    run.events.push("output");
                    run.binary_outputs += usize::from(n["binary"] == json!(true));
                }
                "process/exited" => {
                    run.exit_code = n["params"]["exitCode"].as_i64();
                    run.events.push("exited");
                }
                "process/closed" => {
                    run.events.push("closed");
                    return run;
                }
                other => panic!("unexpected notification {other}"),
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) stdout: Vec<u8>,
    stderr: Vec<u8>,
    pub(crate) seqs: Vec<u64>,
    events: Vec<&'static str>,
    exit_code: Option<i64>,
    /// `process/output` notifications that came as binary frames.
    pub(crate) binary_outputs: usize,
}

impl Run {
    pub(crate) fn assert_well_formed(&self) {
        let want: Vec<u64> = (1..=self.seqs.len() as u64).collect();
        assert_eq!(self.seqs, want, "seq is contiguous from 1");
        assert_eq!(self.events.last(), Some(&"closed"), "closed is last");
        assert_eq!(self.events.iter().filter(|e| **e == "exited").count(), 1);
    }
}

/// A process's output, `process/exited` and `process/closed` arrive in that order, with seq
/// contiguous from 1, and its exit code.
pub async fn lifecycle_events_arrive_in_seq_order(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    let r = c
        .start(
            "p",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            json!({}),
        )
        .await;
    assert_eq!(
        r["result"],
        json!({"processId": "p", "sandboxType": "none"})
    );
    let run = c.until_closed("p").await;
    run.assert_well_formed();
    assert_eq!(run.stdout, b"out\n");
    assert_eq!(run.stderr, b"err\n");
    assert_eq!(run.exit_code, Some(3));
}

/// Eight MiB of output (2^20 numbered 8-byte lines) arrive exactly, in order, without loss.
pub async fn eight_mib_of_output_arrives_in_order_without_loss(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start("big", &["seq", "-w", "1", "1048576"], json!({}))
        .await;
    let run = c.until_closed("big").await;
    run.assert_well_formed();
    let want: String = (1..=1_048_576).map(|n| format!("{n:07}\n")).collect();
    assert_eq!(want.len(), 8 << 20);
    assert_eq!(run.stdout.len(), want.len());
    assert!(run.stdout == want.as_bytes(), "bytes differ");
    assert_eq!(run.exit_code, Some(0));
}

/// 8 MiB of binary output (zeros from `/dev/zero`) arrive byte-exact.
pub async fn large_binary_output_is_exact(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start("zero", &["head", "-c", "8388608", "/dev/zero"], json!({}))
        .await;
    let run = c.until_closed("zero").await;
    run.assert_well_formed();
    assert_eq!(run.stdout.len(), 8 << 20);
    assert!(run.stdout.iter().all(|b| *b == 0));
}

/// A `process/write` repeated with the same `writeId` reaches the child's stdin once.
pub async fn write_dedupe_reaches_the_child_once(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start("cat", &["cat"], json!({"pipeStdin": true})).await;
    let chunk = STANDARD.encode(b"hello\n");
    for _ in 0..3 {
        let r = c
            .call(
                "process/write",
                json!({"processId": "cat", "chunk": chunk, "writeId": "w1"}),
            )
            .await;
        assert_eq!(r["result"], json!({"status": "accepted"}));
    }
    let chunk2 = STANDARD.encode(b"world\n");
    c.call(
        "process/write",
        json!({"processId": "cat", "chunk": chunk2, "writeId": "w2"}),
    )
    .await;
    c.call("process/closeStdin", json!({"processId": "cat"}))
        .await;
    let run = c.until_closed("cat").await;
    assert_eq!(run.stdout, b"hello\nworld\n");
}

/// Writes and a stdin close pipelined right behind `process/start` (before its response, so
/// while the spawn may still be pending) are accepted, never `starting`, and reach the child
/// in order before the EOF; repeated for 20 processes so that some land during the spawn.
pub async fn writes_pipelined_behind_the_start_reach_the_child_in_order(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    for n in 0..20 {
        let pid = format!("cat{n}");
        let frames = [
            json!({"id": 1000 + n * 10, "method": "process/start", "params": {
                "processId": pid, "argv": ["cat"], "cwd": "file:///tmp",
                "env": {"PATH": "/usr/bin:/bin"}, "pipeStdin": true}}),
            json!({"id": 1001 + n * 10, "method": "process/write", "params": {
                "processId": pid, "chunk": STANDARD.encode(b"one "), "writeId": "a"}}),
            json!({"id": 1002 + n * 10, "method": "process/write", "params": {
                "processId": pid, "chunk": STANDARD.encode(b"two"), "writeId": "b"}}),
            json!({"id": 1003 + n * 10, "method": "process/closeStdin",
                   "params": {"processId": pid}}),
        ];
        for frame in &frames {
            c.send_raw(&frame.to_string()).await;
        }
        let mut answered = 0;
        while answered < frames.len() {
            let msg = c.recv().await;
            if msg.get("id").is_none() {
                c.notifications.push_back(msg);
                continue;
            }
            answered += 1;
            assert!(msg.get("error").is_none(), "{msg}");
            if let Some(status) = msg["result"].get("status") {
                assert_eq!(status, "accepted", "{msg}");
            }
        }
        let run = c.until_closed(&pid).await;
        assert_eq!(run.stdout, b"one two", "{pid}");
    }
}

/// Without `pipeStdin` the child reads `/dev/null` and a write answers `stdinClosed`.
pub async fn stdin_is_null_without_pipe_stdin(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start("cat", &["cat"], json!({})).await;
    let r = c
        .call(
            "process/write",
            json!({"processId": "cat", "chunk": "eA==", "writeId": "w"}),
        )
        .await;
    assert_eq!(r["result"]["status"], "stdinClosed");
    let run = c.until_closed("cat").await;
    assert_eq!(run.stdout, b"");
    assert_eq!(run.exit_code, Some(0));
}

/// Output produced while the session was detached is read back with `process/read` after a resume.
pub async fn resume_after_disconnect_keeps_output_produced_while_detached(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut a, sid) = Client::session(&rt, &server.url).await;
    a.start(
        "p",
        &["sh", "-c", "echo early; sleep 0.3; echo later"],
        json!({}),
    )
    .await;
    let first = a.notification().await;
    assert_eq!(first["params"]["seq"], 1);
    drop(a);
    // Stay away long enough for the child to finish while detached.
    sleep(&rt, Duration::from_millis(800)).await;
    let mut b = Client::connect(&rt, &server.url).await;
    let r = b.initialize(Some(&sid)).await;
    assert_eq!(r["result"]["sessionId"], sid.as_str());
    let r = b
        .call(
            "process/read",
            json!({"processId": "p", "afterSeq": 1, "waitMs": 5000}),
        )
        .await;
    let chunks = r["result"]["chunks"].as_array().expect("chunks");
    let text: Vec<u8> = chunks
        .iter()
        .flat_map(|c| {
            STANDARD
                .decode(c["chunk"].as_str().unwrap_or(""))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(text, b"later\n");
    assert_eq!(r["result"]["exited"], true);
    assert_eq!(r["result"]["closed"], true);
    assert_eq!(r["result"]["exitCode"], 0);
}

/// Resuming a session that another connection holds fails with -32010.
pub async fn resume_while_attached_is_refused_with_32010(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (_a, sid) = Client::session(&rt, &server.url).await;
    let mut b = Client::connect(&rt, &server.url).await;
    let r = b.initialize(Some(&sid)).await;
    assert_eq!(r["error"]["code"], -32010);
}

pub(crate) fn pid_alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// When a detached session's TTL expires its processes (and their children) are killed and it
/// cannot be resumed.
pub async fn ttl_expiry_kills_the_detached_sessions_processes(rt: Arc<dyn Runtime>) {
    let mut config = ServerConfig::default();
    config.session_ttl = Duration::from_millis(300);
    let server = start_server(&rt, config).await;
    let (mut a, sid) = Client::session(&rt, &server.url).await;
    a.start("sleeper", &["sh", "-c", "sleep 60 & wait"], json!({}))
        .await;
    let list = a.call("process/list", json!({})).await;
    let pid = list["result"]["processes"][0]["pid"].as_u64().expect("pid");
    assert!(pid_alive(pid));
    drop(a);
    within(&rt, async {
        while pid_alive(pid) {
            sleep(&rt, Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut b = Client::connect(&rt, &server.url).await;
    let r = b.initialize(Some(&sid)).await;
    assert_eq!(r["error"]["code"], -32600);
}

/// `process/terminate` kills the whole process group (exit 137).
pub async fn terminate_kills_the_process_group(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start("p", &["sh", "-c", "sleep 60 & wait"], json!({}))
        .await;
    let r = c.call("process/terminate", json!({"processId": "p"})).await;
    assert_eq!(r["result"], json!({"running": true}));
    let run = c.until_closed("p").await;
    assert_eq!(run.exit_code, Some(137));
}

/// A `tty` process has a terminal on stdin and stdout, sized 24 × 80.
pub async fn pty_processes_see_a_terminal(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start(
        "t",
        &[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo is-a-tty; stty size",
        ],
        json!({"tty": true}),
    )
    .await;
    let run = c.until_closed("t").await;
    run.assert_well_formed();
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("is-a-tty"), "{text:?}");
    assert!(text.contains("24 80"), "{text:?}");
}

/// Malformed JSON (-32600), unknown methods (-32601), bad params (-32602) and spawn failures
/// (-32603) get errors, and the connection keeps working.
pub async fn malformed_frames_get_errors_and_the_connection_keeps_working(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.send_raw("{not json").await;
    let r = c.recv().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(-1), json!(-32600))
    );
    let r = c.call("process/nope", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
    let r = c
        .call(
            "process/start",
            json!({"processId": "x", "argv": [], "cwd": "file:///", "env": {}, "tty": false}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602);
    let r = c
        .call(
            "process/start",
            json!({"processId": "x", "argv": ["true"], "cwd": "/tmp", "env": {}, "tty": false}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602);
    let r = c.start("x", &["/definitely/not/here"], json!({})).await;
    assert_eq!(r["error"]["code"], -32603);
    assert_eq!(r["error"]["data"]["kind"], "notFound");
    // A top-level array is not a batch and is never decoded positionally.
    c.send_raw(r#"[2,"process/start",{"processId":"y","argv":["true"],"cwd":"file:///"}]"#)
        .await;
    let r = c.recv().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(-1), json!(-32600))
    );
    let r = c.call("process/list", json!({})).await;
    assert_eq!(
        r["result"]["processes"],
        json!([]),
        "a failed spawn leaves no entry"
    );
}

/// A frame over `max_frame_bytes` gets -32600 and the connection keeps working.
pub async fn oversized_frames_are_refused_and_the_connection_keeps_working(rt: Arc<dyn Runtime>) {
    let mut config = ServerConfig::default();
    config.max_frame_bytes = 1024;
    let server = start_server(&rt, config).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    let big = json!({"id": 99, "method": "process/list", "params": {"pad": "x".repeat(4096)}});
    c.send_raw(&big.to_string()).await;
    let r = c.recv().await;
    assert_eq!(r["error"]["code"], -32600);
    let r = c.call("process/list", json!({})).await;
    assert!(r["result"].is_object());
}

/// On the server's port, a handshake with `Origin` gets 403, `GET /readyz` gets 200, a plain
/// handshake 101.
pub async fn origin_header_is_refused_and_readyz_answers(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let head = |extra: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n",
            server.addr
        )
    };
    for (request, want) in [
        (head("Origin: http://evil.example\r\n"), "HTTP/1.1 403"),
        (
            format!("GET /readyz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr),
            "HTTP/1.1 200",
        ),
        (head(""), "HTTP/1.1 101"),
    ] {
        let mut tcp = within(&rt, tcp_connect(&rt, server.addr))
            .await
            .expect("connect");
        within(&rt, tcp.write_all(request.as_bytes()))
            .await
            .expect("write");
        let mut buf = vec![0u8; 12];
        within(&rt, tcp.read_exact(&mut buf))
            .await
            .expect("read status line");
        assert_eq!(String::from_utf8_lossy(&buf), want);
    }
}

/// SIGINT reaches a child even when the server itself ignores SIGINT (children get default
/// dispositions).
pub async fn interrupt_reaches_children_even_when_the_server_ignores_sigint(rt: Arc<dyn Runtime>) {
    // A server started in the background of a non-interactive shell inherits SIGINT ignored;
    // its children must still get default dispositions.
    // SAFETY: setting a disposition to SIG_IGN; no handler involved.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    c.start("s", &["sleep", "30"], json!({})).await;
    let r = c
        .call(
            "process/signal",
            json!({"processId": "s", "signal": "interrupt"}),
        )
        .await;
    assert_eq!(r["result"], json!({}));
    let run = c.until_closed("s").await;
    assert_eq!(run.exit_code, Some(130));
}

/// A client that stops reading pauses the child on its pipe (backpressure) instead of growing
/// server memory; all output arrives once it reads again.
pub async fn a_client_that_stops_reading_pauses_the_child_instead_of_growing_memory(
    rt: Arc<dyn Runtime>,
) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(&rt, &server.url).await;
    let dir = std::env::temp_dir().join(format!("execd-bp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pidfile = dir.join("pid");
    let script = format!(
        "echo $$ > {}; exec head -c 50331648 /dev/zero",
        pidfile.display()
    );
    c.start("flood", &["sh", "-c", &script], json!({})).await;
    let pid: u64 = within(&rt, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                if let Ok(pid) = text.trim().parse() {
                    return pid;
                }
            }
            sleep(&rt, Duration::from_millis(10)).await;
        }
    })
    .await;
    // Read nothing: once the connection's queue is full the server must stop draining the
    // pipe, so what `head` has written stops growing, well short of the whole output.
    let written = |pid: u64| -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let mut previous = u64::MAX;
    let stalled = within(&rt, async {
        loop {
            sleep(&rt, Duration::from_millis(500)).await;
            let now = written(pid);
            if now == previous {
                return now;
            }
            previous = now;
        }
    })
    .await;
    assert!(
        pid_alive(pid),
        "the child finished although nobody read its output"
    );
    assert!(
        stalled < 40 << 20,
        "{stalled} bytes were drained from an unread process"
    );
    let run = c.until_closed("flood").await;
    run.assert_well_formed();
    assert_eq!(run.stdout.len(), 48 << 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A session served over a pair of pipes (the stdio transport, as `execd serve --listen
/// stdio` uses it) runs a process to its close, and the server ends when the client hangs up.
pub async fn stdio_connection_serves_a_session_over_pipes(rt: Arc<dyn Runtime>) {
    let (server_in, client_out) = FdStream::pipe(&*rt).expect("pipe");
    let (client_in, server_out) = FdStream::pipe(&*rt).expect("pipe");
    let (reader, writer) = stdio_transport(server_in, server_out, Limits::default());
    let server = serve_connection(Arc::clone(&rt), reader, writer, ServerOptions::default());
    let (reader, writer) = stdio_transport(client_in, client_out, Limits::default());
    let mut c = Client::over(&rt, reader, writer);
    let client = async move {
        let r = c.initialize(None).await;
        assert!(r["result"]["sessionId"].is_string(), "{r}");
        c.start("p", &["sh", "-c", "echo over-stdio; exit 4"], json!({}))
            .await;
        c.until_closed("p").await
        // Dropping the client closes both pipes: the server sees EOF and ends.
    };

    let (served, run) = within(&rt, futures_lite::future::zip(server, client)).await;

    served.expect("serve_connection ends cleanly");
    run.assert_well_formed();
    assert_eq!(run.stdout, b"over-stdio\n");
    assert_eq!(run.exit_code, Some(4));
}
