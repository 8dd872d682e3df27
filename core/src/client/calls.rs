//! Calls: request ids, the table of pending calls, sending now or queueing until the session
//! is ready, and turning answers into [`ClientEvent::Response`]s. A resent `process/write`
//! answered `unknownProcess` past the close retention of its first send fails with
//! [`CallError::Closed`] (it may have reached the child before its process was forgotten).

use std::time::Instant;

use serde_json::value::RawValue;

use super::pending::{Call, Kind};
use super::{CallError, Client, ClientEvent, Phase};
use crate::rpc::{RequestId, RpcError};

impl Client {
    /// The answer to call `id`: a user call's becomes a [`ClientEvent::Response`]; the
    /// client's own calls are handled by their rule.
    pub(super) fn handle_response(
        &mut self,
        now: Instant,
        id: &RequestId,
        result: Result<&RawValue, RpcError>,
    ) {
        let RequestId::Int(n) = *id else { return };
        // An error after pieces of a binary result voids them.
        self.partial.remove(&n);
        let Some(call) = self.pending.remove(n) else {
            return;
        };
        if call.unsure {
            // Only a server that answers on the wrong connection gets here; the calls held
            // behind the start go out all the same.
            self.release_held(now);
        }
        match call.kind {
            Kind::Initialize => self.on_initialize_response(now, result),
            Kind::FillRead { process_id } => self.on_fill_read(now, n, &process_id, result),
            Kind::User {
                is_start, is_write, ..
            } => {
                if is_start {
                    self.on_start_response(n, result.is_ok());
                }
                let mut result: Result<serde_json::Value, CallError> = match result {
                    Ok(raw) => serde_json::from_str(raw.get())
                        .map_err(|e| CallError::InvalidResult(e.to_string())),
                    Err(e) => Err(CallError::Rpc(e)),
                };
                // A resent write finds its process unknown: past the close retention of its
                // first send, the first send may have been accepted before the process closed
                // and was forgotten, so its fate is unknown.
                let retention = self.config.close_retention;
                if is_write
                    && call.resent
                    && call.sent_at.is_some_and(|at| now >= at + retention)
                    && matches!(&result, Ok(v) if v["status"] == "unknownProcess")
                {
                    result = Err(CallError::Closed);
                }
                self.events.push_back(ClientEvent::Response {
                    id: id.clone(),
                    result,
                });
            }
        }
    }

    /// Sends a call now when the session is ready (and, for a user call, no start made before
    /// it waits to be settled), else queues it.
    pub(super) fn submit(&mut self, now: Instant, id: i64, kind: Kind, text: String) {
        let held = matches!(kind, Kind::User { .. }) && self.pending.first_unsure().is_some();
        let sent = self.phase == Phase::Ready && !held;
        if sent {
            self.transmits.push_back(text.clone());
        }
        self.pending.insert(
            id,
            Call {
                kind,
                text,
                sent,
                unsure: false,
                sent_at: sent.then_some(now),
                resent: false,
            },
        );
    }

    /// The next request id.
    pub(super) fn alloc_id(&mut self) -> i64 {
        // i64::MAX calls would take centuries; saturating keeps the arithmetic total.
        self.next_id = self.next_id.saturating_add(1);
        self.next_id
    }
}
