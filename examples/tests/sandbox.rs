//! `execd run --sandbox read-only|workspace-write [--writable DIR]… [--network]` end to end:
//! the real binary, its local `serve --listen stdio` child (smol) or a `--url` server on tokio,
//! real child processes, real files, a real loopback listener. The directories live under
//! Cargo's target tmp dir, not `/tmp` (workspace-write makes `/tmp` writable). Every wait is
//! bounded. Nothing is skipped: the kernel of the test machine must have Landlock ABI ≥ 3 (a
//! kernel without it makes these tests fail, as execd then refuses to run the commands).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{output_within, EXECD};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh directory under Cargo's target tmp dir (not `/tmp`), removed on drop.
fn dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sbx-cli-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create dir")
}

/// `execd run [--url URL] ARGS… -- sh -c SCRIPT` in `cwd`.
fn run_sh(url: Option<&str>, cwd: &Path, args: &[&str], script: &str) -> Output {
    let mut cmd = Command::new(EXECD);
    cmd.arg("run").current_dir(cwd);
    if let Some(url) = url {
        cmd.args(["--url", url]);
    }
    cmd.args(args).args(["--", "sh", "-c", script]);
    output_within(cmd, TIMEOUT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Workspace-write on one server: the workspace is writable, outside and `.git` are not, the
/// command keeps its exit code, execd says the sandbox probably blocked it, and the network
/// is reported off in the environment as Codex does.
fn workspace_write_confines(url: Option<&str>) {
    let w = dir();
    let outside = dir();
    let script = format!(
        "echo in > in.txt || exit 3; echo \"net=$CODEX_SANDBOX_NETWORK_DISABLED\"; \
         mkdir -p .git/hooks && exit 4; echo out > {}/x || exit 7",
        outside.path().display()
    );
    let out = run_sh(url, w.path(), &["--sandbox", "workspace-write"], &script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert_eq!(text(&out.stdout), "net=1\n");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr.contains("execd: \"sh\" exited with 7, probably blocked by the sandbox"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(w.path().join("in.txt"))
            .ok()
            .as_deref(),
        Some("in\n")
    );
    assert!(!w.path().join(".git/hooks").exists(), "no .git/hooks");
    assert!(
        !outside.path().join("x").exists(),
        "nothing written outside"
    );

    // `--writable DIR` opens one more directory; nothing is reported.
    let dir = outside.path().to_str().expect("utf-8 path");
    let out = run_sh(
        url,
        w.path(),
        &["--sandbox", "workspace-write", "--writable", dir],
        &format!("echo out > {dir}/x"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("x"))
            .ok()
            .as_deref(),
        Some("out\n")
    );
}

#[test]
fn run_sandbox_workspace_write_confines_the_command() {
    workspace_write_confines(None);
}

#[test]
fn run_sandbox_workspace_write_confines_the_command_on_a_tokio_server() {
    let (_server, url) = common::serve_on("tokio", TIMEOUT);
    workspace_write_confines(Some(&url));
}

#[test]
fn run_sandbox_read_only_refuses_writes_in_the_workspace_and_tmp() {
    let w = dir();
    let tmp = std::env::temp_dir().join(format!("execd-sbx-cli-ro-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let script = format!(
        "cat /etc/hostname >/dev/null || exit 3; echo x > f && exit 4; echo x > {} && exit 5; exit 9",
        tmp.display()
    );
    let out = run_sh(None, w.path(), &["--sandbox", "read-only"], &script);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(!w.path().join("f").exists() && !tmp.exists());
    // Without `--sandbox` the same command writes both (nothing is enforced).
    let out = run_sh(None, w.path(), &[], &script);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(w.path().join("f").exists());
}

#[test]
fn run_sandbox_network_flag_lets_tcp_through() {
    let w = dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let script = format!(
        "perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr => \"127.0.0.1:{port}\") \
         or die \"tcp: $!\\n\"; print \"tcp ok\\n\"'"
    );
    let out = run_sh(None, w.path(), &["--sandbox", "read-only"], &script);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("tcp: Operation not permitted"),
        "{}",
        text(&out.stderr)
    );
    let out = run_sh(
        None,
        w.path(),
        &["--sandbox", "read-only", "--network"],
        &script,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "tcp ok\n");
    listener.set_nonblocking(true).expect("nonblocking");
    assert!(listener.accept().is_ok(), "the listener saw the connection");
}

#[test]
fn run_sandbox_flags_need_a_mode() {
    let w = dir();
    for args in [&["--network"][..], &["--writable", "/"][..]] {
        let out = run_sh(None, w.path(), args, "true");
        assert_eq!(out.status.code(), Some(2), "usage error for {args:?}");
        assert!(
            text(&out.stderr).contains("--sandbox <MODE>"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = run_sh(None, w.path(), &["--sandbox", "bogus"], "true");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("read-only, workspace-write"));
}
