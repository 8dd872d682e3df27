//! `environment/*`, `fs/*` and the `process/start` child environment, driven through the
//! shared harness with commands answered by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::Harness;
use crate::protocol::fs::{ReadFileResult, WatchMissingResult};
use crate::protocol::{
    Base64Bytes, EnvironmentCapabilities, EnvironmentInfo, FsError, FsErrorKind, FsOp, FsResult,
    PathUri, ShellInfo,
};
use crate::server::{Command, FsTicket, ServerConfig};
use crate::ConnId;

/// A complete `EnvironmentInfo` as a runtime would give it.
pub(super) fn sample_info() -> EnvironmentInfo {
    let uri = |s: &str| PathUri::parse(s).expect("valid");
    EnvironmentInfo {
        shell: ShellInfo {
            name: "bash".into(),
            path: "/bin/bash".into(),
        },
        executor_version: "execd 0.0.0".into(),
        provider_id: format!("sha256:{}", "ab".repeat(32)),
        cwd: uri("file:///w"),
        user_home_dir: Some(uri("file:///root")),
        platform_os: "linux".into(),
        prepend_path_dirs: vec![],
        temporary_directories: vec![],
        temp_dir: uri("file:///tmp"),
        capabilities: EnvironmentCapabilities::execd(),
    }
}

impl Harness {
    /// The single `Command::Fs` the last input asked for.
    pub(super) fn take_fs(&mut self) -> (FsTicket, ConnId, FsOp) {
        // The piece credits of a binary `fs/readFile` are not the point here.
        let commands: Vec<Command> = self
            .take_commands()
            .into_iter()
            .filter(|c| !matches!(c, Command::FsPull { .. }))
            .collect();
        match commands.as_slice() {
            [Command::Fs {
                ticket, conn, op, ..
            }] => (*ticket, *conn, op.clone()),
            other => panic!("expected one fs command, got {other:?}"),
        }
    }

    pub(super) fn fs_answer(&mut self, ticket: FsTicket, result: Result<FsResult, FsError>) {
        let now = self.sim.now;
        self.sim.server.handle_fs(now, ticket, result);
        self.drain();
    }

    fn watch_event(&mut self, conn: ConnId, watch_id: u64) {
        let now = self.sim.now;
        self.sim.server.handle_fs_watch_event(now, conn, watch_id);
        self.drain();
    }
}

fn read_file(id: i64, path: &str) -> Value {
    json!({"id": id, "method": "fs/readFile", "params": {"path": path}})
}

// ----- environment ----------------------------------------------------------------------------

#[test]
fn environment_methods_before_the_handshake_use_the_reference_words() {
    let mut h = Harness::new();
    let conn = h.connect();
    let r = h.call(conn, 1, "environment/info", json!(null));
    assert_eq!(r[0]["error"]["code"], -32600);
    assert_eq!(
        r[0]["error"]["message"],
        "client must call initialize before using environment info methods"
    );
    h.call(conn, 2, "initialize", json!({"clientName": "t"}));
    let r = h.call(conn, 3, "environment/status", json!({}));
    assert_eq!(
        r[0]["error"]["message"],
        "client must send initialized before using environment status methods"
    );
    let r = h.call(conn, 4, "fs/readFile", json!({"path": "file:///x"}));
    assert_eq!(
        r[0]["error"]["message"],
        "client must send initialized before using filesystem methods"
    );
}

#[test]
fn environment_info_is_the_configured_info_and_status_is_ready() {
    let mut h = Harness::with_config(ServerConfig {
        environment_info: Some(sample_info()),
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let r = h.call(conn, 1, "environment/info", json!({}));
    assert_eq!(
        r[0]["result"],
        serde_json::to_value(sample_info()).expect("serializes")
    );
    assert_eq!(r[0]["result"]["capabilities"]["fsWatchMissing"], true);
    let r = h.call(conn, 2, "environment/status", json!(null));
    assert_eq!(r[0]["result"], json!({"status": "ready"}));
    let r = h.call(conn, 3, "environment/info", json!({"x": 1}));
    assert_eq!(r[0]["error"]["code"], -32602);
    assert_eq!(r[0]["error"]["message"], "invalid type: map, expected unit");
}

#[test]
fn environment_info_without_configured_info_is_internal_error() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let r = h.call(conn, 1, "environment/info", json!(null));
    assert_eq!(r[0]["error"]["code"], -32603);
}

// ----- fs requests ----------------------------------------------------------------------------

#[test]
fn fs_request_becomes_a_command_and_the_answer_a_response() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, read_file(7, "file:///tmp/a%20b"));
    assert!(h.take(conn).is_empty(), "answered after the runtime");
    let (ticket, c, op) = h.take_fs();
    assert_eq!(c, conn);
    assert!(
        matches!(op, FsOp::ReadFile { ref path, follow_symlinks: true, .. } if path.as_path() == std::path::Path::new("/tmp/a b"))
    );
    assert_eq!(h.server.pending_fs_count(), 1);
    h.fs_answer(
        ticket,
        Ok(FsResult::ReadFile(ReadFileResult {
            data_base64: Base64Bytes(vec![0, 255, 1]),
        })),
    );
    let r = h.response(conn, 7);
    assert_eq!(r["result"], json!({"dataBase64": "AP8B"}));
    assert_eq!(h.server.pending_fs_count(), 0);
    // A second answer for the same ticket is ignored.
    h.fs_answer(ticket, Ok(FsResult::Empty(Default::default())));
    assert!(h.take(conn).is_empty());
}

