//! Simulated-clock tests of the client machine against the real [`crate::Server`] in memory:
//! frames move between the two only when a test says so, a fake process table answers the
//! server's commands, and time is a base `Instant` plus `advance`. No sleeps, no I/O.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::ids::ProcessKey;
use crate::protocol::PathUri;
use crate::server::{ExitStatus, ServerConfig};
use crate::sim::Sim;

/// A [`crate::sim::Sim`] whose client has `recovery` on or off, named "sim".
fn sim(recovery: bool) -> Sim {
    sim_with(recovery, ServerConfig::default())
}

fn sim_with(recovery: bool, server_config: ServerConfig) -> Sim {
    let config = ClientConfig {
        recovery,
        client_name: "sim".to_owned(),
        ..ClientConfig::default()
    };
    Sim::with(server_config, config)
}

/// As [`sim_with`], the client not asking for lossless output: the reference's eviction.
fn lossy_sim_with(recovery: bool, server_config: ServerConfig) -> Sim {
    let config = ClientConfig {
        recovery,
        client_name: "sim".to_owned(),
        lossless_output: false,
        ..ClientConfig::default()
    };
    Sim::with(server_config, config)
}

/// A connected sim with a ready session.
fn ready(recovery: bool) -> Sim {
    let mut sim = sim(recovery);
    sim.connect();
    sim.drive();
    assert!(sim.client.is_ready());
    sim.events.clear();
    sim
}

/// What these tests ask of the shared harness beyond driving it.
trait ClientTestExt {
    fn start(&mut self, pid: &str) -> ProcessKey;
    fn take_response(&mut self, id: &RequestId) -> Result<Value, CallError>;
    fn responses(&self, id: &RequestId) -> usize;
    fn trail(&self, pid: &str) -> Vec<String>;
    fn delivered_bytes(&self, pid: &str) -> Vec<u8>;
    fn count(&self, f: impl Fn(&ClientEvent) -> bool) -> usize;
}

impl ClientTestExt for Sim {
    /// Starts `pid` (pipeStdin) and returns its key once running.
    fn start(&mut self, pid: &str) -> ProcessKey {
        let before: Vec<ProcessKey> = self.procs.keys().copied().collect();
        let id = self
            .client
            .start(self.now, start_params(pid))
            .expect("client open");
        self.drive();
        let key = *self
            .procs
            .keys()
            .find(|k| !before.contains(k))
            .expect("spawned");
        if self.auto_spawn {
            let r = self.take_response(&id).expect("start ok");
            assert_eq!(r["processId"], json!(pid));
        }
        key
    }

    fn take_response(&mut self, id: &RequestId) -> Result<Value, CallError> {
        let pos = self
            .events
            .iter()
            .position(|e| matches!(e, ClientEvent::Response { id: i, .. } if i == id))
            .unwrap_or_else(|| panic!("no response to {id}: {:?}", self.events));
        match self.events.remove(pos) {
            ClientEvent::Response { result, .. } => result,
            _ => unreachable!(),
        }
    }

    fn responses(&self, id: &RequestId) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, ClientEvent::Response { id: i, .. } if i == id))
            .count()
    }

    /// The process events of `pid`, compactly: `o<seq>:<text>`, `e<seq>:<code>`, `c<seq>`,
    /// `gap<lost><<first retained>`, `lost`.
    fn trail(&self, pid: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Output {
                    process_id,
                    seq,
                    chunk,
                    ..
                } if process_id == pid => {
                    Some(format!("o{seq}:{}", String::from_utf8_lossy(chunk)))
                }
                ClientEvent::Exited {
                    process_id,
                    seq,
                    exit_code,
                    ..
                } if process_id == pid => Some(format!("e{seq}:{exit_code}")),
                ClientEvent::Closed { process_id, seq } if process_id == pid => {
                    Some(format!("c{seq}"))
                }
                ClientEvent::Gap {
                    process_id,
                    lost_chunks,
                    first_retained_seq,
                } if process_id == pid => Some(format!("gap{lost_chunks}<{first_retained_seq}")),
                ClientEvent::ProcessLost { process_id } if process_id == pid => {
                    Some("lost".to_owned())
                }
                _ => None,
            })
            .collect()
    }

    fn delivered_bytes(&self, pid: &str) -> Vec<u8> {
        let mut all = Vec::new();
        for e in &self.events {
            if let ClientEvent::Output {
                process_id, chunk, ..
            } = e
            {
                if process_id == pid {
                    all.extend_from_slice(chunk);
                }
            }
        }
        all
    }

    fn count(&self, f: impl Fn(&ClientEvent) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

fn start_params(pid: &str) -> StartParams {
    StartParams {
        process_id: pid.to_owned(),
        argv: vec!["cat".to_owned()],
        cwd: PathUri::parse("file:///tmp").expect("valid"),
        env: BTreeMap::new(),
        tty: false,
        pipe_stdin: true,
        arg0: None,
        env_policy: None,
        sandbox: None,
        enforce_managed_network: false,
    }
}

fn is_closed_error(r: &Result<Value, CallError>) -> bool {
    matches!(r, Err(CallError::Closed))
}

// ----- handshake ------------------------------------------------------------------------------

#[test]
fn first_connect_opens_a_fresh_session() {
    let mut sim = sim(true);
    let queued = sim
        .client
        .call(sim.now, "process/list", Value::Null)
        .expect("open");
    sim.connect();
    sim.drive();
    let sid = sim.client.session_id().expect("session").to_owned();
    assert_eq!(
        sim.events[0],
        ClientEvent::Connected {
            session_id: sid,
            resumed: false
        }
    );
    assert_eq!(
        sim.take_response(&queued).expect("list"),
        json!({"processes": []})
    );
}

/// Fails the first connect (`transient` each time) until the client gives up, advancing the
/// sim's clock to each retry; returns the delays between a failure and its retry.
fn first_connect_delays(sim: &mut Sim, transient: bool) -> Vec<Duration> {
    let mut delays = Vec::new();
    while let Some(at) = sim.client.first_connect_failed(sim.now, transient) {
        assert!(!sim.client.is_closed());
        assert_eq!(
            sim.client.poll_timeout(),
            None,
            "the runtime sleeps, not the client"
        );
        delays.push(at - sim.now);
        sim.advance(at - sim.now);
        assert!(delays.len() < 10, "never gives up");
    }
    delays
}

#[test]
fn first_connect_retries_transient_failures_three_times_with_doubling_capped_backoff() {
    let config = ClientConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(120),
        ..ClientConfig::default()
    };
    let mut sim = Sim::with(ServerConfig::default(), config);
    let delays = first_connect_delays(&mut sim, true);
    // 4 attempts in all: 3 retries, 50 ms doubling, capped at 120 ms.
    assert_eq!(delays, [50, 100, 120].map(Duration::from_millis).to_vec());
    assert!(sim.client.is_closed());
    sim.pump();
    assert_eq!(
        sim.events,
        [ClientEvent::SessionLost {
            reason: LostReason::Disconnected
        }]
    );
    // No recovery window was opened: nothing more happens, however long it waits.
    assert_eq!(sim.client.first_connect_failed(sim.now, true), None);
    assert_eq!(sim.client.poll_timeout(), None);
}

