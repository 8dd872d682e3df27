//! Resource limits (PROTOCOL.md §2.3): every bound a client could otherwise push the server
//! past, each refused with an error naming the limit (by its camelCase name) and its value, so
//! no client can exhaust what the server shares between sessions.
//!
//! Output retention is bounded by reservation: each process entry reserves its full
//! [`ServerConfig::retained_bytes`](super::ServerConfig::retained_bytes) ring from
//! `process/start` until it is forgotten, and a start that would reserve more than
//! [`ServerConfig::max_retained_bytes_per_session`](super::ServerConfig::max_retained_bytes_per_session)
//! for its session or
//! [`ServerConfig::max_retained_bytes`](super::ServerConfig::max_retained_bytes) for the server
//! is refused. Nothing already retained is ever evicted to make room for another session.

use super::{Server, SessionId};
use crate::ids::ConnId;
use crate::rpc::{RequestId, RpcError};

impl Server {
    /// A string request id longer than `maxIdBytes` is answered `-32600` with id `-1` (it is
    /// not echoed back).
    pub(super) fn check_request_id(&self, id: &RequestId) -> Result<(), RpcError> {
        match id {
            RequestId::Str(s) if s.len() > self.config.max_id_bytes => {
                Err(RpcError::invalid_request(format!(
                    "request id of {} bytes is too long (limit maxIdBytes = {})",
                    s.len(),
                    self.config.max_id_bytes
                )))
            }
            _ => Ok(()),
        }
    }

    /// `processId` or `writeId` (`field`) longer than `maxIdBytes` → `-32602`.
    pub(super) fn check_id(&self, field: &str, value: &str) -> Result<(), RpcError> {
        if value.len() > self.config.max_id_bytes {
            return Err(RpcError::invalid_params(format!(
                "{field} of {} bytes is too long (limit maxIdBytes = {})",
                value.len(),
                self.config.max_id_bytes
            )));
        }
        Ok(())
    }

    /// One more request answered later on `conn` would pass `maxInflightRequests` → `-32600`.
    pub(super) fn check_inflight(&self, conn: ConnId) -> Result<(), RpcError> {
        let inflight = self.conns.get(&conn).map_or(0, |c| c.inflight);
        if inflight >= self.config.max_inflight_requests {
            return Err(RpcError::invalid_request(format!(
                "too many requests in flight on this connection (limit maxInflightRequests = {})",
                self.config.max_inflight_requests
            )));
        }
        Ok(())
    }

    /// One more process in `sid`: `maxProcessesPerSession`, then the retention reservations
    /// of the session and of the server → `-32600`.
    pub(super) fn check_new_process(&self, sid: SessionId) -> Result<(), RpcError> {
        let cfg = &self.config;
        let in_session = self.sessions.get(&sid).map_or(0, |s| s.processes.len());
        if in_session >= cfg.max_processes_per_session {
            return Err(RpcError::invalid_request(format!(
                "too many processes in this session (limit maxProcessesPerSession = {})",
                cfg.max_processes_per_session
            )));
        }
        let reserve = |n: usize| n.saturating_add(1).saturating_mul(cfg.retained_bytes);
        if reserve(in_session) > cfg.max_retained_bytes_per_session {
            return Err(RpcError::invalid_request(format!(
                "too much output retained in this session: {} processes of retainedBytes = {} \
                 (limit maxRetainedBytesPerSession = {})",
                in_session, cfg.retained_bytes, cfg.max_retained_bytes_per_session
            )));
        }
        if reserve(self.processes.len()) > cfg.max_retained_bytes {
            return Err(RpcError::invalid_request(format!(
                "too much output retained on this server: {} processes of retainedBytes = {} \
                 (limit maxRetainedBytes = {})",
                self.processes.len(),
                cfg.retained_bytes,
                cfg.max_retained_bytes
            )));
        }
        Ok(())
    }

    /// One more fresh session would pass `maxSessions` → `-32600`.
    pub(super) fn check_new_session(&self) -> Result<(), RpcError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(RpcError::invalid_request(format!(
                "too many sessions on this server (limit maxSessions = {})",
                self.config.max_sessions
            )));
        }
        Ok(())
    }
}
