//! Simulated-clock tests of the server machine: fake clients, a fake process table, exact
//! output assertions. No sleeps, no I/O.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::ids::{ConnId, ProcessKey};
use crate::protocol::{SandboxType, Stream};
use crate::sim::Sim;

mod binary;
mod fs_env;
mod fs_watch;
mod lossless;
mod sandbox;

/// The shared [`Sim`] with raw connections only: the test speaks JSON-RPC itself and answers
/// the server's commands by hand (`answer_commands` off; they are recorded).
pub(super) struct Harness {
    sim: Sim,
}

impl std::ops::Deref for Harness {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_config(ServerConfig::default())
    }

    pub(super) fn with_config(config: ServerConfig) -> Self {
        let mut sim = Sim::with(config, crate::client::ClientConfig::default());
        sim.answer_commands = false;
        Harness { sim }
    }

    /// Every frame the server sent so far must be valid JSON.
    pub(super) fn drain(&mut self) {
        self.sim.pump();
        for (_, text) in &self.sim.frames {
            let _: Value = serde_json::from_str(text).expect("server sends valid JSON");
        }
    }

    pub(super) fn connect(&mut self) -> ConnId {
        self.sim.connect_raw()
    }

    pub(super) fn send_raw(&mut self, conn: ConnId, text: &str) {
        self.sim.send_raw(conn, text.as_bytes());
        self.drain();
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: Value) {
        self.send_raw(conn, &msg.to_string());
    }

    /// Sends a request and returns every frame sent to `conn` as a result.
    pub(super) fn call(
        &mut self,
        conn: ConnId,
        id: i64,
        method: &str,
        params: Value,
    ) -> Vec<Value> {
        self.send(conn, json!({"id": id, "method": method, "params": params}));
        self.take(conn)
    }

    /// The single response to request `id` among the frames for `conn`.
    pub(super) fn response(&mut self, conn: ConnId, id: i64) -> Value {
        let frames = self.take(conn);
        let mut matching: Vec<Value> = frames
            .into_iter()
            .filter(|f| f["id"] == json!(id))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "exactly one response to {id}: {matching:?}"
        );
        matching.remove(0)
    }

    pub(super) fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.sim
            .take_frames(conn)
            .iter()
            .map(|text| serde_json::from_str(text).expect("server sends valid JSON"))
            .collect()
    }

    /// The key of the single spawn the last input asked for.
    pub(super) fn take_spawn(&mut self) -> ProcessKey {
        match self.take_commands().as_slice() {
            [Command::Spawn { key, .. }] => *key,
            other => panic!("expected one spawn, got {other:?}"),
        }
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.sim.now += d;
        let now = self.sim.now;
        self.sim.server.handle_timeout(now);
        self.drain();
    }

    pub(super) fn event(&mut self, key: ProcessKey, event: ProcessEvent) {
        self.sim.event(key, event);
        self.drain();
    }

    pub(super) fn disconnect(&mut self, conn: ConnId) {
        self.sim.disconnect_raw(conn);
        self.drain();
    }

    /// A connection with a fresh session, handshake done. Returns (conn, session id).
    pub(super) fn session(&mut self) -> (ConnId, String) {
        let conn = self.connect();
        let r = self.call(conn, 0, "initialize", json!({"clientName": "test"}));
        let sid = r[0]["result"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        self.send(conn, json!({"method": "initialized", "params": {}}));
        (conn, sid)
    }

    /// Starts a process and completes its spawn. Returns its key.
    pub(super) fn start(&mut self, conn: ConnId, process_id: &str, extra: Value) -> ProcessKey {
        let mut params = json!({
            "processId": process_id, "argv": ["sh", "-c", "x"], "cwd": "file:///tmp",
            "env": {"PATH": "/bin"}, "tty": false,
        });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        self.send(
            conn,
            json!({"id": 1000, "method": "process/start", "params": params}),
        );
        assert!(
            self.take(conn).is_empty(),
            "start is answered after the spawn"
        );
        let key = self.take_spawn();
        self.event(key, ProcessEvent::Spawned { pid: 4242 });
        let r = self.response(conn, 1000);
        assert_eq!(
            r["result"],
            json!({"processId": process_id, "sandboxType": "none"})
        );
        key
    }

    pub(super) fn output(&mut self, key: ProcessKey, stream: Stream, bytes: &[u8]) {
        self.event(
            key,
            ProcessEvent::Output {
                stream,
                bytes: bytes.to_vec(),
            },
        );
    }

    /// Exit with `code` and EOF on both pipes.
    pub(super) fn finish(&mut self, key: ProcessKey, code: i32) {
        self.event(
            key,
            ProcessEvent::Exited {
                status: ExitStatus::Code(code),
            },
        );
        self.event(
            key,
            ProcessEvent::Eof {
                stream: Stream::Stdout,
            },
        );
        self.event(
            key,
            ProcessEvent::Eof {
                stream: Stream::Stderr,
            },
        );
    }
}

pub(super) fn b64(s: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(s)
}

pub(super) fn error_code(frame: &Value) -> i64 {
    frame["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {frame}"))
}

// ----- handshake ------------------------------------------------------------------------------

