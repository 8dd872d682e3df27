//! Recovery (PROTOCOL.md §6.1): after a dropped transport, reconnects with exponential
//! backoff within the recovery window; when it runs out, or the server refuses the resume,
//! the session is lost and every pending call fails with [`CallError::Closed`].

use std::time::Instant;

use super::{CallError, Client, ClientEvent, LostReason, Phase, Recovery};
use crate::rpc::RequestId;

/// How many times the first connect is attempted in all (with recovery on, transient
/// failures only).
pub(super) const FIRST_CONNECT_ATTEMPTS: u32 = 4;

impl Client {
    /// The runtime could not open the client's first transport (before any session). The
    /// runtime says whether the failure is `transient` (the peer answered, then the connection
    /// broke, so the attempt may succeed when repeated) as opposed to a refusal or a bad URL.
    ///
    /// Returns when to try again: with recovery on, a transient failure is retried up to 3 more
    /// times (4 attempts in all), the first [`ClientConfig::backoff_initial`] after the
    /// failure, each later delay doubled up to [`ClientConfig::backoff_max`]. `None` means give
    /// up: recovery is off, the failure is not transient, or the attempts are used up; the
    /// client is then closed for good ([`ClientEvent::SessionLost`] with
    /// [`LostReason::Disconnected`]). Unlike [`handle_connect_failed`](Self::handle_connect_failed),
    /// this opens no recovery window, so a server that is not there is reported at once. `None`
    /// (and no change) unless the client is waiting for its first transport.
    ///
    /// [`ClientConfig::backoff_initial`]: super::ClientConfig::backoff_initial
    /// [`ClientConfig::backoff_max`]: super::ClientConfig::backoff_max
    pub fn first_connect_failed(&mut self, now: Instant, transient: bool) -> Option<Instant> {
        if self.phase != Phase::Connecting || self.session_id.is_some() || self.recovery.is_some() {
            return None;
        }
        let fc = &mut self.first_connect;
        fc.failures += 1;
        if !self.config.recovery || !transient || fc.failures >= FIRST_CONNECT_ATTEMPTS {
            self.close_for_good(LostReason::Disconnected);
            return None;
        }
        let at = now + fc.backoff;
        fc.backoff = (fc.backoff * 2).min(self.config.backoff_max);
        Some(at)
    }

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
