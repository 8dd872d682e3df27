//! The `execd` binary end to end: `execd run` with and without `--url`, and `execd serve
//! --listen stdio`. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use common::{KillOnDrop, EXECD};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `cmd` to completion with stdin from /dev/null, failing the test after [`TIMEOUT`].
fn output_within(cmd: Command) -> Output {
    common::output_within(cmd, TIMEOUT)
}

/// Waits for `child`'s output, killing it and failing the test after [`TIMEOUT`].
fn wait_within(child: Child) -> Output {
    common::wait_within(child, TIMEOUT)
}

/// Starts `execd serve` and returns it with its printed URL.
fn serve() -> (KillOnDrop, String) {
    serve_on("smol")
}

/// Starts `execd serve --runtime RUNTIME` and returns it with its printed URL.
fn serve_on(runtime: &str) -> (KillOnDrop, String) {
    common::serve_on(runtime, TIMEOUT)
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
fn run_tty_twice_forces_a_terminal_without_one_on_stdin() {
    for flags in [&["-tt"][..], &["--tty", "--tty"], &["--force-tty"]] {
        let mut args = flags.to_vec();
        args.extend(["--", "sh", "-c", "test -t 1 && echo tty"]);
        let out = run(None, &args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "tty",
            "{flags:?}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{flags:?}");
    }
}

#[test]
fn run_tty_with_stdin_not_a_terminal_warns_and_runs_without_one() {
    let mut cmd = Command::new(EXECD);
    cmd.args(["run", "--tty", "--", "cat"]);
    let out = output_with_stdin(cmd, b"hi\n".to_vec());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "echoed once");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "execd: Pseudo-terminal will not be allocated because stdin is not a terminal.\n"
    );
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

/// Held by the tests behind a cutting proxy: each resume must finish between two cuts, which
/// several of them at once on a small machine starve of CPU (they then never finish).
static PROXY_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _one_at_a_time = PROXY_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    let _one_at_a_time = PROXY_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        "--verbose",
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
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "execd: connection to {url} lost; reconnecting for up to 1 s\n\
             execd: connection to {url} lost; gave up reconnecting after 1 s\n"
        )
    );
}

#[test]
fn run_on_tokio_forwards_stdin_and_survives_a_cutting_proxy() {
    stdin_survives_a_cutting_proxy("tokio");
}