#[test]
fn initialize_returns_a_uuid_v4_session_id() {
    let mut h = Harness::new();
    let conn = h.connect();
    let r = h.call(conn, 1, "initialize", json!({"clientName": "t"}));
    let sid = r[0]["result"]["sessionId"].as_str().expect("sessionId");
    let uuid = uuid::Uuid::parse_str(sid).expect("uuid");
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(sid, sid.to_lowercase());
    assert_eq!(r[0]["result"]["protocolVersion"], "execd/1");
    assert_eq!(r[0]["result"]["capabilities"]["posixSignals"], true);
}

#[test]
fn session_ids_differ_between_sessions() {
    let mut h = Harness::new();
    let (_, a) = h.session();
    let (_, b) = h.session();
    assert_ne!(a, b);
}

#[test]
fn requests_before_initialize_are_invalid() {
    let mut h = Harness::new();
    let conn = h.connect();
    let r = h.call(conn, 1, "process/read", json!({"processId": "x"}));
    assert_eq!(error_code(&r[0]), -32600);
    assert_eq!(r[0]["id"], 1);
    // The connection still works.
    let r = h.call(conn, 2, "initialize", json!({"clientName": "t"}));
    assert!(r[0]["result"]["sessionId"].is_string());
}

#[test]
fn requests_between_initialize_and_initialized_are_invalid() {
    let mut h = Harness::new();
    let conn = h.connect();
    h.call(conn, 1, "initialize", json!({"clientName": "t"}));
    let r = h.call(conn, 2, "process/list", json!({}));
    assert_eq!(error_code(&r[0]), -32600);
    h.send(conn, json!({"method": "initialized"}));
    let r = h.call(conn, 3, "process/list", json!({}));
    assert_eq!(r[0]["result"], json!({"processes": []}));
}

#[test]
fn second_initialize_is_invalid() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let r = h.call(conn, 5, "initialize", json!({"clientName": "t"}));
    assert_eq!(error_code(&r[0]), -32600);
}

#[test]
fn initialized_before_initialize_closes_the_connection() {
    let mut h = Harness::new();
    let conn = h.connect();
    h.send(conn, json!({"method": "initialized"}));
    assert_eq!(h.closed, vec![conn]);
    // Frames after the close are ignored.
    let r = h.call(conn, 1, "initialize", json!({}));
    assert!(r.is_empty());
}

#[test]
fn unknown_method_is_refused_before_the_handshake_too() {
    let mut h = Harness::new();
    let conn = h.connect();
    let r = h.call(conn, 1, "no/such/method", json!({}));
    assert_eq!(error_code(&r[0]), -32601);
    let r = h.call(conn, 2, "process/list", json!({}));
    assert_eq!(
        r[0]["error"]["message"],
        "client must call initialize before using exec methods"
    );
}

#[test]
fn response_shaped_messages_close_the_connection() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, json!({"id": 6, "result": {}}));
    assert_eq!(h.closed, vec![conn]);
}

#[test]
fn initialize_carries_the_runtime_environment_info() {
    let config = ServerConfig {
        environment_info: Some(fs_env::sample_info()),
        ..ServerConfig::default()
    };
    let mut h = Harness::with_config(config);
    let conn = h.connect();
    let r = h.call(conn, 1, "initialize", json!({"clientName": "t"}));
    assert_eq!(
        r[0]["result"]["environmentInfo"],
        serde_json::to_value(fs_env::sample_info()).expect("serializes")
    );
    assert_eq!(r[0]["result"]["environmentInfo"]["platformOs"], "linux");
}

#[test]
fn unknown_notification_closes_the_connection() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, json!({"method": "what/ever"}));
    assert_eq!(h.closed, vec![conn]);
}

// ----- bad input ------------------------------------------------------------------------------

#[test]
fn malformed_json_gets_error_with_id_minus_one_and_connection_stays() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    for bad in [
        "{",
        "not json",
        "[1,2]",
        "{\"id\":1.5,\"method\":\"x\"}",
        "",
    ] {
        h.send_raw(conn, bad);
        let r = h.take(conn);
        assert_eq!(r.len(), 1, "{bad}");
        assert_eq!(r[0]["id"], -1, "{bad}");
        assert_eq!(error_code(&r[0]), -32600, "{bad}");
    }
    assert!(h.closed.is_empty());
    let r = h.call(conn, 9, "process/list", json!({}));
    assert!(r[0]["result"].is_object());
}

#[test]
fn unknown_method_is_method_not_found() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let r = h.call(conn, 1, "process/fly", json!({}));
    assert_eq!(error_code(&r[0]), -32601);
}

#[test]
fn wrong_param_types_are_invalid_params() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    for params in [
        json!({"processId": 1, "argv": ["x"], "cwd": "file:///", "env": {}, "tty": false}),
        json!({"processId": "a", "argv": "x", "cwd": "file:///", "env": {}, "tty": false}),
        json!({"processId": "a", "argv": [], "cwd": "file:///", "env": {}, "tty": false}),
        json!({"processId": "a", "argv": ["x"], "cwd": "/tmp", "env": {}, "tty": false}),
        json!({"processId": "a", "argv": ["x"], "cwd": "tmp", "env": {}, "tty": false}),
        json!({"processId": "a", "argv": ["x"], "cwd": "file://host/share", "env": {}, "tty": false}),
        json!({"processId": "a", "argv": ["x"], "env": {}, "tty": false}),
        json!([1, 2]),
    ] {
        let r = h.call(conn, 1, "process/start", params.clone());
        assert_eq!(error_code(&r[0]), -32602, "{params}");
    }
    assert!(h.take_commands().is_empty(), "nothing spawned");
}

