//! The process layer ([`ProcessTable`]) against real children: spawning, output and exit
//! events, stdin, PTYs, signals. Every await has a timeout.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_channel::Receiver;
use execd_core::protocol::{SandboxType, Signal, Stream};
use execd_core::{ExitStatus, ProcessEvent, SpawnErrorKind, SpawnSpec};

use super::timeout;
use crate::process::ProcessTable;
use crate::runtime::Runtime;

const KEY: u64 = 1;

fn spec(argv: &[&str]) -> SpawnSpec {
    SpawnSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        arg0: None,
        cwd: PathBuf::from("/"),
        env: BTreeMap::new(),
        tty: false,
        pty_size: execd_core::PtySize { rows: 24, cols: 80 },
        pipe_stdin: false,
        sandbox: SandboxType::None,
        sandbox_policy: None,
    }
}

fn sh(script: &str) -> SpawnSpec {
    spec(&["sh", "-c", script])
}

struct Harness {
    rt: Arc<dyn Runtime>,
    table: ProcessTable<u64>,
    events: Receiver<(u64, ProcessEvent)>,
}

impl Harness {
    fn new(rt: &Arc<dyn Runtime>) -> Harness {
        let (tx, events) = async_channel::unbounded();
        Harness {
            rt: Arc::clone(rt),
            table: ProcessTable::with_runtime(Arc::clone(rt), tx),
            events,
        }
    }

    fn spawn(&mut self, spec: SpawnSpec) -> u32 {
        match self.table.spawn(KEY, spec) {
            ProcessEvent::Spawned { pid } => pid,
            other => panic!("spawn failed: {other:?}"),
        }
    }

    /// The next event other than `StdinWritten` (stdin progress, checked where it matters).
    async fn next(&self) -> ProcessEvent {
        loop {
            let (key, event) = timeout(&self.rt, "a process event", self.events.recv())
                .await
                .expect("event channel open");
            assert_eq!(key, KEY);
            if !matches!(event, ProcessEvent::StdinWritten { .. }) {
                return event;
            }
        }
    }

    /// Collects events until the process closes: exited and every stream at EOF.
    async fn run_to_close(&self) -> Run {
        let mut run = Run::default();
        loop {
            let event = self.next().await;
            match &event {
                ProcessEvent::Output { stream, bytes } => {
                    assert!(!bytes.is_empty(), "empty output chunk");
                    assert!(
                        !run.eofs.contains(stream),
                        "output on {stream:?} after its EOF"
                    );
                    run.output
                        .entry(*stream)
                        .or_default()
                        .extend_from_slice(bytes);
                }
                ProcessEvent::Eof { stream } => {
                    assert!(!run.eofs.contains(stream), "second EOF on {stream:?}");
                    run.eofs.push(*stream);
                }
                ProcessEvent::Exited { status } => {
                    assert!(run.exit.is_none(), "second exit");
                    run.exit = Some(*status);
                }
                ProcessEvent::StdinClosed => run.stdin_closed += 1,
                other => panic!("unexpected event {other:?}"),
            }
            run.events.push(event);
            let streams =
                if run.output.contains_key(&Stream::Pty) || run.eofs.contains(&Stream::Pty) {
                    1
                } else {
                    2
                };
            if run.exit.is_some() && run.eofs.len() == streams {
                return run;
            }
        }
    }

    /// Reads output until `stream` has produced something containing `needle`.
    async fn wait_for_output(&self, stream: Stream, needle: &str) -> Vec<u8> {
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match self.next().await {
                ProcessEvent::Output { stream: s, bytes } if s == stream => {
                    seen.extend_from_slice(&bytes)
                }
                ProcessEvent::Output { .. } => {}
                other => panic!("unexpected event while waiting for {needle:?}: {other:?}"),
            }
        }
        seen
    }
}

#[derive(Debug, Default)]
struct Run {
    events: Vec<ProcessEvent>,
    output: BTreeMap<Stream, Vec<u8>>,
    eofs: Vec<Stream>,
    exit: Option<ExitStatus>,
    stdin_closed: usize,
}

impl Run {
    fn text(&self, stream: Stream) -> String {
        String::from_utf8_lossy(self.output.get(&stream).map_or(&[][..], Vec::as_slice))
            .into_owned()
    }
}

