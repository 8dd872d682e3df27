//! ext `fs/watch`: real inotify watches on real temporary directories, over loopback
//! WebSockets and through both executors. Every await has a timeout.

use std::path::PathBuf;
use std::sync::Arc;

use execd_core::protocol::FsChangeKind;
use execd_core::ServerConfig;
use serde_json::{json, Value};

use super::fs::error_code;
use super::server::{start_server, Client};
use super::within;
use super::TempDir;
use crate::runtime::Runtime;
use crate::Executor;

/// Collects `fs/changed` notifications until watch `watch_id` reports `uri`; returns every
/// notification seen (of every watch), in order.
async fn until_reported(c: &mut Client, watch_id: u64, uri: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let n = c.notification().await;
        assert_eq!(n["method"], "fs/changed", "{n}");
        let done = n["params"]["watchId"] == watch_id && paths(&n).iter().any(|p| p == uri);
        seen.push(n);
        if done {
            return seen;
        }
    }
}

fn paths(n: &Value) -> Vec<String> {
    n["params"]["paths"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every path watch `watch_id` reported in `seen`.
fn reported_by(seen: &[Value], watch_id: u64) -> Vec<String> {
    seen.iter()
        .filter(|n| n["params"]["watchId"] == watch_id)
        .flat_map(paths)
        .collect()
}

/// Scenario.
pub async fn a_file_created_after_the_watch_is_reported_recursively_or_not(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    std::fs::create_dir(dir.path("sub")).expect("mkdir");
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let r = c
        .call(
            "fs/watch",
            json!({"watchId": 1, "path": dir.uri(""), "recursive": false}),
        )
        .await;
    assert_eq!(r["result"], json!({}), "{r}");
    let r = c
        .call(
            "fs/watch",
            json!({"watchId": 2, "path": dir.uri(""), "recursive": true}),
        )
        .await;
    assert_eq!(r["result"], json!({}), "{r}");

    std::fs::write(dir.path("sub/deep"), b"x").expect("write");
    std::fs::write(dir.path("top"), b"y").expect("write");
    let mut seen = until_reported(&mut c, 1, &dir.uri("top")).await;
    if !reported_by(&seen, 2).contains(&dir.uri("top")) {
        seen.extend(until_reported(&mut c, 2, &dir.uri("top")).await);
    }
    let create = seen
        .iter()
        .find(|n| n["params"]["watchId"] == 1)
        .expect("watch 1 reported");
    assert_eq!(create["params"]["kind"], "create", "{create}");
    assert!(
        reported_by(&seen, 2).contains(&dir.uri("sub/deep")),
        "the recursive watch sees the subdirectory: {seen:?}"
    );
    assert!(
        !reported_by(&seen, 1).contains(&dir.uri("sub/deep")),
        "the plain watch sees direct entries only: {seen:?}"
    );
    // A directory created after the recursive watch is watched too.
    std::fs::create_dir(dir.path("later")).expect("mkdir");
    // Let the watcher add the new directory before writing into it.
    let _ = until_reported(&mut c, 2, &dir.uri("later")).await;
    std::fs::write(dir.path("later/f"), b"z").expect("write");
    let _ = until_reported(&mut c, 2, &dir.uri("later/f")).await;
}

/// Scenario.
pub async fn unwatch_stops_notifications_and_the_limit_is_named(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    let mut config = ServerConfig::default();
    config.max_fs_watches = 2;
    let server = start_server(rt, config).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let r = c
        .call(
            "fs/watch",
            json!({"watchId": 5, "path": dir.uri("missing")}),
        )
        .await;
    assert_eq!(error_code(&r), -32004, "{r}");
    for id in [1, 2] {
        let r = c
            .call("fs/watch", json!({"watchId": id, "path": dir.uri("")}))
            .await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    let r = c
        .call("fs/watch", json!({"watchId": 3, "path": dir.uri("")}))
        .await;
    assert_eq!(error_code(&r), -32600);
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("maxFsWatches = 2")),
        "{r}"
    );
    std::fs::write(dir.path("a"), b"").expect("write");
    let _ = until_reported(&mut c, 1, &dir.uri("a")).await;
    let r = c.call("fs/unwatch", json!({"watchId": 1})).await;
    assert_eq!(r["result"], json!({}));
    c.notifications.clear();
    // Watch 2 shares the directory: it keeps working while watch 1 is silent.
    std::fs::write(dir.path("b"), b"").expect("write");
    let seen = until_reported(&mut c, 2, &dir.uri("b")).await;
    assert!(reported_by(&seen, 1).is_empty(), "{seen:?}");
    // The freed slot can be used again.
    let r = c
        .call("fs/watch", json!({"watchId": 3, "path": dir.uri("b")}))
        .await;
    assert_eq!(r["result"], json!({}), "{r}");
}

/// Scenario.
pub async fn executors_stream_watch_changes(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt, ServerConfig::default()).await;
    let (remote, local) = super::client::remote_and_local(rt, &server.url).await;
    let executors: [&dyn Executor; 2] = [&remote, &local];
    for executor in executors {
        let dir = TempDir::new();
        std::fs::create_dir(dir.path("sub")).expect("mkdir");
        let missing = within(rt, executor.watch(&dir.path("nope"), false)).await;
        assert!(
            matches!(&missing, Err(crate::Error::Rpc(e)) if e.code == -32004),
            "{missing:?}"
        );
        let mut watch = within(rt, executor.watch(&dir.0, true))
            .await
            .expect("watch");
        std::fs::write(dir.path("sub/new"), b"x").expect("write");
        let want: PathBuf = dir.path("sub/new");
        loop {
            let change = within(rt, watch.next_change()).await.expect("a change");
            if change.paths.contains(&want) {
                assert_eq!(change.kind, FsChangeKind::Create, "{change:?}");
                break;
            }
        }
        within(rt, watch.unwatch()).await.expect("unwatch");
    }
}