#[test]
fn non_ascii_cwd_is_invalid_params_not_a_panic() {
    // Found by fuzzing: PathUri::parse sliced the str at byte 5, inside the 'é'.
    let mut h = Harness::new();
    let (conn, _) = h.session();
    for cwd in ["/%a/\u{e9}", "file\u{e9}", "\u{e9}"] {
        let params = json!({"processId": "a", "argv": ["x"], "cwd": cwd, "env": {}, "tty": false});
        let r = h.call(conn, 1, "process/start", params);
        assert_eq!(error_code(&r[0]), -32602, "{cwd}");
    }
    assert!(h.take_commands().is_empty(), "nothing spawned");
}

#[test]
fn string_ids_are_echoed_exactly() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, json!({"id": "req-\u{e9}", "method": "process/list"}));
    let r = h.take(conn);
    assert_eq!(r[0]["id"], "req-\u{e9}");
    h.send(
        conn,
        json!({"jsonrpc": "2.0", "id": -7, "method": "process/list"}),
    );
    assert_eq!(h.take(conn)[0]["id"], -7);
}

#[test]
fn oversized_frames_are_refused_without_closing() {
    let mut h = Harness::with_config(ServerConfig {
        max_frame_bytes: 100,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let big = json!({"id": 1, "method": "process/list", "params": {"pad": "x".repeat(200)}});
    h.send(conn, big);
    let r = h.take(conn);
    assert_eq!((r[0]["id"].clone(), error_code(&r[0])), (json!(-1), -32600));
    assert!(h.closed.is_empty());
    let r = h.call(conn, 2, "process/list", json!({}));
    assert!(r[0]["result"].is_object());
}

#[test]
fn frames_with_too_many_values_are_refused() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let zeros = vec![0; 300_000];
    let r = h.call(conn, 1, "process/list", json!({"pad": zeros}));
    assert_eq!(error_code(&r[0]), -32600);
}

#[test]
fn bad_base64_is_invalid_params() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({"pipeStdin": true}));
    let r = h.call(
        conn,
        1,
        "process/write",
        json!({"processId": "p", "chunk": "!!!", "writeId": "w"}),
    );
    assert_eq!(error_code(&r[0]), -32602);
    let _ = key;
    assert!(h.take_commands().is_empty());
}

// ----- processes ------------------------------------------------------------------------------

#[test]
fn start_builds_the_spawn_spec() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let params = json!({
        "processId": "p", "argv": ["echo", "hi"], "cwd": "file:///tmp/a%20b",
        "env": {"A": "1"}, "tty": true, "arg0": "zero", "sandbox": null,
    });
    h.call(conn, 1, "process/start", params);
    match h.take_commands().as_slice() {
        [Command::Spawn { spec, .. }] => {
            assert_eq!(spec.argv, ["echo", "hi"]);
            assert_eq!(spec.cwd, std::path::Path::new("/tmp/a b"));
            assert_eq!(spec.env.get("A").map(String::as_str), Some("1"));
            assert_eq!(spec.env.len(), 1);
            assert!(spec.tty);
            assert_eq!(spec.pty_size, PtySize { rows: 24, cols: 80 });
            assert_eq!(spec.arg0.as_deref(), Some("zero"));
            assert_eq!(spec.sandbox, SandboxType::None);
            assert_eq!(spec.sandbox_policy, None);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn event_order_and_contiguous_seq() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.output(key, Stream::Stdout, b"out");
    h.output(key, Stream::Stderr, b"err");
    h.finish(key, 3);
    let frames = h.take(conn);
    assert_eq!(
        frames,
        vec![
            json!({"method": "process/output", "params": {"processId": "p", "seq": 1, "stream": "stdout", "chunk": b64(b"out")}}),
            json!({"method": "process/output", "params": {"processId": "p", "seq": 2, "stream": "stderr", "chunk": b64(b"err")}}),
            json!({"method": "process/exited", "params": {"processId": "p", "seq": 3, "exitCode": 3, "sandboxDenied": false}}),
            json!({"method": "process/closed", "params": {"processId": "p", "seq": 4}}),
        ]
    );
}

#[test]
fn output_after_exit_comes_before_closed() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(0),
        },
    );
    h.output(key, Stream::Stdout, b"late");
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stdout,
        },
    );
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stderr,
        },
    );
    let methods: Vec<(String, u64)> = h
        .take(conn)
        .iter()
        .map(|f| {
            (
                f["method"].as_str().unwrap_or("").to_owned(),
                f["params"]["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            ("process/exited".into(), 1),
            ("process/output".into(), 2),
            ("process/closed".into(), 3)
        ]
    );
}

#[test]
fn signal_death_reports_128_plus_n_and_signal_name() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Signal(9),
        },
    );
    let f = h.take(conn);
    assert_eq!(f[0]["params"]["exitCode"], 137);
    assert_eq!(f[0]["params"]["exitSignal"], "SIGKILL");
}

