//! Lossless output, the client's side (PROTOCOL.md §5.11): when the server granted lossless
//! output at `initialize`, each process's delivered output is acknowledged with a
//! `process/ack {processId, seq}` notification once half the window (in bytes or in chunks)
//! was delivered since the last one, so the server's window never fills while the client
//! keeps up and one ack covers many chunks. (Recovery and gap reads acknowledge too: the
//! server takes their `afterSeq` as an ack.)

use super::tracker::Delivery;
use super::{Client, Phase};
use crate::protocol::{method, AckParams};
use crate::rpc;

/// Output delivered since the last `process/ack` of one process.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SinceAck {
    bytes: u64,
    chunks: u64,
}

impl Client {
    /// Counts the output among `out` (about to be delivered for `process_id`) and sends a
    /// `process/ack` for everything delivered once half a window has passed.
    pub(super) fn ack_delivered(&mut self, process_id: &str, out: &[Delivery]) {
        let Some(window) = self.lossless.filter(|_| self.config.acknowledge_output) else {
            return;
        };
        let Some(t) = self.trackers.get_mut(process_id) else {
            return;
        };
        for d in out {
            if let Delivery::Output { chunk, .. } = d {
                t.since_ack.bytes += chunk.len() as u64;
                t.since_ack.chunks += 1;
            }
        }
        let due = t.since_ack.bytes >= (window.window_bytes / 2).max(1)
            || t.since_ack.chunks >= (window.window_chunks / 2).max(1);
        if !due || self.phase != Phase::Ready || t.is_closed() {
            return;
        }
        t.since_ack = SinceAck::default();
        let params = AckParams {
            process_id: process_id.to_owned(),
            seq: t.delivered(),
        };
        self.transmits
            .push_back(rpc::encode_notification(method::PROCESS_ACK, &params));
    }
}
