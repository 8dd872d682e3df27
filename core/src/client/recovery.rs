//! Recovery (PROTOCOL.md §6.1): after a dropped transport, reconnects with exponential
//! backoff within the recovery window; when it runs out, or the server refuses the resume,
//! the session is lost and every pending call fails with [`CallError::Closed`].

use std::time::Instant;

use super::{CallError, Client, ClientEvent, LostReason, Phase, Recovery};
use crate::rpc::RequestId;

impl Client {
    /// Opens the recovery window at the first failure.
    pub(super) fn start_recovery(&mut self, now: Instant) {
        if self.recovery.is_none() {
            self.recovery = Some(Recovery {
                deadline: now + self.config.recovery_window,
                backoff: self.config.backoff_initial,
            });
        }
    }

    /// Sets `retry_at` one backoff step from `now` and doubles the step.
    pub(super) fn schedule_retry(&mut self, now: Instant) {
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        self.retry_at = Some(now + r.backoff);
        r.backoff = (r.backoff * 2).min(self.config.backoff_max);
    }

    /// Fails call `id` with [`CallError::Closed`].
    pub(super) fn fail(&mut self, id: i64) {
        self.events.push_back(ClientEvent::Response {
            id: RequestId::Int(id),
            result: Err(CallError::Closed),
        });
    }

    /// Closes the client for good: pending calls fail, then [`ClientEvent::SessionLost`].
    pub(super) fn close_for_good(&mut self, reason: LostReason) {
        self.phase = Phase::Closed;
        self.recovery = None;
        self.retry_at = None;
        self.transmits.clear();
        self.trackers.clear();
        for id in self.pending.drain_user() {
            self.fail(id);
        }
        self.events.push_back(ClientEvent::SessionLost { reason });
    }
}