#[test]
fn duplicate_process_id_is_rejected_while_the_entry_exists() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    let params =
        json!({"processId": "p", "argv": ["x"], "cwd": "file:///", "env": {}, "tty": false});
    let r = h.call(conn, 1, "process/start", params.clone());
    assert_eq!(error_code(&r[0]), -32600);
    assert_eq!(r[0]["error"]["message"], "process p already exists");
    assert!(h.take_commands().is_empty());
    // Closed processes stay 30 s, then the id may be reused.
    h.finish(key, 0);
    h.take(conn);
    h.advance(Duration::from_secs(29));
    let r = h.call(conn, 2, "process/start", params.clone());
    assert_eq!(error_code(&r[0]), -32600);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take_commands(), vec![Command::Release { key }]);
    h.call(conn, 3, "process/start", params);
    h.take_spawn();
}

#[test]
fn closed_process_is_readable_for_30s_then_unknown() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.output(key, Stream::Stdout, b"x");
    h.finish(key, 0);
    h.take(conn);
    h.advance(Duration::from_millis(29_999));
    let r = h.call(conn, 1, "process/read", json!({"processId": "p"}));
    assert_eq!(r[0]["result"]["closed"], true);
    h.advance(Duration::from_millis(1));
    let r = h.call(conn, 2, "process/read", json!({"processId": "p"}));
    assert_eq!(error_code(&r[0]), -32600);
    assert_eq!(r[0]["error"]["message"], "unknown process id p");
}

#[test]
fn spawn_failure_is_internal_error_and_leaves_no_entry() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let params =
        json!({"processId": "p", "argv": ["nope"], "cwd": "file:///", "env": {}, "tty": false});
    h.call(conn, 1, "process/start", params.clone());
    let key = h.take_spawn();
    h.event(
        key,
        ProcessEvent::SpawnFailed {
            kind: SpawnErrorKind::NotFound,
            error: "No such file or directory (os error 2)".into(),
        },
    );
    let r = h.response(conn, 1);
    assert_eq!(error_code(&r), -32603);
    assert_eq!(
        r["error"]["message"],
        "No such file or directory (os error 2)"
    );
    assert_eq!(r["error"]["data"], json!({"kind": "notFound"}));
    assert_eq!(h.server.process_count(), 0);
    let r = h.call(conn, 2, "process/list", json!({}));
    assert_eq!(r[0]["result"]["processes"], json!([]));
    // The id is free again.
    h.call(conn, 3, "process/start", params);
    h.take_spawn();
}

#[test]
fn read_unknown_and_starting_processes_are_invalid() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let r = h.call(conn, 1, "process/read", json!({"processId": "nope"}));
    assert_eq!(r[0]["error"]["message"], "unknown process id nope");
    let params =
        json!({"processId": "s", "argv": ["x"], "cwd": "file:///", "env": {}, "tty": false});
    h.call(conn, 2, "process/start", params);
    let r = h.call(conn, 3, "process/read", json!({"processId": "s"}));
    assert_eq!(error_code(&r[0]), -32600);
}

// ----- read -----------------------------------------------------------------------------------

#[test]
fn read_returns_chunks_after_seq_with_state() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.output(key, Stream::Stdout, b"a");
    h.output(key, Stream::Stderr, b"b");
    h.output(key, Stream::Stdout, b"c");
    let r = h.call(
        conn,
        1,
        "process/read",
        json!({"processId": "p", "afterSeq": 1}),
    );
    assert_eq!(
        r.last().expect("response")["result"],
        json!({
            "chunks": [
                {"seq": 2, "stream": "stderr", "chunk": b64(b"b")},
                {"seq": 3, "stream": "stdout", "chunk": b64(b"c")},
            ],
            "nextSeq": 4, "exited": false, "exitCode": null, "closed": false,
            "failure": null, "sandboxDenied": false,
        })
    );
    h.finish(key, 7);
    let r = h.response_after(conn, 2, json!({"processId": "p", "afterSeq": 3}));
    assert_eq!(r["chunks"], json!([]));
    assert_eq!(
        (
            r["nextSeq"].clone(),
            r["exited"].clone(),
            r["exitCode"].clone(),
            r["closed"].clone()
        ),
        (json!(6), json!(true), json!(7), json!(true))
    );
}

impl Harness {
    fn response_after(&mut self, conn: ConnId, id: i64, params: Value) -> Value {
        self.take(conn);
        self.send(
            conn,
            json!({"id": id, "method": "process/read", "params": params}),
        );
        self.response(conn, id)["result"].clone()
    }
}