#[test]
fn run_takes_the_command_without_a_double_dash() {
    let out = run(
        None,
        &[
            "--env",
            "X=1",
            "sh",
            "-c",
            "echo \"$X\" \"$@\"",
            "sh",
            "--tty",
            "-x",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 --tty -x\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_to_a_refused_port_says_so_once() {
    let out = run(Some("ws://127.0.0.1:1"), &["--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "execd: cannot connect to ws://127.0.0.1:1: Connection refused\n"
    );
}

/// A TCP server answering every connection with `response`; returns its `ws://` URL.
fn http_server(response: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

#[test]
fn run_against_a_server_that_is_not_execd_says_so_once() {
    // What `python3 -m http.server` answers: HTTP/1.0.
    let url = http_server("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\nhello");
    let out = run(Some(&url), &["--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("execd: cannot connect to {url}: not an execd server\n")
    );
    let url = http_server("HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope");
    let out = run(Some(&url), &["--", "true"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("execd: cannot connect to {url}: not an execd server (it answered HTTP 404 Not Found)\n")
    );
}

#[test]
fn run_stats_prints_the_exit_code_as_a_number() {
    let out = run(None, &["--stats", "--", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let elapsed = stderr
        .strip_prefix("execd: exit code 5, reconnects 0, elapsed ")
        .and_then(|rest| rest.strip_suffix(" ms\n"))
        .unwrap_or_else(|| panic!("{stderr:?}"));
    assert!(elapsed.parse::<u64>().is_ok(), "{stderr:?}");
}

#[test]
fn run_of_a_missing_command_names_it_without_the_os_error_number() {
    let out = run(None, &["definitely-not-a-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "execd: \"definitely-not-a-command-xyz\": command not found (No such file or directory)\n"
    );
}

/// A WebSocket server that answers `initialize` and `process/start`, then closes with code
/// 1001 (going away), as a server shutting down does; returns its URL.
fn going_away_server() -> String {
    use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use async_tungstenite::tungstenite::protocol::CloseFrame;
    use async_tungstenite::tungstenite::Message;
    use futures::StreamExt as _;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        smol::block_on(async move {
            let listener = smol::Async::new(listener).expect("async listener");
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = async_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let request: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
                let id = request["id"].clone();
                match request["method"].as_str() {
                    Some("initialize") => {
                        let reply = serde_json::json!({"id": id, "result": {"sessionId": "0b7f3c52-9c1e-4e0a-8f61-2d5a7c9e4b13"}});
                        let _ = ws.send(Message::text(reply.to_string())).await;
                    }
                    Some("process/start") => {
                        let process_id = request["params"]["processId"].clone();
                        let reply =
                            serde_json::json!({"id": id, "result": {"processId": process_id}});
                        let _ = ws.send(Message::text(reply.to_string())).await;
                        let _ = ws
                            .close(Some(CloseFrame {
                                code: CloseCode::Away,
                                reason: "shutting down".into(),
                            }))
                            .await;
                    }
                    _ => {}
                }
            }
        });
    });
    url
}

#[test]
fn run_ends_at_once_when_the_server_goes_away() {
    let url = going_away_server();
    let started = std::time::Instant::now();
    let out = run(Some(&url), &["--recovery-window", "20", "--", "true"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("execd: the server at {url} shut down\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no recovery: {:?}",
        started.elapsed()
    );
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut cmd = Command::new(EXECD);
    cmd.env("EXECD_LOG", "debug").args(["run", "--", "true"]);
    let out = output_within(cmd);
    assert_eq!(out.status.code(), Some(0));
    assert!(!out.stderr.is_empty(), "debug logs expected");
    assert!(
        !out.stderr.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_and_man_page_are_printed() {
    for shell in ["bash", "zsh", "fish"] {
        let mut cmd = Command::new(EXECD);
        cmd.args(["completions", shell]);
        let out = output_within(cmd);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("execd"), "{shell}: {script}");
        assert!(script.contains("attach"), "{shell}: {script}");
    }
    let mut cmd = Command::new(EXECD);
    cmd.arg("man");
    let out = output_within(cmd);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
    assert!(page.contains(".TH execd 1"), "{page}");
    assert!(page.contains("execd\\-run"), "{page}");
}

#[test]
fn every_flag_has_help_and_every_command_examples() {
    for command in [
        "serve",
        "run",
        "ps",
        "attach",
        "bench",
        "completions",
        "man",
    ] {
        let mut cmd = Command::new(EXECD);
        cmd.args(["help", command]);
        let out = output_within(cmd);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Examples:"), "{command}: {help}");
        // Option lines are indented at most 6 columns; their description follows on the
        // same line (short help) or on the next, indented 10 (long help).
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with("Examples:") {
                break;
            }
            let trimmed = line.trim_start();
            if !trimmed.starts_with('-') || line.len() - trimmed.len() > 6 {
                continue;
            }
            let next = lines.get(i + 1).copied().unwrap_or("");
            let described = trimmed.contains("  ")
                || (next.starts_with("          ") && !next.trim().is_empty());
            assert!(described, "{command}: {line:?} has no help");
        }
    }
}

/// Processes (execd's server child, the remote command) whose environment holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .windows(marker.len())
            .any(|w| w == marker.as_bytes())
        {
            found.push(name);
        }
    }
    found
}

#[test]
fn ctrl_c_on_a_terminal_interrupts_the_command_and_exits_130() {
    use std::os::fd::{AsRawFd as _, BorrowedFd};
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::process::CommandExt as _;

    let master =
        rustix::pty::openpt(rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY)
            .expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let name = rustix::pty::ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name.to_str().expect("utf-8 pts name"))
        .expect("open the pty slave");
    let marker = format!(
        "EXECD_CTRL_C_TEST={}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let (key, value) = marker.split_once('=').expect("K=V");
    let mut cmd = Command::new(EXECD);
    cmd.args(["run", "sh", "-c", "echo ready; sleep 100; :"])
        .env(key, value)
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave);
    // SAFETY: setsid(2) and ioctl(2) only, both async-signal-safe: execd becomes a session
    // leader with the PTY as its controlling terminal (its foreground process group).
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
            Ok(())
        });
    }
    let child = KillOnDrop(cmd.spawn().expect("spawn execd on a pty"));
    drop(cmd);
    let mut reader = std::fs::File::from(master.try_clone().expect("dup master"));
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let bytes = rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "no `ready` on the terminal: {:?}",
                String::from_utf8_lossy(&seen)
            )
        });
        seen.extend(bytes);
    }
    rustix::io::write(&master, b"\x03").expect("write ^C");
    let (done_tx, done_rx) = mpsc::channel();
    let mut child = child;
    let pid = child.0.id();
    let waiter = std::thread::spawn(move || {
        let status = child.0.wait();
        let _ = done_tx.send(status.map(|s| s.code()));
        child
    });
    let code = match done_rx.recv_timeout(TIMEOUT) {
        Ok(code) => code.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            seen.extend(rx.try_iter().flatten());
            panic!(
                "execd did not exit after ^C; terminal: {:?}; left: {:?}",
                String::from_utf8_lossy(&seen),
                processes_with(&marker)
            );
        }
    };
    drop(waiter.join());
    assert_eq!(
        code,
        Some(130),
        "terminal: {:?}",
        String::from_utf8_lossy(&seen)
    );
    // The server child and the command are gone (bounded wait: they exit after execd).
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = master.as_raw_fd();
}

