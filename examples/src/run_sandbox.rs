//! `execd run --sandbox read-only|workspace-write [--writable DIR]… [--network]`: the same
//! `sandbox` object Codex sends with `process/start` (docs/SANDBOX.md), built from flags.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use execd_core::sandbox::SandboxParams;
use execd_core::PathUri;
use serde_json::{json, Value};

/// The sandbox flags of `execd run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunSandboxArgs {
    /// Run the command in the Linux sandbox (docs/SANDBOX.md), as Codex asks for it:
    /// `read-only` (everything readable, nothing writable) or `workspace-write` (the working
    /// directory, `/tmp` and the server's `$TMPDIR` writable, their `.git`, `.codex`,
    /// `.agents` and `.aws` read-only). The network is off (Unix sockets only) unless
    /// `--network`. The server refuses to start the command (exit 126) rather than run it
    /// unconfined when the sandbox cannot be built.
    #[arg(long, value_enum, value_name = "MODE")]
    sandbox: Option<SandboxMode>,
    /// Also make DIR writable, a path on the server (repeatable; needs `--sandbox`).
    #[arg(long, value_name = "DIR", requires = "sandbox")]
    writable: Vec<PathBuf>,
    /// Allow network access inside the sandbox (needs `--sandbox`).
    #[arg(long, requires = "sandbox")]
    network: bool,
}

/// The project-root subpaths Codex's workspace-write object names read-only (the server
/// protects them under every writable root anyway).
const PROTECTED: [&str; 4] = [".git", ".agents", ".codex", ".aws"];

/// The variable Codex sets for a command whose network is restricted (tools check it).
const NETWORK_DISABLED_ENV: &str = "CODEX_SANDBOX_NETWORK_DISABLED";

/// `--sandbox` modes, named as Codex's sandbox modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SandboxMode {
    /// Nothing writable.
    ReadOnly,
    /// The working directory and the temporary directories writable.
    WorkspaceWrite,
}

impl RunSandboxArgs {
    /// Whether `--sandbox` was given.
    pub(crate) fn enabled(&self) -> bool {
        self.sandbox.is_some()
    }

    /// The variable to set in the command's environment, as Codex does:
    /// `CODEX_SANDBOX_NETWORK_DISABLED=1` when sandboxed without `--network`.
    pub(crate) fn env(&self) -> Option<(String, String)> {
        (self.sandbox.is_some() && !self.network)
            .then(|| (NETWORK_DISABLED_ENV.to_owned(), "1".to_owned()))
    }

    /// The `sandbox` object for a command running in `cwd` (its workspace root); `None`
    /// without `--sandbox`.
    ///
    /// # Errors
    /// A `--writable` path that cannot be made absolute.
    pub(crate) fn params(&self, cwd: &PathUri) -> anyhow::Result<Option<SandboxParams>> {
        let Some(mode) = self.sandbox else {
            return Ok(None);
        };
        let writable = self
            .writable
            .iter()
            .map(|dir| uri(dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let object = codex_object(mode, cwd, &writable, self.network);
        serde_json::from_value(object)
            .map(Some)
            .context("building the sandbox object")
    }
}

/// The `sandbox` object Codex sends with `process/start` in `mode` for a command whose
/// workspace is `cwd`, with `writable` directories (URIs) approved for writes and the network
/// `enabled` or restricted (keys as in `shared/PROTOCOL.md`, Sandbox).
pub(crate) fn codex_object(
    mode: SandboxMode,
    cwd: &PathUri,
    writable: &[String],
    network: bool,
) -> Value {
    let special = |kind: &str| json!({"type": "special", "value": {"kind": kind}});
    let mut entries = vec![json!({"path": special("root"), "access": "read"})];
    if mode == SandboxMode::WorkspaceWrite {
        for kind in ["project_roots", "slash_tmp", "tmpdir"] {
            entries.push(json!({"path": special(kind), "access": "write"}));
        }
        for subpath in PROTECTED {
            entries.push(json!({
                "path": {"type": "special",
                    "value": {"kind": "project_roots", "subpath": subpath}},
                "access": "read", "missing_path_behavior": "skip"}));
        }
    }
    // Codex's entry for a directory the user approved writes to.
    for dir in writable {
        entries.push(json!({"path": {"type": "path", "path": dir}, "access": "write"}));
    }
    let network = if network { "enabled" } else { "restricted" };
    json!({
        "permissions": {"type": "managed",
            "file_system": {"type": "restricted", "entries": entries}, "network": network},
        "cwd": cwd, "workspaceRoots": [cwd], "windowsSandboxLevel": "disabled",
        "windowsSandboxProxySettingsMode": "reconcile", "useLegacyLandlock": false,
    })
}

/// `path` (made absolute against this process's working directory) as a `file://` URI.
fn uri(path: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(path).with_context(|| format!("--writable {path:?}"))?;
    Ok(PathUri::from_host_path(&abs)
        .map_err(|e| anyhow!("--writable {path:?}: {e}"))?
        .as_str()
        .to_owned())
}
