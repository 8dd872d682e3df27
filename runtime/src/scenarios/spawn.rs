//! The two spawn paths of the process layer against real children: the `clone(CLONE_VM |
//! CLONE_VFORK)` shim (the default) and `fork` + `pre_exec` (sandboxed starts, and where
//! pidfds are missing), started on the caller ([`ProcessTable::spawn`]) or on the table's
//! spawner threads ([`ProcessTable::start`]). Every await has a timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use async_channel::Receiver;
use execd_core::protocol::Stream;
use execd_core::{ExitStatus, ProcessEvent, SpawnErrorKind, SpawnSpec};

use super::containment::sh;
use super::timeout;
use crate::process::ProcessTable;
use crate::runtime::Runtime;

/// What one process reported, from its spawn answer to its close.
#[derive(Debug, Default)]
struct Run {
    pid: Option<u32>,
    output: Vec<u8>,
    eofs: usize,
    exit: Option<ExitStatus>,
}

impl Run {
    fn closed(&self, streams: usize) -> bool {
        self.exit.is_some() && self.eofs == streams
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

/// Collects the events of `keys` until each has closed (`streams` output streams at EOF),
/// checking that each process's spawn answer precedes its other events.
async fn collect(
    rt: &Arc<dyn Runtime>,
    events: &Receiver<(u64, ProcessEvent)>,
    mut runs: BTreeMap<u64, Run>,
    streams: usize,
) -> BTreeMap<u64, Run> {
    while !runs.values().all(|r| r.closed(streams)) {
        let (key, event) = timeout(rt, "a process event", events.recv())
            .await
            .expect("event channel open");
        let run = runs.get_mut(&key).expect("an event for a started key");
        if let ProcessEvent::Spawned { pid } = event {
            assert!(run.pid.replace(pid).is_none(), "second Spawned for {key}");
            continue;
        }
        assert!(run.pid.is_some(), "{event:?} before Spawned for {key}");
        match event {
            ProcessEvent::Output { bytes, .. } => run.output.extend_from_slice(&bytes),
            ProcessEvent::Eof { .. } => run.eofs += 1,
            ProcessEvent::Exited { status } => run.exit = Some(status),
            other => panic!("unexpected event {other:?}"),
        }
    }
    runs
}

/// Starts `spec` as key 1 of `table` through [`ProcessTable::start`] and runs it to close.
async fn start_and_run(
    rt: &Arc<dyn Runtime>,
    table: &mut ProcessTable<u64>,
    events: &Receiver<(u64, ProcessEvent)>,
    spec: SpawnSpec,
) -> Run {
    let streams = if spec.tty { 1 } else { 2 };
    assert_eq!(table.start(1, spec), None, "answered on the channel");
    let mut runs = collect(rt, events, BTreeMap::from([(1, Run::default())]), streams).await;
    runs.remove(&1).expect("the run")
}

/// A table per spawn path, named, with its event channel.
type Tables = Vec<(
    &'static str,
    ProcessTable<u64>,
    Receiver<(u64, ProcessEvent)>,
)>;

fn tables(rt: &Arc<dyn Runtime>) -> Tables {
    let (tx, rx) = async_channel::unbounded();
    let fast = ProcessTable::with_runtime(Arc::clone(rt), tx);
    let (tx, fork_rx) = async_channel::unbounded();
    let fork = ProcessTable::with_runtime(Arc::clone(rt), tx).with_fork_spawn();
    vec![("fast", fast, rx), ("fork", fork, fork_rx)]
}

/// On both paths the child leads its own process group, sees exactly its environment and its
/// cwd, and execs with no standard signal ignored or blocked (`/proc/self/status` of the
/// program it runs), although the server ignores SIGPIPE.
pub async fn both_paths_set_group_env_cwd_and_signals(rt: Arc<dyn Runtime>) {
    let dir = std::fs::canonicalize(std::env::temp_dir()).expect("temp dir");
    for (path, mut table, events) in tables(&rt) {
        let mut spec = sh(
            "read -r stat < /proc/$$/stat; set -- $stat; echo \"pid=$1 pgid=$5\"; \
             env | sort; pwd; grep -E '^Sig(Blk|Ign)' /proc/self/status",
        );
        spec.env.insert("EXECD_TEST".into(), "a b=c".into());
        spec.cwd = dir.clone();
        let run = start_and_run(&rt, &mut table, &events, spec).await;

        let pid = run.pid.expect("spawned");
        let text = run.text();
        assert!(
            text.contains(&format!("pid={pid} pgid={pid}\n")),
            "{path}: not its own group leader: {text}"
        );
        let env: Vec<&str> = text
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with("pid="))
            .collect();
        // sh adds PWD (and some add SHLVL, _); nothing of the server's environment leaks.
        assert!(env.contains(&"EXECD_TEST=a b=c"), "{path}: {env:?}");
        assert!(env.contains(&"PATH=/usr/bin:/bin"), "{path}: {env:?}");
        assert!(
            env.iter()
                .all(|l| ["EXECD_TEST=", "PATH=", "PWD=", "SHLVL=", "_="]
                    .iter()
                    .any(|p| l.starts_with(p))),
            "{path}: unexpected environment {env:?}"
        );
        assert!(
            text.contains(&format!("{}\n", dir.display())),
            "{path}: {text}"
        );
        // Standard signals only: glibc reserves 32 and 33 (its `signal` refuses them).
        for field in ["SigBlk", "SigIgn"] {
            let mask = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:\t")))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            assert_eq!(
                mask.map(|m| m & 0x7fff_ffff),
                Some(0),
                "{path}: {field} has standard signals: {text}"
            );
        }
        assert_eq!(run.exit, Some(ExitStatus::Code(0)), "{path}");
    }
}

