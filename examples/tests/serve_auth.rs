//! `execd serve` refuses inconsistent authentication flags before binding: one line on stderr,
//! exit code 1 (as the Codex exec-server).

use std::process::{Command, Stdio};

fn serve(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_execd"))
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run execd serve")
}

#[test]
fn inconsistent_auth_flags_exit_1_with_one_line() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--ws-auth", "capability-token"],
            "`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set",
        ),
        (
            &["--ws-issuer", "x"],
            "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`",
        ),
        (
            &["--listen", "ws://0.0.0.0:0"],
            "refusing to listen on non-loopback 0.0.0.0:0 without --ws-auth",
        ),
    ];
    for (args, reason) in cases {
        let out = serve(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("execd: {reason}")),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing is served");
    }
}
