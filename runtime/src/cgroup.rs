//! Process-tree containment with cgroup v2: one cgroup per child, so killing a process kills
//! every descendant, including those that left its process group (`setsid`, daemons) or
//! outlived it (background jobs with redirected output).
//!
//! Layout: the server's own cgroup (the `0::` line of `/proc/self/cgroup`, under the cgroup2
//! mount found in `/proc/self/mountinfo`) gets one directory per [`ProcessTable`], named
//! `execd-<pid>-<n>`, holding one leaf `p<n>` per child. The child joins its leaf between fork
//! and exec (it writes `0` to the leaf's `cgroup.procs`), so no descendant can start outside it.
//! A tree is killed with `cgroup.kill` (Linux ≥ 5.14), or else by SIGKILLing the pids listed in
//! `cgroup.procs` until it is empty. No controller is enabled: the cgroups only group.
//!
//! Where the directory cannot be created (no cgroup2 mount, no write access, no delegation), the
//! table falls back to process groups and `PR_SET_PDEATHSIG` ([`Containment::ProcessGroup`]).
//!
//! [`ProcessTable`]: crate::process::ProcessTable

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use tracing::{debug, trace, warn};

/// How a [`ProcessTable`](crate::process::ProcessTable) makes "kill the process" mean "kill
/// the whole tree".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Containment {
    /// Each child and all its descendants live in a cgroup v2 leaf of their own; a kill empties
    /// the leaf. Nothing escapes, not even `setsid`.
    Cgroup,
    /// Each child leads a process group; a kill signals the group, also after the child
    /// exited. Descendants that start a new session or process group (`setsid`) escape.
    ProcessGroup,
}

/// How long dropping a table waits for its killed trees to leave their cgroups before it
/// removes the directories (best effort: leftovers are empty directories).
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// Rounds of SIGKILL over `cgroup.procs` on kernels without `cgroup.kill` (a fork racing the
/// kill adds a pid the next round sees).
const KILL_ROUNDS: usize = 64;

/// Distinguishes the directories of several tables in one server process.
static TABLES: AtomicU64 = AtomicU64::new(0);

/// A table's cgroup directory (`<own cgroup>/execd-<pid>-<n>`) and the leaves it still has to
/// remove. Dropping it kills every tree in it and removes the directories.
#[derive(Debug)]
pub(crate) struct CgroupDir {
    dir: PathBuf,
    next_leaf: u64,
    /// Leaves of released processes whose trees were still alive; removed once empty.
    orphans: Vec<Leaf>,
}

/// One child's cgroup.
#[derive(Debug)]
pub(crate) struct Leaf {
    dir: PathBuf,
}

