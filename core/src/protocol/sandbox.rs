use serde::{Deserialize, Serialize};

/// The sandbox the executor applies to a process, reported as `sandboxType` in the
/// `process/start` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum SandboxType {
    /// No sandbox (`"none"`); such processes are never reported as sandbox-denied.
    #[default]
    None,
    /// The `sandbox` object of the start is enforced (`"linuxSeccomp"`, the reference's name
    /// for its Linux sandbox): Landlock, a mount namespace for read-only carve-outs, seccomp
    /// and no-new-privileges, applied between fork and exec (docs/SANDBOX.md).
    LinuxSeccomp,
    /// Linux landlock filesystem rules applied before exec (`"linuxLandlock"`, ext).
    LinuxLandlock,
}

impl SandboxType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxType::None => "none",
            SandboxType::LinuxSeccomp => "linuxSeccomp",
            SandboxType::LinuxLandlock => "linuxLandlock",
        }
    }
}
