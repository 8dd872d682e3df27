use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::PathUri;

/// `environment/info` result, also the `environmentInfo` of the `initialize` result: facts about
/// the host the client needs to build commands and paths.
///
/// Shape (matches the Codex exec-server, ten fields, camelCase):
/// `{shell: {name, path}, executorVersion, providerId, cwd, userHomeDir, platformOs,
/// prependPathDirs, temporaryDirectories, tempDir, capabilities}`. Paths are [`PathUri`]s
/// except `shell.path`, which is a native path as in the reference
/// (`{"name":"bash","path":"/bin/bash"}`). The runtime gathers the values
/// (`execd_runtime::host::host_environment_info`); the core only carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentInfo {
    /// The shell commands are run with.
    pub shell: ShellInfo,
    /// The executor's version: the reference sends its own (`"0.171.0"`), execd
    /// `"execd <version>"`.
    pub executor_version: String,
    /// An opaque, stable id of the host and user: `"sha256:<64 hex digits>"`.
    pub provider_id: String,
    /// The server's working directory.
    pub cwd: PathUri,
    /// The user's home directory (`$HOME`), if known.
    pub user_home_dir: Option<PathUri>,
    /// `std::env::consts::OS` of the host, e.g. `"linux"`.
    pub platform_os: String,
    /// Directories the client should put first in a child's `PATH` (the reference lists its
    /// bundled helper directory); `[]` for execd, which ships no helpers.
    pub prepend_path_dirs: Vec<PathUri>,
    /// The directories named by `$TMPDIR`; `[]` when it is unset.
    pub temporary_directories: Vec<PathUri>,
    /// The temporary directory (`$TMPDIR`, else `/tmp`).
    pub temp_dir: PathUri,
    /// What the server implements.
    pub capabilities: EnvironmentCapabilities,
}

/// `environmentInfo.shell`: `{name, path}`, e.g. `{"name":"bash","path":"/bin/bash"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellInfo {
    /// The shell's file name (`"bash"`).
    pub name: String,
    /// Its native absolute path (`"/bin/bash"`), not a PathUri.
    pub path: String,
}

/// `environmentInfo.capabilities`: booleans, a missing key reads as `false`.
///
/// The Codex client gates methods and fields on these keys, so a server sets `true` only for
/// what it implements. The field set is the reference's (0.171.0; the Linux reference sends all
/// `true` but `windowsMxc`). Every key is serialized, `false` included. Keys the reference does
/// not define (execd's own extensions, or keys of a newer reference) go to
/// [`extensions`](Self::extensions), flattened into the same object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvironmentCapabilities {
    /// `fs/watchMissing` and `fs/missingChanged`.
    pub fs_watch_missing: bool,
    /// `fs/open` mode `replace` and `fs/writeBlock`.
    pub file_write_streaming: bool,
    /// `fs/open` honours `sandbox`.
    pub sandboxed_file_streaming: bool,
    /// `http/request` headers may take `valueEnvVar`.
    pub http_header_env_vars: bool,
    /// `environmentConfig/read`.
    pub environment_config_read: bool,
    /// `capabilityRoots/discoverV1` with a sandbox.
    pub capability_discovery_sandbox: bool,
    /// `capabilities/discoverV2`.
    pub capability_discovery_v2: bool,
    /// `process/start` `shellSnapshot`.
    pub shell_snapshot_v2: bool,
    /// `process/start` `networkProxy`.
    pub network_proxy_launch: bool,
    /// The network proxy reviews domains.
    pub network_proxy_review_domains: bool,
    /// `transparentTcp` of `networkProxy.proxy` and `managedNetwork` (new in 0.171).
    pub network_proxy_transparent_tcp: bool,
    /// Credentials are masked in output.
    pub credential_masking: bool,
    /// Credential masking for custom providers.
    pub credential_masking_custom_providers: bool,
    /// Windows MXC sandbox level.
    pub windows_mxc: bool,
    /// A root-writable Linux sandbox keeps devices.
    pub linux_root_write_preserves_devices: bool,
    /// An approved root-writable Linux sandbox keeps the other restrictions.
    pub linux_approved_root_write_preserves_restrictions: bool,
    /// Keys the reference does not define, by wire name.
    #[serde(flatten)]
    pub extensions: BTreeMap<String, bool>,
}

