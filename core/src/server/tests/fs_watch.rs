//! ext `fs/watch`: validation, the install round trip, coalescing on the simulated clock, the
//! per-connection bound, `fs/unwatch`, and watches dying with their connection.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::Harness;
use crate::protocol::{FsChangeKind, FsError, FsResult};
use crate::server::{Command, FsTicket, ServerConfig};
use crate::ConnId;

fn watch(id: i64, watch_id: u64, path: &str, recursive: bool) -> Value {
    json!({"id": id, "method": "fs/watch",
           "params": {"watchId": watch_id, "path": path, "recursive": recursive}})
}

impl Harness {
    /// The single `Command::FsWatch` the last input asked for: (ticket, path, recursive).
    fn take_watch(&mut self) -> (FsTicket, PathBuf, bool) {
        match self.take_commands().as_slice() {
            [Command::FsWatch {
                ticket,
                path,
                recursive,
                ..
            }] => (*ticket, path.clone(), *recursive),
            other => panic!("expected one fs/watch install, got {other:?}"),
        }
    }

    /// Installs watch `watch_id` on `path` and checks the `{}` answer.
    fn installed_watch(&mut self, conn: ConnId, watch_id: u64, path: &str) {
        self.send(conn, watch(90, watch_id, path, true));
        let (ticket, _, _) = self.take_watch();
        self.answer(ticket, Ok(FsResult::Empty(Default::default())));
        assert_eq!(self.response(conn, 90)["result"], json!({}));
    }

    fn answer(&mut self, ticket: FsTicket, result: Result<FsResult, FsError>) {
        let now = self.sim.now;
        self.sim.server.handle_fs(now, ticket, result);
        self.drain();
    }

    fn change(&mut self, conn: ConnId, watch_id: u64, kind: FsChangeKind, paths: &[&str]) {
        let now = self.sim.now;
        let paths = paths.iter().map(PathBuf::from).collect();
        self.sim
            .server
            .handle_fs_change(now, conn, watch_id, kind, paths);
        self.drain();
    }
}

fn changed(watch_id: u64, kind: &str, paths: &[&str], truncated: bool) -> Value {
    let paths: Vec<String> = paths.iter().map(|p| format!("file://{p}")).collect();
    json!({"method": "fs/changed",
           "params": {"watchId": watch_id, "kind": kind, "paths": paths, "truncated": truncated}})
}

#[test]
fn watch_installs_and_changes_are_coalesced_per_kind() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, watch(1, 7, "file:///w", true));
    let (ticket, path, recursive) = h.take_watch();
    assert_eq!((path, recursive), (PathBuf::from("/w"), true));
    h.answer(ticket, Ok(FsResult::Empty(Default::default())));
    assert_eq!(h.response(conn, 1)["result"], json!({}));

    h.change(conn, 7, FsChangeKind::Create, &["/w/a"]);
    h.change(conn, 7, FsChangeKind::Modify, &["/w/a"]);
    h.advance(Duration::from_millis(20));
    h.change(conn, 7, FsChangeKind::Create, &["/w/b", "/w/a"]);
    h.change(conn, 7, FsChangeKind::Modify, &["/w/a"]);
    assert!(h.take(conn).is_empty(), "nothing before the window closes");
    h.advance(Duration::from_millis(30));
    assert_eq!(
        h.take(conn),
        vec![
            changed(7, "create", &["/w/a", "/w/b"], false),
            changed(7, "modify", &["/w/a"], false),
        ]
    );
    // The next change opens a new window.
    h.change(conn, 7, FsChangeKind::Remove, &["/w/b"]);
    h.advance(Duration::from_millis(49));
    assert!(h.take(conn).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take(conn), vec![changed(7, "remove", &["/w/b"], false)]);
    assert_eq!(h.server.poll_timeout(), None);
}