/// On both paths a `tty` child gets the PTY as stdio and as the controlling terminal of a new
/// session it leads.
pub async fn both_paths_give_a_pty_child_its_controlling_terminal(rt: Arc<dyn Runtime>) {
    for (path, mut table, events) in tables(&rt) {
        let mut spec = sh(
            "test -t 0 && test -t 1 && test -t 2 && echo x > /dev/tty && \
             read -r stat < /proc/$$/stat; set -- $stat; echo \"pid=$1 sid=$6\"",
        );
        spec.tty = true;
        let run = start_and_run(&rt, &mut table, &events, spec).await;

        let pid = run.pid.expect("spawned");
        assert_eq!(
            run.text(),
            format!("x\r\npid={pid} sid={pid}\r\n"),
            "{path}"
        );
        assert_eq!(run.exit, Some(ExitStatus::Code(0)), "{path}");
    }
}

/// Failures keep their kind on both paths and both ways of starting: a missing program (found
/// before the spawn: answered at once), a bad cwd and a program that is not executable (found
/// by the child: answered on the channel). Afterwards the key is free again.
pub async fn start_failures_keep_their_kind(rt: Arc<dyn Runtime>) {
    for (path, mut table, events) in tables(&rt) {
        let missing = table.start(1, sh("").tap_argv(&["no-such-command-execd-test"]));
        assert!(
            matches!(
                missing,
                Some(ProcessEvent::SpawnFailed {
                    kind: SpawnErrorKind::NotFound,
                    ..
                })
            ),
            "{path}: {missing:?}"
        );
        let mut bad_cwd = sh("").tap_argv(&["true"]);
        bad_cwd.cwd = PathBuf::from("/no/such/dir/execd-test");
        let not_executable = sh("").tap_argv(&["/etc/passwd"]);
        for (spec, kind, error) in [
            (
                bad_cwd,
                SpawnErrorKind::BadCwd,
                "No such file or directory (os error 2)",
            ),
            (
                not_executable,
                SpawnErrorKind::PermissionDenied,
                "Permission denied (os error 13)",
            ),
        ] {
            assert_eq!(table.start(1, spec), None, "{path}");
            let (key, event) = timeout(&rt, "the spawn answer", events.recv())
                .await
                .expect("event channel open");
            assert_eq!(key, 1);
            assert_eq!(
                event,
                ProcessEvent::SpawnFailed {
                    kind,
                    error: error.into()
                },
                "{path}"
            );
        }
        let run = start_and_run(&rt, &mut table, &events, sh("echo ok")).await;
        assert_eq!(
            (run.text().as_str(), run.exit),
            ("ok\n", Some(ExitStatus::Code(0)))
        );
    }
}

/// 64 starts at once all run and close, each answered before its output, with distinct pids.
pub async fn concurrent_starts_all_run_and_close(rt: Arc<dyn Runtime>) {
    const N: u64 = 64;
    let (tx, events) = async_channel::unbounded();
    let mut table: ProcessTable<u64> =
        ProcessTable::with_runtime(Arc::clone(&rt), tx).with_spawn_threads(3);
    for key in 0..N {
        assert_eq!(table.start(key, sh(&format!("echo {key}"))), None);
    }
    let runs = (0..N).map(|key| (key, Run::default())).collect();
    let runs = collect(&rt, &events, runs, 2).await;

    let pids: BTreeSet<u32> = runs.values().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), N as usize, "distinct pids");
    for (key, run) in &runs {
        assert_eq!(run.text(), format!("{key}\n"));
        assert_eq!(run.exit, Some(ExitStatus::Code(0)));
    }
}

/// A kill asked for before the spawn answer is carried out once the child runs.
pub async fn kill_before_the_spawn_answer_is_carried_out(rt: Arc<dyn Runtime>) {
    let (tx, events) = async_channel::unbounded();
    let mut table: ProcessTable<u64> =
        ProcessTable::with_runtime(Arc::clone(&rt), tx).without_cgroups();
    assert_eq!(table.start(1, sh("exec sleep 100")), None);
    table.kill(1);
    let runs = collect(&rt, &events, BTreeMap::from([(1, Run::default())]), 2).await;
    assert_eq!(runs[&1].exit, Some(ExitStatus::Signal(9)));
}

/// A started child dies with the spawner thread that started it (`PR_SET_PDEATHSIG`), which
/// lives as long as the table: a released child (not killed by the table) dies when the table
/// is dropped.
pub async fn a_released_child_dies_with_its_table(rt: Arc<dyn Runtime>) {
    let (tx, events) = async_channel::unbounded();
    let mut table: ProcessTable<u64> =
        ProcessTable::with_runtime(Arc::clone(&rt), tx).without_cgroups();
    assert_eq!(table.start(1, sh("echo up; exec sleep 100")), None);
    let (_, spawned) = timeout(&rt, "Spawned", events.recv()).await.expect("open");
    assert!(
        matches!(spawned, ProcessEvent::Spawned { .. }),
        "{spawned:?}"
    );
    let (_, up) = timeout(&rt, "output", events.recv()).await.expect("open");
    assert_eq!(
        up,
        ProcessEvent::Output {
            stream: Stream::Stdout,
            bytes: b"up\n".to_vec()
        }
    );
    table.release(1);
    drop(table);
    let mut exit = None;
    while exit.is_none() {
        let (_, event) = timeout(&rt, "the exit", events.recv()).await.expect("open");
        if let ProcessEvent::Exited { status } = event {
            exit = Some(status);
        }
    }
    assert_eq!(exit, Some(ExitStatus::Signal(9)));
}

trait TapArgv {
    fn tap_argv(self, argv: &[&str]) -> Self;
}

impl TapArgv for SpawnSpec {
    fn tap_argv(mut self, argv: &[&str]) -> Self {
        self.argv = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}
