//! Enforcement of the core's [`SandboxPolicy`] (docs/SANDBOX.md): the canonical-path check of
//! sandboxed `fs/*` requests ([`perform`]), and the confinement of a sandboxed child, applied
//! between fork and exec by a `pre_exec` hook ([`attach`]).
//!
//! Everything that allocates or opens files is prepared in the server before the fork (the
//! Landlock ruleset, the seccomp program, the mount plan); the child makes raw system calls
//! only, in this order: mount namespace and read-only carve-outs (when a writable root has
//! any), `PR_SET_NO_NEW_PRIVS`, `landlock_restrict_self`, the seccomp filter. Any failure fails
//! the spawn (fail closed): in the server with the reason, in the child with the step and the
//! OS error, reported as [`SpawnErrorKind::Sandbox`](execd_core::server::SpawnErrorKind).

mod fs_guard;
#[cfg(target_os = "linux")]
mod landlock_rules;
#[cfg(target_os = "linux")]
mod mounts;
#[cfg(target_os = "linux")]
mod seccomp;

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use execd_core::sandbox::SandboxPolicy;

pub(crate) use fs_guard::{perform, read_file_in_pieces};

/// Why a sandbox could not be set up; its text is the start's `-32602` message.
#[derive(Debug, thiserror::Error)]
#[error("failed to prepare process sandbox: {0}")]
pub(crate) struct SetupError(pub(crate) String);

/// Whether a spawn error is a sandbox set-up failure.
pub(crate) fn is_setup_error(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<SetupError>())
}

/// A sandboxed spawn's state in the server: the pipe the child reports a failed step on, and
/// what must live as long as the process (placeholders of missing carve-outs).
#[derive(Debug)]
pub(crate) struct Attached {
    report: OwnedFd,
    #[cfg(target_os = "linux")]
    _mounts: Option<std::sync::Arc<mounts::MountPlan>>,
}

/// Steps of the child's set-up, as reported on the pipe.
const STEPS: &[&str] = &[
    "",
    "mount namespace for read-only carve-outs (are user namespaces enabled?)",
    "no_new_privs",
    "landlock_restrict_self",
    "seccomp filter",
];

/// Prepares `policy` and registers the child's part as a `pre_exec` hook on `command` (after
/// the hooks already registered). `None` for an unsandboxed spawn.
///
/// # Errors
/// A [`SetupError`] (as an `io::Error`): the kernel lacks Landlock (ABI ≥ 3), the ruleset or
/// filter cannot be built, a placeholder cannot be created, or this is not Linux.
pub(crate) fn attach(
    policy: Option<&SandboxPolicy>,
    cwd: &Path,
    command: &mut std::process::Command,
) -> io::Result<Option<Attached>> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    attach_linux(policy, cwd, command)
        .map(Some)
        .map_err(io::Error::other)
}

/// The error of a failed sandboxed spawn: a set-up step the child reported, else `err`.
pub(crate) fn spawn_error(attached: Option<&Attached>, err: io::Error) -> io::Error {
    let Some(attached) = attached else {
        return err;
    };
    let mut step = [0u8; 1];
    match rustix::io::read(&attached.report, &mut step) {
        Ok(1) => {
            let what = STEPS.get(usize::from(step[0])).copied().unwrap_or("set-up");
            io::Error::other(SetupError(format!("{what}: {err}")))
        }
        _ => err,
    }
}

#[cfg(not(target_os = "linux"))]
fn attach_linux(
    _policy: &SandboxPolicy,
    _cwd: &Path,
    _command: &mut std::process::Command,
) -> Result<Attached, SetupError> {
    Err(SetupError("sandboxing needs Linux".into()))
}

#[cfg(target_os = "linux")]
fn attach_linux(
    policy: &SandboxPolicy,
    cwd: &Path,
    command: &mut std::process::Command,
) -> Result<Attached, SetupError> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    use std::sync::Arc;

    use execd_core::sandbox::FsRules;

    let (ruleset, mounts) = match &policy.file_system {
        FsRules::Unrestricted => (None, None),
        FsRules::Restricted(fs) => (
            Some(landlock_rules::build(fs)?),
            mounts::MountPlan::new(fs, cwd)?.map(Arc::new),
        ),
    };
    let filter = seccomp::build(policy.network)?;
    let (report, report_tx) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| SetupError(format!("cannot create a pipe: {e}")))?;
    let child_mounts = mounts.clone();
    let hook = move || -> io::Result<()> {
        let fail = |step: u8, err: io::Error| {
            let _ = rustix::io::write(&report_tx, &[step]);
            err
        };
        if let Some(plan) = &child_mounts {
            plan.apply().map_err(|e| fail(1, e))?;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail(2, io::Error::last_os_error()));
        }
        if let Some(fd) = &ruleset {
            // SAFETY: the ruleset descriptor is open (owned by this closure); flags 0.
            let rc =
                unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd.as_raw_fd(), 0u32) };
            if rc != 0 {
                return Err(fail(3, io::Error::last_os_error()));
            }
        }
        seccompiler::apply_filter(&filter).map_err(|e| {
            let err = match e {
                seccompiler::Error::Seccomp(err) | seccompiler::Error::Prctl(err) => err,
                _ => io::Error::from_raw_os_error(libc::EINVAL),
            };
            fail(4, err)
        })
    };
    // SAFETY: the hook makes raw system calls only (unshare, open/write/close, mount, chdir,
    // prctl, landlock_restrict_self, seccomp, write) on data prepared before the fork, and
    // allocates nothing: async-signal-safe between fork and exec.
    unsafe { command.pre_exec(hook) };
    Ok(Attached {
        report,
        _mounts: mounts,
    })
}
