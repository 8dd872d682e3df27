//! The same operations done locally, without a server: the floor any server adds to.

use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// `/bin/true` spawned and waited for, as `std::process::Command` does it (posix_spawn, i.e.
/// `clone(CLONE_VM | CLONE_VFORK)`: no page tables copied).
pub(crate) fn spawn(n: usize) -> anyhow::Result<Vec<Duration>> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            Command::new("/bin/true").status()?;
            Ok(t0.elapsed())
        })
        .collect()
}

/// `/bin/true` with a `pre_exec` hook and its own process group, which forces `fork` +
/// `exec` like a server that sets the child up between the two (execd resets signals and sets
/// PDEATHSIG there). The gap to [`spawn`] is the price of `fork` in this process.
pub(crate) fn fork_spawn(n: usize) -> anyhow::Result<Vec<Duration>> {
    (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let mut c = Command::new("/bin/true");
            c.process_group(0);
            // SAFETY: the hook does nothing, which is async-signal-safe.
            unsafe { c.pre_exec(|| Ok(())) };
            c.status()?;
            Ok(t0.elapsed())
        })
        .collect()
}

/// `n` `/bin/true` spawned back to back, then all waited for: the wall time.
pub(crate) fn concurrent_spawn(n: usize) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let children = (0..n)
        .map(|_| Command::new("/bin/true").spawn())
        .collect::<Result<Vec<_>, _>>()?;
    for mut c in children {
        c.wait()?;
    }
    Ok(t0.elapsed())
}

/// 5 bytes written to `cat` over a pipe → read back.
pub(crate) fn echo(n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut buf = [0u8; 64];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        stdin.write_all(b"ping\n")?;
        let _ = stdout.read(&mut buf)?;
        samples.push(t0.elapsed());
    }
    drop(stdin);
    child.wait()?;
    Ok(samples)
}

/// `head -c N /dev/zero` read through a pipe in 64 KiB reads; seconds and bytes.
pub(crate) fn throughput(bytes: u64) -> anyhow::Result<(f64, u64)> {
    let t0 = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = stdout.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    child.wait()?;
    Ok((t0.elapsed().as_secs_f64(), total))
}
