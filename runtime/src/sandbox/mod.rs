//! Enforcement of the core's [`SandboxPolicy`](execd_core::sandbox::SandboxPolicy)
//! (docs/SANDBOX.md): the canonical-path check of sandboxed `fs/*` requests
//! ([`fs_guard`]), and, for sandboxed processes, the child's confinement between fork and exec.

mod fs_guard;

pub(crate) use fs_guard::perform;