#[test]
fn read_max_bytes_always_includes_the_first_chunk() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    for part in [&b"12345"[..], b"678", b"9"] {
        h.output(key, Stream::Stdout, part);
    }
    let r = h.response_after(conn, 1, json!({"processId": "p", "maxBytes": 2}));
    assert_eq!(r["chunks"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["nextSeq"], 2);
    let r = h.response_after(
        conn,
        2,
        json!({"processId": "p", "afterSeq": 1, "maxBytes": 4}),
    );
    assert_eq!(r["chunks"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["nextSeq"], 4);
    let r = h.response_after(conn, 3, json!({"processId": "p", "maxBytes": 8}));
    assert_eq!(r["chunks"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["nextSeq"], 3);
}

#[test]
fn long_poll_returns_on_new_output() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.call(
        conn,
        1,
        "process/read",
        json!({"processId": "p", "waitMs": 5000}),
    );
    assert_eq!(h.server.pending_read_count(), 1);
    // Other requests on the connection do not wait behind it.
    let r = h.call(conn, 2, "process/list", json!({}));
    assert_eq!(r.len(), 1);
    h.advance(Duration::from_millis(100));
    assert!(h.take(conn).is_empty());
    h.output(key, Stream::Stdout, b"hi");
    let r = h.response(conn, 1);
    assert_eq!(r["result"]["chunks"][0]["chunk"], b64(b"hi"));
    assert_eq!(h.server.pending_read_count(), 0);
    assert_eq!(
        h.server.poll_timeout(),
        None,
        "the deadline timer was removed"
    );
}

#[test]
fn long_poll_times_out_with_no_chunks() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.start(conn, "p", json!({}));
    h.call(
        conn,
        1,
        "process/read",
        json!({"processId": "p", "waitMs": 250}),
    );
    h.advance(Duration::from_millis(249));
    assert!(h.take(conn).is_empty());
    h.advance(Duration::from_millis(1));
    let r = h.response(conn, 1);
    assert_eq!(r["result"]["chunks"], json!([]));
    assert_eq!(r["result"]["exited"], false);
}

#[test]
fn long_poll_returns_on_unseen_exit_but_not_seen_one() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.call(
        conn,
        1,
        "process/read",
        json!({"processId": "p", "waitMs": 1000}),
    );
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(1),
        },
    );
    let r = h.response(conn, 1);
    assert_eq!(
        (
            r["result"]["exited"].clone(),
            r["result"]["exitCode"].clone()
        ),
        (json!(true), json!(1))
    );
    // Exit seen (seq 1), streams still open: wait again until the close.
    h.call(
        conn,
        2,
        "process/read",
        json!({"processId": "p", "afterSeq": 1, "waitMs": 1000}),
    );
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stdout,
        },
    );
    assert!(h.take(conn).iter().all(|f| f["id"] != 2));
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stderr,
        },
    );
    assert_eq!(h.response(conn, 2)["result"]["closed"], true);
}

#[test]
fn long_poll_of_a_disconnected_conn_is_dropped() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.call(
        conn,
        1,
        "process/read",
        json!({"processId": "p", "waitMs": 1000}),
    );
    h.disconnect(conn);
    assert_eq!(h.server.pending_read_count(), 0);
    h.output(key, Stream::Stdout, b"x");
    assert!(h.frames.is_empty());
}

#[test]
fn eviction_is_reported_to_readers() {
    let mut h = Harness::with_config(ServerConfig {
        retained_chunks: 2,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    for b in [b"1", b"2", b"3", b"4"] {
        h.output(key, Stream::Stdout, b);
    }
    let r = h.response_after(conn, 1, json!({"processId": "p"}));
    assert_eq!(r["firstRetainedSeq"], 3);
    assert_eq!(r["lostChunks"], 2);
    assert_eq!(r["chunks"][0]["seq"], 3);
    let r = h.response_after(conn, 2, json!({"processId": "p", "afterSeq": 2}));
    assert!(r.get("lostChunks").is_none() && r.get("firstRetainedSeq").is_none());
}

// ----- write ----------------------------------------------------------------------------------

#[test]
fn write_requires_a_write_id() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.start(conn, "p", json!({"pipeStdin": true}));
    for params in [
        json!({"processId": "p", "chunk": b64(b"x")}),
        json!({"processId": "p", "chunk": b64(b"x"), "writeId": ""}),
    ] {
        let r = h.call(conn, 1, "process/write", params);
        assert_eq!(error_code(&r[0]), -32602);
    }
    assert!(h.take_commands().is_empty());
}

#[test]
fn write_dedupe_reaches_the_child_once() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({"pipeStdin": true}));
    let params = json!({"processId": "p", "chunk": b64(b"hello\n"), "writeId": "w1"});
    for id in 1..=3 {
        let r = h.call(conn, id, "process/write", params.clone());
        assert_eq!(r[0]["result"], json!({"status": "accepted"}));
    }
    assert_eq!(
        h.take_commands(),
        vec![Command::WriteStdin {
            key,
            bytes: b"hello\n".to_vec()
        }]
    );
}

