//! ext: binary `process/output` frames (PROTOCOL.md §2.5), asked for with
//! [`ClientConfig::binary_frames`](super::ClientConfig::binary_frames): decoded into the same
//! notification the JSON form gives, so delivery, ordering and gaps are unchanged.

use std::time::Instant;

use super::Client;
use crate::protocol::binary::decode_output;
use crate::protocol::{Base64Bytes, Notification, OutputNotification};

impl Client {
    /// One binary frame; one that does not decode is ignored, like an undecodable JSON frame.
    pub(super) fn handle_binary(&mut self, now: Instant, frame: &[u8]) {
        let Ok(out) = decode_output(frame) else {
            return;
        };
        let notification = OutputNotification {
            process_id: out.process_id.to_owned(),
            seq: out.seq,
            stream: out.stream,
            chunk: Base64Bytes(out.chunk.to_vec()),
        };
        self.handle_notification(now, Notification::ProcessOutput(notification));
    }
}
