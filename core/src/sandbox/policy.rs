//! Policy resolution: a decoded [`SandboxParams`] and what the server knows (the start's
//! `cwd`, its own `$TMPDIR`) become one [`SandboxPolicy`] of absolute paths, which the runtime
//! enforces (Landlock, mount namespace, seccomp) and the core checks `fs/*` paths against.
//! Pure: no filesystem access, so paths are normalized lexically and the runtime decides what
//! exists.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use super::wire::{
    FileSystemPermissions, FsAccess, FsPathSpec, NetworkAccess, Permissions, SandboxParams,
    SpecialPath,
};
use crate::protocol::PathUri;

/// Names kept read-only under every writable root, existing or not (observed on the
/// reference: `.git`, `.agents`, `.codex`, `.aws` appear as empty read-only directories when
/// missing).
pub const PROTECTED_NAMES: &[&str] = &[".git", ".agents", ".codex", ".aws"];

/// What `minimal` grants read access to: the directories a dynamically linked program needs
/// to start and run.
pub const MINIMAL_READ_PATHS: &[&str] = &[
    "/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/dev", "/proc", "/sys",
];

/// The sandbox a process (or an fs request) runs under, resolved to absolute host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// Filesystem rules.
    pub file_system: FsRules,
    /// `true`: any socket family but `AF_VSOCK`; `false`: only `AF_UNIX` sockets.
    pub network: bool,
}

/// The filesystem half of a [`SandboxPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsRules {
    /// No filesystem restriction (`external`, or `unrestricted`).
    Unrestricted,
    /// Only what the lists grant; everything else is neither readable nor writable.
    Restricted(RestrictedFs),
}

/// Resolved `restricted` filesystem rules. Paths are absolute and lexically normal (no `.`,
/// `..` or trailing `/`), each list sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestrictedFs {
    /// Readable (and executable) trees that are not also writable.
    pub readable: Vec<PathBuf>,
    /// Writable (and readable) trees with their read-only carve-outs.
    pub writable: Vec<WritableRoot>,
    /// Trees that may not even be read (`deny` and `none` entries).
    pub denied: Vec<PathBuf>,
}

/// A writable tree and the paths under it that stay read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableRoot {
    /// The tree.
    pub root: PathBuf,
    /// Read-only paths strictly under `root`: [`PROTECTED_NAMES`] and every `read` entry
    /// under it, whether or not they exist.
    pub read_only: Vec<PathBuf>,
}

/// What the core knows that the `sandbox` object leaves implicit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveContext {
    /// The start's working directory: `current_working_directory` when the object has no
    /// `cwd`.
    pub cwd: Option<PathBuf>,
    /// The server's `$TMPDIR`: what `tmpdir` resolves to (nothing when unset).
    pub tmpdir: Option<PathBuf>,
}

/// Why a sandbox object cannot be turned into a policy; answered `-32602` "failed to prepare
/// process sandbox: …" (the reference's prefix for a sandbox it cannot build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to prepare process sandbox: {0}")]
pub struct SandboxError(pub String);