#[test]
fn fs_errors_keep_their_codes() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    for (id, kind, code) in [
        (1, FsErrorKind::NotFound, -32004),
        (2, FsErrorKind::PermissionDenied, -32600),
        (3, FsErrorKind::Other, -32603),
    ] {
        h.send(conn, read_file(id, "file:///nope"));
        let (ticket, _, _) = h.take_fs();
        h.fs_answer(ticket, Err(FsError::new(kind, "boom (os error 2)")));
        let r = h.response(conn, id);
        assert_eq!(r["error"]["code"], code);
        assert_eq!(r["error"]["message"], "boom (os error 2)");
    }
}

#[test]
fn bad_fs_inputs_are_answered_without_a_command() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let cases = [
        ("fs/readFile", json!({"path": "/etc/hostname"}), -32602),
        ("fs/readFile", json!({"path": "file://otherhost/x"}), -32600),
        (
            "fs/writeFile",
            json!({"path": "file:///tmp/x", "dataBase64": "!!"}),
            -32600,
        ),
        (
            "fs/readBlock",
            json!({"handleId": "h", "offset": 0, "len": 1_048_577}),
            -32600,
        ),
        (
            "fs/open",
            json!({"handleId": "x".repeat(33), "path": "file:///tmp/x"}),
            -32600,
        ),
        (
            "fs/copy",
            json!({"sourcePath": "file:///a", "destinationPath": "file:///b"}),
            -32602,
        ),
    ];
    for (i, (method, params, code)) in cases.into_iter().enumerate() {
        let id = i64::try_from(i).expect("small");
        let r = h.call(conn, id, method, params);
        assert_eq!(r[0]["error"]["code"], code, "{method}: {r:?}");
    }
    assert!(h.take_commands().is_empty());
    let r = h.call(conn, 99, "environment/status", json!(null));
    assert_eq!(
        r[0]["result"]["status"], "ready",
        "the connection still works"
    );
}

