//! Delivery: notifications and read results of tracked processes become events in seq
//! order, each seq once; a seq ahead of a missing one waits for a `process/read`, and output
//! the server evicted becomes a [`ClientEvent::Gap`].

use std::time::Instant;

use super::tracker::{Delivery, Tracker};
use super::{Client, ClientEvent, Phase};
use crate::ids::Seq;
use crate::protocol::Notification;
use crate::rpc::RequestId;

impl Client {
    /// A `process/output`, `process/exited` or `process/closed` notification, or an
    /// `http/request/bodyDelta` (passed on as it is); anything else (and a notification of an
    /// untracked process) is dropped.
    pub(super) fn handle_notification(&mut self, now: Instant, notification: Notification) {
        let (process_id, event) = match notification {
            Notification::HttpBodyDelta(delta) => {
                self.events.push_back(ClientEvent::HttpBodyDelta(delta));
                return;
            }
            Notification::ProcessOutput(n) => (
                n.process_id,
                Delivery::Output {
                    seq: n.seq,
                    stream: n.stream,
                    chunk: n.chunk.0,
                },
            ),
            Notification::ProcessExited(n) => (
                n.process_id,
                Delivery::Exited {
                    seq: n.seq,
                    exit_code: n.exit_code,
                    sandbox_denied: n.sandbox_denied,
                },
            ),
            Notification::ProcessClosed(n) => (n.process_id, Delivery::Closed { seq: n.seq }),
            _ => return,
        };
        let Some(t) = self.trackers.get_mut(&process_id) else {
            return;
        };
        if let Some(start) = t.start_request.filter(|&s| self.pending.is_unsure(s)) {
            // A start cut off by a disconnect: its process exists, so it ran. (The recovery
            // read would tell too, but the process may close, ending the tracking, first.)
            t.start_request = None;
            self.pending.remove(start);
            self.events.push_back(ClientEvent::Response {
                id: RequestId::Int(start),
                result: Ok(serde_json::json!({ "processId": process_id })),
            });
            self.release_held(now);
        }
        let Some(t) = self.trackers.get_mut(&process_id) else {
            return;
        };
        let mut out = Vec::new();
        let gap = t.on_notification(event, &mut out);
        let idle = t.reading.is_none();
        self.emit(&process_id, out);
        // Before a resume's `initialize` response the gap is read once the session is ready.
        if gap && idle && self.phase == Phase::Ready {
            self.fill(now, &process_id);
        }
    }

    /// Turns a tracker's deliveries into events; stops tracking after `Closed`.
    pub(super) fn emit(&mut self, process_id: &str, out: Vec<Delivery>) {
        self.ack_delivered(process_id, &out);
        for d in out {
            let process_id = process_id.to_owned();
            self.events.push_back(match d {
                Delivery::Output { seq, stream, chunk } => ClientEvent::Output {
                    process_id,
                    seq: Seq(seq),
                    stream,
                    chunk,
                },
                Delivery::Exited {
                    seq,
                    exit_code,
                    sandbox_denied,
                } => ClientEvent::Exited {
                    process_id,
                    seq: Seq(seq),
                    exit_code,
                    sandbox_denied,
                },
                Delivery::Closed { seq } => ClientEvent::Closed {
                    process_id,
                    seq: Seq(seq),
                },
                Delivery::Gap {
                    lost_chunks,
                    first_retained_seq,
                } => ClientEvent::Gap {
                    process_id,
                    lost_chunks,
                    first_retained_seq: Seq(first_retained_seq),
                },
            });
        }
        if self
            .trackers
            .get(process_id)
            .is_some_and(Tracker::is_closed)
        {
            self.trackers.remove(process_id);
        }
    }
}
