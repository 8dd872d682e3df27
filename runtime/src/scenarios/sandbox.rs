//! The Linux sandbox (docs/SANDBOX.md) end to end: `process/start` and `fs/writeFile` with the
//! `sandbox` objects Codex sends, over a real loopback WebSocket, real child processes, real
//! files, a real loopback listener. Nothing is skipped: where the kernel lacks a feature the
//! scenario asserts the fail-closed error instead (and says so).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use execd_core::{PathUri, ServerConfig};
use serde_json::{json, Value};

use super::server::{start_server, Client, TestServer};
use super::TempDir;
use crate::runtime::Runtime;

fn uri(path: &Path) -> String {
    PathUri::from_host_path(path)
        .expect("absolute")
        .as_str()
        .to_owned()
}

fn special(kind: &str) -> Value {
    json!({"type": "special", "value": {"kind": kind}})
}

/// Codex's object: `root` readable, the workspace writable (plus `/tmp` when `tmp`),
/// `network` as given, and `extra` entries.
fn policy(workspace: &Path, tmp: bool, network: &str, extra: &[Value]) -> Value {
    let mut entries = vec![
        json!({"path": special("root"), "access": "read"}),
        json!({"path": special("project_roots"), "access": "write"}),
    ];
    if tmp {
        entries.push(json!({"path": special("slash_tmp"), "access": "write"}));
    }
    entries.extend(extra.iter().cloned());
    json!({"permissions": {"type": "managed",
        "file_system": {"type": "restricted", "entries": entries}, "network": network},
        "cwd": uri(workspace), "workspaceRoots": [uri(workspace)],
        "windowsSandboxLevel": "disabled"})
}

/// Codex's read-only object.
fn read_only(workspace: &Path) -> Value {
    json!({"permissions": {"type": "managed", "file_system": {"type": "restricted",
        "entries": [{"path": special("root"), "access": "read"}]}, "network": "restricted"},
        "cwd": uri(workspace), "workspaceRoots": [uri(workspace)],
        "windowsSandboxLevel": "disabled"})
}

/// What one run produced.
#[derive(Debug)]
struct Outcome {
    sandbox_type: Value,
    output: String,
    exit_code: i64,
    denied: bool,
}

