//! The handshake (PROTOCOL.md §4): `initialize` once per connection, then the `initialized`
//! notification, before any other method; and the dispatch of decoded requests by connection
//! phase.

use std::time::Instant;

use serde_json::value::RawValue;

use super::outbound::{ok, Reply};
use super::{ConnPhase, Server, PROTOCOL_VERSION};
use crate::ids::ConnId;
use crate::protocol::{
    Capabilities, InitializeParams, InitializeResult, Method, Notification, Request,
};
use crate::rpc::{RequestId, RpcError};

impl Server {
    /// Answers one request: the method is looked up first (`-32601` in any phase, as the
    /// reference does), then the connection phase is checked, then the params are decoded.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        id: &RequestId,
        method: &str,
        params: Option<&RawValue>,
    ) -> Reply {
        let phase = self.conns.get(&conn).map_or(ConnPhase::New, |c| c.phase);
        let method = Method::parse(method)?;
        let sid = match (phase, method) {
            (ConnPhase::New, Method::Initialize) => None,
            (_, Method::Initialize) => {
                return Err(RpcError::invalid_request(
                    "initialize may only be sent once per connection",
                ))
            }
            (ConnPhase::New, _) => {
                return Err(RpcError::invalid_request(format!(
                    "client must call initialize before using {}",
                    method.family()
                )))
            }
            (ConnPhase::Initializing(_), _) => {
                return Err(RpcError::invalid_request(format!(
                    "client must send initialized before using {}",
                    method.family()
                )))
            }
            (ConnPhase::Ready(sid), _) => Some(sid),
        };
        match (
            Request::decode_with(method, params, &self.config.fs_policy)?,
            sid,
        ) {
            (Request::Initialize(params), _) => self.initialize(now, conn, params),
            // Only `initialize` passes the phase check without a session.
            (_, None) => Err(RpcError::invalid_request(
                "client must call initialize before using exec methods",
            )),
            (Request::ProcessStart(params), Some(sid)) => self.start(conn, id, sid, params),
            (Request::ProcessRead(params), Some(sid)) => self.read(now, conn, id, sid, params),
            (Request::ProcessWrite(params), Some(sid)) => self.write(sid, params),
            (Request::ProcessTerminate(params), Some(sid)) => self.terminate(sid, &params),
            (Request::ProcessSignal(params), Some(sid)) => self.signal(sid, &params),
            (Request::ProcessCloseStdin(params), Some(sid)) => self.close_stdin(sid, &params),
            (Request::ProcessResize(params), Some(sid)) => self.resize(sid, &params),
            (Request::ProcessList, Some(sid)) => self.list(sid),
            (Request::HttpRequest(params), Some(sid)) => self.http_request(conn, id, sid, params),
            (Request::HttpCancel(params), Some(_)) => self.http_cancel(conn, &params),
            (Request::EnvironmentInfo, Some(_)) => self.environment_info(),
            (Request::EnvironmentStatus, Some(_)) => self.environment_status(),
            (Request::FsWatchMissing(params), Some(_)) => self.watch_missing(conn, id, params),
            (Request::FsWatch(params), Some(_)) => self.fs_watch(conn, id, params),
            (Request::FsUnwatch(params), Some(_)) => self.fs_unwatch(conn, params),
            (Request::Fs(request), Some(_)) => self.fs_request(conn, id, request),
        }
    }

    /// `initialized` completes the handshake; it is ignored when repeated. Anything else
    /// (`initialized` before `initialize`, an unknown notification) closes the connection, as
    /// in the reference.
    pub(super) fn handle_notification(&mut self, conn: ConnId, notification: &Notification) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match (c.phase, notification) {
            (ConnPhase::Initializing(sid), Notification::Initialized) => {
                c.phase = ConnPhase::Ready(sid);
            }
            (ConnPhase::Ready(_), Notification::Initialized) => {}
            (ConnPhase::Ready(sid), Notification::ProcessAck(params)) => self.on_ack(sid, params),
            _ => self.close(conn),
        }
    }

    /// `initialize`: opens a fresh session or resumes the one named by `resumeSessionId`
    /// (see `session`), then waits for `initialized`.
    fn initialize(&mut self, now: Instant, conn: ConnId, params: InitializeParams) -> Reply {
        let asked_binary = params.binary_frames;
        let sid = match params.resume_session_id {
            None => {
                self.check_new_session()?;
                self.open_session(conn)
            }
            Some(raw) => self.resume_session(now, conn, &raw)?,
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = ConnPhase::Initializing(sid);
        }
        let binary_frames = self.negotiate_binary(conn, asked_binary);
        let capabilities = Capabilities {
            binary_frames: self.binary_available(conn),
            ..Capabilities::all()
        };
        let lossless_output = self.negotiate_lossless(sid, params.lossless_output);
        ok(&InitializeResult {
            session_id: sid.to_string(),
            environment_info: self
                .config
                .environment_info
                .as_ref()
                .and_then(|info| serde_json::to_value(info).ok()),
            protocol_version: Some(PROTOCOL_VERSION.to_owned()),
            capabilities: Some(capabilities),
            binary_frames,
            lossless_output,
        })
    }
}