#[test]
fn in_flight_fs_requests_are_bounded_per_connection() {
    let mut h = Harness::with_config(ServerConfig {
        max_fs_in_flight: 2,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let (other, _) = h.session();
    h.send(conn, read_file(1, "file:///a"));
    h.send(conn, read_file(2, "file:///b"));
    let tickets: Vec<FsTicket> = h
        .take_commands()
        .into_iter()
        .map(|c| match c {
            Command::Fs { ticket, .. } => ticket,
            other => panic!("{other:?}"),
        })
        .collect();
    let r = h.call(conn, 3, "fs/readFile", json!({"path": "file:///c"}));
    assert_eq!(r[0]["error"]["code"], -32600);
    assert_eq!(
        r[0]["error"]["message"],
        "too many fs requests in flight on this connection (limit 2)"
    );
    // Another connection has its own bound.
    h.send(other, read_file(4, "file:///d"));
    assert_eq!(h.take_commands().len(), 1);
    h.fs_answer(tickets[0], Ok(FsResult::Empty(Default::default())));
    h.response(conn, 1);
    h.send(conn, read_file(5, "file:///e"));
    h.take_fs();
}

#[test]
fn whole_file_reads_run_a_few_at_a_time_and_not_while_congested() {
    let mut h = Harness::with_config(ServerConfig {
        max_whole_file_reads: 2,
        congestion_high_bytes: 1000,
        congestion_low_bytes: 100,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let tickets = |h: &mut Harness| -> Vec<FsTicket> {
        h.take_commands()
            .into_iter()
            .filter_map(|c| match c {
                Command::Fs { ticket, .. } => Some(ticket),
                _ => None,
            })
            .collect()
    };
    for id in 1..=4 {
        h.send(conn, read_file(id, "file:///a"));
    }
    // Other fs requests are not held behind them.
    h.send(
        conn,
        json!({"id": 9, "method": "fs/getMetadata", "params": {"path": "file:///a"}}),
    );
    let started = tickets(&mut h);
    assert_eq!(started.len(), 3, "two reads and the getMetadata start");
    h.fs_answer(
        started[0],
        Ok(FsResult::ReadFile(ReadFileResult {
            data_base64: Base64Bytes(vec![1]),
        })),
    );
    assert_eq!(h.response(conn, 1)["result"]["dataBase64"], "AQ==");
    let third = tickets(&mut h);
    assert_eq!(third.len(), 1, "an answer lets the next read start");
    // A big answer the peer does not take congests the connection: nothing more starts.
    h.sim.stall_raw(conn);
    h.fs_answer(
        started[1],
        Ok(FsResult::ReadFile(ReadFileResult {
            data_base64: Base64Bytes(vec![0; 2000]),
        })),
    );
    assert!(tickets(&mut h).is_empty(), "no read starts while congested");
    h.sim.flush_raw(conn);
    assert_eq!(tickets(&mut h).len(), 1, "the fourth starts once it drains");
    h.take(conn);
}

#[test]
fn disconnect_drops_handles_and_late_answers() {
    let mut h = Harness::new();
    let (conn, sid) = h.session();
    h.send(
        conn,
        json!({"id": 1, "method": "fs/open", "params": {"handleId": "h", "path": "file:///tmp/f"}}),
    );
    let (ticket, _, _) = h.take_fs();
    h.disconnect(conn);
    assert_eq!(h.take_commands(), vec![Command::FsCloseConnection { conn }]);
    // The session is resumed elsewhere; the late answer reaches nobody.
    let next = h.connect();
    let r = h.call(
        next,
        2,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    assert!(r[0]["result"]["sessionId"].is_string());
    h.fs_answer(ticket, Ok(FsResult::Empty(Default::default())));
    assert!(h.take(next).is_empty());
    assert!(h.take(conn).is_empty());
    assert_eq!(h.server.pending_fs_count(), 0);
}

#[test]
fn a_connection_that_never_used_fs_closes_without_fs_command() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.disconnect(conn);
    assert!(h.take_commands().is_empty());
}

// ----- fs/watchMissing ------------------------------------------------------------------------

fn watch(id: i64, watch_id: u64, missing: &[&str]) -> Value {
    json!({"id": id, "method": "fs/watchMissing",
           "params": {"watchId": watch_id, "missing": missing, "present": "file:///w"}})
}

#[test]
fn watch_missing_installs_fires_once_and_clears() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, watch(1, 5, &["file:///w/a", "file://otherhost/b"]));
    let ticket = match h.take_commands().as_slice() {
        [Command::WatchMissing {
            ticket,
            conn: c,
            watch_id: 5,
            missing,
            present,
        }] => {
            assert_eq!(*c, conn);
            assert_eq!(
                missing,
                &vec![PathBuf::from("/w/a")],
                "foreign paths dropped"
            );
            assert_eq!(present.as_deref(), Some(std::path::Path::new("/w")));
            *ticket
        }
        other => panic!("{other:?}"),
    };
    h.fs_answer(
        ticket,
        Ok(FsResult::WatchMissing(WatchMissingResult {
            watching: true,
        })),
    );
    assert_eq!(h.response(conn, 1)["result"], json!({"watching": true}));
    // A live id is not installed twice.
    let r = h.call(
        conn,
        2,
        "fs/watchMissing",
        watch(0, 5, &["file:///w/c"])["params"].clone(),
    );
    assert_eq!(r[0]["result"], json!({"watching": false}));
    assert!(h.take_commands().is_empty());
    h.watch_event(conn, 5);
    assert_eq!(
        h.take(conn),
        vec![json!({"method": "fs/missingChanged", "params": {"watchId": 5}})]
    );
    h.watch_event(conn, 5);
    assert!(h.take(conn).is_empty(), "a watch fires once");
    // The id is free again; an empty list clears it.
    h.send(conn, watch(3, 5, &["file:///w/a"]));
    let ticket = match h.take_commands().as_slice() {
        [Command::WatchMissing { ticket, .. }] => *ticket,
        other => panic!("{other:?}"),
    };
    h.fs_answer(
        ticket,
        Ok(FsResult::WatchMissing(WatchMissingResult {
            watching: true,
        })),
    );
    h.response(conn, 3);
    let r = h.call(
        conn,
        4,
        "fs/watchMissing",
        json!({"watchId": 5, "missing": []}),
    );
    assert_eq!(r[0]["result"], json!({"watching": false}));
    assert_eq!(
        h.take_commands(),
        vec![Command::UnwatchMissing { conn, watch_id: 5 }]
    );
    h.watch_event(conn, 5);
    assert!(h.take(conn).is_empty(), "a cleared watch is silent");
}

#[test]
fn watch_missing_not_watching_frees_the_id_and_foreign_only_is_false() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    let r = h.call(
        conn,
        1,
        "fs/watchMissing",
        json!({"watchId": 1, "missing": ["file://otherhost/x"]}),
    );
    assert_eq!(r[0]["result"], json!({"watching": false}));
    assert!(h.take_commands().is_empty());
    h.send(conn, watch(2, 1, &["file:///w/exists"]));
    let ticket = match h.take_commands().as_slice() {
        [Command::WatchMissing { ticket, .. }] => *ticket,
        other => panic!("{other:?}"),
    };
    h.fs_answer(
        ticket,
        Ok(FsResult::WatchMissing(WatchMissingResult {
            watching: false,
        })),
    );
    assert_eq!(h.response(conn, 2)["result"], json!({"watching": false}));
    h.send(conn, watch(3, 1, &["file:///w/other"]));
    assert_eq!(h.take_commands().len(), 1, "the id was freed");
    let r = h.call(
        conn,
        4,
        "fs/watchMissing",
        json!({"watchId": 1, "missing": ["/bare"]}),
    );
    assert_eq!(r[0]["error"]["code"], -32602);
}

// ----- process/start environment ---------------------------------------------------------------

fn env_harness() -> Harness {
    let host_env: BTreeMap<String, String> = [
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/root"),
        ("MY_SECRET_KEY", "s"),
        ("CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN", "t"),
        ("LANG", "C"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Harness::with_config(ServerConfig {
        host_env,
        ..ServerConfig::default()
    })
}

fn spawned_env(h: &mut Harness) -> BTreeMap<String, String> {
    match h.take_commands().as_slice() {
        [Command::Spawn { spec, .. }] => spec.env.clone(),
        other => panic!("expected a spawn, got {other:?}"),
    }
}

fn start(h: &mut Harness, conn: ConnId, id: i64, extra: Value) -> Vec<Value> {
    let mut params = json!({"processId": format!("p{id}"), "argv": ["true"], "cwd": "file:///",
                            "env": {"TERM": "dumb", "NODE_REPL_AUTH_TOKEN": "x"}});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    h.call(conn, id, "process/start", params)
}

#[test]
fn env_policy_builds_the_child_environment_from_the_host_env() {
    let mut h = env_harness();
    let (conn, _) = h.session();
    let policy = json!({"envPolicy": {"inherit": "all", "ignoreDefaultExcludes": false,
        "exclude": ["home"], "set": {"A": "1"}, "includeOnly": []}});
    start(&mut h, conn, 1, policy);
    let env = spawned_env(&mut h);
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(names, ["A", "LANG", "PATH", "TERM"]);
    assert_eq!(env["PATH"], "/usr/bin:/bin");

    start(&mut h, conn, 2, json!({"envPolicy": null}));
    let env = spawned_env(&mut h);
    assert_eq!(
        env.keys().map(String::as_str).collect::<Vec<_>>(),
        ["TERM"],
        "no policy: exactly env, always-stripped names removed"
    );
}

#[test]
fn bad_env_and_policies_are_invalid_params() {
    let mut h = env_harness();
    let (conn, _) = h.session();
    let r = start(&mut h, conn, 1, json!({"env": {"A=B": "1"}}));
    assert_eq!(r[0]["error"]["code"], -32602);
    assert!(
        r[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("contains '='")),
        "{r:?}"
    );
    let r = start(
        &mut h,
        conn,
        2,
        json!({"envPolicy": {"inherit": "all", "ignoreDefaultExcludes": true,
                             "exclude": [], "includeOnly": []}}),
    );
    assert_eq!(r[0]["error"]["code"], -32602);
    assert!(r[0]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("missing field `set`")));
    let r = start(&mut h, conn, 3, json!({"enforceManagedNetwork": true}));
    assert_eq!(r[0]["error"]["code"], -32602);
    let r = start(
        &mut h,
        conn,
        4,
        json!({"metadata": {"threadId": "t"}, "arg0": null, "managedNetwork": null,
               "enforceManagedNetwork": false, "sandbox": null}),
    );
    assert!(r.is_empty(), "Codex's extra fields are accepted: {r:?}");
    spawned_env(&mut h);
    assert_eq!(h.server.process_count(), 1);
}
