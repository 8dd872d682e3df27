//! `environment/*`, `process/start` with `envPolicy`, and the `fs/*` methods over real loopback
//! WebSockets and real temporary directories. Every await has a timeout.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_core::{PathUri, ServerConfig};
use serde_json::{json, Value};

use super::server::{start_server, Client};
use super::{within, TempDir};
use crate::runtime::Runtime;
use crate::Executor;

impl TempDir {
    pub(super) fn uri(&self, name: &str) -> String {
        PathUri::from_host_path(&self.path(name))
            .expect("absolute")
            .as_str()
            .to_owned()
    }
}

pub(super) fn error_code(r: &Value) -> i64 {
    r["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("an error: {r}"))
}

/// Scenario.
pub async fn environment_info_and_status_describe_the_host(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt, ServerConfig::default()).await;
    let mut c = Client::connect(rt, &server.url).await;
    let init = c.initialize(None).await;
    let r = c.call("environment/info", json!(null)).await;
    let info = &r["result"];
    assert_eq!(
        init["result"]["environmentInfo"], *info,
        "initialize carries the same"
    );
    assert_eq!(info["platformOs"], std::env::consts::OS);
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(
        info["cwd"],
        PathUri::from_host_path(&cwd).expect("absolute").as_str()
    );
    assert!(info["providerId"]
        .as_str()
        .is_some_and(|p| p.starts_with("sha256:")));
    assert!(info["shell"]["path"]
        .as_str()
        .is_some_and(|p| p.starts_with('/')));
    assert_eq!(info["capabilities"]["fsWatchMissing"], true);
    assert_eq!(info["capabilities"]["fileWriteStreaming"], true);
    assert_eq!(info["capabilities"]["sandboxedFileStreaming"], false);
    assert_eq!(info.as_object().map(|o| o.len()), Some(10), "{info}");
    let r = c.call("environment/status", json!({})).await;
    assert_eq!(r["result"], json!({"status": "ready"}));
}

