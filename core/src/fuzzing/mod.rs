//! Fuzz target bodies and the reference model of the server (feature `fuzzing`).
//!
//! The `fuzz/` crate's targets are one-line shims over [`run`]; this crate's tests run the same
//! bodies over the committed corpus (`fuzz/corpus/<target>/`) and the model test under
//! proptest, so CI exercises them on stable. Not part of the stable API.
//!
//! Every body panics on a finding (a broken invariant); anything else is a pass.

// Harness code: a panic here is the finding, so unwrap/expect/panic are the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_child;
mod client_expect;
mod client_hostile;
mod client_ops;
mod client_sim;
mod model;
mod ops;

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::Value;

use crate::sim::Sim;
use crate::PathUri;

pub use client_ops::{Call, ChildAct, ClientConfigChoice, ClientOp, ClientOps, Hostile};
pub use client_sim::ClientStats;
pub use model::ModelStats;
pub use ops::{Bytes, ConfigChoice, Ev, Op, Req, Resume, ServerOps};

/// The fuzz targets, by the name of their `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[&str] = &["frame", "server_ops", "client_ops", "path_uri", "denial"];

/// Runs target `name` on `data`; returns `false` when no target has that name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "frame" => frame(data),
        "server_ops" => server_ops(data),
        "client_ops" => client_ops(data),
        "path_uri" => path_uri(data),
        "denial" => denial(data),
        _ => return false,
    }
    true
}

/// `frame`: `data` as one inbound frame, on a fresh connection and on an initialized one with
/// a running process `p`. Must never panic; every frame the server sends must be valid JSON.
pub fn frame(data: &[u8]) {
    // The shared harness: raw connections, spawns answered at once.
    let mut sim = Sim::new();
    sim.record_commands = false;
    let fresh = sim.connect_raw();
    sim.send_raw(fresh, data);
    check_frames(&mut sim);

    let ready = sim.connect_raw();
    sim.send_raw(
        ready,
        br#"{"id":1,"method":"initialize","params":{"clientName":"fuzz"}}"#,
    );
    sim.send_raw(ready, br#"{"method":"initialized"}"#);
    let start = br#"{"id":2,"method":"process/start","params":{"processId":"p","argv":["sh"],"cwd":"file:///tmp","env":{},"tty":true}}"#;
    sim.send_raw(ready, start);
    check_frames(&mut sim);
    sim.send_raw(ready, data);
    check_frames(&mut sim);
    // Let any long poll or timer the frame set up run out.
    sim.advance(Duration::from_secs(3600));
    check_frames(&mut sim);
}

/// Checks that every frame the server sent is a JSON object (a response or a notification),
/// and forgets them.
fn check_frames(sim: &mut Sim) {
    for (_, text) in std::mem::take(&mut sim.frames) {
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent invalid JSON ({e}): {text}"));
        let obj = v.as_object().expect("every frame is a JSON object");
        assert!(
            obj.contains_key("method") || obj.contains_key("id"),
            "frame is neither a response nor a notification: {text}"
        );
    }
}

/// `server_ops`: an operation sequence (see [`ServerOps`]) against [`Server`](crate::Server), checked after
/// every step against the reference model.
pub fn server_ops(data: &[u8]) {
    model::check(&ServerOps::from_bytes(data));
}

/// Runs an already-built operation sequence against the model (for proptest and unit tests)
/// and reports what it exercised.
pub fn check_server_ops(ops: &ServerOps) -> ModelStats {
    model::check(ops)
}

/// A prologue that reaches the interesting states quickly: a ready connection with three
/// spawned processes (PTY, piped stdin, plain). Random generators prepend it; the fuzzer finds
/// its own way there.
pub fn prologue() -> Vec<Op> {
    let send = |req| Op::Send {
        conn: 0,
        req,
        string_id: false,
    };
    let start = |id, tty, pipe_stdin| {
        send(Req::Start {
            id,
            empty_argv: false,
            cwd: 0,
            tty,
            pipe_stdin,
        })
    };
    let spawned = |proc| Op::Event {
        proc,
        event: Ev::Spawned(100 + u16::from(proc)),
    };
    vec![
        Op::Connect,
        send(Req::Initialize(Resume::New)),
        send(Req::Initialized),
        start(0, true, false),
        spawned(0),
        start(1, false, true),
        spawned(1),
        start(2, false, false),
        spawned(2),
    ]
}

/// `client_ops`: an operation sequence (see [`ClientOps`]) driving [`crate::Client`] against
/// a real [`Server`](crate::Server) over a simulated network and clock; what the client delivers is checked
/// after every step (see `fuzz/README.md` for the invariants).
pub fn client_ops(data: &[u8]) {
    client_sim::check(&ClientOps::from_bytes(data));
}

/// Runs an already-built client operation sequence (for proptest, unit tests and the seed
/// generator) and reports what it exercised.
pub fn check_client_ops(ops: &ClientOps) -> ClientStats {
    client_sim::check(ops)
}

/// Runs `client_ops` on `data` with a log of every step, frame and event, for debugging a
/// finding: returns the finding (or the stats) and the log.
pub fn trace_client_ops(data: &[u8]) -> (Result<ClientStats, String>, Vec<String>) {
    client_sim::trace(&ClientOps::from_bytes(data))
}

/// [`trace_client_ops`] for an already-built operation sequence.
pub fn trace_ops(ops: &ClientOps) -> (Result<ClientStats, String>, Vec<String>) {
    client_sim::trace(ops)
}

/// `path_uri`: parsing never panics, and a local path survives
/// parse → to_host_path → from_host_path → parse.
pub fn path_uri(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = PathUri::parse(text) else {
        return;
    };
    let again: PathUri =
        serde_json::from_value(serde_json::to_value(&uri).expect("serializes")).expect("decodes");
    assert_eq!(again, uri, "serde round trip");
    let Ok(path) = uri.to_host_path() else {
        return;
    };
    assert!(path.is_absolute(), "{text:?} decoded to relative {path:?}");
    let built = PathUri::from_host_path(&path).expect("an absolute path encodes");
    let reparsed = PathUri::parse(built.as_str())
        .unwrap_or_else(|e| panic!("{built} (from {text:?}) does not re-parse: {e}"));
    let back = reparsed.to_host_path().expect("local");
    assert_eq!(back, path, "round trip of {text:?} via {built}");
}

/// `denial`: the classifier never panics, never calls exit 0 denied, and does not depend on
/// how the output is split into chunks.
pub fn denial(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(code) = i32::arbitrary(&mut u) else {
        return;
    };
    let Ok(chunks) = Vec::<Vec<u8>>::arbitrary(&mut u) else {
        return;
    };
    let split = || chunks.iter().map(Vec::as_slice);
    let denied = crate::denial::is_sandbox_denied(code, split());
    assert!(
        !crate::denial::is_sandbox_denied(0, split()),
        "exit 0 is never denied"
    );
    let whole = chunks.concat();
    assert_eq!(
        crate::denial::is_sandbox_denied(code, [whole.as_slice()]),
        denied,
        "chunking changed the verdict for code {code}: {chunks:?}"
    );
}
