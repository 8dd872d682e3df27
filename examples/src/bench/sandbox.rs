//! The `sandbox` scenario: what the Linux sandbox adds to a start. Sequential starts of
//! `/bin/true` → `process/closed`, unsandboxed and under Codex's read-only and workspace-write
//! `sandbox` objects (the latter with its `.git`, `.codex`, `.agents`, `.aws` carve-outs, so
//! the mount namespace is built each time), in a fresh workspace directory under the temp
//! dir; then the ratio of the p50s. The workspace is made on this machine: the server must
//! run here too.

use execd_core::PathUri;

use super::client::Conn;
use super::latency::spawn_to_closed;
use super::report::{percentile_ms, Report};
use crate::run_sandbox::{codex_object, SandboxMode};

/// A directory removed on drop.
struct Workspace(std::path::PathBuf);

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Measures and reports the scenario on `c`, `n` starts per variant.
pub(crate) async fn measure(c: &mut Conn, n: usize, report: &mut Report) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("execd-bench-sandbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let workspace = Workspace(dir.canonicalize()?);
    let cwd = PathUri::from_host_path(&workspace.0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let off = spawn_to_closed(c, n, "plain", None).await?;
    report.latency(
        "sandbox_off_closed",
        "process/start /bin/true -> process/closed, no sandbox",
        &off.to_closed,
    );
    let variants = [
        (
            "sandbox_ro_closed",
            "read-only",
            SandboxMode::ReadOnly,
            "sandbox_ro_ratio",
        ),
        (
            "sandbox_ww_closed",
            "workspace-write",
            SandboxMode::WorkspaceWrite,
            "sandbox_ww_ratio",
        ),
    ];
    for (key, name, mode, ratio_key) in variants {
        let object = codex_object(mode, &cwd, &[], false);
        let label = format!("process/start /bin/true -> process/closed, {name} sandbox");
        let s = match spawn_to_closed(c, n, name, Some(&object)).await {
            Ok(s) => s,
            // A server that cannot sandbox here (the reference without bubblewrap) is
            // reported, not timed; the other scenarios go on.
            Err(e) => {
                report.skipped(key, label, format!("{e:#}"));
                continue;
            }
        };
        report.latency(key, label, &s.to_closed);
        report.scalar(
            ratio_key,
            format!("{name} sandboxed start -> closed / unsandboxed (p50)"),
            percentile_ms(&s.to_closed, 0.5) / percentile_ms(&off.to_closed, 0.5),
            "x",
            None,
        );
    }
    Ok(())
}
