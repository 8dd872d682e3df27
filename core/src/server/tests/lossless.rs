//! Lossless output (ext, PROTOCOL.md §5.11): negotiation, the ack window holding a process
//! instead of evicting, acks by `process/ack` and by `process/read {afterSeq}`, and its
//! interplay with congestion, exits, resumes and clients that do not ask.

use serde_json::{json, Value};

use super::{b64, Harness};
use crate::ids::{ConnId, ProcessKey};
use crate::protocol::Stream;
use crate::server::{Command, ExitStatus, ProcessEvent, ServerConfig};

/// 10 bytes retained, a window of 8 bytes or 5 chunks.
fn small() -> ServerConfig {
    ServerConfig {
        retained_bytes: 10,
        retained_chunks: 5,
        lossless_window_bytes: 8,
        ..ServerConfig::default()
    }
}

fn pauses(cmds: &[Command]) -> Vec<Command> {
    cmds.iter()
        .filter(|c| {
            matches!(
                c,
                Command::PauseOutput { .. } | Command::ResumeOutput { .. }
            )
        })
        .cloned()
        .collect()
}

impl Harness {
    /// A fresh session that asked for lossless output; returns (conn, session id, result).
    fn lossless_session(&mut self) -> (ConnId, String, Value) {
        let conn = self.connect();
        let r = self.call(
            conn,
            0,
            "initialize",
            json!({"clientName": "t", "losslessOutput": true}),
        );
        let sid = r[0]["result"]["sessionId"]
            .as_str()
            .expect("sid")
            .to_owned();
        self.send(conn, json!({"method": "initialized"}));
        (conn, sid, r[0]["result"].clone())
    }

    fn resume(&mut self, sid: &str, lossless: bool) -> ConnId {
        let conn = self.connect();
        let mut params = json!({"clientName": "t", "resumeSessionId": sid});
        if lossless {
            params["losslessOutput"] = json!(true);
        }
        let r = self.call(conn, 0, "initialize", params);
        assert_eq!(r[0]["result"]["sessionId"], sid, "{r:?}");
        self.send(conn, json!({"method": "initialized"}));
        conn
    }

    fn read_after(&mut self, conn: ConnId, id: i64, after: u64) -> Value {
        self.send(
            conn,
            json!({"id": id, "method": "process/read",
                   "params": {"processId": "p", "afterSeq": after}}),
        );
        self.response(conn, id)["result"].clone()
    }

    fn ack(&mut self, conn: ConnId, seq: u64) {
        self.send(
            conn,
            json!({"method": "process/ack", "params": {"processId": "p", "seq": seq}}),
        );
    }

    fn out(&mut self, key: ProcessKey, bytes: &[u8]) {
        self.output(key, Stream::Stdout, bytes);
    }
}

#[test]
fn clients_that_do_not_ask_keep_the_bounded_retention() {
    let mut h = Harness::with_config(small());
    let conn = h.connect();
    let r = h.call(conn, 0, "initialize", json!({"clientName": "codex"}));
    assert_eq!(r[0]["result"]["capabilities"]["losslessOutput"], true);
    assert!(r[0]["result"].get("losslessOutput").is_none(), "{r:?}");
    h.send(conn, json!({"method": "initialized"}));
    let key = h.start(conn, "p", json!({}));
    h.take_commands();
    for _ in 0..6 {
        h.out(key, b"abcd");
    }
    assert!(pauses(&h.take_commands()).is_empty(), "never paused");
    let r = h.read_after(conn, 1, 0);
    assert_eq!(r["lostChunks"], 4, "evicted as the reference does: {r}");
}

#[test]
fn a_detached_lossless_session_holds_its_process_instead_of_evicting() {
    let mut h = Harness::with_config(small());
    let (a, sid, result) = h.lossless_session();
    assert_eq!(
        result["losslessOutput"],
        json!({"windowBytes": 8, "windowChunks": 5})
    );
    let key = h.start(a, "p", json!({}));
    h.take_commands();
    h.disconnect(a);
    h.out(key, b"abcd");
    assert!(pauses(&h.take_commands()).is_empty(), "4 of 8 bytes");
    h.out(key, b"efgh");
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    // What the runtime had read before the pause still arrives: kept, past the bound.
    h.out(key, b"ijklmn");
    assert!(pauses(&h.take_commands()).is_empty(), "paused once");

    let b = h.resume(&sid, true);
    let r = h.read_after(b, 1, 0);
    assert!(r.get("lostChunks").is_none(), "nothing evicted: {r}");
    assert_eq!(r["chunks"].as_array().map(Vec::len), Some(3));
    assert!(
        pauses(&h.take_commands()).is_empty(),
        "afterSeq 0 acks nothing"
    );
    let r = h.read_after(b, 2, 2);
    assert_eq!(r["chunks"][0]["chunk"], b64(b"ijklmn"));
    assert_eq!(
        pauses(&h.take_commands()),
        [Command::ResumeOutput { key }],
        "6 of 8 bytes unacknowledged"
    );
}

