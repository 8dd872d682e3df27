use std::collections::BTreeMap;
use std::time::Duration;

use crate::protocol::{EnvironmentInfo, FsPolicy, SandboxType};

/// Tunables of the [`crate::Server`]. Defaults match the Codex exec-server where it has a
/// rule.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// How long a detached session lives before it expires and its processes are killed.
    /// Default 30 s (PROTOCOL.md: at least 30 s; the reference was observed at about 80 s).
    pub session_ttl: Duration,
    /// How long a closed process stays readable before it is forgotten and its id may be
    /// reused. Default 30 s (the reference was observed keeping them about 80 s).
    pub closed_retention: Duration,
    /// Retained output per process, in bytes (reference: 1 MiB).
    pub retained_bytes: usize,
    /// Retained output per process, in chunks (reference: 50,000).
    pub retained_chunks: usize,
    /// Accepted write ids remembered per process (reference: 4,096).
    pub write_id_window: usize,
    /// Largest inbound frame, in bytes; larger frames are answered with `-32600`. Default
    /// 64 MiB.
    pub max_frame_bytes: usize,
    /// Most JSON values one inbound frame may hold (reference: 262,144).
    pub max_json_values: usize,
    /// Longest `waitMs` honoured for a `process/read` long poll. Default 10 minutes.
    pub max_read_wait: Duration,
    /// The sandbox applied to every process. Default [`SandboxType::None`].
    pub sandbox: SandboxType,
    /// How long to wait for trailing output after a sandboxed process exits before classifying
    /// it (reference: 20 ms).
    pub sandbox_grace: Duration,
    /// The `environment/info` result, also the `environmentInfo` of the `initialize` result.
    /// The core cannot look at the host, so the runtime fills it in once at startup
    /// (`execd_runtime::host::host_environment_info`); `None` omits it from `initialize` and
    /// answers `environment/info` with `-32603`.
    pub environment_info: Option<EnvironmentInfo>,
    /// The server's own environment, the source of a child's variables under an `envPolicy`
    /// (PROTOCOL.md, child environment). The core reads no environment: the runtime fills it
    /// in once at startup (UTF-8 pairs only). Default empty.
    pub host_env: BTreeMap<String, String>,
    /// Rules the core applies to every fs request (the `fs/readFile` size cap, birth times).
    pub fs_policy: FsPolicy,
    /// Most fs requests (`fs/*` including `fs/watchMissing` installs) one connection may have
    /// in flight; more are refused with `-32600`. Default 64 (the reference serves one
    /// request at a time per connection, so it needs no bound).
    pub max_fs_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            session_ttl: Duration::from_secs(30),
            closed_retention: Duration::from_secs(30),
            retained_bytes: 1024 * 1024,
            retained_chunks: 50_000,
            write_id_window: 4096,
            max_frame_bytes: 64 * 1024 * 1024,
            max_json_values: 262_144,
            max_read_wait: Duration::from_secs(600),
            sandbox: SandboxType::None,
            sandbox_grace: Duration::from_millis(20),
            environment_info: None,
            host_env: BTreeMap::new(),
            fs_policy: FsPolicy::default(),
            max_fs_in_flight: 64,
        }
    }
}
