//! The client's handshake (PROTOCOL.md §4, §6): `initialize` (with `resumeSessionId` when
//! resuming), the answer (`-32010` retried with backoff, a refusal or a wrong session id
//! loses the session), then `initialized` and what a ready session sends first.

use std::time::Instant;

use serde_json::value::RawValue;

use super::pending::{Call, Kind};
use super::{Client, ClientEvent, LostReason, Phase};
use crate::protocol::{method, InitializeParams, InitializeResult};
use crate::rpc::{self, ErrorCode, RequestId, RpcError};

impl Client {
    /// The answer to `initialize`.
    pub(super) fn on_initialize_response(
        &mut self,
        now: Instant,
        result: Result<&RawValue, RpcError>,
    ) {
        let resuming = self.session_id.is_some();
        let raw = match result {
            Ok(raw) => raw,
            Err(e)
                if resuming
                    && self.recovery.is_some()
                    && ErrorCode::from_code(e.code) == Some(ErrorCode::SessionAttached) =>
            {
                // The server has not noticed the old transport drop yet: retry shortly.
                self.phase = Phase::InitRetry;
                self.schedule_retry(now);
                return;
            }
            Err(e) => {
                self.close_for_good(LostReason::Rejected(e));
                return;
            }
        };
        let init: InitializeResult = match serde_json::from_str(raw.get()) {
            Ok(init) => init,
            Err(e) => {
                self.close_for_good(LostReason::Protocol(format!(
                    "undecodable initialize result: {e}"
                )));
                return;
            }
        };
        if let Some(old) = &self.session_id {
            if *old != init.session_id {
                self.close_for_good(LostReason::Protocol(format!(
                    "resume of session {old} returned session {}",
                    init.session_id
                )));
                return;
            }
        }
        self.session_id = Some(init.session_id.clone());
        self.lossless = init.lossless_output;
        self.recovery = None;
        self.retry_at = None;
        self.phase = Phase::Ready;
        self.transmits.push_back(rpc::encode_notification(
            method::INITIALIZED,
            &serde_json::json!({}),
        ));
        self.events.push_back(ClientEvent::Connected {
            session_id: init.session_id,
            resumed: resuming,
        });
        // A start whose fate is unknown is settled by the read of its tracked process; one
        // that lost its tracker (only a server that broke the ordering of start answers and
        // notifications can cause that) can never be settled: its fate stays unknown.
        let orphans: Vec<i64> = self
            .pending
            .unsure()
            .filter(|&s| !self.trackers.values().any(|t| t.start_request == Some(s)))
            .collect();
        for start in orphans {
            self.pending.remove(start);
            self.fail(start);
        }
        // Resent writes and reads, then calls queued meanwhile, in the order they were made.
        let frames = self.pending.take_unsent(now);
        self.transmits.extend(frames);
        if resuming {
            let ids: Vec<String> = self.trackers.keys().cloned().collect();
            for pid in ids {
                self.fill(now, &pid);
            }
        }
    }

    /// Sends `initialize`, resuming the session when there is one.
    pub(super) fn send_initialize(&mut self, now: Instant) {
        let params = InitializeParams {
            client_name: self.config.client_name.clone(),
            resume_session_id: self.session_id.clone(),
            binary_frames: self.config.binary_frames,
            lossless_output: self.config.lossless_output,
        };
        let id = self.alloc_id();
        let text = rpc::encode_request(&RequestId::Int(id), method::INITIALIZE, &params);
        self.transmits.push_back(text.clone());
        self.pending.insert(
            id,
            Call {
                kind: Kind::Initialize,
                text,
                sent: true,
                unsure: false,
                sent_at: Some(now),
                resent: false,
            },
        );
        self.phase = Phase::Handshaking;
    }
}
