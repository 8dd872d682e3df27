//! The `sandbox` object of `process/start` and of the `fs/*` requests, decoded exactly as the
//! Codex exec-server decodes it (PROTOCOL.md, Sandbox): outer keys camelCase, everything inside
//! `permissions` snake_case, unknown keys ignored, unknown variants and missing required fields
//! refused with serde's words (`-32602` "unknown variant `bogus`, expected one of `managed`,
//! `disabled`, `external`", "missing field `windowsSandboxLevel`").

use serde::{Deserialize, Serialize};

use crate::protocol::PathUri;

/// The `sandbox` object (`null` = unsandboxed is the caller's `Option`).
///
/// The process variant carries `cwd`, `workspaceRoots`, `windowsSandboxProxySettingsMode` and
/// `useLegacyLandlock`; the fs variant carries `policyContext {cwd, workspaceRoots}` and
/// `userHomeDir` instead. Both are accepted by this one type. `windowsSandboxLevel` is
/// required (the reference refuses its absence) although it means nothing on Linux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxParams {
    /// What the command may touch.
    pub permissions: Permissions,
    /// The directory `current_working_directory` entries resolve to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathUri>,
    /// The directories `project_roots` entries resolve to (not `cwd`: none → nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<PathUri>>,
    /// The fs variant's `{cwd, workspaceRoots}`; used when the outer keys are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_context: Option<PolicyContext>,
    /// The fs variant's home directory (decoded, not used on Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_home_dir: Option<PathUri>,
    /// Windows only; required on the wire.
    pub windows_sandbox_level: WindowsSandboxLevel,
    /// Windows only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_sandbox_proxy_settings_mode: Option<ProxySettingsMode>,
    /// The reference's choice of Linux pipeline; execd has one pipeline and ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_legacy_landlock: Option<bool>,
}

/// `policyContext` of the fs variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyContext {
    /// See [`SandboxParams::cwd`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathUri>,
    /// See [`SandboxParams::workspace_roots`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<PathUri>>,
}

/// `permissions`: `{"type": "managed" | "disabled" | "external", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Permissions {
    /// Filesystem and network rules enforced by the executor.
    Managed {
        /// Filesystem rules.
        file_system: FileSystemPermissions,
        /// Network rule.
        network: NetworkAccess,
    },
    /// No sandbox at all.
    Disabled,
    /// The filesystem is sandboxed elsewhere (open here); only the network rule applies.
    External {
        /// Network rule.
        network: NetworkAccess,
    },
}

/// `file_system`: `{"type": "restricted", "entries": […]}` or `{"type": "unrestricted"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileSystemPermissions {
    /// Only what `entries` grant.
    Restricted {
        /// The rules; the most specific path wins.
        entries: Vec<FsEntry>,
    },
    /// Everything readable and writable.
    Unrestricted,
}

/// One filesystem rule: `{path, access, missing_path_behavior?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// What the rule is about.
    pub path: FsPathSpec,
    /// What it grants.
    pub access: FsAccess,
    /// What to do when the path does not exist (only `skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_path_behavior: Option<MissingPathBehavior>,
}

/// `path` of an entry: `{"type": "path", "path"}`, `{"type": "glob_pattern", "pattern"}` or
/// `{"type": "special", "value": {"kind", …}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FsPathSpec {
    /// One absolute path (a PathUri).
    Path {
        /// The path.
        path: PathUri,
    },
    /// A glob (decoded; execd cannot enforce globs and refuses to start such a sandbox).
    GlobPattern {
        /// The pattern.
        pattern: String,
    },
    /// A path the executor resolves.
    Special {
        /// Which.
        value: SpecialPath,
    },
}

/// `value` of a special path: `{"kind": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SpecialPath {
    /// `/`.
    Root,
    /// The system directories a program needs to run (`/bin`, `/usr`, `/lib*`, `/etc`, …).
    Minimal,
    /// The sandbox's `cwd`.
    CurrentWorkingDirectory,
    /// Every workspace root, or `subpath` under each.
    ProjectRoots {
        /// A relative (or absolute) path joined to each root.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subpath: Option<String>,
    },
    /// `$TMPDIR` of the server's environment (nothing when unset).
    Tmpdir,
    /// `/tmp`.
    SlashTmp,
    /// A kind this executor does not know; the entry is ignored.
    Unknown {
        /// The kind's own path text.
        path: String,
        /// A subpath under it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subpath: Option<String>,
    },
}

/// `access` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsAccess {
    /// Read and execute.
    Read,
    /// Read, execute and write.
    Write,
    /// Nothing (reads refused).
    Deny,
    /// Nothing; execd treats it as `deny`.
    None,
}

/// `missing_path_behavior` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPathBehavior {
    /// A missing path is left out (read-only carve-outs are still protected).
    Skip,
}

/// `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAccess {
    /// Only `AF_UNIX` sockets.
    Restricted,
    /// Any socket but `AF_VSOCK`.
    Enabled,
}

/// `windowsSandboxLevel` (required; meaningless on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowsSandboxLevel {
    /// `disabled`.
    Disabled,
    /// `restricted-token`.
    RestrictedToken,
    /// `elevated`.
    Elevated,
    /// `mxc`.
    Mxc,
}

/// `windowsSandboxProxySettingsMode` (meaningless on Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxySettingsMode {
    /// `reconcile`.
    Reconcile,
    /// `preserve`.
    Preserve,
}
