//! Facts about the host for `environment/info` and the `initialize` result.

use std::path::{Path, PathBuf};

use execd_core::protocol::{EnvironmentCapabilities, EnvironmentInfo, ShellInfo};
use execd_core::PathUri;
use sha2::{Digest, Sha256};

/// Gathers `environment/info` from the process environment and the OS.
///
/// - `shell`: `$SHELL` when it names an absolute path, else `/bin/sh`; `name` is its file name.
///   (The reference reports `{"name":"bash","path":"/bin/bash"}` with `SHELL=/bin/bash`.)
/// - `executorVersion`: `"execd <crate version>"`.
/// - `providerId`: [`provider_id`] of the host name and the user id.
/// - `cwd`: the server's working directory (`/` if it cannot be read).
/// - `userHomeDir`: `$HOME` when absolute, else `null`.
/// - `platformOs`: `std::env::consts::OS`.
/// - `prependPathDirs`: `[]` (execd ships no helper binaries).
/// - `temporaryDirectories`: `[$TMPDIR]` when set and absolute, else `[]`.
/// - `tempDir`: `std::env::temp_dir()` (`$TMPDIR`, else `/tmp`).
/// - `capabilities`: [`EnvironmentCapabilities::execd`].
pub fn host_environment_info() -> EnvironmentInfo {
    let shell_path = std::env::var("SHELL")
        .ok()
        .filter(|s| s.starts_with('/'))
        .unwrap_or_else(|| "/bin/sh".to_owned());
    let shell_name = Path::new(&shell_path)
        .file_name()
        .map_or_else(|| "sh".to_owned(), |n| n.to_string_lossy().into_owned());
    let root = || PathUri::from_host_path(Path::new("/"));
    let uri = |p: PathBuf| PathUri::from_host_path(&p).ok();
    let cwd = std::env::current_dir()
        .ok()
        .and_then(uri)
        .or_else(|| root().ok());
    let temp_dir = uri(std::env::temp_dir()).or_else(|| root().ok());
    let (Some(cwd), Some(temp_dir)) = (cwd, temp_dir) else {
        unreachable!("`/` is an absolute path, so it always has a PathUri");
    };
    let hostname = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    EnvironmentInfo {
        shell: ShellInfo {
            name: shell_name,
            path: shell_path,
        },
        executor_version: concat!("execd ", env!("CARGO_PKG_VERSION")).to_owned(),
        provider_id: provider_id(&hostname, rustix::process::getuid().as_raw()),
        cwd,
        user_home_dir: std::env::var_os("HOME").map(PathBuf::from).and_then(uri),
        platform_os: std::env::consts::OS.to_owned(),
        prepend_path_dirs: Vec::new(),
        temporary_directories: std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .and_then(uri)
            .into_iter()
            .collect(),
        temp_dir,
        capabilities: EnvironmentCapabilities::execd(),
    }
}

/// `"sha256:<64 lower-case hex digits>"` of `"execd\0<hostname>\0<uid>"`: stable for one user
/// on one host, and reveals neither.
pub fn provider_id(hostname: &str, uid: u32) -> String {
    let digest = Sha256::new()
        .chain_update(b"execd\0")
        .chain_update(hostname.as_bytes())
        .chain_update(b"\0")
        .chain_update(uid.to_string().as_bytes())
        .finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_id_is_stable_sha256_hex() {
        let a = provider_id("h", 0);
        assert_eq!(a, provider_id("h", 0));
        assert_ne!(a, provider_id("h", 1));
        assert_ne!(a, provider_id("h2", 0));
        let hex = a.strip_prefix("sha256:").expect("prefix");
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn host_info_has_the_reference_shape() {
        let info = host_environment_info();
        let v = serde_json::to_value(&info).expect("serializes");
        assert_eq!(v.as_object().expect("object").len(), 10);
        assert_eq!(info.platform_os, std::env::consts::OS);
        assert!(info.shell.path.starts_with('/'));
        assert!(info.executor_version.starts_with("execd "));
        assert!(info.capabilities.fs_watch_missing && info.capabilities.file_write_streaming);
        assert!(!info.capabilities.sandboxed_file_streaming);
    }
}
