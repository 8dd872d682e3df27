//! ext: binary frames (PROTOCOL.md §2.5), asked for with
//! [`ClientConfig::binary_frames`](super::ClientConfig::binary_frames): a `process/output` or
//! `http/request/bodyDelta` frame is decoded into the same notification the JSON form gives,
//! so delivery, ordering and gaps are unchanged; a result frame (the bytes of an `fs/readFile`
//! or `fs/readBlock` result) answers its call as [`ClientEvent::DataResponse`].

use std::time::Instant;

use super::pending::Kind;
use super::{CallError, Client, ClientEvent};
use crate::protocol::binary::{decode_server_frame, ResultFrame, ServerFrame};
use crate::protocol::{Base64Bytes, HttpBodyDeltaNotification, Notification, OutputNotification};
use crate::rpc::RequestId;

impl Client {
    /// One binary frame; one that does not decode is ignored, like an undecodable JSON frame.
    pub(super) fn handle_binary(&mut self, now: Instant, frame: &[u8]) {
        let notification = match decode_server_frame(frame) {
            Ok(ServerFrame::Output(out)) => Notification::ProcessOutput(OutputNotification {
                process_id: out.process_id.to_owned(),
                seq: out.seq,
                stream: out.stream,
                chunk: Base64Bytes(out.chunk.to_vec()),
            }),
            Ok(ServerFrame::BodyDelta(delta)) => {
                Notification::HttpBodyDelta(HttpBodyDeltaNotification {
                    request_id: delta.request_id.to_owned(),
                    seq: delta.seq,
                    delta_base64: Base64Bytes(delta.delta.to_vec()),
                    done: delta.done,
                    error: None,
                })
            }
            Ok(ServerFrame::Result(result)) => return self.handle_data_response(now, result),
            Err(_) => return,
        };
        self.handle_notification(now, notification);
    }

    /// A result frame: the answer to user call `id` (an `fs/readFile` or `fs/readBlock`), or
    /// a piece of it (`more`: kept until the last piece). Frames for unknown ids, or for the
    /// client's own calls, are ignored.
    fn handle_data_response(&mut self, now: Instant, result: ResultFrame<'_>) {
        if !matches!(
            self.pending.get_mut(result.id).map(|c| &c.kind),
            Some(Kind::User { .. })
        ) {
            return;
        }
        if result.more {
            let limit = self.config.max_result_bytes;
            let partial = self.partial.entry(result.id).or_default();
            if partial.len().saturating_add(result.data.len()) <= limit {
                partial.extend_from_slice(result.data);
                return;
            }
            // Over the limit: the call fails now; its later pieces find no pending call.
            self.partial.remove(&result.id);
            self.pending.remove(result.id);
            self.events.push_back(ClientEvent::Response {
                id: RequestId::Int(result.id),
                result: Err(CallError::InvalidResult(format!(
                    "the result is over max_result_bytes ({limit} bytes)"
                ))),
            });
            return;
        }
        let data = match self.partial.remove(&result.id) {
            Some(mut head) => {
                head.extend_from_slice(result.data);
                head
            }
            None => result.data.to_vec(),
        };
        let Some(call) = self.pending.remove(result.id) else {
            return;
        };
        if call.unsure {
            self.release_held(now);
        }
        self.events.push_back(ClientEvent::DataResponse {
            id: RequestId::Int(result.id),
            data,
            eof: result.eof,
        });
    }
}