impl EnvironmentCapabilities {
    /// What this build of execd implements: `fsWatchMissing` and `fileWriteStreaming`, nothing
    /// else.
    pub fn execd() -> Self {
        EnvironmentCapabilities {
            fs_watch_missing: true,
            file_write_streaming: true,
            ..EnvironmentCapabilities::default()
        }
    }

    /// Sets an extension key (an execd capability the reference lacks), returning `self`.
    pub fn with_extension(mut self, key: impl Into<String>, value: bool) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }
}

/// `environment/status` result: `{"status":"ready"}`, the only value the reference sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentStatus {
    /// Always [`EnvironmentState::Ready`].
    pub status: EnvironmentState,
}

/// The value of `environment/status`'s `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum EnvironmentState {
    /// `"ready"`.
    #[default]
    Ready,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnvironmentInfo {
        let uri = |s: &str| PathUri::parse(s).expect("valid");
        EnvironmentInfo {
            shell: ShellInfo {
                name: "bash".into(),
                path: "/bin/bash".into(),
            },
            executor_version: "execd 0.1.0".into(),
            provider_id: format!("sha256:{}", "0".repeat(64)),
            cwd: uri("file:///w"),
            user_home_dir: Some(uri("file:///root")),
            platform_os: "linux".into(),
            prepend_path_dirs: vec![],
            temporary_directories: vec![],
            temp_dir: uri("file:///tmp"),
            capabilities: EnvironmentCapabilities::execd(),
        }
    }

    #[test]
    fn info_serializes_the_ten_reference_fields() {
        let v = serde_json::to_value(sample()).expect("serializes");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "shell",
            "executorVersion",
            "providerId",
            "cwd",
            "userHomeDir",
            "platformOs",
            "prependPathDirs",
            "temporaryDirectories",
            "tempDir",
            "capabilities",
        ];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(
            v["shell"],
            serde_json::json!({"name":"bash","path":"/bin/bash"})
        );
        assert_eq!(v["cwd"], "file:///w");
    }

    #[test]
    fn reference_info_decodes() {
        // Captured from `codex exec-server` 0.169.0 (prependPathDirs shortened).
        let text = r#"{"shell":{"name":"bash","path":"/bin/bash"},"executorVersion":"0.169.0",
          "providerId":"sha256:2101b24c","cwd":"file:///tmp/fsref","userHomeDir":"file:///root",
          "platformOs":"linux","prependPathDirs":["file:///opt/codex-path"],
          "temporaryDirectories":[],"tempDir":"file:///tmp","capabilities":{
          "networkProxyLaunch":true,"networkProxyReviewDomains":true,"credentialMasking":true,
          "credentialMaskingCustomProviders":true,"capabilityDiscoverySandbox":true,
          "fsWatchMissing":true,"capabilityDiscoveryV2":true,"environmentConfigRead":true,
          "httpHeaderEnvVars":true,"sandboxedFileStreaming":true,"fileWriteStreaming":true,
          "shellSnapshotV2":true,"windowsMxc":false,"linuxRootWritePreservesDevices":true,
          "linuxApprovedRootWritePreservesRestrictions":true}}"#;
        let info: EnvironmentInfo = serde_json::from_str(text).expect("decodes");
        assert!(
            info.capabilities
                .linux_approved_root_write_preserves_restrictions
        );
        assert!(!info.capabilities.windows_mxc);
        assert!(
            !info.capabilities.network_proxy_transparent_tcp,
            "missing = false"
        );
        assert!(info.capabilities.extensions.is_empty());
    }

    #[test]
    fn capabilities_serialize_every_key_and_extensions() {
        let caps = EnvironmentCapabilities::execd().with_extension("execdPosixSignals", true);
        let v = serde_json::to_value(&caps).expect("serializes");
        let obj = v.as_object().expect("object");
        assert_eq!(obj.len(), 17);
        assert_eq!(obj["fsWatchMissing"], true);
        assert_eq!(obj["fileWriteStreaming"], true);
        assert_eq!(obj["windowsMxc"], false);
        assert_eq!(obj["execdPosixSignals"], true);
        let back: EnvironmentCapabilities = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, caps);
        let empty: EnvironmentCapabilities = serde_json::from_str("{}").expect("all default");
        assert_eq!(empty, EnvironmentCapabilities::default());
    }

    #[test]
    fn status_is_ready() {
        let v = serde_json::to_string(&EnvironmentStatus::default()).expect("serializes");
        assert_eq!(v, r#"{"status":"ready"}"#);
    }
}