/// Starts `sh -c script` in `cwd` under `sandbox` and collects it until closed.
async fn run(c: &mut Client, id: &str, cwd: &Path, script: &str, sandbox: Value) -> Outcome {
    let r = c
        .start(
            id,
            &["/bin/sh", "-c", script],
            json!({"cwd": uri(cwd), "sandbox": sandbox}),
        )
        .await;
    let sandbox_type = r["result"]["sandboxType"].clone();
    assert!(r.get("result").is_some(), "start failed: {r}");
    let mut out = Outcome {
        sandbox_type,
        output: String::new(),
        exit_code: -1,
        denied: false,
    };
    loop {
        let n = c.notification().await;
        if n["params"]["processId"] != id {
            continue;
        }
        match n["method"].as_str() {
            Some("process/output") => {
                let bytes = STANDARD
                    .decode(n["params"]["chunk"].as_str().expect("chunk"))
                    .expect("base64");
                out.output.push_str(&String::from_utf8_lossy(&bytes));
            }
            Some("process/exited") => {
                out.exit_code = n["params"]["exitCode"].as_i64().expect("code");
                out.denied = n["params"]["sandboxDenied"] == true;
            }
            Some("process/closed") => return out,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Whether this kernel has Landlock ABI ≥ 3 (what execd requires).
fn landlock_ok() -> bool {
    // SAFETY: the version query; no pointer is dereferenced.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    abi >= 3
}

/// Without Landlock a sandboxed start must fail closed; returns `true` when the scenario can
/// go on.
async fn require_landlock(c: &mut Client, workspace: &Path) -> bool {
    if landlock_ok() {
        return true;
    }
    eprintln!("this kernel lacks Landlock ABI >= 3: asserting the fail-closed error instead");
    let r = c
        .start(
            "nolandlock",
            &["/bin/true"],
            json!({"cwd": uri(workspace), "sandbox": read_only(workspace)}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("failed to prepare process sandbox: Landlock"),
        "{msg}"
    );
    false
}

/// A server, a session on it and a fresh workspace.
struct Session {
    _server: TestServer,
    c: Client,
    w: TempDir,
}

/// Starts a [`Session`]; `None` when this kernel lacks Landlock, after asserting that a
/// sandboxed start fails closed.
async fn session(rt: &Arc<dyn Runtime>) -> Option<Session> {
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let w = TempDir::new();
    require_landlock(&mut c, &w.0).await.then_some(Session {
        _server: server,
        c,
        w,
    })
}

/// Scenario.
pub async fn writes_outside_the_workspace_are_refused_and_flagged(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    let outside = TempDir::new();
    let script = format!(
        "echo in > in.txt && {{ echo out > {}/x || exit 7; }}",
        outside.0.display()
    );
    let o = run(
        &mut s.c,
        "p",
        &s.w.0,
        &script,
        policy(&s.w.0, false, "restricted", &[]),
    )
    .await;
    assert_eq!(o.sandbox_type, "linuxSeccomp");
    assert_eq!(o.exit_code, 7, "the command's own exit code: {o:?}");
    assert!(o.denied, "flagged sandboxDenied: {o:?}");
    assert!(o.output.contains("Permission denied"), "{o:?}");
    assert_eq!(
        std::fs::read_to_string(s.w.path("in.txt")).ok().as_deref(),
        Some("in\n")
    );
    assert!(!outside.path("x").exists(), "nothing written outside");
    // The approved retry (`sandbox: null`) runs unconfined.
    let o = run(&mut s.c, "q", &s.w.0, &script, Value::Null).await;
    assert_eq!((o.exit_code, o.denied), (0, false), "{o:?}");
    assert_eq!(o.sandbox_type, "none");
    assert!(outside.path("x").exists());
}

/// Scenario.
pub async fn git_under_the_workspace_is_read_only_even_when_created_later(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    let sandbox = || policy(&s.w.0, false, "restricted", &[]);
    // No `.git` yet: the sandboxed command cannot create one (nor `.codex`).
    let o = run(&mut s.c, "a", &s.w.0, "echo ok > f; mkdir -p .git/hooks || e=1; echo x > .git/config || e=1; echo y > .codex/c || e=1; exit ${e:-0}", sandbox()).await;
    assert_ne!(o.exit_code, 0, "{o:?}");
    assert!(o.denied, "{o:?}");
    assert!(o.output.contains("Read-only file system"), "{o:?}");
    assert!(std::fs::read_dir(s.w.path(".git")).map_or(true, |mut d| d.next().is_none()));
    assert_eq!(
        std::fs::read_to_string(s.w.path("f")).ok().as_deref(),
        Some("ok\n")
    );
    // Created later (outside the sandbox): still read-only for the next sandboxed command.
    let _ = std::fs::remove_dir(s.w.path(".git"));
    std::fs::create_dir_all(s.w.path(".git/hooks")).expect("mkdir .git");
    std::fs::write(s.w.path(".git/config"), "real\n").expect("write config");
    let o = run(&mut s.c, "b", &s.w.0, "echo evil > .git/config || e=1; echo evil > .git/hooks/pre-commit || e=1; rm -f .git/config || e=1; exit ${e:-0}", sandbox()).await;
    assert_ne!(o.exit_code, 0, "{o:?}");
    assert!(
        o.denied && o.output.contains("Read-only file system"),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(s.w.path(".git/config"))
            .ok()
            .as_deref(),
        Some("real\n")
    );
    assert!(!s.w.path(".git/hooks/pre-commit").exists());
}

/// Scenario.
pub async fn tmp_is_writable_in_workspace_write_and_not_in_read_only(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    let target = PathBuf::from("/tmp").join(format!("execd-sbx-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&target);
    let script = format!("echo t > {}", target.display());
    let o = run(&mut s.c, "ro", &s.w.0, &script, read_only(&s.w.0)).await;
    assert!(o.exit_code != 0 && o.denied, "{o:?}");
    assert!(!target.exists());
    // Read-only: the workspace is not writable either.
    let o = run(&mut s.c, "ro2", &s.w.0, "echo x > f", read_only(&s.w.0)).await;
    assert!(o.exit_code != 0 && o.denied, "{o:?}");
    let o = run(
        &mut s.c,
        "ww",
        &s.w.0,
        &script,
        policy(&s.w.0, true, "restricted", &[]),
    )
    .await;
    assert_eq!(o.exit_code, 0, "{o:?}");
    assert_eq!(
        std::fs::read_to_string(&target).ok().as_deref(),
        Some("t\n")
    );
    let _ = std::fs::remove_file(&target);
}

/// Scenario.
pub async fn a_deny_entry_cannot_be_read(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    std::fs::create_dir(s.w.path("secret")).expect("mkdir");
    std::fs::write(s.w.path("secret/key"), "k\n").expect("write");
    std::fs::write(s.w.path("public"), "p\n").expect("write");
    let deny =
        json!({"path": {"type": "path", "path": uri(&s.w.path("secret"))}, "access": "deny"});
    let sandbox = policy(&s.w.0, false, "restricted", &[deny]);
    let o = run(
        &mut s.c,
        "d",
        &s.w.0,
        "cat public && cat secret/key",
        sandbox.clone(),
    )
    .await;
    assert!(o.exit_code != 0 && o.denied, "{o:?}");
    assert!(
        o.output.contains("p\n") && !o.output.contains("k\n"),
        "{o:?}"
    );
    assert!(o.output.contains("Permission denied"), "{o:?}");
    // fs/readFile under the same policy: -32600.
    let r =
        s.c.call(
            "fs/readFile",
            json!({"path": uri(&s.w.path("secret/key")), "sandbox": sandbox}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
}

/// Scenario.
pub async fn network_is_unix_only_unless_enabled(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let tcp_port = tcp.local_addr().expect("addr").port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let udp_port = udp.local_addr().expect("addr").port();
    let unix_path = s.w.path("sock");
    let _unix = std::os::unix::net::UnixListener::bind(&unix_path).expect("bind unix");
    // Each socket kind is tried; a refused one is printed with its error and exits 3.
    std::fs::write(
        s.w.path("net.pl"),
        format!(
            r#"use IO::Socket::UNIX; use IO::Socket::INET; my $e = 0;
IO::Socket::UNIX->new(Peer => "{unix}") ? print "unix ok\n" : (print "unix: $!\n", $e = 3);
IO::Socket::INET->new(PeerAddr => "127.0.0.1:{tcp_port}") ? print "tcp ok\n" : (print "tcp: $!\n", $e = 3);
IO::Socket::INET->new(PeerAddr => "127.0.0.1:{udp_port}", Proto => "udp") ? print "udp ok\n" : (print "udp: $!\n", $e = 3);
exit $e;
"#,
            unix = unix_path.display()
        ),
    )
    .expect("write net.pl");
    let restricted = policy(&s.w.0, false, "restricted", &[]);
    let o = run(&mut s.c, "n1", &s.w.0, "perl net.pl", restricted).await;
    assert!(o.output.contains("unix ok"), "AF_UNIX works: {o:?}");
    assert!(o.output.contains("tcp: Operation not permitted"), "{o:?}");
    assert!(o.output.contains("udp: Operation not permitted"), "{o:?}");
    assert_eq!(
        (o.exit_code, o.denied),
        (3, true),
        "own exit code, flagged: {o:?}"
    );
    let enabled = policy(&s.w.0, false, "enabled", &[]);
    let o = run(&mut s.c, "n2", &s.w.0, "perl net.pl", enabled).await;
    assert!(o.output.contains("tcp ok"), "network enabled: {o:?}");
    assert!(o.output.contains("udp ok"), "network enabled: {o:?}");
    assert_eq!((o.exit_code, o.denied), (0, false), "{o:?}");
    // The listener really saw the connection.
    tcp.set_nonblocking(true).expect("nonblocking");
    assert!(tcp.accept().is_ok(), "the enabled run reached the listener");
}

/// Scenario.
pub async fn a_symlink_out_of_the_workspace_cannot_be_written_through(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    let outside = TempDir::new();
    std::os::unix::fs::symlink(&outside.0, s.w.path("link")).expect("symlink");
    std::os::unix::fs::symlink(outside.path("f2"), s.w.path("dangling")).expect("symlink");
    let sandbox = policy(&s.w.0, false, "restricted", &[]);
    let o = run(&mut s.c, "s", &s.w.0, "echo x > link/f", sandbox.clone()).await;
    assert!(o.exit_code != 0 && o.denied, "{o:?}");
    assert!(!outside.path("f").exists());
    let write = |path: PathBuf| json!({"path": uri(&path), "dataBase64": "eAo=", "sandbox": sandbox.clone()});
    for path in [s.w.path("link/f"), s.w.path("dangling")] {
        let r = s.c.call("fs/writeFile", write(path)).await;
        assert_eq!(r["error"]["code"], -32603, "{r}");
        assert_eq!(r["error"]["message"], "Read-only file system (os error 30)");
    }
    assert!(!outside.path("f").exists() && !outside.path("f2").exists());
    let r = s.c.call("fs/writeFile", write(s.w.path("ok"))).await;
    assert!(r.get("result").is_some(), "{r}");
}

/// Scenario.
pub async fn sigsys_is_flagged_as_a_denial(rt: Arc<dyn Runtime>) {
    let Some(mut s) = session(&rt).await else {
        return;
    };
    let o = run(
        &mut s.c,
        "k",
        &s.w.0,
        "kill -SYS $$",
        policy(&s.w.0, false, "restricted", &[]),
    )
    .await;
    assert_eq!((o.exit_code, o.denied), (159, true), "{o:?}");
}

/// Scenario.
pub async fn a_sandbox_that_cannot_be_built_fails_the_start(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt, ServerConfig::default()).await;
    let (mut c, _) = Client::session(rt, &server.url).await;
    let w = TempDir::new();
    // Malformed: -32602 naming the field, nothing runs.
    let mut bad = policy(&w.0, false, "restricted", &[]);
    bad["permissions"]["network"] = json!("bogus");
    let marker = w.path("ran");
    let script = format!("touch {}", marker.display());
    let r = c
        .start(
            "m",
            &["/bin/sh", "-c", &script],
            json!({"cwd": uri(&w.0), "sandbox": bad}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert_eq!(
        r["error"]["message"],
        "unknown variant `bogus`, expected `restricted` or `enabled`"
    );
    // Well-formed but impossible here: `/proc` as the workspace needs a read-only `.git`
    // placeholder in `/proc`, which cannot be created. The start fails; nothing runs.
    let mut impossible = policy(Path::new("/proc"), false, "restricted", &[]);
    impossible["cwd"] = json!(uri(&w.0));
    let r = c
        .start(
            "f",
            &["/bin/sh", "-c", &script],
            json!({"cwd": uri(&w.0), "sandbox": impossible}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("failed to prepare process sandbox: "),
        "{msg}"
    );
    assert_eq!(r["error"]["data"]["kind"], "sandbox");
    assert!(!marker.exists(), "never runs unconfined");
}