#[test]
fn detach_ps_attach_round_trip_delivers_detached_output_once() {
    let (_server, url) = serve();
    let dir = std::env::temp_dir().join(format!("execd-detach-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let flag = dir.join("printed");
    let script = format!(
        "echo one; echo two >&2; touch {}; read line; echo \"got $line\"; exit 3",
        flag.display()
    );
    let out = run(Some(&url), &["--detach", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ids = String::from_utf8_lossy(&out.stdout).into_owned();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    let [session, process] = ids[..] else {
        panic!("expected `SESSION PROCESS`: {ids:?}")
    };
    // The output is produced while nobody is attached.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !flag.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let ps = |expect_state: &str| {
        let mut cmd = Command::new(EXECD);
        cmd.args(["ps", "--url", &url, session]);
        let out = output_within(cmd);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(
            header,
            ["PROCESS", "STATE", "PID", "EXIT", "TTY", "COMMAND"]
        );
        let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        assert_eq!(row[0], process, "{text}");
        assert_eq!(row[1], expect_state, "{text}");
        assert_eq!(row[5..7], ["sh", "-c"], "{text}");
        assert_eq!(lines.next(), None, "{text}");
        row[3].to_owned()
    };
    assert_eq!(ps("running"), "-");

    let mut cmd = Command::new(EXECD);
    cmd.args(["attach", "--url", &url, session, process]);
    let out = output_with_stdin(cmd, b"hello\n".to_vec());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ngot hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "two\n");
    assert_eq!(out.status.code(), Some(3));

    // attach detached the session again: it can be resumed.
    assert_eq!(ps("closed"), "3");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lossless output (docs/PROTOCOL.md §5.11), `execd run`'s default: `seq 1 2000000` written as
/// fast as it can through a proxy that cuts the connection every 20 ms arrives complete and in
/// order, with no gap. `EXECD_LOSSLESS_RUNS=N` repeats it N times and `EXECD_LOSSLESS_CUT_MS`
/// sets the period: the issue's target, 20 of 20 at 3 ms, is measured that way with a release
/// build (`cargo test --release`). The default is 20 ms because a debug build on a loaded
/// machine cannot always finish a WebSocket handshake, `initialize` and a read within 3 ms, and
/// a client that never completes one makes no progress at all (lossless or not).
#[test]
fn run_lossless_output_survives_a_cutting_proxy() {
    let _one_at_a_time = PROXY_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_server, url) = serve();
    let cut_ms: u64 = std::env::var("EXECD_LOSSLESS_CUT_MS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let proxy = cutting_proxy(&url, Duration::from_millis(cut_ms));
    let runs: u32 = std::env::var("EXECD_LOSSLESS_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let want = seq_text(1, 2_000_000);
    for i in 1..=runs {
        let mut cmd = Command::new(EXECD);
        cmd.args([
            "run",
            "--stats",
            "--url",
            &proxy.url(),
            "--",
            "seq",
            "1",
            "2000000",
        ]);
        let started = std::time::Instant::now();
        let out = common::output_within(cmd, Duration::from_secs(180));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run {i}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("lost"), "run {i}: {stderr}");
        assert!(
            out.stdout == want.as_bytes(),
            "run {i}: output differs: {} bytes",
            out.stdout.len()
        );
        eprintln!(
            "run {i}/{runs}: complete in {:?}, {} reconnects",
            started.elapsed(),
            reconnects(&out.stderr)
        );
    }
}

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes `pid` has written so far (`wchar`).
fn wchar(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// A session left by `execd run --detach` is lossless: its child, writing as fast as it can
/// while no client is attached, blocks after the 1 MiB window (plus the read-ahead) and the server's memory
/// stays flat; `execd attach` then prints every byte. `EXECD_AWAY_SECS` sets the absence
/// (default 2 s).
#[test]
fn a_detached_run_holds_its_child_and_attach_prints_everything() {
    let away: u64 = std::env::var("EXECD_AWAY_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    // The detached session must outlive the absence (`--session-ttl`, default 30 s).
    let mut serve = Command::new(EXECD);
    let ttl = (away + 60).to_string();
    serve
        .args([
            "serve",
            "--listen",
            "ws://127.0.0.1:0",
            "--session-ttl",
            &ttl,
        ])
        .stderr(Stdio::inherit());
    let (server, url) = common::serve_with(serve, TIMEOUT);
    let server_pid = server.0.id();
    let dir = tempfile::tempdir().expect("temp dir");
    let pidfile = dir.path().join("pid");
    let rss_before = rss_kib(server_pid);
    let script = format!("echo $$ > {}; exec seq 1 3000000", pidfile.display());
    let out = run(Some(&url), &["--detach", "--", "sh", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = printed.split_whitespace();
    let (session, process) = (
        words.next().expect("session").to_owned(),
        words.next().expect("process").to_owned(),
    );
    let started = std::time::Instant::now();
    let child: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(started.elapsed() < TIMEOUT, "the child never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut rss_max = 0;
    let mut written = Vec::new();
    for _ in 0..away * 4 {
        std::thread::sleep(Duration::from_millis(250));
        rss_max = rss_max.max(rss_kib(server_pid));
        written.push(wchar(child));
    }
    let blocked = written.last().copied().unwrap_or(u64::MAX);
    eprintln!(
        "away {away} s: server RSS {rss_before} KiB before, at most {rss_max} KiB; \
         the child wrote {blocked} bytes of its 22888896"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the child finished while nobody read"
    );
    // The 1 MiB window plus what the server may read ahead of its decision (at most about
    // 4 MiB plus a chunk, `PROCESS_QUEUE_BYTES` in runtime/src/server.rs) plus the pipe.
    assert!(blocked < 8 << 20, "the child was not held: {written:?}");
    assert_eq!(
        written[written.len() / 2],
        blocked,
        "the child stays blocked: {written:?}"
    );
    assert!(
        rss_max < rss_before + 32 * 1024,
        "server RSS grew from {rss_before} to {rss_max} KiB"
    );
    let mut cmd = Command::new(EXECD);
    cmd.args(["attach", "--url", &url, &session, &process]);
    let out = common::output_within(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == seq_text(1, 3_000_000).as_bytes(),
        "attach printed {} bytes",
        out.stdout.len()
    );
}
