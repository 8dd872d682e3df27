//! `execd run --ssh` through a real OpenSSH server: each test starts `sshd` (Debian's
//! openssh-server, `/usr/sbin/sshd`) on a free loopback port with a generated host key and a
//! generated client key, its own config and its own daemon directory, and drives the real
//! `execd` binary. The ssh connection is killed mid-run (SIGKILL to the ssh child of `execd
//! run`) and the output must still arrive exactly once.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{output_within, wait_within, KillOnDrop, EXECD};

/// Where Debian's openssh-server puts the daemon.
const SSHD: &str = "/usr/sbin/sshd";
/// Bound on every wait in these tests.
const LIMIT: Duration = Duration::from_secs(60);

/// A running sshd on 127.0.0.1 and everything `execd run --ssh` needs to reach it; stops the
/// execd daemon the first bridge started, then sshd, when dropped.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    _sshd: KillOnDrop,
}

impl Sshd {
    fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install -y openssh-server"
        );
        // sshd's privilege separation directory; created by the package's service at boot.
        let _ = fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen");
            assert!(status.success());
        }
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n\
             AuthorizedKeysFile {keys}\nPidFile none\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin yes\n",
            host_key = d.join("host_key").display(),
            keys = d.join("authorized_keys").display(),
        );
        fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd");
        let stderr = child.stderr.take().expect("stderr");
        let sshd = KillOnDrop(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reports the listening line, then keeps draining so sshd never blocks on a log.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            let line = rx
                .recv_timeout(LIMIT)
                .expect("sshd reports it is listening");
            if line.contains("Server listening on 127.0.0.1") {
                break;
            }
        }
        Self::write_remote_execd(d);
        Sshd {
            dir,
            port,
            _sshd: sshd,
        }
    }

    /// The "remote" execd: this build, its daemon in this test's directory (not the user's),
    /// started with 16 MiB of retained output per process so output produced while the
    /// connection is down is kept.
    fn write_remote_execd(d: &Path) {
        let script = format!(
            "#!/bin/sh\nXDG_RUNTIME_DIR={xdg} exec {EXECD} \"$@\" -- --retained-bytes 16777216\n",
            xdg = d.join("xdg").display(),
        );
        let path = d.join("remote-execd");
        fs::write(&path, script).expect("remote-execd");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn daemon_dir(&self) -> PathBuf {
        self.dir.path().join("xdg").join("execd")
    }

    /// `execd run --ssh 127.0.0.1 <ssh options> CMD…`.
    fn run(&self, argv: &[&str]) -> Command {
        self.run_with(&[], &self.dir.path().join("remote-execd"), argv)
    }

    /// `execd run FLAGS… --ssh 127.0.0.1 <ssh options> --ssh-execd REMOTE_EXECD CMD…`.
    fn run_with(&self, flags: &[&str], remote_execd: &Path, argv: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new(EXECD);
        cmd.arg("run")
            .args(flags)
            .args(["--ssh", "127.0.0.1"])
            .arg(format!("--ssh-opt=-p{}", self.port))
            .arg(format!("--ssh-opt=-i{}", d.join("client_key").display()))
            .args([
                "--ssh-opt=-F/dev/null",
                "--ssh-opt=-oIdentitiesOnly=yes",
                "--ssh-opt=-oStrictHostKeyChecking=no",
                "--ssh-opt=-oUserKnownHostsFile=/dev/null",
                "--ssh-opt=-oLogLevel=ERROR",
                "--ssh-execd",
            ])
            .arg(remote_execd)
            .args(argv);
        cmd
    }

    /// The pid of the execd daemon the first bridge started.
    fn daemon_pid(&self) -> Option<u32> {
        fs::read_to_string(self.daemon_dir().join("serve.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            // SIGTERM: the daemon kills its process trees and exits; its bridges then end.
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn ssh_runs_a_command_with_exact_output_and_exit_code() {
    let sshd = Sshd::start();
    let out = output_within(
        sshd.run(&["sh", "-c", "echo out; echo err >&2; pwd; exit 3"]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    let home = std::env::var("HOME").expect("HOME");
    // Without --cwd the command starts in the remote home directory, as `ssh HOST CMD` does.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("out\n{home}\n")
    );
    assert_eq!(stderr, "err\n");
    let mode = fs::metadata(sshd.daemon_dir().join("serve.sock"))
        .expect("the daemon's socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is private to its user");
}

#[test]
fn ssh_forwards_stdin_exactly() {
    let sshd = Sshd::start();
    let input: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
    let mut child = sshd
        .run(&["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()))
    };
    let out = wait_within(child, LIMIT);
    writer.join().expect("writer").expect("write stdin");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == input.as_bytes(), "stdout differs from stdin");
}

/// The headline: `seq 1 2000000` (14.9 MB) while the ssh process under `execd run` is
/// SIGKILLed three times; every line arrives exactly once, in order, and the run reports three
/// reconnects.
///
/// The kills are [`KILL_EVERY`] bytes of output apart, more than execd can hold for a reader
/// that does not read (about 1.4 MB: its 1 MiB event queue, the stdout pipe, one chunk): the
/// output read between two kills came over the connection that replaced the killed one, so
/// each kill lands after the previous reconnect finished (a kill during a reconnect is one
/// reconnect, not two), and the output left after the last kill cannot already be in execd.
#[test]
fn seq_survives_the_ssh_process_being_killed_three_times() {
    let sshd = Sshd::start();
    let remote_execd = sshd.dir.path().join("remote-execd");
    const LINES: u32 = 2_000_000;
    const KILL_EVERY: usize = 3_000_000;
    let mut cmd = sshd.run_with(
        &["--stats"],
        &remote_execd,
        &["seq", "1", &LINES.to_string()],
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let execd_pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let child = KillOnDrop(child);
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = err_tx.send(text);
    });
    // Reads only when the test asks (a rendezvous channel), so execd, the connection and the
    // command are held back while the test kills ssh: each kill lands mid-run.
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(0);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut out = Vec::new();
    let mut killed = Vec::new();
    for round in 1..=3 {
        while out.len() < round * KILL_EVERY {
            let chunk = rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("output stalled at {} bytes", out.len()));
            out.extend(chunk);
        }
        let ssh = ssh_child_of(execd_pid, &killed);
        // The ssh process is ours: a child of the execd this test started.
        let status = Command::new("kill").args(["-9", &ssh.to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill ssh {ssh}");
        killed.push(ssh);
    }
    while let Ok(chunk) = rx.recv_timeout(LIMIT) {
        out.extend(chunk);
    }
    let mut child = child;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(started.elapsed() < LIMIT, "execd did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = err_rx.recv_timeout(LIMIT).unwrap_or_default();
    let want: Vec<u8> = (1..=LINES)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let first_difference = out.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        out == want,
        "{} bytes, want {}; first difference at {first_difference:?}; stderr: {stderr}",
        out.len(),
        want.len()
    );
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("execd: exit code 0, reconnects 3,"),
        "stderr: {stderr}"
    );
}

/// The pid of the `ssh` child of process `parent` that is not in `exclude`, waiting for it to
/// appear.
fn ssh_child_of(parent: u32, exclude: &[u32]) -> u32 {
    let started = Instant::now();
    while started.elapsed() < LIMIT {
        for pid in children(parent) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            if argv0 == b"ssh" && !exclude.contains(&pid) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no new ssh child of {parent} within {LIMIT:?}");
}

/// The children of `pid`, from every thread's `/proc/PID/task/TID/children`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[test]
fn two_concurrent_ssh_runs_share_one_daemon() {
    let sshd = Sshd::start();
    // Both start before a daemon exists: the lock lets only one bridge start it.
    let spawn = || {
        sshd.run(&["sh", "-c", "echo $PPID; sleep 1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (wait_within(a, LIMIT), wait_within(b, LIMIT));
    for out in [&a, &b] {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let daemon = sshd.daemon_pid().expect("the daemon's pid file");
    assert_eq!(String::from_utf8_lossy(&a.stdout), format!("{daemon}\n"));
    assert_eq!(String::from_utf8_lossy(&b.stdout), format!("{daemon}\n"));
}

#[test]
fn a_missing_remote_execd_is_named_with_the_flag_that_fixes_it() {
    let sshd = Sshd::start();
    let cmd = sshd.run_with(&[], Path::new("/nonexistent/execd"), &["true"]);
    let out = output_within(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(255));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.ends_with(
            "execd: cannot connect to ssh://127.0.0.1: `/nonexistent/execd` was not found on \
             127.0.0.1 (exit status 127); install execd there or name it with --ssh-execd\n"
        ),
        "stderr: {stderr}"
    );
}