#[test]
fn zero_window_sends_at_once_and_the_path_bound_truncates() {
    let mut h = Harness::with_config(ServerConfig {
        fs_watch_coalesce: Duration::ZERO,
        max_fs_watch_paths: 2,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    h.installed_watch(conn, 1, "file:///w");
    h.change(conn, 1, FsChangeKind::Create, &["/w/a", "/w/b", "/w/c"]);
    assert_eq!(
        h.take(conn),
        vec![changed(1, "create", &["/w/a", "/w/b"], true)]
    );
    h.change(conn, 1, FsChangeKind::Rescan, &[]);
    assert_eq!(h.take(conn), vec![changed(1, "rescan", &[], false)]);
}

#[test]
fn bad_watch_requests_are_refused_without_a_command() {
    let mut h = Harness::with_config(ServerConfig {
        max_fs_watches: 2,
        ..ServerConfig::default()
    });
    let (conn, _) = h.session();
    let r = h.call(conn, 1, "fs/watch", json!({"watchId": 1, "path": "/w"}));
    assert_eq!(r[0]["error"]["code"], -32602, "a bare path: {r:?}");
    let r = h.call(
        conn,
        2,
        "fs/watch",
        json!({"watchId": 1, "path": "file://otherhost/w"}),
    );
    assert_eq!(r[0]["error"]["code"], -32600);
    assert_eq!(
        r[0]["error"]["message"],
        "'file://otherhost/w' is invalid on 'linux'"
    );
    let r = h.call(
        conn,
        3,
        "fs/watch",
        json!({"watchId": "x", "path": "file:///w"}),
    );
    assert_eq!(r[0]["error"]["code"], -32602, "a string id: {r:?}");
    assert!(h.take_commands().is_empty());

    h.installed_watch(conn, 1, "file:///w");
    let r = h.call(
        conn,
        4,
        "fs/watch",
        json!({"watchId": 1, "path": "file:///v"}),
    );
    assert_eq!(
        r[0]["error"]["message"],
        "fs/watch id 1 is already live on this connection"
    );
    h.installed_watch(conn, 2, "file:///w");
    let r = h.call(
        conn,
        5,
        "fs/watch",
        json!({"watchId": 3, "path": "file:///v"}),
    );
    assert_eq!(r[0]["error"]["code"], -32600);
    assert_eq!(
        r[0]["error"]["message"],
        "too many fs/watch watches on this connection (limit maxFsWatches = 2)"
    );
    assert!(h.take_commands().is_empty());
    // Another connection has its own bound.
    let (other, _) = h.session();
    h.installed_watch(other, 3, "file:///v");
    assert_eq!(h.server.fs_watch_count(conn), 2);
}

#[test]
fn a_failed_install_is_answered_and_frees_the_id() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, watch(1, 4, "file:///missing", false));
    let (ticket, _, _) = h.take_watch();
    let not_found = std::io::Error::from_raw_os_error(2);
    h.answer(ticket, Err(FsError::from_io(&not_found)));
    let r = h.response(conn, 1);
    assert_eq!(r["error"]["code"], -32004);
    assert_eq!(
        r["error"]["message"],
        "No such file or directory (os error 2)"
    );
    assert_eq!(h.server.fs_watch_count(conn), 0);
    h.change(conn, 4, FsChangeKind::Create, &["/missing"]);
    h.advance(Duration::from_secs(1));
    assert!(h.take(conn).is_empty());
}

#[test]
fn unwatch_stops_notifications_and_drops_the_open_window() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.installed_watch(conn, 9, "file:///w");
    h.change(conn, 9, FsChangeKind::Create, &["/w/a"]);
    let r = h.call(conn, 2, "fs/unwatch", json!({"watchId": 9}));
    assert_eq!(r, vec![json!({"id": 2, "result": {}})]);
    assert_eq!(
        h.take_commands(),
        vec![Command::FsUnwatch { conn, watch_id: 9 }]
    );
    assert_eq!(h.server.poll_timeout(), None, "the window's timer is gone");
    h.change(conn, 9, FsChangeKind::Create, &["/w/b"]);
    h.advance(Duration::from_secs(1));
    assert!(h.take(conn).is_empty());
    // Unknown ids are fine, as fs/close.
    let r = h.call(conn, 3, "fs/unwatch", json!({"watchId": 9}));
    assert_eq!(r[0]["result"], json!({}));
    assert!(h.take_commands().is_empty());
}

#[test]
fn unwatch_while_installing_removes_the_watch_once_installed() {
    let mut h = Harness::new();
    let (conn, _) = h.session();
    h.send(conn, watch(1, 2, "file:///w", false));
    let (ticket, _, _) = h.take_watch();
    let r = h.call(conn, 2, "fs/unwatch", json!({"watchId": 2}));
    assert_eq!(r[0]["result"], json!({}));
    assert!(h.take_commands().is_empty());
    h.answer(ticket, Ok(FsResult::Empty(Default::default())));
    h.response(conn, 1);
    assert_eq!(
        h.take_commands(),
        vec![Command::FsUnwatch { conn, watch_id: 2 }]
    );
}

#[test]
fn watches_die_with_their_connection() {
    let mut h = Harness::new();
    let (conn, sid) = h.session();
    h.installed_watch(conn, 1, "file:///w");
    h.change(conn, 1, FsChangeKind::Create, &["/w/a"]);
    h.disconnect(conn);
    assert_eq!(h.take_commands(), vec![Command::FsCloseConnection { conn }]);
    let next = h.connect();
    h.call(
        next,
        1,
        "initialize",
        json!({"clientName": "t", "resumeSessionId": sid}),
    );
    h.advance(Duration::from_secs(1));
    h.change(conn, 1, FsChangeKind::Create, &["/w/b"]);
    h.advance(Duration::from_secs(1));
    assert!(h.take(next).is_empty(), "a resumed session has no watches");
    assert_eq!(h.server.fs_watch_count(conn), 0);
}

#[test]
fn initialize_advertises_fs_watch() {
    let mut h = Harness::new();
    let conn = h.connect();
    let r = h.call(conn, 1, "initialize", json!({"clientName": "t"}));
    assert_eq!(r[0]["result"]["capabilities"]["fsWatch"], true);
}
