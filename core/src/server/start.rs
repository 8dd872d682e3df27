//! `process/start` (PROTOCOL.md §5.1): the child environment (`envPolicy` over the server's
//! own, [`build_child_env`], names validated `-32602`), a process entry and an
//! [`Command::Spawn`]; the request
//! is answered when the runtime reports [`ProcessEvent::Spawned`](super::ProcessEvent) (the
//! process id and sandbox type) or `SpawnFailed` (`-32603` with the OS error and its kind, and
//! no entry; `-32602` when the sandbox could not be built). A `sandbox` object is resolved
//! here ([`crate::sandbox::start_policy`]) and travels in the [`SpawnSpec`].

use super::outbound::Reply;
use super::process::{Limits, Phase, Process};
use super::session::session_gone;
use super::{Command, Output, Server, SessionId, SpawnErrorKind, SpawnSpec};
use crate::ids::{ConnId, ProcessKey};
use crate::protocol::{build_child_env, validate_env, SandboxType, StartParams, StartResult};
use crate::rpc::{self, ErrorCode, RequestId, RpcError};

impl Server {
    /// `process/start`: validates, registers the process and asks for the spawn.
    pub(super) fn start(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        sid: SessionId,
        params: StartParams,
    ) -> Reply {
        self.check_id("processId", &params.process_id)?;
        if params.argv.is_empty() {
            return Err(RpcError::invalid_params("argv must not be empty"));
        }
        let cwd = params
            .cwd
            .to_host_path()
            .map_err(|e| RpcError::invalid_params(format!("invalid cwd: {e}")))?;
        if params.enforce_managed_network {
            // Fail closed (PROTOCOL.md, sandbox): execd runs no network proxy.
            return Err(RpcError::invalid_params(
                "failed to prepare process sandbox: enforceManagedNetwork requires a managed network proxy, which execd does not run",
            ));
        }
        let sandbox_policy =
            crate::sandbox::start_policy(params.sandbox.as_ref(), &cwd, &self.config.host_env)
                .map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let env = build_child_env(
            &self.config.host_env,
            params.env_policy.as_ref(),
            &params.env,
        );
        validate_env(&env).map_err(|e| RpcError::invalid_params(e.to_string()))?;
        let session = self.sessions.get(&sid).ok_or_else(session_gone)?;
        if session.processes.contains_key(&params.process_id) {
            return Err(RpcError::invalid_request(format!(
                "process {} already exists",
                params.process_id
            )));
        }
        self.check_new_process(sid)?;
        self.check_inflight(conn)?;
        let session = self.sessions.get_mut(&sid).ok_or_else(session_gone)?;
        self.next_key += 1;
        let key = ProcessKey(self.next_key);
        session.processes.insert(params.process_id.clone(), key);
        let limits = Limits {
            retained_bytes: self.config.retained_bytes,
            retained_chunks: self.config.retained_chunks,
            write_ids: self.config.write_id_window,
        };
        let sandbox = match sandbox_policy {
            Some(_) => SandboxType::LinuxSeccomp,
            None => self.config.sandbox,
        };
        let process = Process::new(
            sid,
            params.process_id,
            params.argv.clone(),
            params.tty,
            params.pipe_stdin,
            sandbox,
            (conn, id.clone()),
            limits,
        );
        self.processes.insert(key, process);
        self.lossless_on_start(sid, key);
        let spec = SpawnSpec {
            argv: params.argv,
            arg0: params.arg0,
            cwd,
            env,
            tty: params.tty,
            pty_size: self.config.pty_size,
            pipe_stdin: params.pipe_stdin,
            sandbox,
            sandbox_policy,
        };
        self.out
            .push_back(Output::Command(Command::Spawn { key, spec }));
        // A start read before the connection's reading paused: its output waits too.
        if self.is_congested(conn) && self.attached_session(conn) == Some(sid) {
            if let Some(p) = self.processes.get_mut(&key) {
                p.congestion_hold = true;
            }
            self.sync_output_pause(key);
        }
        // Answered when the runtime reports Spawned or SpawnFailed.
        Ok(None)
    }

    /// `ProcessEvent::Spawned`: the process runs; the start is answered.
    pub(super) fn on_spawned(&mut self, key: ProcessKey, pid: u32) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        p.pid = Some(pid);
        if p.phase == Phase::Starting {
            p.phase = Phase::Running;
        }
        if let Some((conn, id)) = p.start_reply.take() {
            let result = StartResult {
                process_id: p.id.clone(),
                sandbox_type: p.sandbox,
            };
            let text = rpc::encode_response(&id, &result);
            self.deferred_answered(conn);
            self.transmit(conn, text);
        }
    }

    /// `ProcessEvent::SpawnFailed`: the entry goes; the start is answered `-32603` with the
    /// OS error text as the message and ext `data: {"kind": …}` (PROTOCOL.md §5.1).
    pub(super) fn on_spawn_failed(&mut self, key: ProcessKey, kind: SpawnErrorKind, error: String) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        let reply = p.start_reply.take();
        self.forget(key, false);
        if let Some((conn, id)) = reply {
            // A sandbox that cannot be built is the reference's `-32602` (fail closed).
            let code = match kind {
                SpawnErrorKind::Sandbox => ErrorCode::InvalidParams,
                _ => ErrorCode::Internal,
            };
            let mut err = RpcError::new(code, error);
            err.data = Some(serde_json::json!({ "kind": kind.as_str() }));
            self.deferred_answered(conn);
            self.transmit(conn, rpc::encode_error(&id, &err));
        }
    }
}