impl SandboxPolicy {
    /// Resolves `params`. `Ok(None)`: `permissions.type` is `disabled`, nothing to enforce.
    ///
    /// Rules: `root` is `/`; `minimal` is [`MINIMAL_READ_PATHS`]; `project_roots` is each
    /// workspace root (`workspaceRoots`, else `policyContext.workspaceRoots`; none → the entry
    /// grants nothing), joined with `subpath`; `current_working_directory` is `cwd` (else
    /// `policyContext.cwd`, else the start's); `tmpdir` is the server's `$TMPDIR`;
    /// `slash_tmp` is `/tmp`; `unknown` kinds grant nothing. Several entries on one path:
    /// `deny`/`none` wins, then `write`, then `read`. A `read` entry strictly under a writable
    /// root is a read-only carve-out of the deepest such root, as are [`PROTECTED_NAMES`].
    ///
    /// # Errors
    /// A `glob_pattern` entry (execd cannot enforce globs; refusing is failing closed), or a
    /// path on another host.
    pub fn resolve(
        params: &SandboxParams,
        ctx: &ResolveContext,
    ) -> Result<Option<SandboxPolicy>, SandboxError> {
        let (file_system, network) = match &params.permissions {
            Permissions::Disabled => return Ok(None),
            Permissions::External { network } => (FsRules::Unrestricted, *network),
            Permissions::Managed {
                file_system: FileSystemPermissions::Unrestricted,
                network,
            } => (FsRules::Unrestricted, *network),
            Permissions::Managed {
                file_system: FileSystemPermissions::Restricted { entries },
                network,
            } => {
                let mut grants: BTreeMap<PathBuf, FsAccess> = BTreeMap::new();
                for entry in entries {
                    for path in resolve_path(&entry.path, params, ctx)? {
                        let access = match entry.access {
                            FsAccess::None => FsAccess::Deny,
                            other => other,
                        };
                        let slot = grants.entry(path).or_insert(access);
                        *slot = strongest(*slot, access);
                    }
                }
                (FsRules::Restricted(restrict(&grants)), *network)
            }
        };
        Ok(Some(SandboxPolicy {
            file_system,
            network: network == NetworkAccess::Enabled,
        }))
    }

    /// Whether a process under this policy may write `path` (absolute): under a writable root,
    /// outside every read-only carve-out and every denied tree. Lexical: the runtime applies
    /// it again to the canonical path, so a symlink cannot lead out.
    pub fn may_write(&self, path: &Path) -> bool {
        let path = normalize(path);
        match &self.file_system {
            FsRules::Unrestricted => true,
            FsRules::Restricted(fs) => {
                !under_any(&path, fs.denied.iter())
                    && under_any(&path, fs.writable.iter().map(|w| &w.root))
                    && !under_any(&path, fs.writable.iter().flat_map(|w| &w.read_only))
            }
        }
    }

    /// Whether a process under this policy may read `path` (absolute): under a readable or
    /// writable root and outside every denied tree.
    pub fn may_read(&self, path: &Path) -> bool {
        let path = normalize(path);
        match &self.file_system {
            FsRules::Unrestricted => true,
            FsRules::Restricted(fs) => {
                !under_any(&path, fs.denied.iter())
                    && (under_any(&path, fs.readable.iter())
                        || under_any(&path, fs.writable.iter().map(|w| &w.root)))
            }
        }
    }
}

impl fmt::Display for SandboxPolicy {
    /// One line for logs: `network=off readable=[/] writable=[/w (-.git,…)] denied=[]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = if self.network { "on" } else { "off" };
        match &self.file_system {
            FsRules::Unrestricted => write!(f, "network={net} filesystem=unrestricted"),
            FsRules::Restricted(fs) => write!(
                f,
                "network={net} readable={:?} writable={:?} denied={:?}",
                fs.readable,
                fs.writable.iter().map(|w| &w.root).collect::<Vec<_>>(),
                fs.denied
            ),
        }
    }
}

/// The policy of a `process/start` whose `sandbox` is `params` (`None`: unsandboxed), with
/// `current_working_directory` falling back to the start's `cwd` and `tmpdir` taken from the
/// server's environment (`host_env["TMPDIR"]`).
///
/// # Errors
/// See [`SandboxPolicy::resolve`].
pub fn start_policy(
    params: Option<&SandboxParams>,
    cwd: &Path,
    host_env: &BTreeMap<String, String>,
) -> Result<Option<SandboxPolicy>, SandboxError> {
    let Some(params) = params else {
        return Ok(None);
    };
    let ctx = ResolveContext {
        cwd: Some(cwd.to_path_buf()),
        tmpdir: host_env
            .get("TMPDIR")
            .filter(|t| t.starts_with('/'))
            .map(PathBuf::from),
    };
    SandboxPolicy::resolve(params, &ctx)
}