#[test]
fn write_dedupe_forgets_past_the_window() {
    let mut h = Harness::with_config(ServerConfig {
        write_id_window: 2,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    h.start(conn, "p", json!({"pipeStdin": true}));
    for w in ["a", "b", "c", "a"] {
        h.call(
            conn,
            1,
            "process/write",
            json!({"processId": "p", "chunk": b64(w.as_bytes()), "writeId": w}),
        );
    }
    assert_eq!(
        h.take_commands().len(),
        4,
        "a was forgotten, so its repeat writes again"
    );
}

#[test]
fn write_statuses() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.start(conn, "nostdin", json!({}));
    let status = |h: &mut Harness, pid: &str, w: &str| {
        let r = h.call(
            conn,
            1,
            "process/write",
            json!({"processId": pid, "chunk": b64(b"x"), "writeId": w}),
        );
        r[0]["result"]["status"]
            .as_str()
            .expect("status")
            .to_owned()
    };
    assert_eq!(status(&mut h, "ghost", "w"), "unknownProcess");
    assert_eq!(status(&mut h, "nostdin", "w"), "stdinClosed");
    let params = json!({"processId": "s", "argv": ["x"], "cwd": "file:///", "env": {}, "tty": false, "pipeStdin": true});
    h.call(conn, 2, "process/start", params);
    h.take_commands();
    // A write while the spawn is pending is accepted and queued for the runtime, which holds
    // it until the child runs; `starting` is never answered.
    assert_eq!(status(&mut h, "s", "w"), "accepted");
    assert!(
        matches!(h.take_commands().as_slice(), [Command::WriteStdin { bytes, .. }] if bytes == b"x"),
        "the write is queued at once"
    );
    // Rejected writes are not remembered: the same id is accepted once the state allows it.
    let key = h.start(conn, "t", json!({"tty": true}));
    assert_eq!(status(&mut h, "t", "w"), "accepted");
    h.event(key, ProcessEvent::StdinClosed);
    assert_eq!(
        status(&mut h, "t", "w"),
        "accepted",
        "a repeat of an accepted id stays accepted"
    );
    assert_eq!(status(&mut h, "t", "w2"), "stdinClosed");
}

#[test]
fn close_stdin_sends_eof_once() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({"pipeStdin": true}));
    h.call(conn, 1, "process/closeStdin", json!({"processId": "p"}));
    h.call(conn, 2, "process/closeStdin", json!({"processId": "p"}));
    assert_eq!(h.take_commands(), vec![Command::CloseStdin { key }]);
    let r = h.call(
        conn,
        3,
        "process/write",
        json!({"processId": "p", "chunk": b64(b"x"), "writeId": "w"}),
    );
    assert_eq!(r[0]["result"]["status"], "stdinClosed");
}

// ----- terminate, signal, resize --------------------------------------------------------------

#[test]
fn terminate_kills_the_tree_of_known_processes_only() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    let r = h.call(conn, 1, "process/terminate", json!({"processId": "p"}));
    assert_eq!(r[0]["result"], json!({"running": true}));
    assert_eq!(h.take_commands(), vec![Command::Kill { key }]);
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Signal(9),
        },
    );
    // The leader exited but descendants still hold the output open: not running, yet the
    // group is still killed.
    let r = h.call(conn, 2, "process/terminate", json!({"processId": "p"}));
    assert_eq!(
        r.last().expect("response")["result"],
        json!({"running": false})
    );
    assert_eq!(h.take_commands(), vec![Command::Kill { key }]);
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stdout,
        },
    );
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stderr,
        },
    );
    // Closed: the tree is still killed (background jobs may outlive the process); the runtime
    // decides what is left to kill.
    let r = h.call(conn, 3, "process/terminate", json!({"processId": "p"}));
    assert_eq!(
        r.last().expect("response")["result"],
        json!({"running": false})
    );
    assert_eq!(h.take_commands(), vec![Command::Kill { key }]);
    let r = h.call(conn, 4, "process/terminate", json!({"processId": "ghost"}));
    assert_eq!(r[0]["result"], json!({"running": false}));
    assert!(h.take_commands().is_empty());
}

#[test]
fn session_expiry_kills_descendants_of_an_exited_leader() {
    let mut h = Harness::with_config(ServerConfig {
        session_ttl: Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(0),
        },
    );
    h.disconnect(conn);
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take_commands(),
        vec![Command::Kill { key }, Command::Release { key }]
    );
}

#[test]
fn signal_accepts_interrupt_and_posix_names() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    for (name, signal) in [
        ("interrupt", crate::protocol::Signal::Int),
        ("SIGTERM", crate::protocol::Signal::Term),
    ] {
        let r = h.call(
            conn,
            1,
            "process/signal",
            json!({"processId": "p", "signal": name}),
        );
        assert_eq!(r[0]["result"], json!({}));
        assert_eq!(h.take_commands(), vec![Command::Signal { key, signal }]);
    }
    let r = h.call(
        conn,
        2,
        "process/signal",
        json!({"processId": "p", "signal": "SIGNOPE"}),
    );
    assert_eq!(error_code(&r[0]), -32602);
    let r = h.call(
        conn,
        3,
        "process/signal",
        json!({"processId": "ghost", "signal": "interrupt"}),
    );
    assert_eq!(
        r[0]["result"],
        json!({}),
        "unknown processes succeed, as in the reference"
    );
}

#[test]
fn resize_requires_a_pty() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.start(conn, "pipe", json!({}));
    let key = h.start(conn, "tty", json!({"tty": true}));
    let r = h.call(
        conn,
        1,
        "process/resize",
        json!({"processId": "pipe", "rows": 10, "cols": 20}),
    );
    assert_eq!(error_code(&r[0]), -32600);
    let r = h.call(
        conn,
        2,
        "process/resize",
        json!({"processId": "tty", "rows": 0, "cols": 20}),
    );
    assert_eq!(error_code(&r[0]), -32602);
    h.call(
        conn,
        3,
        "process/resize",
        json!({"processId": "tty", "rows": 10, "cols": 20}),
    );
    assert_eq!(
        h.take_commands(),
        vec![Command::Resize {
            key,
            rows: 10,
            cols: 20
        }]
    );
}

