//! `execd serve` refuses out-of-range options at startup, and a stdio server flushes every
//! reply before it exits at stdin EOF. Every wait is bounded.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::EXECD;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `execd ARGS` with `input` on stdin, failing the test after [`TIMEOUT`].
fn execd(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(EXECD)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn execd");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    common::wait_within(child, TIMEOUT)
}

#[test]
fn out_of_range_serve_options_are_refused_with_one_line_and_exit_code_1() {
    let cases: &[(&[&str], &str)] = &[
        (&["--session-ttl", "18446744073709551615"], "sessionTtl"),
        (&["--max-frame-bytes", "99999999999"], "maxFrameBytes"),
        (&["--max-frame-bytes", "0"], "maxFrameBytes"),
        (&["--max-connections", "0"], "maxConnections"),
        (&["--max-sessions", "0"], "maxSessions"),
        (
            &["--max-processes-per-session", "0"],
            "maxProcessesPerSession",
        ),
        (&["--max-inflight-requests", "0"], "maxInflightRequests"),
        (
            &["--ping-interval", "18446744073709551615"],
            "--ping-interval",
        ),
        (
            &["--pong-timeout", "18446744073709551615"],
            "--pong-timeout",
        ),
    ];
    for (flags, names) in cases {
        let mut args = vec!["serve", "--listen", "stdio"];
        args.extend_from_slice(flags);
        let out = execd(&args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(stderr.contains(names), "{flags:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{flags:?}");
    }
}

#[test]
fn unparseable_serve_option_exits_2() {
    let out = execd(&["serve", "--max-sessions", "-1"], b"");
    assert_eq!(out.status.code(), Some(2));
}

/// `printf '{"id":1,"method":"initialize",…}\n' | execd serve --listen stdio` prints the
/// response every time: stdin EOF waits for the replies to be written.
#[test]
fn stdio_eof_flushes_the_initialize_reply_every_time() {
    let line = b"{\"id\":1,\"method\":\"initialize\",\"params\":{\"clientName\":\"x\"}}\n";
    for runtime in ["smol", "tokio"] {
        for round in 0..20 {
            let out = execd(&["serve", "--listen", "stdio", "--runtime", runtime], line);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{runtime} round {round}: {out:?}");
            assert!(
                stdout.starts_with("{") && stdout.contains("\"sessionId\""),
                "{runtime} round {round}: no reply in {stdout:?}"
            );
        }
    }
}