/// Scenario.
pub async fn env_policy_children_see_set_vars_and_inherit_path(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
    let host_env: BTreeMap<String, String> = [
        ("PATH", path.as_str()),
        ("EXCLUDED_ONE", "x"),
        ("MY_API_TOKEN", "t"),
        ("KEEP", "k"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut core = ServerConfig::default();
    core.host_env = host_env;
    let server = start_server(rt, core).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let script = r#"echo "$SET_VAR|$PATH|${EXCLUDED_ONE-unset}|${MY_API_TOKEN-unset}|$KEEP|$E""#;
    let r = c
        .call(
            "process/start",
            json!({"processId": "p", "argv": ["sh", "-c", script], "cwd": "file:///tmp",
                   "env": {"E": "env"}, "tty": false,
                   "envPolicy": {"inherit": "all", "ignoreDefaultExcludes": false,
                                 "exclude": ["excluded_*"], "set": {"SET_VAR": "s"},
                                 "includeOnly": []}}),
        )
        .await;
    assert!(r.get("result").is_some(), "{r}");
    let run = c.until_closed("p").await;
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!("s|{path}|unset|unset|k|env\n")
    );
    let r = c
        .start("q", &["true"], json!({"env": {"BAD=NAME": "1"}}))
        .await;
    assert_eq!(error_code(&r), -32602);
}

/// Scenario.
pub async fn files_round_trip_byte_exact_whole_and_in_blocks(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    // Every byte value, whole-file.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = c
        .call(
            "fs/writeFile",
            json!({"path": dir.uri("bin"), "dataBase64": STANDARD.encode(&bytes)}),
        )
        .await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(std::fs::read(dir.path("bin")).expect("written"), bytes);
    let r = c.call("fs/readFile", json!({"path": dir.uri("bin")})).await;
    let back = STANDARD
        .decode(r["result"]["dataBase64"].as_str().expect("data"))
        .expect("base64");
    assert_eq!(back, bytes);
    // 2 MiB written and read in 1 MiB blocks.
    const MIB: usize = 1 << 20;
    let big: Vec<u8> = (0..2 * MIB).map(|i| (i * 7 % 251) as u8).collect();
    let r = c
        .call(
            "fs/open",
            json!({"handleId": "w", "path": dir.uri("big"), "mode": "replace"}),
        )
        .await;
    assert_eq!(r["result"], json!({"handleId": "w"}), "{r}");
    // Blocks in any order.
    for i in [1usize, 0] {
        let r = c
            .call(
                "fs/writeBlock",
                json!({"handleId": "w", "offset": i * MIB,
                       "chunk": STANDARD.encode(&big[i * MIB..(i + 1) * MIB])}),
            )
            .await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    c.call("fs/close", json!({"handleId": "w"})).await;
    c.call(
        "fs/open",
        json!({"handleId": "r", "path": dir.uri("big"), "mode": "read"}),
    )
    .await;
    let mut read = Vec::new();
    let mut eofs = Vec::new();
    for i in 0..3 {
        let r = c
            .call(
                "fs/readBlock",
                json!({"handleId": "r", "offset": i * MIB, "len": MIB}),
            )
            .await;
        read.extend(
            STANDARD
                .decode(r["result"]["chunk"].as_str().expect("chunk"))
                .expect("base64"),
        );
        eofs.push(r["result"]["eof"].as_bool().expect("eof"));
    }
    assert_eq!(eofs, [false, false, true]);
    assert!(read == big, "2 MiB read back exactly");
    // Whole: a 2.7 MiB answer goes out in WebSocket fragments.
    let r = c.call("fs/readFile", json!({"path": dir.uri("big")})).await;
    let whole = STANDARD
        .decode(r["result"]["dataBase64"].as_str().expect("data"))
        .expect("base64");
    assert!(whole == big, "2 MiB read back whole");
    let r = c.call("fs/close", json!({"handleId": "r"})).await;
    assert_eq!(r["result"], json!({}));
    let r = c.call("fs/close", json!({"handleId": "r"})).await;
    assert_eq!(r["result"], json!({}), "close is idempotent");
}

/// Scenario.
pub async fn handles_are_bounded_at_128_per_connection(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    std::fs::write(dir.path("f"), b"x").expect("write");
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    for i in 0..128 {
        let r = c
            .call(
                "fs/open",
                json!({"handleId": format!("h{i}"), "path": dir.uri("f")}),
            )
            .await;
        assert!(r.get("result").is_some(), "{i}: {r}");
    }
    let r = c
        .call("fs/open", json!({"handleId": "h128", "path": dir.uri("f")}))
        .await;
    assert_eq!(error_code(&r), -32600);
    assert_eq!(
        r["error"]["message"],
        "at most 128 file handles may be open per connection"
    );
    // Another connection has its own table; handles die with their connection.
    let (mut other, _) = Client::session(rt, &server.url).await;
    let r = other
        .call(
            "fs/readBlock",
            json!({"handleId": "h0", "offset": 0, "len": 1}),
        )
        .await;
    assert_eq!(error_code(&r), -32004);
    c.call("fs/close", json!({"handleId": "h5"})).await;
    let r = c
        .call("fs/open", json!({"handleId": "h128", "path": dir.uri("f")}))
        .await;
    assert!(r.get("result").is_some(), "{r}");
}

/// `fs/watchMissing` watch `id` with `params` (`missing`, `present`); its `watching`.
async fn watch_missing(c: &mut Client, id: u64, mut params: Value) -> bool {
    params["watchId"] = json!(id);
    let r = c.call("fs/watchMissing", params).await;
    r["result"]["watching"]
        .as_bool()
        .unwrap_or_else(|| panic!("watch {id}: {r}"))
}

/// The next notification is `fs/missingChanged` for watch `id`.
async fn expect_fired(c: &mut Client, id: u64) {
    let n = c.notification().await;
    assert_eq!(
        n,
        json!({"method": "fs/missingChanged", "params": {"watchId": id}}),
        "watch {id}"
    );
}

/// No notification arrives within three poll periods; the connection keeps working.
async fn expect_quiet(rt: &Arc<dyn Runtime>, c: &mut Client) {
    super::sleep(rt, crate::fs_service::WATCH_POLL * 3).await;
    let r = c.call("environment/status", json!(null)).await;
    assert_eq!(r["result"]["status"], "ready");
    assert!(c.notifications.is_empty(), "{:?}", c.notifications);
}

/// Scenario.
pub async fn watch_missing_fires_when_the_path_appears(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    std::fs::write(dir.path("exists"), b"").expect("write");
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let params = json!({"missing": [dir.uri("exists")]});
    assert!(!watch_missing(&mut c, 9, params).await, "already there");
    let params = json!({"missing": [dir.uri("later")], "present": dir.uri("exists")});
    assert!(watch_missing(&mut c, 7, params).await);
    std::fs::write(dir.path("later"), b"now").expect("create");
    expect_fired(&mut c, 7).await;
    // Cleared watches stay silent; the connection keeps working.
    assert!(watch_missing(&mut c, 8, json!({"missing": [dir.uri("x")]})).await);
    assert!(!watch_missing(&mut c, 8, json!({"missing": []})).await);
    std::fs::write(dir.path("x"), b"").expect("create");
    expect_quiet(rt, &mut c).await;
}

/// Scenario: each `fs/watchMissing` watch fires on its own change only: a parent directory
/// created, a sibling of another watch's path created in a directory both watch, `present`
/// changed, the watched ancestor removed.
pub async fn watch_missing_fires_for_parents_present_and_shared_directories(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    for d in ["shared", "repo", "gone"] {
        std::fs::create_dir(dir.path(d)).expect("mkdir");
    }
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let watches = [
        (1, json!({"missing": [dir.uri("a/b/c")]})),
        (2, json!({"missing": [dir.uri("shared/x")]})),
        (3, json!({"missing": [dir.uri("shared/y")]})),
        (
            4,
            json!({"missing": [dir.uri("repo/.git")], "present": dir.uri("repo")}),
        ),
        (5, json!({"missing": [dir.uri("gone/z")]})),
    ];
    for (id, params) in watches {
        assert!(watch_missing(&mut c, id, params).await, "watch {id}");
    }
    let steps: [(u64, Box<dyn Fn()>); 5] = [
        (
            1,
            Box::new(|| std::fs::create_dir(dir.path("a")).expect("mkdir a")),
        ),
        (
            2,
            Box::new(|| std::fs::write(dir.path("shared/x"), b"").expect("x")),
        ),
        (
            4,
            Box::new(|| std::fs::write(dir.path("repo/other"), b"").expect("other")),
        ),
        (
            5,
            Box::new(|| std::fs::remove_dir(dir.path("gone")).expect("rmdir")),
        ),
        // Watch 3 shares `shared` with watch 2, which fired and was removed: still watched.
        (
            3,
            Box::new(|| std::fs::write(dir.path("shared/y"), b"").expect("y")),
        ),
    ];
    for (id, step) in steps {
        // Nothing fired early (every earlier notification was taken).
        let r = c.call("environment/status", json!(null)).await;
        assert_eq!(r["result"]["status"], "ready");
        assert!(
            c.notifications.is_empty(),
            "before {id}: {:?}",
            c.notifications
        );
        step();
        expect_fired(&mut c, id).await;
    }
    // Each watch fired once; a fired id can be watched again.
    std::fs::create_dir(dir.path("a/b")).expect("mkdir b");
    assert!(watch_missing(&mut c, 1, json!({"missing": [dir.uri("shared/w")]})).await);
    std::fs::write(dir.path("shared/w"), b"").expect("w");
    expect_fired(&mut c, 1).await;
    expect_quiet(rt, &mut c).await;
}

/// Scenario.
pub async fn bad_fs_inputs_leave_the_connection_working(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let dir = TempDir::new();
    std::fs::write(dir.path("f"), b"ok").expect("write");
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let cases = [
        ("fs/readFile", json!({"path": "/etc/hostname"}), -32602),
        (
            "fs/readFile",
            json!({"path": "file://otherhost/etc/hostname"}),
            -32600,
        ),
        (
            "fs/writeFile",
            json!({"path": dir.uri("w"), "dataBase64": "@@@"}),
            -32600,
        ),
        (
            "fs/readBlock",
            json!({"handleId": "h", "offset": 0, "len": (1 << 20) + 1}),
            -32600,
        ),
        ("fs/readFile", json!({"path": dir.uri("missing")}), -32004),
        ("fs/readDirectory", json!({"path": dir.uri("f")}), -32603),
        (
            "fs/readBlock",
            json!({"handleId": "nope", "offset": 0, "len": 1}),
            -32004,
        ),
    ];
    for (method, params, code) in cases {
        let r = c.call(method, params.clone()).await;
        assert_eq!(error_code(&r), code, "{method} {params}: {r}");
    }
    assert!(!dir.path("w").exists(), "bad base64 wrote nothing");
    let r = c.call("fs/readFile", json!({"path": dir.uri("f")})).await;
    assert_eq!(r["result"]["dataBase64"], STANDARD.encode(b"ok"));
}

/// Scenario.
pub async fn local_and_remote_executors_agree_on_files(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt, ServerConfig::default()).await;
    let (remote, local) = super::client::remote_and_local(rt, &server.url).await;
    let executors: [&dyn Executor; 2] = [&remote, &local];
    let mut seen = Vec::new();
    for executor in executors {
        let dir = TempDir::new();
        seen.push(exercise(rt, executor, &dir.0).await);
    }
    assert_eq!(seen[0], seen[1]);
}

/// Writes, reads, lists, stats and removes under `dir`; returns what it saw.
async fn exercise(
    rt: &Arc<dyn Runtime>,
    executor: &dyn Executor,
    dir: &Path,
) -> (Vec<u8>, Vec<(String, bool)>, (bool, u64), String) {
    let data = b"\x00\xffbytes".to_vec();
    within(rt, executor.write_file(&dir.join("a"), &data))
        .await
        .expect("write");
    std::fs::create_dir(dir.join("sub")).expect("mkdir");
    let read = within(rt, executor.read_file(&dir.join("a")))
        .await
        .expect("read");
    let mut entries: Vec<(String, bool)> = within(rt, executor.read_directory(dir))
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.file_name, e.is_directory))
        .collect();
    entries.sort();
    let meta = within(rt, executor.get_metadata(&dir.join("a")))
        .await
        .expect("stat");
    within(rt, executor.remove(&dir.join("sub")))
        .await
        .expect("remove");
    assert!(!dir.join("sub").exists());
    let missing = match within(rt, executor.read_file(&dir.join("sub"))).await {
        Err(crate::Error::Rpc(e)) => format!("{} {}", e.code, e.message),
        other => panic!("{other:?}"),
    };
    (read, entries, (meta.is_file, meta.size), missing)
}