#[test]
fn pty_processes_close_after_one_stream() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({"tty": true}));
    h.output(key, Stream::Pty, b"tty\r\n");
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(0),
        },
    );
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Pty,
        },
    );
    let f = h.take(conn);
    assert_eq!(f[0]["params"]["stream"], "pty");
    assert_eq!(f.last().expect("closed")["method"], "process/closed");
}

// ----- sessions -------------------------------------------------------------------------------

#[test]
fn resume_after_disconnect_keeps_processes_and_retained_output() {
    let mut h = Harness::new();
    let (a, sid) = h.session();
    let key = h.start(a, "p", json!({}));
    h.output(key, Stream::Stdout, b"before");
    assert_eq!(h.take(a).len(), 1);
    h.disconnect(a);
    assert!(h.take_commands().is_empty(), "nothing is killed on detach");
    h.output(key, Stream::Stdout, b"while detached");
    assert!(
        h.frames.is_empty(),
        "notifications are dropped while detached"
    );
    h.advance(Duration::from_secs(29));
    let b = h.connect();
    let r = h.call(
        b,
        1,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert_eq!(r[0]["result"]["sessionId"], sid);
    h.send(b, json!({"method": "initialized"}));
    let r = h.response_after(b, 2, json!({"processId": "p", "afterSeq": 1}));
    assert_eq!(r["chunks"][0]["chunk"], b64(b"while detached"));
    // Notifications now go to the new connection.
    h.output(key, Stream::Stdout, b"after");
    assert_eq!(h.take(b)[0]["params"]["seq"], 3);
    // The expiry timer was cancelled.
    h.advance(Duration::from_secs(60));
    assert!(h.take_commands().is_empty());
}

#[test]
fn detached_session_expires_at_its_ttl_and_kills_its_processes() {
    let mut h = Harness::with_config(ServerConfig {
        session_ttl: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let (a, sid) = h.session();
    let key = h.start(a, "p", json!({}));
    h.disconnect(a);
    h.advance(Duration::from_millis(4_999));
    assert!(h.take_commands().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(
        h.take_commands(),
        vec![Command::Kill { key }, Command::Release { key }]
    );
    assert_eq!(h.server.session_count(), 0);
    let b = h.connect();
    let r = h.call(
        b,
        1,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert_eq!(error_code(&r[0]), -32600);
    assert_eq!(
        r[0]["error"]["message"],
        format!("unknown session id {sid}")
    );
    // Late events for the killed process are ignored.
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Signal(9),
        },
    );
    assert!(h.frames.is_empty());
}

#[test]
fn expiry_is_decided_at_resume_time() {
    let mut h = Harness::with_config(ServerConfig {
        session_ttl: Duration::from_secs(5),
        ..ServerConfig::default()
    });
    let (a, sid) = h.session();
    let key = h.start(a, "p", json!({}));
    h.disconnect(a);
    // The clock moves past the deadline but the timer has not been serviced yet.
    h.now += Duration::from_secs(5);
    let b = h.connect();
    let r = h.call(
        b,
        1,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert_eq!(error_code(&r[0]), -32600);
    assert_eq!(
        h.take_commands(),
        vec![Command::Kill { key }, Command::Release { key }]
    );
}

#[test]
fn resume_while_attached_elsewhere_is_session_attached() {
    let mut h = Harness::new();
    let (_a, sid) = h.session();
    let b = h.connect();
    let r = h.call(
        b,
        1,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert_eq!(error_code(&r[0]), -32010);
    // b may retry once a is gone.
    h.disconnect(_a);
    let r = h.call(
        b,
        2,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert_eq!(r[0]["result"]["sessionId"], sid);
}

#[test]
fn resume_by_another_principal_is_an_unknown_session() {
    let mut h = Harness::new();
    let alice = Some(Principal::new("alice"));
    let a = h.connect_raw_as(alice.clone());
    let r = h.call(a, 0, "initialize", json!({"clientName": "t"}));
    let sid = r[0]["result"]["sessionId"]
        .as_str()
        .expect("sid")
        .to_owned();
    h.disconnect(a);
    let resume = json!({"clientName": "t", "resumeSessionId": sid});
    for thief in [Some(Principal::new("mallory")), None] {
        let b = h.connect_raw_as(thief);
        let r = h.call(b, 1, "initialize", resume.clone());
        assert_eq!(error_code(&r[0]), -32600);
        assert_eq!(
            r[0]["error"]["message"],
            format!("unknown session id {sid}"),
            "the same answer as for an id that does not exist"
        );
    }
    let c = h.connect_raw_as(alice);
    let r = h.call(c, 2, "initialize", resume);
    assert_eq!(r[0]["result"]["sessionId"], sid, "the owner resumes it");
}

#[test]
fn resume_of_unknown_or_malformed_session_is_invalid() {
    let mut h = Harness::new();
    let conn = h.connect();
    for sid in ["3f1c7c1e-3b0a-4c8e-9a55-0a1b2c3d4e5f", "not-a-uuid"] {
        let r = h.call(
            conn,
            1,
            "initialize",
            json!({"clientName": "t", "resumeSessionId": sid}),
        );
        assert_eq!(
            r[0]["error"]["message"],
            format!("unknown session id {sid}")
        );
    }
}

#[test]
fn other_sessions_are_not_disturbed_by_bad_input() {
    let mut h = Harness::new();
    let (a, _) = h.session();
    let (b, _) = h.session();
    let key = h.start(b, "p", json!({}));
    h.send_raw(a, "{garbage");
    h.send(a, json!({"method": "bogus"}));
    h.output(key, Stream::Stdout, b"fine");
    let f = h.take(b);
    assert_eq!(f[0]["params"]["chunk"], b64(b"fine"));
    assert_eq!(h.closed, vec![a]);
}

#[test]
fn processes_are_scoped_to_their_session() {
    let mut h = Harness::new();
    let (a, _) = h.session();
    let (b, _) = h.session();
    h.start(a, "p", json!({}));
    let r = h.call(b, 1, "process/read", json!({"processId": "p"}));
    assert_eq!(error_code(&r[0]), -32600);
    // The same id is free in another session.
    h.start(b, "p", json!({}));
}

// ----- sandbox denial -------------------------------------------------------------------------

#[test]
fn unsandboxed_processes_are_never_denied() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.output(key, Stream::Stderr, b"Permission denied");
    h.finish(key, 1);
    let f = h.take(conn);
    assert_eq!(f[1]["params"]["sandboxDenied"], false);
}

fn sandboxed() -> Harness {
    Harness::with_config(ServerConfig {
        sandbox: SandboxType::LinuxLandlock,
        ..ServerConfig::default()
    })
}

fn start_sandboxed(h: &mut Harness, conn: ConnId) -> ProcessKey {
    let params =
        json!({"processId": "p", "argv": ["x"], "cwd": "file:///", "env": {}, "tty": false});
    h.call(conn, 1, "process/start", params);
    let key = match h.take_commands().as_slice() {
        [Command::Spawn { key, spec }] => {
            assert_eq!(spec.sandbox, SandboxType::LinuxLandlock);
            *key
        }
        other => panic!("{other:?}"),
    };
    h.event(key, ProcessEvent::Spawned { pid: 1 });
    assert_eq!(
        h.response(conn, 1)["result"]["sandboxType"],
        "linuxLandlock"
    );
    key
}

#[test]
fn sandboxed_exit_waits_for_the_grace_and_sees_trailing_output() {
    let mut h = sandboxed();
    let (conn, _) = h.session();
    let key = start_sandboxed(&mut h, conn);
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(1),
        },
    );
    assert!(h.take(conn).is_empty(), "exit is held for the grace period");
    h.advance(Duration::from_millis(10));
    h.output(key, Stream::Stderr, b"touch: /x: Read-only file system");
    h.take(conn);
    h.advance(Duration::from_millis(10));
    let f = h.take(conn);
    assert_eq!(f[0]["method"], "process/exited");
    assert_eq!(f[0]["params"]["sandboxDenied"], true);
    let r = h.response_after(conn, 2, json!({"processId": "p"}));
    assert_eq!(r["sandboxDenied"], true);
}

#[test]
fn sandboxed_exit_publishes_early_when_all_streams_end() {
    let mut h = sandboxed();
    let (conn, _) = h.session();
    let key = start_sandboxed(&mut h, conn);
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(127),
        },
    );
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stdout,
        },
    );
    h.event(
        key,
        ProcessEvent::Eof {
            stream: Stream::Stderr,
        },
    );
    let f = h.take(conn);
    assert_eq!(
        f[0]["params"],
        json!({"processId": "p", "seq": 1, "exitCode": 127, "sandboxDenied": false})
    );
    assert_eq!(f[1]["method"], "process/closed");
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(30)),
        "grace timer cleared"
    );
}

