//! The seccomp-BPF filter of a sandboxed child, compiled in the server before the fork.
//!
//! Matches the reference's network rule: with the network restricted, `socket(2)` fails with
//! `EPERM` for every family but `AF_UNIX`, and so do `ptrace`, `process_vm_readv`/`writev`
//! (no reaching into other processes of the user); with it enabled only `AF_VSOCK` sockets
//! are refused. `io_uring_*` always fail (an io_uring would bypass the socket rule).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use super::SetupError;

/// Compiles the filter for `network` (`true`: enabled).
///
/// # Errors
/// An architecture seccompiler does not know (execd's Linux targets are x86_64 and aarch64).
pub(crate) fn build(network: bool) -> Result<BpfProgram, SetupError> {
    let fail =
        |e: &dyn std::fmt::Display| SetupError(format!("cannot build the seccomp filter: {e}"));
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let family = |op, family: libc::c_int| -> Result<Vec<SeccompRule>, SetupError> {
        let family = u64::try_from(family).map_err(|e| fail(&e))?;
        let cond =
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, family).map_err(|e| fail(&e))?;
        Ok(vec![SeccompRule::new(vec![cond]).map_err(|e| fail(&e))?])
    };
    if network {
        rules.insert(libc::SYS_socket, family(SeccompCmpOp::Eq, libc::AF_VSOCK)?);
    } else {
        rules.insert(libc::SYS_socket, family(SeccompCmpOp::Ne, libc::AF_UNIX)?);
        rules.insert(
            libc::SYS_socketpair,
            family(SeccompCmpOp::Ne, libc::AF_UNIX)?,
        );
        for nr in [
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ] {
            rules.insert(nr, Vec::new());
        }
    }
    for nr in [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ] {
        rules.insert(nr, Vec::new());
    }
    let arch = std::env::consts::ARCH.try_into().map_err(|e| fail(&e))?;
    let eperm = u32::try_from(libc::EPERM).map_err(|e| fail(&e))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(eperm),
        arch,
    )
    .map_err(|e| fail(&e))?;
    filter.try_into().map_err(|e| fail(&e))
}