#[test]
fn process_ack_releases_the_hold_and_never_moves_back() {
    let mut h = Harness::with_config(small());
    let (a, _, _) = h.lossless_session();
    let key = h.start(a, "p", json!({}));
    h.take_commands();
    for chunk in [b"ab", b"cd", b"ef", b"gh"] {
        h.out(key, chunk);
    }
    assert_eq!(h.take(a).len(), 4, "notifications as usual");
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    h.ack(a, 1);
    assert_eq!(pauses(&h.take_commands()), [Command::ResumeOutput { key }]);
    h.ack(a, 0);
    h.out(key, b"ij");
    assert_eq!(
        pauses(&h.take_commands()),
        [Command::PauseOutput { key }],
        "the old ack still counts, the stale one changed nothing"
    );
    // Beyond the last seq: counts as the last seq (and the next chunk is unacknowledged).
    h.ack(a, 1_000);
    assert_eq!(pauses(&h.take_commands()), [Command::ResumeOutput { key }]);
    h.out(key, b"klmnopqr");
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    // Acks of unknown processes are ignored and the connection stays.
    h.send(
        a,
        json!({"method": "process/ack", "params": {"processId": "nope", "seq": 3}}),
    );
    let r = h.read_after(a, 7, 5);
    assert_eq!(r["chunks"][0]["chunk"], b64(b"klmnopqr"));
}

#[test]
fn the_chunk_window_holds_too() {
    let mut h = Harness::with_config(small());
    let (a, _, _) = h.lossless_session();
    let key = h.start(a, "p", json!({}));
    h.take_commands();
    for _ in 0..4 {
        h.out(key, b"x");
    }
    assert!(pauses(&h.take_commands()).is_empty());
    h.out(key, b"x");
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
}

#[test]
fn ack_and_congestion_holds_combine() {
    let mut h = Harness::with_config(ServerConfig {
        congestion_high_bytes: 1000,
        congestion_low_bytes: 100,
        retained_bytes: 10_000,
        lossless_window_bytes: 1500,
        ..ServerConfig::default()
    });
    let (a, _, _) = h.lossless_session();
    let key = h.start(a, "p", json!({}));
    h.take_commands();
    h.stall_raw(a);
    // One notification of ~2 KB: over the congestion mark and the window at once.
    h.out(key, &[b'x'; 1500]);
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    h.ack(a, 1);
    assert!(pauses(&h.take_commands()).is_empty(), "still congested");
    h.flush_raw(a);
    h.drain();
    assert_eq!(pauses(&h.take_commands()), [Command::ResumeOutput { key }]);
    // The other way round: congestion ends first, the ack hold stays.
    h.stall_raw(a);
    h.out(key, &[b'x'; 1500]);
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    h.flush_raw(a);
    h.drain();
    assert!(pauses(&h.take_commands()).is_empty(), "2 unacknowledged");
    h.ack(a, 2);
    assert_eq!(pauses(&h.take_commands()), [Command::ResumeOutput { key }]);
}

#[test]
fn a_held_process_that_exits_closes_after_its_remaining_output() {
    let mut h = Harness::with_config(small());
    let (a, sid, _) = h.lossless_session();
    let key = h.start(a, "p", json!({}));
    h.take_commands();
    h.disconnect(a);
    h.out(key, b"abcdefgh");
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    h.event(
        key,
        ProcessEvent::Exited {
            status: ExitStatus::Code(0),
        },
    );
    let b = h.resume(&sid, true);
    let r = h.read_after(b, 1, 1);
    assert_eq!(
        (r["exited"].clone(), r["closed"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(pauses(&h.take_commands()), [Command::ResumeOutput { key }]);
    // Released: the runtime drains the pipes, then EOF closes the process.
    h.out(key, b"tail");
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
    let r = h.read_after(b, 2, 2);
    let seqs: Vec<u64> = r["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3], "the exit took seq 2, the tail 3: {r}");
    assert_eq!(
        (r["closed"].clone(), r["nextSeq"].clone()),
        (json!(true), json!(5))
    );
}

#[test]
fn a_resume_that_does_not_ask_switches_lossless_off() {
    let mut h = Harness::with_config(small());
    let (a, sid, _) = h.lossless_session();
    let key = h.start(a, "p", json!({}));
    h.take_commands();
    h.disconnect(a);
    for _ in 0..3 {
        h.out(key, b"abcd");
    }
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
    let b = h.resume(&sid, false);
    assert_eq!(pauses(&h.take_commands()), [Command::ResumeOutput { key }]);
    let r = h.read_after(b, 1, 0);
    assert_eq!(r["lostChunks"], 1, "evicted down to the bound at once: {r}");
    // And a later resume that asks again holds from what is retained now.
    h.disconnect(b);
    let _c = h.resume(&sid, true);
    assert_eq!(pauses(&h.take_commands()), [Command::PauseOutput { key }]);
}