impl CgroupDir {
    /// Creates this table's directory under the server's own cgroup v2.
    ///
    /// # Errors
    /// No cgroup2 mount or no `0::` line (cgroup v1 only), or the directory cannot be created
    /// or its parent's `cgroup.procs` is not writable (no delegation).
    pub(crate) fn create() -> io::Result<CgroupDir> {
        let own = own_cgroup_dir()?;
        rustix::fs::access(
            own.join("cgroup.procs"),
            rustix::fs::Access::WRITE_OK | rustix::fs::Access::READ_OK,
        )?;
        remove_stale_dirs(&own);
        let n = TABLES.fetch_add(1, Ordering::Relaxed);
        let dir = own.join(format!("execd-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)?;
        if !dir.join("cgroup.procs").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "not a cgroup v2 directory",
            ));
        }
        debug!(dir = %dir.display(), "process trees contained in cgroups");
        Ok(CgroupDir {
            dir,
            next_leaf: 0,
            orphans: Vec::new(),
        })
    }

    /// Creates a leaf for the next child; returns it and its `cgroup.procs` opened for writing
    /// (close-on-exec), for the child to write `0` to between fork and exec.
    pub(crate) fn new_leaf(&mut self) -> io::Result<(Leaf, OwnedFd)> {
        self.sweep_orphans();
        let dir = self.dir.join(format!("p{}", self.next_leaf));
        self.next_leaf += 1;
        std::fs::create_dir(&dir)?;
        let procs = rustix::fs::open(
            dir.join("cgroup.procs"),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        match procs {
            Ok(fd) => Ok((Leaf { dir }, fd)),
            Err(err) => {
                let _ = std::fs::remove_dir(&dir);
                Err(err.into())
            }
        }
    }

    /// Takes back the leaf of a released process: removed now if empty, else kept (and killed
    /// with the table) until it is.
    pub(crate) fn release(&mut self, leaf: Leaf) {
        if !leaf.try_remove() {
            self.orphans.push(leaf);
        }
    }

    /// Kills the trees of released processes.
    pub(crate) fn kill_orphans(&mut self) {
        for leaf in &self.orphans {
            leaf.kill();
        }
    }

    fn sweep_orphans(&mut self) {
        self.orphans.retain(|leaf| !leaf.try_remove());
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let leaves: Vec<Leaf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| Leaf { dir: e.path() })
                .collect(),
            Err(err) => {
                warn!(dir = %self.dir.display(), %err, "cannot list the process cgroups");
                Vec::new()
            }
        };
        for leaf in &leaves {
            leaf.kill();
        }
        let deadline = Instant::now() + DRAIN_WAIT;
        for leaf in &leaves {
            while !leaf.try_remove() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => trace!(dir = %self.dir.display(), "cgroup directory removed"),
            Err(err) => warn!(dir = %self.dir.display(), %err, "cgroup directory left behind"),
        }
    }
}

impl Leaf {
    /// SIGKILLs every process in the leaf: `cgroup.kill`, else rounds over `cgroup.procs`.
    pub(crate) fn kill(&self) {
        match std::fs::write(self.dir.join("cgroup.kill"), b"1") {
            Ok(()) => {
                debug!(dir = %self.dir.display(), "cgroup killed");
                return;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && self.dir.exists() => {}
            Err(err) => {
                trace!(dir = %self.dir.display(), %err, "cgroup.kill failed");
                return;
            }
        }
        // Before Linux 5.14: kill what is listed until nothing is.
        for _ in 0..KILL_ROUNDS {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        debug!(dir = %self.dir.display(), "cgroup members killed");
    }

    /// Removes the leaf if no process is left in it; true when it is gone.
    pub(crate) fn try_remove(&self) -> bool {
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => true,
            Err(err) => err.kind() == io::ErrorKind::NotFound,
        }
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// Removes the empty directories that servers killed without cleanup (SIGKILL) left in `own`:
/// `execd-<pid>-<n>` whose pid no longer runs. Best effort.
fn remove_stale_dirs(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("execd-"))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(leaves) = std::fs::read_dir(entry.path()) {
            for leaf in leaves.filter_map(Result::ok) {
                let _ = std::fs::remove_dir(leaf.path());
            }
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

/// The directory of this process's cgroup v2: the cgroup2 mount point joined with the path of
/// the `0::` line of `/proc/self/cgroup`.
fn own_cgroup_dir() -> io::Result<PathBuf> {
    let unsupported = |what: &str| io::Error::new(io::ErrorKind::Unsupported, what.to_owned());
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| unsupported("no cgroup v2 hierarchy"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mount = cgroup2_mount(&mountinfo).ok_or_else(|| unsupported("cgroup2 is not mounted"))?;
    Ok(Path::new(&mount).join(path.trim_start_matches('/')))
}

/// The mount point of the first cgroup2 file system in `mountinfo` (proc(5) format: the mount
/// point is field 5, the file system type follows the ` - ` separator).
fn cgroup2_mount(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mount = left.split(' ').nth(4)?;
        Some(unescape_octal(mount))
    })
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup2_mount_is_found_in_a_hybrid_mountinfo() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo).as_deref(),
            Some("/sys/fs/cgroup/unified")
        );
        assert_eq!(cgroup2_mount("31 30 0:27 / /x rw - cgroup cgroup rw"), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_octal(r"/a\040b\\c"), r"/a b\\c");
        assert_eq!(unescape_octal(r"/a\134b"), r"/a\b");
    }
}
