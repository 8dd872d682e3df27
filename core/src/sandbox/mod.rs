//! The process sandbox (PROTOCOL.md, Sandbox; docs/SANDBOX.md): the `sandbox` object Codex
//! sends with `process/start` and the `fs/*` requests, decoded exactly ([`SandboxParams`]),
//! resolved to a [`SandboxPolicy`] of absolute paths (a pure function with table tests), and
//! the rule for sandboxed `fs/*` requests ([`check_fs_op`]).
//!
//! The core decides; the runtime enforces: a sandboxed start leaves as a
//! [`SpawnSpec`](crate::SpawnSpec) carrying the policy, which the runtime applies to the child
//! between fork and exec (Landlock, a mount namespace for carve-outs, seccomp), failing the
//! start when it cannot (fail closed).

mod fs_check;
mod policy;
mod wire;

#[cfg(test)]
mod tests;

pub use fs_check::{check_fs_op, check_read, check_write, read_only_error};
pub use policy::{
    normalize, start_policy, FsRules, ResolveContext, RestrictedFs, SandboxError, SandboxPolicy,
    WritableRoot, MINIMAL_READ_PATHS, PROTECTED_NAMES,
};
pub use wire::{
    FileSystemPermissions, FsAccess, FsEntry, FsPathSpec, MissingPathBehavior, NetworkAccess,
    Permissions, PolicyContext, ProxySettingsMode, SandboxParams, SpecialPath, WindowsSandboxLevel,
};