/// Output, EOF per stream and the exit code arrive, with the child's output before its exit.
pub async fn output_eof_and_exit_code_arrive_in_order(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.spawn(sh("echo out; echo err >&2; exit 3"));

    let run = h.run_to_close().await;

    assert_eq!(run.text(Stream::Stdout), "out\n");
    assert_eq!(run.text(Stream::Stderr), "err\n");
    assert_eq!(run.exit, Some(ExitStatus::Code(3)));
    // The child's output is drained before its exit is reported. (Its EOFs normally come
    // first too, but a child another test thread forks at the same moment may hold the
    // pipes' write ends until it execs, so EOF may follow the exit.)
    let exited_at = run
        .events
        .iter()
        .position(|e| matches!(e, ProcessEvent::Exited { .. }))
        .expect("an Exited event");
    assert!(run.events[exited_at..]
        .iter()
        .all(|e| !matches!(e, ProcessEvent::Output { .. })));
    assert!(h.events.is_empty());
}

/// While its output is paused a child's output stays in the pipe (no event); on resume it
/// arrives complete.
pub async fn paused_output_stays_in_the_pipe_until_resumed(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.spawn(sh("sleep 0.2; echo hi; sleep 1"));
    h.table.set_output_paused(KEY, true);

    rt.sleep_until(rt.now() + std::time::Duration::from_millis(700))
        .await;
    assert!(h.events.is_empty(), "no output while paused");

    h.table.set_output_paused(KEY, false);
    let run = h.run_to_close().await;
    assert_eq!(run.text(Stream::Stdout), "hi\n");
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// A child killed by a signal is reported as `ExitStatus::Signal`.
pub async fn death_by_signal_is_reported_as_signal(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.spawn(sh("kill -9 $$"));

    let run = h.run_to_close().await;

    assert_eq!(run.exit, Some(ExitStatus::Signal(9)));
}

/// The child's environment is exactly `SpawnSpec::env`.
pub async fn environment_is_exactly_the_given_one(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = spec(&["env"]);
    spec.env.insert("FOO".into(), "bar baz".into());
    spec.env.insert("EMPTY".into(), String::new());
    h.spawn(spec);

    let run = h.run_to_close().await;

    assert_eq!(run.text(Stream::Stdout), "EMPTY=\nFOO=bar baz\n");
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// `argv[0]` is looked up in the child's `PATH`.
pub async fn program_is_looked_up_in_the_child_path(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = spec(&["sh", "-c", "echo found"]);
    spec.env.insert("PATH".into(), "/nonexistent".into());
    assert!(matches!(
        h.table.spawn(KEY, spec.clone()),
        ProcessEvent::SpawnFailed { .. }
    ));

    spec.env
        .insert("PATH".into(), "/nonexistent:/usr/bin:/bin".into());
    h.spawn(spec);
    let run = h.run_to_close().await;

    assert_eq!(run.text(Stream::Stdout), "found\n");
}

/// `SpawnSpec::arg0` is what the child sees as `argv[0]`; without it, `argv[0]` as given.
pub async fn arg0_overrides_what_the_child_sees(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = sh("echo $0");
    spec.arg0 = Some("custom-name".into());
    h.spawn(spec);
    let run = h.run_to_close().await;
    assert_eq!(run.text(Stream::Stdout), "custom-name\n");

    let mut h = Harness::new(&rt);
    h.spawn(sh("echo $0"));
    let run = h.run_to_close().await;
    assert_eq!(run.text(Stream::Stdout), "sh\n", "argv[0] is kept as given");
}

/// The child starts in `SpawnSpec::cwd`.
pub async fn cwd_is_set(rt: Arc<dyn Runtime>) {
    let dir = std::env::temp_dir().join(format!("execd-process-cwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let dir = std::fs::canonicalize(&dir).expect("canonicalize temp dir");
    let mut h = Harness::new(&rt);
    let mut spec = spec(&["pwd"]);
    spec.cwd = dir.clone();
    h.spawn(spec);

    let run = h.run_to_close().await;

    let _ = std::fs::remove_dir(&dir);
    assert_eq!(run.text(Stream::Stdout), format!("{}\n", dir.display()));
}

/// Spawn failures report the OS error text and leave nothing behind; the key stays free.
pub async fn spawn_failures_report_the_os_error_and_nothing_else(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);

    let missing = h.table.spawn(KEY, spec(&["no-such-command-execd-test"]));
    let bad_cwd = {
        let mut spec = spec(&["true"]);
        spec.cwd = PathBuf::from("/no/such/dir/execd-test");
        h.table.spawn(KEY, spec)
    };
    let not_executable = h.table.spawn(KEY, spec(&["/etc/passwd"]));
    let empty = h.table.spawn(KEY, spec(&[]));

    let enoent = |kind| ProcessEvent::SpawnFailed {
        kind,
        error: "No such file or directory (os error 2)".into(),
    };
    assert_eq!(missing, enoent(SpawnErrorKind::NotFound));
    assert_eq!(bad_cwd, enoent(SpawnErrorKind::BadCwd));
    assert_eq!(
        not_executable,
        ProcessEvent::SpawnFailed {
            kind: SpawnErrorKind::PermissionDenied,
            error: "Permission denied (os error 13)".into()
        }
    );
    assert!(matches!(empty, ProcessEvent::SpawnFailed { .. }));
    // The key is still free: a later spawn with it works.
    h.spawn(spec(&["true"]));
    let run = h.run_to_close().await;
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// Writes to a piped stdin arrive in order and byte-exact; `close_stdin` gives the child EOF.
pub async fn piped_stdin_is_echoed_exactly_and_closes(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = spec(&["cat"]);
    spec.pipe_stdin = true;
    h.spawn(spec);

    h.table.write_stdin(KEY, b"hello\n".to_vec());
    h.table.write_stdin(KEY, vec![0, 1, 2, 255]);
    h.table.write_stdin(KEY, b"world".to_vec());
    h.table.close_stdin(KEY);
    let run = h.run_to_close().await;

    let mut expected = b"hello\n".to_vec();
    expected.extend_from_slice(&[0, 1, 2, 255]);
    expected.extend_from_slice(b"world");
    assert_eq!(run.output.get(&Stream::Stdout), Some(&expected));
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
    assert_eq!(run.stdin_closed, 0);
}

/// Without `pipe_stdin` the child reads `/dev/null` and writes are ignored.
pub async fn stdin_is_dev_null_without_pipe_stdin(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.spawn(spec(&["cat"]));
    h.table.write_stdin(KEY, b"ignored".to_vec());

    let run = h.run_to_close().await;

    assert_eq!(run.output.get(&Stream::Stdout), None);
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
    assert_eq!(run.stdin_closed, 0);
}

/// A write after the child closed its stdin reports `StdinClosed` once.
pub async fn write_after_child_closed_stdin_reports_stdin_closed_once(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = sh("exec 0<&-; echo ready; sleep 100");
    spec.pipe_stdin = true;
    h.spawn(spec);
    h.wait_for_output(Stream::Stdout, "ready").await;

    // More than a pipe holds, so the write waits until no reader is left (a child another
    // test thread forks at the same moment may hold the read end until it execs).
    h.table.write_stdin(KEY, vec![b'x'; 1 << 20]);
    h.table.write_stdin(KEY, b"two".to_vec());
    assert_eq!(h.next().await, ProcessEvent::StdinClosed);
    h.table.write_stdin(KEY, b"three".to_vec());
    h.table.kill(KEY);
    let run = h.run_to_close().await;

    assert_eq!(run.stdin_closed, 0, "StdinClosed is reported once");
    assert_eq!(run.exit, Some(ExitStatus::Signal(9)));
}

/// A `tty` child has a terminal on stdin, stdout and stderr; its output is the one `Pty` stream.
pub async fn tty_child_sees_a_terminal(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = sh("test -t 0 && test -t 1 && test -t 2 && echo tty");
    spec.tty = true;
    h.spawn(spec);

    let run = h.run_to_close().await;

    assert_eq!(run.text(Stream::Pty), "tty\r\n");
    assert_eq!(run.eofs, vec![Stream::Pty]);
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// The PTY is the controlling terminal of the child's new session (`/dev/tty` opens).
pub async fn tty_is_the_controlling_terminal_of_a_new_session(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    // `ps -o sid=,pgid=,tty=` would do too, but /dev/tty is enough: it opens only if the
    // process has a controlling terminal.
    let mut spec = sh("echo x > /dev/tty && echo ok");
    spec.tty = true;
    h.spawn(spec);

    let run = h.run_to_close().await;

    assert_eq!(run.text(Stream::Pty), "x\r\nok\r\n");
}

/// A PTY starts at 24 × 80 and `resize` changes what the child sees.
pub async fn tty_starts_at_24_by_80_and_resizes(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = sh("stty size; read line; stty size");
    spec.tty = true;
    h.spawn(spec);
    h.wait_for_output(Stream::Pty, "24 80\r\n").await;

    h.table.resize(KEY, 40, 100);
    h.table.write_stdin(KEY, b"\n".to_vec());
    let run = h.run_to_close().await;

    assert!(
        run.text(Stream::Pty).contains("40 100\r\n"),
        "output: {:?}",
        run.text(Stream::Pty)
    );
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// Writes to a PTY reach the child as typed input.
pub async fn tty_input_reaches_the_child(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = sh("read line; echo \"got $line\"");
    spec.tty = true;
    h.spawn(spec);

    h.table.write_stdin(KEY, b"hello\n".to_vec());
    h.table.close_stdin(KEY);
    let run = h.run_to_close().await;

    assert!(run.text(Stream::Pty).contains("got hello\r\n"));
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// `kill` reaches grandchildren in the process group (their pipes reach EOF).
pub async fn kill_reaches_grandchildren_in_the_group(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.spawn(sh("sleep 100 & echo started; wait"));
    h.wait_for_output(Stream::Stdout, "started").await;

    h.table.kill(KEY);
    // The sleeping grandchild holds stdout and stderr: both reach EOF only if it died too.
    let run = h.run_to_close().await;

    assert_eq!(run.exit, Some(ExitStatus::Signal(9)));
}

/// `kill_all` reaches grandchildren of a PTY process.
pub async fn kill_reaches_grandchildren_on_a_tty(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = sh("sleep 100 & echo started; wait");
    spec.tty = true;
    h.spawn(spec);
    h.wait_for_output(Stream::Pty, "started").await;

    h.table.kill_all();
    let run = h.run_to_close().await;

    assert_eq!(run.exit, Some(ExitStatus::Signal(9)));
}

/// `signal` delivers to the process group (a trap runs).
pub async fn signal_is_delivered_to_the_group(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.spawn(sh(
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 1; done",
    ));
    h.wait_for_output(Stream::Stdout, "ready").await;

    h.table.signal(KEY, Signal::Term);
    let run = h.run_to_close().await;

    assert!(run.text(Stream::Stdout).contains("got-term"));
    assert_eq!(run.exit, Some(ExitStatus::Code(7)));
}

/// 64 MiB of output arrive complete, in chunks of at most 64 KiB.
pub async fn large_output_arrives_complete(rt: Arc<dyn Runtime>) {
    const SIZE: usize = 64 * 1024 * 1024;
    let mut h = Harness::new(&rt);
    h.spawn(spec(&["head", "-c", "67108864", "/dev/zero"]));

    let mut total = 0;
    let mut exit = None;
    let mut eofs = 0;
    while exit.is_none() || eofs < 2 {
        match h.next().await {
            ProcessEvent::Output { stream, bytes } => {
                assert_eq!(stream, Stream::Stdout);
                assert!(bytes.len() <= 64 * 1024);
                assert!(bytes.iter().all(|&b| b == 0));
                total += bytes.len();
            }
            ProcessEvent::Eof { .. } => eofs += 1,
            ProcessEvent::Exited { status } => exit = Some(status),
            other => panic!("unexpected event {other:?}"),
        }
    }

    assert_eq!(total, SIZE);
    assert_eq!(exit, Some(ExitStatus::Code(0)));
}

/// Operations on unknown or released keys are ignored; a released child still gets its queued
/// stdin.
pub async fn operations_on_unknown_or_released_keys_are_ignored(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    h.table.write_stdin(42, b"x".to_vec());
    h.table.close_stdin(42);
    h.table.signal(42, Signal::Int);
    h.table.kill(42);
    h.table.resize(42, 1, 1);
    h.table.release(42);
    h.table.resize(KEY, 10, 10);

    let mut spec = spec(&["cat"]);
    spec.pipe_stdin = true;
    h.spawn(spec);
    assert!(matches!(
        h.table.spawn(KEY, sh("true")),
        ProcessEvent::SpawnFailed { .. }
    ));
    h.table.resize(KEY, 10, 10); // not a PTY
    h.table.write_stdin(KEY, b"bye".to_vec());
    h.table.release(KEY);
    h.table.kill(KEY); // released: ignored, but releasing closed stdin
    let run = h.run_to_close().await;

    assert_eq!(run.text(Stream::Stdout), "bye");
    assert_eq!(run.exit, Some(ExitStatus::Code(0)));
}

/// A sandbox request fails the spawn rather than run the child unsandboxed.
pub async fn sandbox_requests_fail_rather_than_run_unsandboxed(rt: Arc<dyn Runtime>) {
    let mut h = Harness::new(&rt);
    let mut spec = spec(&["true"]);
    spec.sandbox = SandboxType::LinuxLandlock;
    assert!(matches!(
        h.table.spawn(KEY, spec),
        ProcessEvent::SpawnFailed { .. }
    ));
}
