//! `environment/info` and `environment/status` (PROTOCOL.md, environment): facts the runtime
//! gathered once at startup, and the one status value. Both are served only after the
//! handshake, as in the reference.

use super::outbound::{ok, Reply};
use super::Server;
use crate::protocol::EnvironmentStatus;
use crate::rpc::{ErrorCode, RpcError};

impl Server {
    /// `environment/info` → [`ServerConfig::environment_info`](super::ServerConfig).
    ///
    /// Errors: `-32603` when the runtime gave none (an embedding that skipped it).
    pub(super) fn environment_info(&self) -> Reply {
        match &self.config.environment_info {
            Some(info) => ok(info),
            None => Err(RpcError::new(
                ErrorCode::Internal,
                "environment info is not available",
            )),
        }
    }

    /// `environment/status` → `{"status":"ready"}`, the only value the reference sends.
    pub(super) fn environment_status(&self) -> Reply {
        ok(&EnvironmentStatus::default())
    }
}
