//! What the server sends: replies to requests, notifications to a session's connection, and
//! closes, queued as [`Output`]s. Nothing is sent on a connection that is closing.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Output, Server, SessionId};
use crate::ids::{ConnId, Seq};
use crate::protocol::Stream;
use crate::rpc::{self, ErrorCode, RequestId, RpcError};

/// A request's answer: an encoded result object, `None` when answered later (a spawn, a
/// long poll), or a JSON-RPC error.
pub(super) type Reply = Result<Option<String>, RpcError>;

impl Server {
    /// Sends `reply` to request `id` on `conn` (nothing for `Ok(None)`).
    pub(super) fn reply(&mut self, conn: ConnId, id: &RequestId, reply: Reply) {
        let text = match reply {
            Ok(Some(text)) => text_with_id(id, &text),
            Ok(None) => return,
            Err(e) => rpc::encode_error(id, &e),
        };
        self.transmit(conn, text);
    }

    /// Queues one frame for `conn` unless it is gone or closing; it counts as unsent until
    /// the runtime reports it written (see `congestion`).
    pub(super) fn transmit(&mut self, conn: ConnId, text: String) {
        if self.conns.get(&conn).is_some_and(|c| !c.closing) {
            let len = text.len();
            self.out.push_back(Output::Transmit { conn, text });
            self.count_unsent(conn, len);
        }
    }

    /// A deferred answer (long poll, start) for `conn` is being sent (or dropped): it no longer
    /// counts against [`ServerConfig::max_inflight_requests`](super::ServerConfig::max_inflight_requests).
    pub(super) fn deferred_answered(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight = c.inflight.saturating_sub(1);
        }
    }

    /// Sends a notification to the connection the session is attached to; dropped while the
    /// session is detached (the state stays readable with `process/read`).
    pub(super) fn notify(&mut self, sid: SessionId, text: String) {
        if let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn) {
            self.transmit(conn, text);
        }
    }

    /// Closes `conn` (once); later frames on it are ignored.
    pub(super) fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.closing {
                c.closing = true;
                self.out.push_back(Output::Close { conn });
                // The close grace starts in `settle`.
                self.unsettled.insert(conn);
            }
        }
    }
}

/// Encodes a result object for [`Server::reply`].
pub(super) fn ok<T: Serialize>(value: &T) -> Reply {
    serde_json::to_string(value)
        .map(Some)
        .map_err(|e| RpcError::new(ErrorCode::Internal, format!("failed to encode result: {e}")))
}

/// Wraps an already-encoded result object as a response.
pub(super) fn text_with_id(id: &RequestId, result_json: &str) -> String {
    // A RequestId serializes to a JSON integer or string; neither can fail.
    let id_json = serde_json::to_string(id).unwrap_or_else(|_| "-1".to_owned());
    let mut text = String::with_capacity(result_json.len() + id_json.len() + 16);
    text.push_str("{\"id\":");
    text.push_str(&id_json);
    text.push_str(",\"result\":");
    text.push_str(result_json);
    text.push('}');
    text
}

/// `{"KEY":"<base64 of bytes>"TAIL}` built in one buffer, for the results that carry bytes:
/// serde would pass the base64 through its string escaper or `RawValue`'s validation, each a
/// second look at every byte (9 % of the server's time in block reads, perf). `key` and
/// `tail` are JSON the caller wrote.
pub(super) fn base64_object(key: &str, bytes: &[u8], tail: &str) -> String {
    let mut text = String::with_capacity(8 + key.len() + tail.len() + bytes.len().div_ceil(3) * 4);
    text.push_str("{\"");
    text.push_str(key);
    text.push_str("\":\"");
    base64_simd::STANDARD.encode_append(bytes, &mut text);
    text.push('"');
    text.push_str(tail);
    text.push('}');
    text
}

/// Encodes a `process/output` notification straight into one buffer (the hot path).
pub(super) fn output_frame(id_json: &str, seq: Seq, stream: Stream, bytes: &[u8]) -> String {
    let b64_len = bytes.len().div_ceil(3) * 4;
    let mut text = String::with_capacity(96 + id_json.len() + b64_len);
    text.push_str("{\"method\":\"process/output\",\"params\":{\"processId\":");
    text.push_str(id_json);
    let _ = write!(
        text,
        ",\"seq\":{},\"stream\":\"{}\",\"chunk\":\"",
        seq.0,
        stream.as_str()
    );
    // SIMD base64: this encode is the largest cost of streaming output.
    base64_simd::STANDARD.encode_append(bytes, &mut text);
    text.push_str("\"}}");
    text
}