/// The stronger of two grants on one path: deny, then write, then read.
fn strongest(a: FsAccess, b: FsAccess) -> FsAccess {
    let rank = |x: FsAccess| match x {
        FsAccess::Read => 0,
        FsAccess::Write => 1,
        FsAccess::Deny | FsAccess::None => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// Splits the per-path grants into the three lists.
fn restrict(grants: &BTreeMap<PathBuf, FsAccess>) -> RestrictedFs {
    let of = |want: FsAccess| {
        grants
            .iter()
            .filter(move |(_, a)| **a == want)
            .map(|(p, _)| p.clone())
    };
    let roots: Vec<PathBuf> = of(FsAccess::Write).collect();
    let mut writable: Vec<WritableRoot> = roots
        .iter()
        .map(|root| WritableRoot {
            root: root.clone(),
            read_only: PROTECTED_NAMES.iter().map(|n| root.join(n)).collect(),
        })
        .collect();
    let mut readable = Vec::new();
    for path in of(FsAccess::Read) {
        // The deepest writable root strictly above it, if any, makes it a carve-out.
        let owner = writable
            .iter_mut()
            .filter(|w| path != w.root && path.starts_with(&w.root))
            .max_by_key(|w| w.root.components().count());
        match owner {
            Some(w) => w.read_only.push(path),
            None => readable.push(path),
        }
    }
    for w in &mut writable {
        w.read_only.sort();
        w.read_only.dedup();
    }
    RestrictedFs {
        readable,
        writable,
        denied: of(FsAccess::Deny).collect(),
    }
}

/// The host paths one entry names (none for an `unknown` kind or an unset `$TMPDIR`).
fn resolve_path(
    spec: &FsPathSpec,
    params: &SandboxParams,
    ctx: &ResolveContext,
) -> Result<Vec<PathBuf>, SandboxError> {
    let paths = match spec {
        FsPathSpec::Path { path } => vec![host(path)?],
        FsPathSpec::GlobPattern { pattern } => {
            return Err(SandboxError(format!(
                "glob_pattern entries are not supported (pattern `{pattern}`)"
            )))
        }
        FsPathSpec::Special { value } => match value {
            SpecialPath::Root => vec![PathBuf::from("/")],
            SpecialPath::Minimal => MINIMAL_READ_PATHS.iter().map(PathBuf::from).collect(),
            SpecialPath::CurrentWorkingDirectory => {
                let cwd = params
                    .cwd
                    .as_ref()
                    .or_else(|| params.policy_context.as_ref()?.cwd.as_ref());
                match cwd {
                    Some(uri) => vec![host(uri)?],
                    None => ctx.cwd.iter().cloned().collect(),
                }
            }
            SpecialPath::ProjectRoots { subpath } => {
                let roots = params
                    .workspace_roots
                    .as_ref()
                    .or_else(|| params.policy_context.as_ref()?.workspace_roots.as_ref());
                let mut out = Vec::new();
                for uri in roots.into_iter().flatten() {
                    let root = host(uri)?;
                    out.push(match subpath {
                        Some(sub) => root.join(sub),
                        None => root,
                    });
                }
                out
            }
            SpecialPath::Tmpdir => ctx.tmpdir.iter().cloned().collect(),
            SpecialPath::SlashTmp => vec![PathBuf::from("/tmp")],
            SpecialPath::Unknown { .. } => Vec::new(),
        },
    };
    Ok(paths.iter().map(|p| normalize(p)).collect())
}

/// The host path of a PathUri in a sandbox object.
fn host(uri: &PathUri) -> Result<PathBuf, SandboxError> {
    uri.to_host_path()
        .map_err(|e| SandboxError(format!("invalid sandbox path {uri}: {e}")))
}

/// `path` made absolute (relative paths are taken from `/`) with `.` and `..` resolved
/// lexically.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether `path` is one of `roots` or under one.
fn under_any<'a>(path: &Path, mut roots: impl Iterator<Item = &'a PathBuf>) -> bool {
    roots.any(|r| path.starts_with(r))
}
