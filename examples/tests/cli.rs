//! The `execd` binary end to end: `execd run` with and without `--url`, and `execd serve
//! --listen stdio`. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const EXECD: &str = env!("CARGO_BIN_EXE_execd");
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion with stdin from /dev/null, failing the test after [`TIMEOUT`].
fn output_within(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_within(child)
}

/// Waits for `child`'s output, killing it and failing the test after [`TIMEOUT`].
fn wait_within(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("command timed out");
        }
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `execd serve` and returns it with its printed URL.
fn serve() -> (KillOnDrop, String) {
    serve_on("smol")
}

/// Starts `execd serve --runtime RUNTIME` and returns it with its printed URL.
fn serve_on(runtime: &str) -> (KillOnDrop, String) {
    let mut child = Command::new(EXECD)
        .args([
            "serve",
            "--listen",
            "ws://127.0.0.1:0",
            "--runtime",
            runtime,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn execd serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let guard = KillOnDrop(child);
    let line = rx
        .recv_timeout(TIMEOUT)
        .expect("execd serve printed its URL");
    let url = line.trim().to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{url:?}");
    (guard, url)
}

fn run(url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(EXECD);
    cmd.arg("run");
    if let Some(url) = url {
        cmd.args(["--url", url]);
    }
    cmd.args(args);
    output_within(cmd)
}

#[test]
fn run_without_url_streams_output_and_exit_code() {
    let out = run(None, &["--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn run_with_url_streams_output_and_exit_code() {
    let (_server, url) = serve();
    let out = run(Some(&url), &["--", "sh", "-c", "printf 'a\\nb\\n'; exit 4"]);
    assert_eq!(out.stdout, b"a\nb\n");
    assert_eq!(out.status.code(), Some(4));
    // The server keeps serving.
    let out = run(Some(&url), &["--", "true"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_against_a_tokio_server_streams_output_and_exit_code() {
    let (_server, url) = serve_on("tokio");
    let out = run(
        Some(&url),
        &["--", "sh", "-c", "echo out; echo err >&2; exit 5"],
    );
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn run_reports_signal_death_as_128_plus_n() {
    let out = run(None, &["--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn run_of_a_missing_command_exits_127() {
    let out = run(None, &["--", "definitely-not-a-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}

#[test]
fn run_passes_cwd_and_env() {
    let dir = std::env::temp_dir();
    let dir = dir.to_str().expect("utf-8 temp dir");
    let out = run(
        None,
        &[
            "--cwd",
            dir,
            "--env",
            "EXECD_T=42",
            "--",
            "sh",
            "-c",
            "pwd; echo $EXECD_T",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let canonical = std::fs::canonicalize(dir).expect("canonical");
    assert!(
        text.starts_with(dir) || text.starts_with(canonical.to_str().unwrap_or("")),
        "{text}"
    );
    assert!(text.ends_with("42\n"), "{text}");
}

#[test]
fn run_tty_gives_the_command_a_terminal() {
    let out = run(None, &["--tty", "--", "sh", "-c", "test -t 1 && echo tty"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tty");
}

#[test]
fn serve_stdio_speaks_newline_delimited_json() {
    stdio_session("smol");
}

#[test]
fn serve_stdio_on_tokio_speaks_newline_delimited_json() {
    stdio_session("tokio");
}

/// One session with `execd serve --listen stdio --runtime RUNTIME`: initialize, a bad frame, a
/// process to its close, and the server's exit on stdin EOF.
fn stdio_session(runtime: &str) {
    let mut child = KillOnDrop(
        Command::new(EXECD)
            .args(["serve", "--listen", "stdio", "--runtime", runtime])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn"),
    );
    let mut stdin = child.0.stdin.take().expect("stdin");
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let recv = || -> serde_json::Value {
        let line = rx.recv_timeout(TIMEOUT).expect("a line from the server");
        serde_json::from_str(&line).expect("each stdout line is one JSON message")
    };
    writeln!(
        stdin,
        r#"{{"id":1,"method":"initialize","params":{{"clientName":"t"}}}}"#
    )
    .expect("write");
    assert!(recv()["result"]["sessionId"].is_string());
    writeln!(stdin, r#"{{"method":"initialized","params":{{}}}}"#).expect("write");
    writeln!(stdin, "{{bad json").expect("write");
    assert_eq!(recv()["id"], -1);
    writeln!(
        stdin,
        r#"{{"id":2,"method":"process/start","params":{{"processId":"p","argv":["echo","hi"],"cwd":"file:///","env":{{}},"tty":false}}}}"#
    )
    .expect("write");
    let mut methods = Vec::new();
    loop {
        let msg = recv();
        if let Some(m) = msg["method"].as_str() {
            methods.push(m.to_owned());
            if m == "process/closed" {
                break;
            }
        } else {
            assert_eq!(msg["id"], 2);
        }
    }
    assert_eq!(
        methods,
        ["process/output", "process/exited", "process/closed"]
    );
    // Closing stdin ends the server.
    drop(stdin);
    let (tx, rx) = mpsc::channel();
    let mut inner = child;
    std::thread::spawn(move || {
        let _ = tx.send(inner.0.wait().map(|s| s.code()));
        let mut rest = Vec::new();
        if let Some(mut out) = inner.0.stdout.take() {
            let _ = out.read_to_end(&mut rest);
        }
    });
    let code = rx
        .recv_timeout(TIMEOUT)
        .expect("server exits after stdin EOF")
        .expect("wait");
    assert_eq!(code, Some(0));
}

/// Runs `cmd` with `input` on its stdin, failing the test after [`TIMEOUT`].
fn output_with_stdin(mut cmd: Command, input: Vec<u8>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    wait_within(child)
}

fn seq_text(from: u32, to: u32) -> String {
    (from..=to).map(|i| format!("{i}\n")).collect()
}

fn reconnects(stderr: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    text.split("reconnects ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no --stats line in {text:?}"))
}

#[test]
fn run_forwards_stdin_and_its_eof() {
    for url in [None, Some(serve())] {
        let mut cmd = Command::new(EXECD);
        cmd.arg("run");
        if let Some((_, url)) = &url {
            cmd.args(["--url", url]);
        }
        cmd.args(["--", "sh", "-c", "cat; echo done"]);
        let out = output_with_stdin(cmd, seq_text(1, 50_000).into_bytes());
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            seq_text(1, 50_000) + "done\n"
        );
    }
}

/// The proxy of `execd_smol::testing`, cutting every `period`, in front of `url`.
fn cutting_proxy(
    url: &str,
    period: Duration,
) -> std::sync::Arc<execd_runtime::scenarios::CuttingProxy> {
    let addr = url.trim_start_matches("ws://").parse().expect("addr");
    let proxy = smol::block_on(execd_runtime::scenarios::CuttingProxy::start(
        std::sync::Arc::new(execd_smol::SmolRuntime),
        addr,
    ))
    .expect("proxy");
    let proxy = std::sync::Arc::new(proxy);
    proxy.cut_every(period);
    proxy
}

#[test]
fn run_output_survives_a_proxy_that_keeps_cutting_the_connection() {
    let (_server, url) = serve();
    let proxy = cutting_proxy(&url, Duration::from_millis(40));
    // Paced so that cuts land mid-stream: 20 bursts of 10,000 lines, 20 ms apart.
    let script = "for i in $(seq 0 19); do seq $((i*10000+1)) $((i*10000+10000)); sleep 0.02; done";
    let out = run(Some(&proxy.url()), &["--stats", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout == seq_text(1, 200_000).as_bytes(),
        "output differs: {} bytes",
        out.stdout.len()
    );
    assert!(
        reconnects(&out.stderr) >= 2,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `execd run --runtime <runtime>` pipes 20,000 lines through a paced `cat` while the proxy
/// cuts the connection every 30 ms: each line arrives once, in order, across reconnects.
fn stdin_survives_a_cutting_proxy(runtime: &str) {
    let (_server, url) = serve();
    let proxy = cutting_proxy(&url, Duration::from_millis(30));
    let mut cmd = Command::new(EXECD);
    // `cat` behind a pacing reader so the run spans several cuts.
    let script = "while IFS= read -r line; do printf '%s\\n' \"$line\"; done";
    cmd.args([
        "run",
        "--runtime",
        runtime,
        "--stats",
        "--url",
        &proxy.url(),
        "--",
        "sh",
        "-c",
        script,
    ]);
    let out = output_with_stdin(cmd, seq_text(1, 20_000).into_bytes());
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout == seq_text(1, 20_000).as_bytes(),
        "output differs: {} bytes",
        out.stdout.len()
    );
    assert!(
        reconnects(&out.stderr) >= 1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_stdin_survives_a_proxy_that_keeps_cutting_the_connection() {
    stdin_survives_a_cutting_proxy("smol");
}

#[test]
fn run_exits_255_when_the_server_dies() {
    let (server, url) = serve();
    let mut cmd = Command::new(EXECD);
    cmd.args([
        "run",
        "--recovery-window",
        "1",
        "--url",
        &url,
        "--",
        "sh",
        "-c",
        "echo started; exec sleep 30",
    ]);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx.recv_timeout(TIMEOUT).expect("the command started");
    assert_eq!(line, "started\n");
    drop(server);
    let out = wait_within(child);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lost"),
        "{out:?}"
    );
}

#[test]
fn run_on_tokio_forwards_stdin_and_survives_a_cutting_proxy() {
    stdin_survives_a_cutting_proxy("tokio");
}
