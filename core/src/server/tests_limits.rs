//! Simulated-clock tests of congestion, the close grace and the resource limits: no client can
//! hurt another.

use std::time::Duration;

use serde_json::{json, Value};

use super::tests::{b64, error_code, Harness};
use super::*;
use crate::ids::ConnId;
use crate::protocol::Stream;

fn small_marks() -> ServerConfig {
    ServerConfig {
        congestion_high_bytes: 1000,
        congestion_low_bytes: 100,
        ..ServerConfig::default()
    }
}

fn pause_commands(cmds: &[Command]) -> Vec<Command> {
    cmds.iter()
        .filter(|c| {
            matches!(
                c,
                Command::PauseOutput { .. }
                    | Command::ResumeOutput { .. }
                    | Command::PauseReading { .. }
                    | Command::ResumeReading { .. }
            )
        })
        .cloned()
        .collect()
}

/// Two sessions; the first one's peer stops reading. Returns (hog, hog key, bystander,
/// bystander key).
fn hog_and_bystander(h: &mut Harness) -> (ConnId, ProcessKey, ConnId, ProcessKey) {
    let (hog, _) = h.session();
    let hog_key = h.start(hog, "hog", json!({}));
    let (by, _) = h.session();
    let by_key = h.start(by, "echo", json!({}));
    h.take_commands();
    h.stall_raw(hog);
    (hog, hog_key, by, by_key)
}

#[test]
fn a_congested_connection_pauses_only_its_own_processes() {
    let mut h = Harness::with_config(small_marks());
    let (hog, hog_key, by, by_key) = hog_and_bystander(&mut h);

    h.output(hog_key, Stream::Stdout, &[b'x'; 600]);
    assert!(
        pause_commands(&h.take_commands()).is_empty(),
        "under the mark"
    );
    h.output(hog_key, Stream::Stdout, &[b'x'; 600]);
    assert_eq!(
        pause_commands(&h.take_commands()),
        [
            Command::PauseReading { conn: hog },
            Command::PauseOutput { key: hog_key }
        ]
    );
    assert!(h.reading_paused.contains(&hog));

    // The bystander's output still flows, and nothing of it is paused.
    h.take(by);
    h.output(by_key, Stream::Stdout, b"hi");
    let frames = h.take(by);
    assert_eq!(frames[0]["params"]["chunk"], b64(b"hi"));
    assert!(pause_commands(&h.take_commands()).is_empty());

    // The hog's peer reads everything: all resumes.
    h.flush_raw(hog);
    assert_eq!(
        pause_commands(&h.take_commands()),
        [
            Command::ResumeReading { conn: hog },
            Command::ResumeOutput { key: hog_key }
        ]
    );
    assert!(h.reading_paused.is_empty());
}

#[test]
fn replies_count_toward_congestion() {
    let mut h = Harness::with_config(small_marks());
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.output(key, Stream::Stdout, &[b'y'; 300]);
    h.take_commands();
    h.stall_raw(conn);
    for id in 1..=3 {
        h.send(
            conn,
            json!({"id": id, "method": "process/read", "params": {"processId": "p"}}),
        );
    }
    assert_eq!(
        pause_commands(&h.take_commands()),
        [Command::PauseReading { conn }, Command::PauseOutput { key }]
    );
}