#[test]
fn sandboxed_sigsys_is_denied() {
    let mut h = sandboxed();
    let (conn, _) = h.session();
    let key = start_sandboxed(&mut h, conn);
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Signal(31),
        },
    );
    h.advance(Duration::from_millis(20));
    assert_eq!(h.take(conn)[0]["params"]["sandboxDenied"], true);
}

#[test]
fn sandboxed_success_is_published_without_grace() {
    let mut h = sandboxed();
    let (conn, _) = h.session();
    let key = start_sandboxed(&mut h, conn);
    h.output(key, Stream::Stdout, b"permission denied");
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(0),
        },
    );
    assert_eq!(h.take(conn)[1]["params"]["sandboxDenied"], false);
}

// ----- timers ---------------------------------------------------------------------------------

#[test]
fn spurious_timeouts_do_nothing() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    for _ in 0..3 {
        h.advance(Duration::ZERO);
    }
    h.output(key, Stream::Stdout, b"x");
    assert_eq!(h.take(conn).len(), 1);
    assert!(h.take_commands().is_empty());
}

#[test]
fn unknown_conn_is_a_caller_error() {
    let mut h = Harness::new();
    let conn = h.connect();
    h.disconnect(conn);
    let now = h.now;
    assert_eq!(
        h.server.handle_message(now, conn, b"{}"),
        Err(ServerError::UnknownConn(conn))
    );
    assert_eq!(
        h.server.handle_disconnect(now, conn),
        Err(ServerError::UnknownConn(conn))
    );
}
