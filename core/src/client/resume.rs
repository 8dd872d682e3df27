//! After a resume (PROTOCOL.md §6.1): each tracked process is read from its last delivered
//! seq, in pages of `maxBytes` (each delivered as it arrives, so that every connection makes
//! progress; see `Tracker::on_page`), and a `process/start` cut off by the disconnect is
//! settled by the first read (the process id is the idempotency key): it ran if the server
//! knows the process, and is sent again if it does not and the read came within the close
//! retention of the send.

use std::time::Instant;

use serde_json::value::RawValue;

use super::pending::Kind;
use super::tracker::Page;
use super::{CallError, Client, ClientEvent, Phase};
use crate::protocol::{method, ReadParams, ReadResult};
use crate::rpc::{self, ErrorCode, RequestId, RpcError};

impl Client {
    /// The answer to a tracked `process/start`: a failed start stops the tracking.
    pub(super) fn on_start_response(&mut self, id: i64, ok: bool) {
        let Some(pid) = self
            .trackers
            .iter()
            .find(|(_, t)| t.start_request == Some(id))
            .map(|(pid, _)| pid.clone())
        else {
            return;
        };
        if ok {
            if let Some(t) = self.trackers.get_mut(&pid) {
                t.start_request = None;
            }
        } else {
            self.trackers.remove(&pid);
        }
    }

    /// The answer to a recovery or gap-filling `process/read`.
    pub(super) fn on_fill_read(
        &mut self,
        now: Instant,
        id: i64,
        process_id: &str,
        result: Result<&RawValue, RpcError>,
    ) {
        let unsure = self.pending.first_unsure();
        self.fill_read_result(now, id, process_id, result);
        if unsure.is_some() {
            self.release_held(now);
        }
    }

    /// Calls held behind a start that was settled go out now (see [`Pending::first_unsure`]).
    pub(super) fn release_held(&mut self, now: Instant) {
        if self.phase == Phase::Ready {
            let frames = self.pending.take_unsent(now);
            self.transmits.extend(frames);
        }
    }

    fn fill_read_result(
        &mut self,
        now: Instant,
        id: i64,
        process_id: &str,
        result: Result<&RawValue, RpcError>,
    ) {
        let mut out = Vec::new();
        let mut next = None;
        {
            // A tracker made afresh for a reused process id is not this read's.
            let Some(t) = self
                .trackers
                .get_mut(process_id)
                .filter(|t| t.reading == Some(id))
            else {
                return;
            };
            // A start cut off by a disconnect, waiting for this read to learn whether it ran.
            let unsure = t.start_request.filter(|&s| self.pending.is_unsure(s));
            // The server refuses reads of a process still starting: it exists, so the start
            // ran; its events follow as notifications.
            let starting = matches!(&result, Err(e) if e.message.ends_with(" is starting"));
            if let (Some(start), true) = (unsure, starting) {
                t.start_request = None;
                t.reading = None;
                self.pending.remove(start);
                self.events.push_back(ClientEvent::Response {
                    id: RequestId::Int(start),
                    result: Ok(serde_json::json!({ "processId": process_id })),
                });
                return;
            }
            match result.map(|raw| serde_json::from_str::<ReadResult>(raw.get())) {
                Ok(Ok(read)) => {
                    if let Some(start) = unsure {
                        // It ran: answer the start as the server would have.
                        t.start_request = None;
                        self.pending.remove(start);
                        self.events.push_back(ClientEvent::Response {
                            id: RequestId::Int(start),
                            result: Ok(serde_json::json!({ "processId": process_id })),
                        });
                    }
                    if t.read_paged {
                        next = match t.on_page(t.read_after, read, &mut out) {
                            Page::Done => None,
                            Page::More => Some(true),
                            Page::Unpaged => Some(false),
                        };
                    } else {
                        t.on_read(read, &mut out);
                    }
                }
                Err(e)
                    if ErrorCode::from_code(e.code) == Some(ErrorCode::InvalidRequest)
                        && e.message.starts_with("unknown process id") =>
                {
                    if let Some(start) = unsure {
                        t.reading = None;
                        let retention = self.config.close_retention;
                        let call = self.pending.get_mut(start);
                        if let Some(call) =
                            call.filter(|c| c.sent_at.is_some_and(|at| now < at + retention))
                        {
                            // It never ran (the server handled every frame of the old
                            // connection before it let the session resume, and could not
                            // have forgotten the process yet): send the same start again.
                            call.unsure = false;
                            call.sent = true;
                            call.sent_at = Some(now);
                            self.transmits.push_back(call.text.clone());
                        } else {
                            // It may have run, closed and been forgotten: its fate is unknown.
                            self.pending.remove(start);
                            self.trackers.remove(process_id);
                            self.events.push_back(ClientEvent::Response {
                                id: RequestId::Int(start),
                                result: Err(CallError::Closed),
                            });
                        }
                        return;
                    }
                    self.trackers.remove(process_id);
                    self.events.push_back(ClientEvent::ProcessLost {
                        process_id: process_id.to_owned(),
                    });
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    if let Some(start) = unsure {
                        t.start_request = None;
                        self.pending.remove(start);
                        self.events.push_back(ClientEvent::Response {
                            id: RequestId::Int(start),
                            result: Err(CallError::Closed),
                        });
                    }
                    t.on_read_failed(&mut out);
                }
            }
        }
        self.emit(process_id, out);
        if let Some(paged) = next {
            self.send_fill(now, process_id, paged);
        }
    }

    /// Sends `process/read {afterSeq: last delivered, maxBytes}` for a tracked process,
    /// unless one is in flight. The read is paged ([`ClientConfig::recovery_read_bytes`]):
    /// each answer delivers what it can and the next page is read from the new cursor, so
    /// every connection makes progress however much output the server retained.
    ///
    /// [`ClientConfig::recovery_read_bytes`]: super::ClientConfig::recovery_read_bytes
    pub(super) fn fill(&mut self, now: Instant, process_id: &str) {
        self.send_fill(now, process_id, true);
    }

    /// [`Client::fill`], paged or not.
    fn send_fill(&mut self, now: Instant, process_id: &str, paged: bool) {
        let Some(t) = self.trackers.get(process_id) else {
            return;
        };
        // A start not answered yet: the process has nothing to read (or is still starting).
        // A start cut off by a disconnect is the exception: the read tells whether it ran.
        let start_pending = t
            .start_request
            .is_some_and(|id| self.pending.contains(id) && !self.pending.is_unsure(id));
        if t.reading.is_some() || start_pending {
            return;
        }
        let after = t.delivered();
        let params = ReadParams {
            process_id: process_id.to_owned(),
            after_seq: Some(after),
            max_bytes: paged.then_some(self.config.recovery_read_bytes),
            wait_ms: None,
        };
        let id = self.alloc_id();
        if let Some(t) = self.trackers.get_mut(process_id) {
            t.reading = Some(id);
            t.read_after = after;
            t.read_paged = paged;
        }
        let text = rpc::encode_request(&RequestId::Int(id), method::PROCESS_READ, &params);
        let kind = Kind::FillRead {
            process_id: process_id.to_owned(),
        };
        self.submit(now, id, kind, text);
    }
}