#[test]
fn a_connection_congested_past_the_timeout_is_dropped_and_its_session_detaches() {
    let mut h = Harness::with_config(small_marks());
    let (hog, hog_key, by, _) = hog_and_bystander(&mut h);
    let sid = h.call(by, 1, "process/list", json!({}));
    assert!(sid[0]["result"].is_object());
    h.output(hog_key, Stream::Stdout, &[b'x'; 1200]);
    h.take_commands();

    h.advance(Duration::from_secs(29));
    assert!(h.dropped.is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(h.dropped, [hog]);
    // Detached: its process no longer waits for a connection.
    assert_eq!(
        pause_commands(&h.take_commands()),
        [Command::ResumeOutput { key: hog_key }]
    );
    assert_eq!(h.server.session_count(), 2);
    // The bystander is untouched.
    let r = h.call(by, 2, "process/list", json!({}));
    assert_eq!(r[0]["result"]["processes"][0]["processId"], "echo");
}

#[test]
fn a_closed_connection_whose_peer_stays_silent_is_dropped_after_the_grace() {
    let mut h = Harness::new();
    let conn = h.connect();
    h.send_raw(conn, r#"{"id":6,"result":{}}"#);
    assert_eq!(h.closed, [conn]);
    h.advance(Duration::from_millis(4999));
    assert!(h.dropped.is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.dropped, [conn]);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn a_top_level_array_is_invalid_and_spawns_nothing() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let r = h.call(conn, 0, "process/list", json!({}));
    assert!(r[0]["result"].is_object());
    h.send_raw(
        conn,
        r#"[2,"process/start",{"processId":"p","argv":["true"],"cwd":"file:///"}]"#,
    );
    let r = h.take(conn);
    assert_eq!(r[0]["id"], -1);
    assert_eq!(error_code(&r[0]), -32600);
    assert!(h.take_commands().is_empty());
}

fn start_params(id: &str) -> Value {
    json!({"processId": id, "argv": ["true"], "cwd": "file:///tmp"})
}

#[test]
fn processes_per_session_are_limited() {
    let mut h = Harness::with_config(ServerConfig {
        max_processes_per_session: 2,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    h.start(conn, "a", json!({}));
    h.start(conn, "b", json!({}));
    let r = h.call(conn, 1, "process/start", start_params("c"));
    assert_eq!(
        r[0]["error"],
        json!({"code": -32600, "message":
            "too many processes in this session (limit maxProcessesPerSession = 2)"})
    );
    // Another session is not affected.
    let (other, _) = h.session();
    h.start(other, "c", json!({}));
}

#[test]
fn retention_reservations_are_limited_per_session_and_per_server() {
    let mut h = Harness::with_config(ServerConfig {
        retained_bytes: 100,
        max_retained_bytes_per_session: 250,
        max_retained_bytes: 300,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    h.start(conn, "a", json!({}));
    h.start(conn, "b", json!({}));
    let r = h.call(conn, 1, "process/start", start_params("c"));
    let msg = r[0]["error"]["message"].as_str().expect("error");
    assert!(msg.contains("maxRetainedBytesPerSession = 250"), "{msg}");
    let (other, _) = h.session();
    h.start(other, "c", json!({}));
    let r = h.call(other, 1, "process/start", start_params("d"));
    let msg = r[0]["error"]["message"].as_str().expect("error");
    assert!(msg.contains("maxRetainedBytes = 300"), "{msg}");
}

#[test]
fn sessions_per_server_are_limited_but_resume_is_not() {
    let mut h = Harness::with_config(ServerConfig {
        max_sessions: 1,
        ..ServerConfig::default()
    });
    let (first, sid) = h.session();
    let conn = h.connect();
    let r = h.call(conn, 1, "initialize", json!({"clientName": "t"}));
    assert_eq!(
        r[0]["error"]["message"],
        "too many sessions on this server (limit maxSessions = 1)"
    );
    h.disconnect(first);
    let r = h.call(
        conn,
        2,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert_eq!(r[0]["result"]["sessionId"], json!(sid));
}

#[test]
fn connections_past_the_limit_get_one_error_and_are_closed() {
    let mut h = Harness::with_config(ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    });
    let first = h.connect();
    let second = h.connect();
    h.drain();
    let r = h.take(second);
    assert_eq!(
        r[0]["error"],
        json!({"code": -32600, "message": "too many connections (limit maxConnections = 1)"})
    );
    assert_eq!(h.closed, [second]);
    assert!(h.take(first).is_empty());
    // Once the first goes, a new one is served.
    h.disconnect(second);
    h.disconnect(first);
    let third = h.connect();
    let r = h.call(third, 1, "initialize", json!({"clientName": "t"}));
    assert!(r[0]["result"]["sessionId"].is_string());
}

#[test]
fn requests_in_flight_per_connection_are_limited() {
    let mut h = Harness::with_config(ServerConfig {
        max_inflight_requests: 1,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    let poll = json!({"processId": "p", "afterSeq": 0, "waitMs": 10_000});
    assert!(h.call(conn, 1, "process/read", poll.clone()).is_empty());
    let r = h.call(conn, 2, "process/read", poll.clone());
    assert_eq!(
        r[0]["error"]["message"],
        "too many requests in flight on this connection (limit maxInflightRequests = 1)"
    );
    // Answered: the slot is free again.
    h.output(key, Stream::Stdout, b"x");
    assert_eq!(h.response(conn, 1)["result"]["chunks"][0]["seq"], 1);
    assert!(h
        .call(
            conn,
            3,
            "process/read",
            json!({"processId": "p", "afterSeq": 1, "waitMs": 10})
        )
        .is_empty());
}

#[test]
fn long_ids_are_refused() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let long = "x".repeat(257);
    let r = h.call(conn, 1, "process/start", start_params(&long));
    assert_eq!(
        r[0]["error"],
        json!({"code": -32602, "message":
            "processId of 257 bytes is too long (limit maxIdBytes = 256)"})
    );
    h.start(conn, "p", json!({"pipeStdin": true}));
    let r = h.call(
        conn,
        2,
        "process/write",
        json!({"processId": "p", "chunk": "", "writeId": long}),
    );
    assert_eq!(error_code(&r[0]), -32602);
    h.send(
        conn,
        json!({"id": long, "method": "process/list", "params": {}}),
    );
    let r = h.take(conn);
    assert_eq!(r[0]["id"], -1);
    assert_eq!(
        r[0]["error"]["message"],
        "request id of 257 bytes is too long (limit maxIdBytes = 256)"
    );
    // 256 bytes are fine.
    h.start(conn, &"y".repeat(256), json!({}));
}

#[test]
fn stdin_past_its_queue_bound_is_refused_and_retryable() {
    let mut h = Harness::with_config(ServerConfig {
        max_stdin_queued_bytes: 10,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({"pipeStdin": true}));
    let write = |id: &str| json!({"processId": "p", "chunk": b64(b"12345678"), "writeId": id});
    let r = h.call(conn, 1, "process/write", write("w1"));
    assert_eq!(r[0]["result"]["status"], "accepted");
    let r = h.call(conn, 2, "process/write", write("w2"));
    assert_eq!(
        r[0]["error"]["message"],
        "stdin of process p is full: 8 bytes queued (limit maxStdinQueuedBytes = 10); \
         retry the write later"
    );
    h.take_commands();
    h.event(key, ProcessEvent::StdinWritten { bytes: 8 });
    let r = h.call(conn, 3, "process/write", write("w2"));
    assert_eq!(r[0]["result"]["status"], "accepted");
    assert!(matches!(
        h.take_commands().as_slice(),
        [Command::WriteStdin { .. }]
    ));
}

#[test]
fn durations_that_overflow_the_clock_never_fire_and_never_panic() {
    let mut h = Harness::with_config(ServerConfig {
        session_ttl: Duration::MAX,
        closed_retention: Duration::MAX,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let key = h.start(conn, "p", json!({}));
    h.finish(key, 0);
    h.disconnect(conn);
    assert_eq!(h.server.poll_timeout(), None);
    assert_eq!(h.server.session_count(), 1);
    assert!(ServerConfig {
        session_ttl: Duration::MAX,
        ..ServerConfig::default()
    }
    .validate()
    .is_err());
}

#[test]
fn config_validation_names_the_field() {
    assert_eq!(ServerConfig::default().validate(), Ok(()));
    let bad = ServerConfig {
        congestion_low_bytes: 10,
        congestion_high_bytes: 5,
        ..ServerConfig::default()
    };
    assert!(matches!(bad.validate(), Err(ConfigError::Marks { .. })));
    let zero = ServerConfig {
        max_sessions: 0,
        ..ServerConfig::default()
    };
    assert_eq!(zero.validate(), Err(ConfigError::Zero("maxSessions")));
}
