//! Calls awaiting a response (or, while the session is not ready, awaiting their first send).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::protocol::Method;

/// Why a call was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The client's own `initialize`.
    Initialize,
    /// The client's own `process/read` filling a gap of a tracked process.
    FillRead { process_id: String },
    /// A call made by the user, answered with a `Response` event.
    User {
        /// `process/start` calls also track the process.
        is_start: bool,
        /// `process/write` (see [`Call::resent`]).
        is_write: bool,
        /// Whether the call may be sent again after a reconnect: `process/write` (the server
        /// dedupes its `writeId`) and `process/read` (it changes nothing).
        resendable: bool,
    },
}

impl Kind {
    /// A user call of `method` (`None`: a method execd does not serve, sent as is).
    pub(crate) fn user(method: Option<Method>) -> Kind {
        Kind::User {
            is_start: method == Some(Method::ProcessStart),
            is_write: method == Some(Method::ProcessWrite),
            resendable: matches!(method, Some(Method::ProcessWrite | Method::ProcessRead)),
        }
    }
}

/// One call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) kind: Kind,
    /// The encoded request frame, sent again unchanged on a resend.
    pub(crate) text: String,
    /// Whether the frame went out on the current (or a previous) transport.
    pub(crate) sent: bool,
    /// A `process/start` cut off by a disconnect: whether it ran is unknown until the
    /// recovery read of its process answers. Not resent blindly.
    pub(crate) unsure: bool,
    /// When the frame first went out (for a start, when it was last sent: an earlier send
    /// provably did nothing). See [`Call::unsure`] and [`Call::resent`].
    pub(crate) sent_at: Option<Instant>,
    /// A resendable call whose frame went out on a transport that dropped before the answer:
    /// a resent `process/write` answered `unknownProcess` may have been accepted before its
    /// process was forgotten.
    pub(crate) resent: bool,
}

/// Calls by request id. Ids increase with creation, so iteration is creation order, which
/// keeps resent and queued writes in the order the user made them.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    calls: BTreeMap<i64, Call>,
}

impl Pending {
    pub(crate) fn insert(&mut self, id: i64, call: Call) {
        self.calls.insert(id, call);
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.calls.contains_key(&id)
    }

    pub(crate) fn get_mut(&mut self, id: i64) -> Option<&mut Call> {
        self.calls.get_mut(&id)
    }

    /// Whether call `id` is a start whose fate is unknown.
    pub(crate) fn is_unsure(&self, id: i64) -> bool {
        self.calls.get(&id).is_some_and(|c| c.unsure)
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Call> {
        self.calls.remove(&id)
    }

    /// The transport dropped. Forgets the client's own calls (they are made afresh), marks
    /// resendable user calls unsent, marks sent starts unsure (see [`Call::unsure`]), and
    /// removes and returns the ids of the other user calls that were sent and may not be sent
    /// again. Calls never sent stay queued.
    pub(crate) fn on_disconnect(&mut self) -> Vec<i64> {
        let mut failed = Vec::new();
        self.calls.retain(|&id, call| match call.kind {
            Kind::Initialize | Kind::FillRead { .. } => false,
            Kind::User { is_start: true, .. } if call.sent || call.unsure => {
                call.sent = false;
                call.unsure = true;
                true
            }
            Kind::User { resendable, .. } => {
                if call.sent && !resendable {
                    failed.push(id);
                    false
                } else {
                    call.resent |= call.sent;
                    call.sent = false;
                    true
                }
            }
        });
        failed
    }

    /// The starts whose fate is unknown, oldest first.
    pub(crate) fn unsure(&self) -> impl Iterator<Item = i64> + '_ {
        self.calls
            .iter()
            .filter(|(_, c)| c.unsure)
            .map(|(&id, _)| id)
    }

    /// The oldest start whose fate is unknown: later user calls wait until it is settled, so
    /// that they reach the server after it, as they were made.
    pub(crate) fn first_unsure(&self) -> Option<i64> {
        self.unsure().next()
    }

    /// Marks every unsent user call older than the oldest unsure start sent (at `now`, if
    /// first sent) and returns their frames, oldest first.
    pub(crate) fn take_unsent(&mut self, now: Instant) -> Vec<String> {
        let before = self.first_unsure().unwrap_or(i64::MAX);
        self.calls
            .range_mut(..before)
            .map(|(_, c)| c)
            .filter(|c| !c.sent && !c.unsure && matches!(c.kind, Kind::User { .. }))
            .map(|c| {
                c.sent = true;
                c.sent_at.get_or_insert(now);
                c.text.clone()
            })
            .collect()
    }

    /// Removes every call; returns the ids of the user calls, oldest first.
    pub(crate) fn drain_user(&mut self) -> Vec<i64> {
        let calls = std::mem::take(&mut self.calls);
        calls
            .into_iter()
            .filter(|(_, c)| matches!(c.kind, Kind::User { .. }))
            .map(|(id, _)| id)
            .collect()
    }

    /// Number of calls awaiting a response or their first send.
    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }
}
