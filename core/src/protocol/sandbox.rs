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
    /// Linux landlock filesystem rules applied before exec (`"linuxLandlock"`, ext).
    LinuxLandlock,
}

impl SandboxType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxType::None => "none",
            SandboxType::LinuxLandlock => "linuxLandlock",
        }
    }
}