#[test]
fn first_connect_with_default_backoff_retries_after_50_100_200_ms() {
    let mut sim = sim(true);
    assert_eq!(
        first_connect_delays(&mut sim, true),
        [50, 100, 200].map(Duration::from_millis).to_vec()
    );
    assert!(sim.client.is_closed());
}

#[test]
fn first_connect_gives_up_at_once_on_a_refusal_or_without_recovery() {
    // A refusal or a bad URL (not transient): no retry, with recovery on.
    let mut refused = sim(true);
    assert!(first_connect_delays(&mut refused, false).is_empty());
    assert!(refused.client.is_closed());
    // Recovery off: not even a transient failure is retried.
    let mut off = sim(false);
    assert!(first_connect_delays(&mut off, true).is_empty());
    assert!(off.client.is_closed());
    // A refusal after a transient failure ends the retries too.
    let mut mixed = sim(true);
    assert!(mixed.client.first_connect_failed(mixed.now, true).is_some());
    assert_eq!(mixed.client.first_connect_failed(mixed.now, false), None);
    assert!(mixed.client.is_closed());
}

#[test]
fn first_connect_that_succeeds_on_a_retry_opens_a_fresh_session() {
    let mut sim = sim(true);
    let queued = sim
        .client
        .call(sim.now, "process/list", Value::Null)
        .expect("open");
    for _ in 0..3 {
        let at = sim
            .client
            .first_connect_failed(sim.now, true)
            .expect("retry");
        sim.advance(at - sim.now);
    }
    sim.connect();
    sim.drive();
    assert!(sim.client.is_ready());
    assert!(matches!(
        sim.events[0],
        ClientEvent::Connected { resumed: false, .. }
    ));
    assert_eq!(
        sim.take_response(&queued).expect("list"),
        json!({"processes": []})
    );
}

#[test]
fn first_connect_failed_is_ignored_once_a_session_was_opened() {
    // Ready: not waiting for a transport.
    let mut sim = ready(true);
    assert_eq!(sim.client.first_connect_failed(sim.now, true), None);
    assert!(sim.client.is_ready());
    // Reconnecting after a drop: the recovery window decides (handle_connect_failed).
    sim.connect_ok = false;
    sim.drop_link(true);
    assert!(!sim.client.is_closed());
    assert_eq!(sim.client.first_connect_failed(sim.now, false), None);
    assert!(!sim.client.is_closed());
}

#[test]
fn initialize_is_reserved() {
    let mut sim = ready(true);
    assert_eq!(
        sim.client.call(sim.now, "initialize", json!({})),
        Err(ClientError::ReservedMethod("initialize".to_owned()))
    );
}

