//! Process control (PROTOCOL.md §5.5, §5.6, §5.9, §5.10): `process/terminate`,
//! `process/signal`, ext `process/resize` and ext `process/list`.

use super::outbound::{ok, Reply};
use super::session::session_gone;
use super::{Command, ExitStatus, Output, Server, SessionId};
use crate::protocol::{
    ListResult, ProcessIdParams, ProcessInfo, ResizeParams, SignalParams, TerminateResult,
    UnknownSignal,
};
use crate::rpc::RpcError;

impl Server {
    /// `process/terminate`: `{running}`; kills the process tree (`Command::Kill`), also after
    /// the process closed: descendants that outlive it (background jobs with redirected
    /// output) die too. The runtime ignores a kill with nothing left to kill.
    pub(super) fn terminate(&mut self, sid: SessionId, params: &ProcessIdParams) -> Reply {
        let mut running = false;
        if let Ok(key) = self.lookup(sid, &params.process_id) {
            let p = &self.processes[&key];
            running = p.is_running();
            self.out.push_back(Output::Command(Command::Kill { key }));
        }
        ok(&TerminateResult { running })
    }

    /// `process/signal`: `{}`; `-32602` for an unknown signal name.
    pub(super) fn signal(&mut self, sid: SessionId, params: &SignalParams) -> Reply {
        let signal = params
            .signal
            .parse()
            .map_err(|e: UnknownSignal| RpcError::invalid_params(e.to_string()))?;
        // Unknown and exited processes succeed with `{}`, as in the reference.
        if let Ok(key) = self.lookup(sid, &params.process_id) {
            if self.processes[&key].group_alive() {
                self.out
                    .push_back(Output::Command(Command::Signal { key, signal }));
            }
        }
        ok(&serde_json::json!({}))
    }

    /// ext `process/resize`: `{}`; PTY processes only, rows and cols at least 1.
    pub(super) fn resize(&mut self, sid: SessionId, params: &ResizeParams) -> Reply {
        if params.rows == 0 || params.cols == 0 {
            return Err(RpcError::invalid_params("rows and cols must be at least 1"));
        }
        let key = self.lookup(sid, &params.process_id)?;
        if !self.processes[&key].tty {
            return Err(RpcError::invalid_request(format!(
                "process {} has no PTY",
                params.process_id
            )));
        }
        if self.processes[&key].is_running() {
            let (rows, cols) = (params.rows, params.cols);
            self.out
                .push_back(Output::Command(Command::Resize { key, rows, cols }));
        }
        ok(&serde_json::json!({}))
    }

    /// ext `process/list`: every process entry of the session, in process-id order.
    pub(super) fn list(&mut self, sid: SessionId) -> Reply {
        let session = self.sessions.get(&sid).ok_or_else(session_gone)?;
        let processes = session
            .processes
            .values()
            .filter_map(|key| self.processes.get(key))
            .map(|p| ProcessInfo {
                process_id: p.id.clone(),
                state: p.state_name().to_owned(),
                pid: p.pid,
                argv: p.argv.clone(),
                exit_code: p.exit_seq.and(p.exit).map(ExitStatus::code),
                tty: p.tty,
            })
            .collect();
        ok(&ListResult { processes })
    }
}