/// Scenario: the library client reads a 2.5 MiB file whole and in 1 MiB blocks over a
/// WebSocket, where the results come as binary result frames (PROTOCOL.md §2.5), byte-exact;
/// a generic `call` of `fs/readBlock` still gets the reference's JSON result.
pub async fn the_client_reads_files_and_blocks_byte_exact(rt: Arc<dyn Runtime>) {
    const MIB: usize = 1 << 20;
    let rt = &rt;
    let server = start_server(rt, ServerConfig::default()).await;
    let client = within(
        rt,
        crate::Client::connect_with_runtime(rt.clone(), &server.url, Default::default()),
    )
    .await
    .expect("connect");
    let dir = TempDir::new();
    let path = dir.0.join("big.bin");
    let mut x: u32 = 0x9e37_79b9;
    let data: Vec<u8> = (0..5 * MIB / 2 + 7)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(&path, &data).expect("write");
    let whole = within(rt, client.read_file(&path))
        .await
        .expect("read_file");
    assert!(whole == data, "fs/readFile gave other bytes");
    let handle = within(
        rt,
        client.open("h", &path, execd_core::protocol::fs::OpenMode::Read),
    )
    .await
    .expect("open");
    let mut read = Vec::new();
    for block in 0..3 {
        let (bytes, eof) = within(rt, handle.read_block((block * MIB) as u64, MIB as u64))
            .await
            .expect("read_block");
        assert_eq!(eof, block == 2, "eof of block {block}");
        read.extend_from_slice(&bytes);
    }
    assert!(read == data, "fs/readBlock gave other bytes");
    let r = within(
        rt,
        client.call(
            "fs/readBlock",
            json!({"handleId": "h", "offset": 2 * MIB, "len": MIB}),
        ),
    )
    .await
    .expect("call");
    assert_eq!(
        r,
        json!({"chunk": STANDARD.encode(&data[2 * MIB..]), "eof": true})
    );
    within(rt, handle.close()).await.expect("close");
}
