//! The Landlock ruleset of a restricted filesystem policy, built in the server before the
//! fork (it allocates and opens paths); the child only calls `landlock_restrict_self` on its
//! descriptor.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use execd_core::sandbox::RestrictedFs;
use landlock::{
    Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, ABI,
};

use super::SetupError;

/// The oldest Landlock ABI accepted: 3 (Linux 6.2) is the first that controls truncation;
/// with an older one a sandboxed child could truncate any file it can open, so the start
/// fails instead (fail closed).
pub(crate) const MIN_ABI: i64 = 3;

/// Device files a sandboxed program may write, as under the reference's private `/dev`.
const WRITABLE_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// The Landlock ABI of the running kernel (`landlock_create_ruleset(NULL, 0, VERSION)`).
///
/// # Errors
/// Landlock is missing (not built in, or not in the `lsm=` list: `EOPNOTSUPP`/`ENOSYS`), or
/// older than [`MIN_ABI`].
pub(crate) fn kernel_abi() -> Result<i64, SetupError> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the documented version query; no pointer is dereferenced.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 {
        let err = std::io::Error::last_os_error();
        return Err(SetupError(format!(
            "Landlock is not available in this kernel ({err}); a sandboxed process cannot run unconfined"
        )));
    }
    if abi < MIN_ABI {
        return Err(SetupError(format!(
            "Landlock ABI {abi} is older than the required {MIN_ABI} (Linux 6.2)"
        )));
    }
    Ok(abi)
}

/// Builds the ruleset for `fs`: read access (read, list, execute) under every readable root,
/// full access under every writable root, write access to a few device files, and nothing
/// else. A denied tree is cut out of every rule above it by granting the rule's rights to
/// each sibling on the way down instead (its ancestors keep only the right to list).
///
/// # Errors
/// Landlock is unavailable or too old ([`kernel_abi`]), or the kernel refuses a rule.
pub(crate) fn build(fs: &RestrictedFs) -> Result<OwnedFd, SetupError> {
    kernel_abi()?;
    let abi = ABI::V3;
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let mut rules = Rules {
        ruleset: Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(all)
            .and_then(Ruleset::create)
            .map_err(|e| SetupError(format!("cannot create the Landlock ruleset: {e}")))?,
        denied: &fs.denied,
    };
    for path in &fs.readable {
        rules.add(path, read)?;
    }
    for w in &fs.writable {
        rules.add(&w.root, all)?;
    }
    for dev in WRITABLE_DEVICES {
        rules.add(
            Path::new(dev),
            read | AccessFs::WriteFile | AccessFs::Truncate,
        )?;
    }
    let fd: Option<OwnedFd> = rules.ruleset.into();
    fd.ok_or_else(|| SetupError("Landlock ruleset has no descriptor".into()))
}

/// A ruleset being filled, and the trees no rule may cover.
struct Rules<'a> {
    ruleset: RulesetCreated,
    denied: &'a [PathBuf],
}

impl Rules<'_> {
    /// Grants `access` under `path`, except under denied trees. A missing path grants
    /// nothing (there is nothing to open; `missing_path_behavior: skip`).
    fn add(&mut self, path: &Path, access: BitFlags<AccessFs>) -> Result<(), SetupError> {
        if self.denied.iter().any(|d| path.starts_with(d)) {
            return Ok(());
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let file_rights =
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Execute | AccessFs::Truncate;
        let cuts_below = self.denied.iter().any(|d| d.starts_with(path) && d != path);
        if cuts_below && meta.is_dir() {
            // List only; each entry gets the rights on its own.
            self.rule(path, access & AccessFs::ReadDir)?;
            let entries = std::fs::read_dir(path)
                .map_err(|e| SetupError(format!("cannot list {}: {e}", path.display())))?;
            for entry in entries.flatten() {
                self.add(&entry.path(), access)?;
            }
            return Ok(());
        }
        let access = if meta.is_dir() {
            access
        } else {
            access & file_rights
        };
        self.rule(path, access)
    }

    /// One `PathBeneath` rule (nothing for empty rights).
    fn rule(&mut self, path: &Path, access: BitFlags<AccessFs>) -> Result<(), SetupError> {
        if access.is_empty() {
            return Ok(());
        }
        let refused = |e: &dyn std::fmt::Display| {
            SetupError(format!("Landlock rule for {}: {e}", path.display()))
        };
        let fd = PathFd::new(path).map_err(|e| refused(&e))?;
        (&mut self.ruleset)
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| refused(&e))?;
        Ok(())
    }
}