#[test]
fn write_ids_are_unique_per_instance_and_per_write() {
    let now = Instant::now();
    let mut frames = Vec::new();
    for seed in [[1u8; 16], [2u8; 16]] {
        let mut c = Client::new(ClientConfig::default(), seed);
        c.handle_connected(now);
        c.handle_message(
            now,
            br#"{"id":1,"result":{"sessionId":"00000000-0000-4000-8000-000000000000"}}"#,
        );
        while c.poll_transmit().is_some() {}
        for _ in 0..2 {
            c.write(now, "p", b"x".to_vec()).expect("open");
            let text = c.poll_transmit().expect("write sent");
            let v: Value = serde_json::from_str(&text).expect("json");
            frames.push(v["params"]["writeId"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(frames[0], format!("{}-1", "01".repeat(16)));
    assert_eq!(frames[1], format!("{}-2", "01".repeat(16)));
    assert_eq!(frames[2], format!("{}-1", "02".repeat(16)));
}

// ----- recovery off ---------------------------------------------------------------------------

#[test]
fn disconnect_mid_call_without_recovery_fails_pending_and_later_calls_with_closed() {
    let mut sim = ready(false);
    sim.auto_spawn = false;
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.drive();
    assert_eq!(sim.responses(&start), 0, "start waits for the spawn");
    sim.drop_link(true);
    sim.pump();
    assert!(is_closed_error(&sim.take_response(&start)));
    assert_eq!(
        sim.events,
        [ClientEvent::SessionLost {
            reason: LostReason::Disconnected
        }]
    );
    assert_eq!(
        sim.client.call(sim.now, "process/list", Value::Null),
        Err(ClientError::Closed)
    );
    assert_eq!(
        sim.client.write(sim.now, "p", b"x".to_vec()),
        Err(ClientError::Closed)
    );
    assert_eq!(sim.client.poll_timeout(), None);
    assert!(sim.client.is_closed());
}

#[test]
fn disconnect_mid_write_without_recovery_fails_the_write_with_closed() {
    let mut sim = ready(false);
    let key = sim.start("p");
    let write = sim.client.write(sim.now, "p", b"x".to_vec()).expect("open");
    sim.pump();
    assert!(sim.deliver_c2s(), "the write reaches the server");
    sim.drop_link(true);
    sim.pump();
    assert!(is_closed_error(&sim.take_response(&write)));
    assert_eq!(sim.procs[&key].stdin, b"x");
    assert!(sim.trail("p").is_empty(), "the echo was lost with the link");
}

#[test]
fn disconnect_mid_stream_without_recovery_stops_delivery() {
    let mut sim = ready(false);
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.pump();
    sim.drive();
    sim.output(key, b"b");
    sim.pump();
    sim.drop_link(true);
    sim.output(key, b"c");
    sim.advance(Duration::from_secs(60));
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:a"]);
    assert_eq!(
        sim.count(|e| matches!(e, ClientEvent::SessionLost { .. })),
        1
    );
    assert_eq!(sim.count(|e| *e == ClientEvent::Reconnect), 0);
}

/// Found by the `client_ops` fuzz target: a start for an id the client still tracks was sent;
/// when the server had already forgotten the old process (closed, retention over, while its
/// last notifications were still on their way) it ran as a new process, and the client either
/// fed the new process's events to the old tracker or, once the old `Closed` arrived, did not
/// track the new process at all. Now it is refused locally, as the server refuses it while it
/// holds the old process.
#[test]
fn start_for_a_tracked_id_is_refused_even_when_the_server_forgot_the_old_process() {
    let config = ServerConfig {
        closed_retention: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let mut sim = sim_with(false, config);
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.finish(key, ExitStatus::Code(0));
    sim.pump();
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.server.process_count(), 0, "the server forgot p");
    assert_eq!(
        sim.client.last_seq("p"),
        Some(Seq(0)),
        "its events are in flight"
    );

    let again = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.drive();
    assert_eq!(sim.procs.len(), 1, "nothing was spawned");
    match sim.take_response(&again) {
        Err(CallError::Rpc(e)) => {
            assert_eq!(e.code, -32600);
            assert_eq!(e.message, "process p already exists");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.trail("p"), ["o1:a", "e2:0", "c3"]);

    // Once the old process closed for the client, the id starts a new, tracked process.
    let key = sim.start("p");
    sim.output(key, b"b");
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:a", "e2:0", "c3", "o1:b"]);
}

// ----- recovery on ----------------------------------------------------------------------------

#[test]
fn disconnect_mid_call_with_recovery_fails_only_calls_that_cannot_be_resent() {
    let mut sim = ready(true);
    let key = sim.start("p");
    let terminate = sim
        .client
        .call(sim.now, "process/terminate", json!({"processId": "p"}))
        .expect("open");
    let read = sim
        .client
        .call(sim.now, "process/read", json!({"processId": "p"}))
        .expect("open");
    sim.pump();
    sim.drop_link(true);
    // Failed at once, before any reconnect.
    assert_eq!(
        sim.client.poll_event(),
        Some(ClientEvent::Response {
            id: terminate.clone(),
            result: Err(CallError::Closed)
        })
    );
    let queued = sim
        .client
        .call(sim.now, "process/list", Value::Null)
        .expect("calls queue while reconnecting");
    sim.drive();
    assert!(sim.events.contains(&ClientEvent::Reconnect));
    assert!(sim.events.contains(&ClientEvent::Connected {
        session_id: sim.client.session_id().expect("sid").to_owned(),
        resumed: true
    }));
    assert_eq!(sim.take_response(&read).expect("read")["chunks"], json!([]));
    let list = sim.take_response(&queued).expect("list");
    assert_eq!(list["processes"][0]["state"], json!("running"));
    assert!(!sim.procs[&key].exited, "the terminate was never sent");
}

#[test]
fn in_flight_write_is_resent_with_the_same_write_id_and_reaches_the_child_once() {
    // The write reached the server, its response was lost; and the write was lost itself.
    for reached in [true, false] {
        let mut sim = ready(true);
        let key = sim.start("p");
        let write = sim.client.write(sim.now, "p", b"x".to_vec()).expect("open");
        sim.pump();
        let sent = sim.c2s.back().cloned().expect("write in flight");
        if reached {
            assert!(sim.deliver_c2s());
        }
        sim.drop_link(true);
        let later = sim.client.write(sim.now, "p", b"y".to_vec()).expect("open");
        sim.drive();
        assert_eq!(sim.procs[&key].stdin, b"xy", "reached={reached}");
        assert_eq!(
            sim.take_response(&write).expect("resent"),
            json!({"status": "accepted"})
        );
        assert_eq!(sim.responses(&write), 0);
        assert_eq!(
            sim.take_response(&later).expect("queued"),
            json!({"status": "accepted"})
        );
        // The echoes come back once each, in order.
        assert_eq!(sim.delivered_bytes("p"), b"xy");
        assert!(sent.contains(&format!("\"writeId\":\"{}-1\"", "ab".repeat(16))));
    }
}

/// Found by the `client_ops` fuzz target: a write accepted by the server whose answer was cut
/// off was resent after its process closed and was forgotten (close retention); the server
/// answered `unknownProcess` and the client reported that, though the bytes had reached the
/// child. Past the close retention such an answer proves nothing: the write fails `Closed`.
#[test]
fn write_resent_after_its_process_may_have_been_forgotten_fails_closed() {
    let retention = Duration::from_secs(1);
    let config = ServerConfig {
        closed_retention: retention,
        ..ServerConfig::default()
    };
    let mut sim = sim_with(true, config);
    sim.client = Client::new(
        ClientConfig {
            close_retention: retention,
            ..ClientConfig::default()
        },
        [0xab; 16],
    );
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    let write = sim.client.write(sim.now, "p", b"x".to_vec()).expect("open");
    sim.pump();
    assert!(sim.deliver_c2s(), "the write reaches the child");
    sim.connect_ok = false;
    sim.drop_link(true); // its answer is lost
    sim.pump();
    sim.finish(key, ExitStatus::Code(0));
    sim.advance(Duration::from_secs(2)); // the server forgets p
    sim.connect_ok = true;
    sim.advance(Duration::from_secs(2));
    sim.drive();
    assert!(sim.client.is_ready());
    assert_eq!(sim.procs[&key].stdin, b"x");
    assert!(is_closed_error(&sim.take_response(&write)));

    // A write that never reached a process is still answered `unknownProcess`.
    let write = sim.client.write(sim.now, "p", b"y".to_vec()).expect("open");
    sim.drive();
    assert_eq!(
        sim.take_response(&write),
        Ok(json!({"status": "unknownProcess"}))
    );
}

#[test]
fn output_missed_while_disconnected_is_delivered_once_in_order() {
    let mut sim = ready(true);
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.drive();
    // b is in flight when the link drops; c is produced while detached.
    sim.output(key, b"b");
    sim.pump();
    sim.drop_link(true);
    sim.output(key, b"c");
    sim.drive();
    sim.output(key, b"d");
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:a", "o2:b", "o3:c", "o4:d"]);
    assert_eq!(sim.client.last_seq("p"), Some(Seq(4)));
}

#[test]
fn exit_and_close_missed_while_disconnected_are_delivered_once() {
    let mut sim = ready(true);
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.drive();
    sim.drop_link(true);
    sim.output(key, b"b");
    sim.finish(key, ExitStatus::Code(3));
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:a", "o2:b", "e3:3", "c4"]);
    assert_eq!(
        sim.client.last_seq("p"),
        None,
        "closed processes are not tracked"
    );
    // A late duplicate is dropped.
    sim.client.handle_message(
        sim.now,
        br#"{"method":"process/closed","params":{"processId":"p","seq":4}}"#,
    );
    sim.pump();
    assert_eq!(sim.trail("p").len(), 4);
}

#[test]
fn resume_racing_the_old_attachment_retries_after_session_attached() {
    let mut sim = ready(true);
    let key = sim.start("p");
    let t0 = sim.now;
    sim.drop_link(false);
    sim.output(key, b"a");
    sim.drive();
    // The server still thinks the old connection owns the session: -32010.
    assert_eq!(sim.initializes, 2);
    assert!(!sim.client.is_ready());
    assert_eq!(
        sim.client.poll_timeout(),
        Some(t0 + Duration::from_millis(50))
    );
    sim.advance(Duration::from_millis(50));
    sim.drive();
    assert_eq!(sim.initializes, 3);
    assert_eq!(
        sim.client.poll_timeout(),
        Some(t0 + Duration::from_millis(150))
    );
    sim.notice_drops();
    sim.advance(Duration::from_millis(100));
    sim.drive();
    assert_eq!(sim.initializes, 4);
    assert!(sim.client.is_ready());
    assert_eq!(
        sim.count(|e| matches!(e, ClientEvent::Connected { resumed: true, .. })),
        1
    );
    assert_eq!(sim.trail("p"), ["o1:a"]);
}

#[test]
fn notifications_before_the_initialize_response_are_delivered_in_order() {
    let mut sim = ready(true);
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.drive();
    sim.drop_link(true);
    sim.output(key, b"b");
    // Open the new transport by hand and let the server answer `initialize`.
    sim.auto_connect = false;
    sim.pump();
    sim.connect();
    assert!(sim.deliver_c2s(), "initialize reaches the server");
    sim.output(key, b"c");
    sim.pump();
    // The reference sends notifications before the `initialize` response: reorder.
    assert_eq!(sim.s2c.len(), 2);
    let response = sim.s2c.pop_front().expect("initialize response");
    assert!(response.contains("sessionId"));
    assert!(sim.deliver_s2c(), "output c before the response");
    assert_eq!(sim.trail("p"), ["o1:a"], "c waits for the missing b");
    sim.s2c.push_back(response);
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:a", "o2:b", "o3:c"]);

    // Without a gap a notification ahead of the response is delivered at once.
    sim.drop_link(true);
    sim.pump();
    sim.connect();
    assert!(sim.deliver_c2s());
    sim.output(key, b"d");
    sim.pump();
    let response = sim.s2c.pop_front().expect("initialize response");
    assert!(sim.deliver_s2c());
    assert_eq!(sim.trail("p").last().map(String::as_str), Some("o4:d"));
    assert!(!sim.client.is_ready());
    sim.s2c.push_back(response);
    sim.drive();
    assert!(sim.client.is_ready());
    assert_eq!(sim.trail("p"), ["o1:a", "o2:b", "o3:c", "o4:d"]);
}

#[test]
fn evicted_output_is_reported_as_a_gap() {
    let config = ServerConfig {
        retained_chunks: 2,
        ..ServerConfig::default()
    };
    let mut sim = lossy_sim_with(true, config);
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.drive();
    sim.drop_link(true);
    for b in [b"b", b"c", b"d", b"e"] {
        sim.output(key, b);
    }
    sim.finish(key, ExitStatus::Code(0));
    sim.drive();
    assert_eq!(
        sim.trail("p"),
        ["o1:a", "gap2<4", "o4:d", "o5:e", "e6:0", "c7"]
    );
}

/// Steps `sim` until the client delivered more output of `pid` than `before` bytes (or
/// nothing moves), checking every `process/read` the client sends carries `maxBytes: page`.
fn step_until_progress(sim: &mut Sim, pid: &str, before: usize, page: u64) -> usize {
    loop {
        if let Some(frame) = sim.c2s.front() {
            if frame.contains(r#""method":"process/read""#) {
                let v: Value = serde_json::from_str(frame).expect("json");
                assert_eq!(v["params"]["maxBytes"], json!(page), "paged: {frame:.200}");
            }
        }
        if !sim.step() {
            return sim.delivered_bytes(pid).len();
        }
        let now = sim.delivered_bytes(pid).len();
        if now > before {
            return now;
        }
    }
}

#[test]
fn recovery_reads_are_paged_so_each_connection_makes_progress() {
    const CHUNK: usize = 16 * 1024;
    const PAGE: u64 = 256 * 1024;
    let mut sim = ready(true);
    assert_eq!(sim.client.config().recovery_read_bytes, PAGE);
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.drive();
    sim.drop_link(true);
    // Just under the 1 MiB the server retains, produced while detached.
    for i in 0..63u8 {
        sim.output(key, &[b'0' + i % 64; CHUNK]);
    }
    sim.finish(key, ExitStatus::Code(0));
    sim.pump();
    // The connection is cut as soon as one page arrived, every time.
    let mut delivered = 1;
    let mut connections = 0;
    while sim.client.last_seq("p").is_some() {
        connections += 1;
        assert!(connections < 20, "no progress: {delivered} bytes");
        let now = step_until_progress(&mut sim, "p", delivered, PAGE);
        assert!(now > delivered, "a connection made no progress");
        assert!(
            (now - delivered) as u64 <= PAGE,
            "one page per connection, got {}",
            now - delivered
        );
        delivered = now;
        if sim.client.last_seq("p").is_some() {
            sim.drop_link(true);
            sim.pump();
        }
    }
    assert!(connections >= 4, "1 MiB in 256 KiB pages: {connections}");
    let produced = &sim.procs[&key].produced;
    assert_eq!(
        sim.delivered_bytes("p"),
        *produced,
        "everything once, in order"
    );
    let trail = sim.trail("p");
    let seqs: Vec<String> = trail
        .iter()
        .map(|t| t.split(':').next().unwrap_or_default().to_owned())
        .collect();
    let mut want: Vec<String> = (1..=64).map(|s| format!("o{s}")).collect();
    want.extend(["e65".to_owned(), "c66".to_owned()]);
    assert_eq!(seqs, want);
}

#[test]
fn paged_recovery_reads_report_evicted_output_exactly() {
    let config = ServerConfig {
        retained_chunks: 4,
        ..ServerConfig::default()
    };
    let client = ClientConfig {
        client_name: "sim".to_owned(),
        recovery_read_bytes: 1,
        lossless_output: false,
        ..ClientConfig::default()
    };
    let mut sim = Sim::with(config, client);
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.drive();
    sim.drop_link(true);
    for b in [b"b", b"c", b"d", b"e", b"f", b"g", b"h"] {
        sim.output(key, b);
    }
    sim.finish(key, ExitStatus::Code(0));
    sim.drive();
    assert_eq!(
        sim.trail("p"),
        ["o1:a", "gap3<5", "o5:e", "o6:f", "o7:g", "o8:h", "e9:0", "c10"]
    );

    // Live: a gap in the notifications is read in pages while newer ones wait in order.
    let key = sim.start("q");
    sim.output(key, b"a");
    sim.drive();
    sim.output(key, b"b");
    sim.output(key, b"c");
    sim.pump();
    // b and c are lost on the way; d arrives ahead of them.
    sim.s2c.clear();
    sim.output(key, b"d");
    sim.output(key, b"e");
    sim.drive();
    assert_eq!(sim.trail("q"), ["o1:a", "o2:b", "o3:c", "o4:d", "o5:e"]);
}

#[test]
fn start_that_ran_before_a_disconnect_is_answered_by_the_recovery_read() {
    let mut sim = ready(true);
    sim.auto_spawn = false;
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.drive();
    sim.drop_link(true);
    sim.pump();
    assert_eq!(sim.responses(&start), 0, "not failed: the read will tell");
    sim.drive();
    assert!(sim.client.is_ready());
    assert_eq!(
        sim.take_response(&start),
        Ok(json!({"processId": "p"})),
        "the server knows p, so the start ran"
    );
    sim.release_spawns();
    assert_eq!(sim.procs.len(), 1, "started once");
    let key = *sim.procs.keys().next().expect("spawned");
    sim.output(key, b"x");
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:x"]);
}

#[test]
fn start_lost_in_flight_is_sent_again_once_the_read_shows_it_never_ran() {
    let mut sim = ready(true);
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.pump();
    sim.drop_link(true); // the request never reached the server
    sim.pump();
    assert_eq!(sim.responses(&start), 0);
    sim.drive();
    assert_eq!(
        sim.take_response(&start),
        Ok(json!({"processId": "p", "sandboxType": "none"})),
        "the second send started it"
    );
    assert_eq!(sim.procs.len(), 1, "started once");
    let key = *sim.procs.keys().next().expect("spawned");
    sim.output(key, b"x");
    sim.finish(key, ExitStatus::Code(0));
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:x", "e2:0", "c3"]);
}

/// Found by the `client_ops` fuzz target: a start whose answer was cut off ran, its process
/// closed and was forgotten (close retention) before the recovery read, which then answered
/// `unknown process id`; the client took that to mean the start never ran and sent it again,
/// so the process ran twice. An `unknown process id` proves it only within the close
/// retention of sending the start; later the fate is unknown and the start fails `Closed`.
#[test]
fn start_cut_off_is_not_sent_again_once_its_process_may_have_been_forgotten() {
    let retention = Duration::from_secs(1);
    let config = ServerConfig {
        closed_retention: retention,
        ..ServerConfig::default()
    };
    let mut sim = sim_with(true, config);
    sim.client = Client::new(
        ClientConfig {
            close_retention: retention,
            ..ClientConfig::default()
        },
        [0xab; 16],
    );
    sim.connect();
    sim.drive();
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.pump();
    assert!(sim.deliver_c2s(), "the start runs");
    let key = *sim.procs.keys().next().expect("spawned");
    sim.connect_ok = false;
    sim.drop_link(true); // its answer is lost
    sim.pump();
    sim.finish(key, ExitStatus::Code(0));
    sim.advance(Duration::from_secs(2)); // the server forgets p
    assert_eq!(sim.server.process_count(), 0);
    sim.connect_ok = true;
    sim.advance(Duration::from_secs(2));
    sim.drive();
    assert!(sim.client.is_ready());
    assert_eq!(sim.procs.len(), 1, "started once");
    assert!(is_closed_error(&sim.take_response(&start)));
    assert_eq!(sim.client.last_seq("p"), None, "no longer tracked");

    // Within the retention the read still tells that a lost start never ran.
    let start = sim.client.start(sim.now, start_params("q")).expect("open");
    sim.pump();
    sim.drop_link(true);
    sim.drive();
    assert_eq!(
        sim.take_response(&start),
        Ok(json!({"processId": "q", "sandboxType": "none"}))
    );
    assert_eq!(sim.procs.len(), 2);
}

/// Found by the `client_ops` fuzz target: a start whose answer was cut off waited for the
/// recovery read of its process to be settled; when the process closed before that read was
/// answered, its `closed` notification ended the tracking, the read's answer was dropped and
/// the start was never answered. A notification of the process settles the start: it ran.
#[test]
fn start_cut_off_is_settled_when_its_process_closes_before_the_recovery_read() {
    let mut sim = ready(true);
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.pump();
    assert!(sim.deliver_c2s(), "the start runs");
    let key = *sim.procs.keys().next().expect("spawned");
    sim.drop_link(true); // its answer is lost
    sim.pump();
    assert!(sim.deliver_c2s(), "initialize");
    assert!(sim.deliver_s2c(), "resumed: the recovery read is sent");
    sim.finish(key, ExitStatus::Code(0));
    sim.pump();
    sim.drive();
    assert_eq!(sim.take_response(&start), Ok(json!({"processId": "p"})));
    assert_eq!(sim.client.pending_count(), 0);
    assert_eq!(sim.trail("p"), ["e1:0", "c2"]);
}

/// Found by the `client_ops` fuzz target: after a resume, calls made after a start that was
/// cut off were sent at once, while the start waited for the recovery read to tell whether it
/// ran; when it had not, it was sent again behind them, so a write made after the start found
/// no process (`unknownProcess`). Calls made after an unsettled start now wait for it.
#[test]
fn calls_made_after_a_cut_off_start_wait_until_it_is_settled() {
    let mut sim = ready(true);
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.pump();
    sim.drop_link(true); // the start never reached the server
    let write = sim.client.write(sim.now, "p", b"x".to_vec()).expect("open");
    let list = sim
        .client
        .call(sim.now, "process/list", Value::Null)
        .expect("open");
    sim.drive();
    assert_eq!(
        sim.take_response(&start),
        Ok(json!({"processId": "p", "sandboxType": "none"}))
    );
    assert_eq!(sim.take_response(&write), Ok(json!({"status": "accepted"})));
    let key = *sim.procs.keys().next().expect("spawned");
    assert_eq!(sim.procs[&key].stdin, b"x");
    let list = sim.take_response(&list).expect("list");
    assert_eq!(list["processes"][0]["processId"], json!("p"));
}

#[test]
fn start_cut_off_fails_closed_when_the_session_is_lost() {
    let mut sim = ready(true);
    sim.connect_ok = false;
    let start = sim.client.start(sim.now, start_params("p")).expect("open");
    sim.pump();
    sim.drop_link(true);
    sim.advance(Duration::from_secs(30));
    assert!(is_closed_error(&sim.take_response(&start)));
    assert!(sim.client.is_closed());
}

#[test]
fn a_process_forgotten_while_away_is_reported_lost() {
    let config = ServerConfig {
        closed_retention: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let mut sim = sim_with(true, config);
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    sim.connect_ok = false;
    sim.drop_link(true);
    sim.finish(key, ExitStatus::Code(0));
    sim.pump();
    sim.advance(Duration::from_secs(2));
    sim.connect_ok = true;
    sim.advance(Duration::from_secs(2));
    sim.drive();
    assert!(sim.client.is_ready());
    assert_eq!(sim.trail("p"), ["lost"]);
    assert_eq!(sim.client.last_seq("p"), None);
}

#[test]
fn recovery_backs_off_and_gives_up_after_the_window() {
    let mut sim = ready(true);
    sim.start("p");
    let write = sim.client.write(sim.now, "p", b"x".to_vec()).expect("open");
    sim.pump();
    sim.connect_ok = false;
    let t0 = sim.now;
    sim.drop_link(true);
    let queued = sim
        .client
        .call(sim.now, "process/list", Value::Null)
        .expect("queued");
    sim.pump();
    let mut attempts = vec![Duration::ZERO];
    while let Some(at) = sim.client.poll_timeout() {
        sim.advance(at - sim.now);
        if sim.events.last() == Some(&ClientEvent::Reconnect) {
            attempts.push(sim.now - t0);
        }
    }
    let ms: Vec<u128> = attempts.iter().map(Duration::as_millis).collect();
    assert_eq!(
        &ms[..9],
        [0, 50, 150, 350, 750, 1550, 3150, 5150, 7150],
        "doubling from 50 ms, capped at 2 s"
    );
    assert_eq!(sim.now - t0, Duration::from_secs(25));
    assert!(is_closed_error(&sim.take_response(&write)));
    assert!(is_closed_error(&sim.take_response(&queued)));
    assert_eq!(
        sim.events.last(),
        Some(&ClientEvent::SessionLost {
            reason: LostReason::WindowExhausted
        })
    );
    assert_eq!(
        sim.client.write(sim.now, "p", b"y".to_vec()),
        Err(ClientError::Closed)
    );
}

#[test]
fn an_expired_session_is_lost_on_resume() {
    let config = ServerConfig {
        session_ttl: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let mut sim = sim_with(true, config);
    sim.connect();
    sim.drive();
    sim.connect_ok = false;
    sim.drop_link(true);
    sim.pump();
    sim.advance(Duration::from_secs(2));
    sim.connect_ok = true;
    sim.advance(Duration::from_secs(2));
    sim.drive();
    assert!(sim.client.is_closed());
    assert!(matches!(
        sim.events.last(),
        Some(ClientEvent::SessionLost {
            reason: LostReason::Rejected(RpcError { code: -32600, .. })
        })
    ));
}

#[test]
fn gap_in_live_notifications_is_filled_by_a_read() {
    let mut sim = ready(true);
    let key = sim.start("p");
    sim.output(key, b"a");
    sim.output(key, b"b");
    sim.pump();
    // Lose the first notification only (as if a server skipped it).
    sim.s2c.pop_front();
    sim.drive();
    assert_eq!(sim.trail("p"), ["o1:a", "o2:b"]);
}

// ----- hostile input --------------------------------------------------------------------------

const GARBAGE: &[&str] = &[
    "",
    "null",
    "[]",
    "{",
    "\u{0}",
    r#"{"id":1}"#,
    r#"{"id":null,"result":{}}"#,
    r#"{"id":"1","result":{}}"#,
    r#"{"id":2,"result":null}"#,
    r#"{"id":2,"error":{"code":"x"}}"#,
    r#"{"id":3,"result":{"chunks":"no"}}"#,
    r#"{"id":3,"result":{"chunks":[{"seq":18446744073709551615,"stream":"stdout","chunk":""}],"nextSeq":0,"exited":true,"exitCode":null,"closed":true,"failure":null}}"#,
    r#"{"id":3,"result":{"chunks":[],"nextSeq":18446744073709551615,"exited":true,"exitCode":1,"closed":true,"failure":null}}"#,
    r#"{"id":3,"error":{"code":-32600,"message":"unknown process id p"}}"#,
    r#"{"id":9,"method":"process/read","params":{}}"#,
    r#"{"method":"process/output","params":{"processId":"p","seq":0,"stream":"stdout","chunk":"YQ=="}}"#,
    r#"{"method":"process/output","params":{"processId":"p","seq":18446744073709551615,"stream":"stdout","chunk":"YQ=="}}"#,
    r#"{"method":"process/output","params":{"processId":"p","seq":5,"stream":"nope","chunk":"!!"}}"#,
    r#"{"method":"process/exited","params":{"processId":"p","seq":1,"exitCode":0}}"#,
    r#"{"method":"process/exited","params":{"processId":"p","seq":2,"exitCode":1}}"#,
    r#"{"method":"process/closed","params":{"processId":"p","seq":18446744073709551615}}"#,
    r#"{"method":"process/closed","params":{"processId":"p","seq":3}}"#,
    r#"{"method":"unknown"}"#,
];

/// A client with a tracked process, pending calls of each kind, mid-recovery and ready.
fn hostile_target(ready: bool) -> (Client, Instant) {
    let now = Instant::now();
    let mut c = Client::new(ClientConfig::default(), [0; 16]);
    c.handle_connected(now);
    c.handle_message(
        now,
        br#"{"id":1,"result":{"sessionId":"00000000-0000-4000-8000-000000000000"}}"#,
    );
    c.start(now, start_params("p")).expect("open");
    c.write(now, "p", b"x".to_vec()).expect("open");
    c.handle_message(now, br#"{"id":2,"result":{"processId":"p"}}"#);
    if !ready {
        c.handle_disconnect(now);
        c.handle_connected(now);
    }
    (c, now)
}

/// Found by the `client_ops` fuzz target: a server that sent a process's `closed` before
/// answering its start (breaking the protocol's order) ended the tracking; when the start was
/// then cut off by a disconnect, no recovery read could settle it and, as later calls wait for
/// cut-off starts, the client stalled. Such a start now fails `Closed` at the resume.
#[test]
fn a_cut_off_start_without_its_tracker_fails_closed_at_the_resume() {
    let (mut c, now) = hostile_target(true);
    let start = c.start(now, start_params("q")).expect("open");
    c.handle_message(
        now,
        br#"{"method":"process/closed","params":{"processId":"q","seq":1}}"#,
    );
    assert_eq!(c.last_seq("q"), None, "the forged close ended the tracking");
    c.handle_disconnect(now);
    let later = c.call(now, "process/list", Value::Null).expect("open");
    c.handle_connected(now);
    while c.poll_transmit().is_some() {}
    c.handle_message(
        now,
        br#"{"id":6,"result":{"sessionId":"00000000-0000-4000-8000-000000000000"}}"#,
    );
    let frames: Vec<String> = std::iter::from_fn(|| c.poll_transmit()).collect();
    let events: Vec<ClientEvent> = std::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        events.contains(&ClientEvent::Response {
            id: start,
            result: Err(CallError::Closed)
        }),
        "{events:?}"
    );
    assert!(
        frames
            .iter()
            .any(|f| f.contains(&format!(r#""id":{later}"#))),
        "the later call goes out: {frames:?}"
    );
}

/// Found by the `client_ops` fuzz target (forged frames): a start cut off by a disconnect
/// that was then answered directly (a correct server answers on the connection the request
/// came on, which is gone) left the calls held behind it unsent for ever.
#[test]
fn calls_held_behind_a_cut_off_start_go_out_when_it_is_answered_at_all() {
    let (mut c, now) = hostile_target(true);
    let start = c.start(now, start_params("q")).expect("open");
    c.handle_disconnect(now);
    let later = c.call(now, "process/list", Value::Null).expect("open");
    c.handle_connected(now);
    c.handle_message(
        now,
        br#"{"id":6,"result":{"sessionId":"00000000-0000-4000-8000-000000000000"}}"#,
    );
    let sent: Vec<String> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert!(
        !sent.iter().any(|f| f.contains(&format!(r#""id":{later}"#))),
        "held"
    );
    c.handle_message(now, format!(r#"{{"id":{start},"result":{{}}}}"#).as_bytes());
    let sent: Vec<String> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert!(
        sent.iter().any(|f| f.contains(&format!(r#""id":{later}"#))),
        "released: {sent:?}"
    );
}

#[test]
fn garbage_from_the_server_never_panics() {
    for ready in [true, false] {
        let (mut c, now) = hostile_target(ready);
        for frame in GARBAGE {
            c.handle_message(now, frame.as_bytes());
            while c.poll_event().is_some() {}
            while c.poll_transmit().is_some() {}
        }
        c.handle_timeout(now + Duration::from_secs(60));
        while c.poll_event().is_some() {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_server_frames_never_panic(
        frames in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(GARBAGE).prop_map(|s| s.as_bytes().to_vec()),
                proptest::collection::vec(any::<u8>(), 0..64),
                (0u64..8, 0u64..8, any::<bool>(), any::<bool>(), 0u64..6).prop_map(
                    |(seq, next, exited, closed, id)| format!(
                        r#"{{"id":{id},"result":{{"chunks":[{{"seq":{seq},"stream":"stdout","chunk":"YQ=="}}],"nextSeq":{next},"exited":{exited},"exitCode":0,"closed":{closed},"failure":null}}}}"#
                    ).into_bytes()
                ),
                (0u64..8, 0usize..3).prop_map(|(seq, m)| {
                    let method = ["process/output", "process/exited", "process/closed"][m];
                    format!(
                        r#"{{"method":"{method}","params":{{"processId":"p","seq":{seq},"stream":"stdout","chunk":"YQ==","exitCode":0}}}}"#
                    ).into_bytes()
                }),
            ],
            0..24,
        ),
        ready in any::<bool>(),
    ) {
        let (mut c, now) = hostile_target(ready);
        let mut exits = 0;
        let mut closes = 0;
        for frame in &frames {
            c.handle_message(now, frame);
            while let Some(ev) = c.poll_event() {
                match ev {
                    ClientEvent::Exited { .. } => exits += 1,
                    ClientEvent::Closed { .. } => closes += 1,
                    _ => {}
                }
            }
            while c.poll_transmit().is_some() {}
        }
        prop_assert!(exits <= 1 && closes <= 1, "exits {} closes {}", exits, closes);
    }
}

// ----- schedules of disconnects ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// The child writes a chunk.
    Output,
    /// The client writes a chunk (the child echoes it).
    Write,
    ToServer(u8),
    ToClient(u8),
    Drop {
        server_notices: bool,
    },
    NoticeDrops,
    Advance(u16),
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Output),
        3 => Just(Op::Write),
        3 => (1u8..6).prop_map(Op::ToServer),
        3 => (1u8..6).prop_map(Op::ToClient),
        2 => any::<bool>().prop_map(|server_notices| Op::Drop { server_notices }),
        1 => Just(Op::NoticeDrops),
        1 => (0u16..400).prop_map(Op::Advance),
        1 => Just(Op::Settle),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any schedule of disconnects, partial deliveries and `-32010` races, the output the
    /// client delivers is the output the child produced (in order, each seq once), and each
    /// write reaches the child once, in order.
    #[test]
    fn delivered_output_equals_produced_output_and_writes_arrive_once(
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut sim = ready(true);
        let key = sim.start("p");
        let mut n_out = 0;
        let mut writes = Vec::new();
        let mut expected_stdin = Vec::new();
        for op in ops {
            match op {
                Op::Output => {
                    n_out += 1;
                    sim.output(key, format!("o{n_out};").as_bytes());
                    sim.pump();
                }
                Op::Write => {
                    let bytes = format!("w{};", writes.len()).into_bytes();
                    expected_stdin.extend_from_slice(&bytes);
                    writes.push(sim.client.write(sim.now, "p", bytes).expect("open"));
                    sim.pump();
                }
                Op::ToServer(n) => {
                    for _ in 0..n {
                        sim.deliver_c2s();
                    }
                }
                Op::ToClient(n) => {
                    for _ in 0..n {
                        sim.deliver_s2c();
                    }
                }
                Op::Drop { server_notices } => {
                    sim.drop_link(server_notices);
                    sim.pump();
                }
                Op::NoticeDrops => sim.notice_drops(),
                Op::Advance(ms) => sim.advance(Duration::from_millis(u64::from(ms))),
                Op::Settle => sim.drive(),
            }
        }
        // Heal: the server notices every drop; let recovery finish.
        sim.notice_drops();
        for _ in 0..100 {
            sim.drive();
            if sim.client.is_ready() && sim.client.pending_count() == 0 {
                break;
            }
            let step = sim
                .client
                .poll_timeout()
                .map_or(Duration::from_millis(10), |at| at.saturating_duration_since(sim.now));
            sim.advance(step);
        }
        prop_assert!(sim.client.is_ready(), "recovered: {:?}", sim.events);
        sim.finish(key, ExitStatus::Code(0));
        sim.drive();

        let produced = String::from_utf8_lossy(&sim.procs[&key].produced).into_owned();
        let delivered = String::from_utf8_lossy(&sim.delivered_bytes("p")).into_owned();
        prop_assert_eq!(delivered, produced);
        let stdin = String::from_utf8_lossy(&sim.procs[&key].stdin).into_owned();
        prop_assert_eq!(stdin, String::from_utf8_lossy(&expected_stdin).into_owned());
        for w in &writes {
            prop_assert_eq!(sim.responses(w), 1);
        }
        let trail = sim.trail("p");
        let seqs: Vec<u64> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Output { seq, .. }
                | ClientEvent::Exited { seq, .. }
                | ClientEvent::Closed { seq, .. } => Some(seq.0),
                _ => None,
            })
            .collect();
        prop_assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{:?}", trail);
        prop_assert_eq!(seqs.first().copied(), Some(1));
        prop_assert!(trail.last().is_some_and(|t| t.starts_with('c')), "{:?}", trail);
        prop_assert!(!trail.iter().any(|t| t.starts_with("gap") || t == "lost"));
    }
}

/// A client that asks for binary frames, connected to a server whose transport can carry them.
fn binary_sim() -> Sim {
    binary_sim_with(ClientConfig::default())
}

/// [`binary_sim`] with `config` (its `binary_frames` set).
fn binary_sim_with(config: ClientConfig) -> Sim {
    let config = ClientConfig {
        binary_frames: true,
        ..config
    };
    let mut sim = Sim::with(ServerConfig::default(), config);
    sim.connect();
    let link = sim.link.expect("connected");
    sim.server.allow_binary_frames(link);
    sim.drive();
    sim
}

#[test]
fn binary_output_frames_are_delivered_like_json_ones() {
    let mut sim = binary_sim();
    assert!(sim.client.is_ready());
    sim.start("cat");
    let id = sim
        .client
        .write(sim.now, "cat", b"hi\n".to_vec())
        .expect("open");
    sim.drive();
    assert!(sim.take_response(&id).is_ok());
    let id = sim
        .client
        .write(sim.now, "cat", b"\xff\x00".to_vec())
        .expect("open");
    sim.drive();
    assert!(sim.take_response(&id).is_ok());
    assert_eq!(sim.binary_frames.len(), 2, "output went out binary");
    assert_eq!(sim.trail("cat"), ["o1:hi\n", "o2:\u{fffd}\u{0}"]);
    assert_eq!(sim.delivered_bytes("cat"), b"hi\n\xff\x00");
}

#[test]
fn binary_result_frames_answer_their_call_as_data_responses() {
    use crate::protocol::fs::ReadBlockResult;
    use crate::protocol::{Base64Bytes, FsResult};
    use crate::server::Command;
    let mut sim = binary_sim();
    let params = json!({"handleId": "h", "offset": 0, "len": 8});
    let id = sim
        .client
        .call(sim.now, "fs/readBlock", params)
        .expect("open");
    sim.drive();
    let ticket = sim
        .commands
        .iter()
        .find_map(|c| match c {
            Command::Fs { ticket, .. } => Some(*ticket),
            _ => None,
        })
        .expect("an fs command");
    let now = sim.now;
    sim.server.handle_fs(
        now,
        ticket,
        Ok(FsResult::ReadBlock(ReadBlockResult {
            chunk: Base64Bytes(b"\x00\xffab".to_vec()),
            eof: true,
        })),
    );
    sim.drive();
    assert_eq!(sim.binary_frames.len(), 1, "the result went out binary");
    let data = sim.events.iter().find_map(|e| match e {
        ClientEvent::DataResponse { id: i, data, eof } if *i == id => Some((data.clone(), *eof)),
        _ => None,
    });
    assert_eq!(data, Some((b"\x00\xffab".to_vec(), true)));
    assert_eq!(sim.responses(&id), 0, "answered once, as data");
    assert_eq!(sim.client.pending_count(), 0);
}

/// An `fs/readFile` call, sent; its id.
fn read_file(sim: &mut Sim) -> RequestId {
    let params = json!({"path": "file:///tmp/x"});
    let id = sim
        .client
        .call(sim.now, "fs/readFile", params)
        .expect("open");
    sim.drive();
    id
}

#[test]
fn a_result_in_pieces_is_joined_and_an_error_voids_the_pieces() {
    use crate::protocol::binary::encode_result;
    let mut sim = binary_sim();
    let id = read_file(&mut sim);
    let RequestId::Int(n) = id else { panic!() };
    let now = sim.now;
    sim.client
        .handle_message(now, &encode_result(n, false, true, b"ab"));
    sim.client
        .handle_message(now, &encode_result(n, false, true, b"cd"));
    assert_eq!(
        sim.client.pending_count(),
        1,
        "still waiting for the last piece"
    );
    sim.client
        .handle_message(now, &encode_result(n, false, false, b"e"));
    sim.drive();
    let data = sim.events.iter().find_map(|e| match e {
        ClientEvent::DataResponse { id: i, data, .. } if *i == id => Some(data.clone()),
        _ => None,
    });
    assert_eq!(data.as_deref(), Some(&b"abcde"[..]));
    // Pieces, then an error: the call fails and the pieces are forgotten.
    let id = read_file(&mut sim);
    let RequestId::Int(n) = id else { panic!() };
    sim.client
        .handle_message(now, &encode_result(n, false, true, b"zz"));
    let error = format!(r#"{{"id":{n},"error":{{"code":-32600,"message":"grew"}}}}"#);
    sim.client.handle_message(now, error.as_bytes());
    sim.drive();
    assert!(sim.take_response(&id).is_err());
    assert!(sim.client.partial.is_empty(), "the pieces were dropped");
}

#[test]
fn a_result_in_pieces_over_max_result_bytes_fails_the_call() {
    use crate::protocol::binary::encode_result;
    let mut sim = binary_sim_with(ClientConfig {
        max_result_bytes: 5,
        ..ClientConfig::default()
    });
    let id = read_file(&mut sim);
    let RequestId::Int(n) = id else { panic!() };
    let now = sim.now;
    for piece in [&b"abc"[..], b"def", b"ghi"] {
        sim.client
            .handle_message(now, &encode_result(n, false, true, piece));
    }
    sim.client
        .handle_message(now, &encode_result(n, false, false, b"j"));
    sim.drive();
    match sim.take_response(&id) {
        Err(CallError::InvalidResult(m)) => {
            assert!(m.contains("max_result_bytes (5 bytes)"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.responses(&id), 0, "answered once");
    assert!(!sim
        .events
        .iter()
        .any(|e| matches!(e, ClientEvent::DataResponse { .. })));
    assert!(sim.client.partial.is_empty());
    assert_eq!(sim.client.pending_count(), 0);
}

/// Lossless output (PROTOCOL.md §5.11): the child is held instead of having its output evicted
/// while the client is away, and the client acknowledges as it delivers.
#[test]
fn lossless_output_holds_the_child_while_away_and_delivers_everything() {
    let config = ServerConfig {
        retained_chunks: 4,
        ..ServerConfig::default()
    };
    let mut sim = sim_with(true, config);
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    sim.drop_link(true);
    // The fake children keep writing when paused: the test writes only while not paused,
    // as a blocked child would.
    let mut written = 0;
    while !sim.procs[&key].paused {
        assert!(written < 10, "never held: {:?}", sim.take_commands());
        written += 1;
        sim.output(key, format!("{written},").as_bytes());
        sim.pump();
    }
    assert_eq!(written, 4, "held at the chunk window");
    sim.drive();
    assert!(sim.client.is_ready(), "resumed");
    assert!(!sim.procs[&key].paused, "the recovery read acknowledged");
    for n in written + 1..=40 {
        assert!(!sim.procs[&key].paused, "acks keep up: {n}");
        sim.output(key, format!("{n},").as_bytes());
        sim.pump();
        sim.drive();
    }
    sim.finish(key, ExitStatus::Code(0));
    sim.drive();
    let want: String = (1..=40).map(|n| format!("{n},")).collect();
    assert_eq!(sim.delivered_bytes("p"), want.as_bytes());
    assert_eq!(sim.count(|e| matches!(e, ClientEvent::Gap { .. })), 0);
}

/// A client that does not acknowledge (`acknowledge_output: false`, as `execd run --detach`)
/// leaves its output to a later reader: the server holds the child at the window even while
/// this client is connected and receiving, and evicts nothing.
#[test]
fn a_client_that_does_not_acknowledge_leaves_the_window_full() {
    let server = ServerConfig {
        retained_chunks: 4,
        ..ServerConfig::default()
    };
    let client = ClientConfig {
        client_name: "sim".to_owned(),
        acknowledge_output: false,
        ..ClientConfig::default()
    };
    let mut sim = Sim::with(server, client);
    sim.connect();
    sim.drive();
    let key = sim.start("p");
    let mut written = 0;
    while !sim.procs[&key].paused {
        assert!(written < 10, "never held: {:?}", sim.take_commands());
        written += 1;
        sim.output(key, format!("{written},").as_bytes());
        sim.pump();
        sim.drive();
    }
    assert_eq!(
        written, 4,
        "held at the chunk window though every chunk was delivered"
    );
    let want: String = (1..=4).map(|n| format!("{n},")).collect();
    assert_eq!(sim.delivered_bytes("p"), want.as_bytes());
    assert_eq!(sim.count(|e| matches!(e, ClientEvent::Gap { .. })), 0);
}
