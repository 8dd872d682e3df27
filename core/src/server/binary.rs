//! ext: binary frames (PROTOCOL.md §2.5). A connection whose transport can carry binary
//! messages ([`Server::allow_binary_frames`]) and whose `initialize` asked for them
//! (`binaryFrames: true`) receives `process/output` as binary frames
//! ([`Output::TransmitBinary`]) and may send `process/write` as one; everything else stays
//! JSON. Connections that did not ask (Codex clients) see exactly the reference's frames, and
//! a binary message from them is decoded as JSON, as before.

use std::fmt::Write as _;

use super::outbound::{base64_object, output_frame, text_with_id};
use super::{ConnPhase, Output, Server, SessionId};
use crate::ids::{ConnId, Seq};
use crate::protocol::binary::{self, BinaryFrameError};
use crate::protocol::{
    method, Base64Bytes, FsResult, HttpBodyDeltaNotification, Stream, WriteParams,
};
use crate::rpc::{RequestId, RpcError};

/// What a connection may and does use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum BinaryFrames {
    /// The transport carries text only (stdio, memory).
    #[default]
    Unavailable,
    /// The transport can carry binary messages; the client has not asked (yet).
    Available,
    /// Negotiated: output goes out as binary frames, binary writes are accepted.
    On,
}

/// One encoded frame for a connection.
#[derive(Debug)]
pub(super) enum Wire {
    Text(String),
    Binary(Vec<u8>),
}

impl Server {
    /// The transport of `conn` can carry binary messages (a WebSocket): its client may then
    /// negotiate binary frames at `initialize`. Call right after
    /// [`handle_connect_as`](Self::handle_connect_as); unknown connections are ignored.
    pub fn allow_binary_frames(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.binary == BinaryFrames::Unavailable {
                c.binary = BinaryFrames::Available;
            }
        }
    }

    /// Whether `conn` may negotiate binary frames (for the `capabilities` of `initialize`).
    pub(super) fn binary_available(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.binary != BinaryFrames::Unavailable)
    }

    /// `initialize {binaryFrames}`: turns binary frames on when asked and possible; returns
    /// whether they are on.
    pub(super) fn negotiate_binary(&mut self, conn: ConnId, asked: bool) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if asked && c.binary == BinaryFrames::Available {
            c.binary = BinaryFrames::On;
        }
        c.binary == BinaryFrames::On
    }

    /// Whether `conn` negotiated binary frames.
    pub(super) fn binary_on(&self, conn: ConnId) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.binary == BinaryFrames::On)
    }

    /// Whether `frame` on `conn` is a binary frame to decode as such (binary frames are on and
    /// it starts with the magic byte); otherwise it is JSON.
    pub(super) fn is_binary_message(&self, conn: ConnId, frame: &[u8]) -> bool {
        binary::is_binary_frame(frame)
            && self
                .conns
                .get(&conn)
                .is_some_and(|c| c.binary == BinaryFrames::On)
    }

    /// A binary `process/write` frame: decoded, then answered like the JSON request (a JSON
    /// `{status}` response with the frame's request id, the same `writeId` dedupe). A frame
    /// that does not decode is answered `-32600` naming the fault (with the request id once
    /// the fixed header could be read, else `-1`); the connection keeps working.
    pub(super) fn binary_message(&mut self, conn: ConnId, frame: &[u8]) {
        let write = match binary::decode_write(frame) {
            Ok(write) => write,
            Err(BinaryFrameError { id, message }) => {
                let id = id.map_or(RequestId::UNREADABLE, RequestId::Int);
                let e = RpcError::invalid_request(format!("invalid binary frame: {message}"));
                self.reply(conn, &id, Err(e));
                return;
            }
        };
        let id = RequestId::Int(write.id);
        let reply = match self.conns.get(&conn).map(|c| c.phase) {
            Some(ConnPhase::Ready(sid)) => self.check_request_id(&id).and_then(|()| {
                self.check_id("processId", write.process_id)?;
                self.write(
                    sid,
                    WriteParams {
                        process_id: write.process_id.to_owned(),
                        chunk: Base64Bytes(write.chunk.to_vec()),
                        write_id: write.write_id.to_owned(),
                    },
                )
            }),
            _ => Err(RpcError::invalid_request(
                "client must send initialized before using process",
            )),
        };
        self.reply(conn, &id, reply);
    }

    /// The connection `process/output` of session `sid` goes to, and whether it takes binary
    /// frames; `None` while the session is detached (nothing is encoded then).
    pub(super) fn output_target(&self, sid: SessionId) -> Option<(ConnId, bool)> {
        let conn = self.sessions.get(&sid)?.conn?;
        let c = self.conns.get(&conn)?;
        Some((conn, c.binary == BinaryFrames::On))
    }

    /// Queues one encoded frame for `conn` (see [`Server::transmit`]).
    pub(super) fn transmit_wire(&mut self, conn: ConnId, wire: Wire) {
        match wire {
            Wire::Text(text) => self.transmit(conn, text),
            Wire::Binary(frame) => {
                if self.conns.get(&conn).is_some_and(|c| !c.closing) {
                    let len = frame.len();
                    self.out.push_back(Output::TransmitBinary { conn, frame });
                    self.count_unsent(conn, len);
                }
            }
        }
    }
}

/// The answer to an fs request `id` whose result carries bytes (`fs/readFile`,
/// `fs/readBlock`): a result frame on a binary connection when the id is an integer, else the
/// JSON result built in one buffer ([`base64_object`]). `None` for every other result.
pub(super) fn encode_fs_bytes(binary: bool, id: &RequestId, result: &FsResult) -> Option<Wire> {
    let (key, bytes, eof) = match result {
        FsResult::ReadFile(r) => ("dataBase64", &r.data_base64.0, None),
        FsResult::ReadBlock(r) => ("chunk", &r.chunk.0, Some(r.eof)),
        _ => return None,
    };
    Some(match id {
        RequestId::Int(n) if binary => Wire::Binary(binary::encode_result(
            *n,
            eof.unwrap_or(false),
            false,
            bytes,
        )),
        _ => {
            let tail = match eof {
                Some(true) => ",\"eof\":true",
                Some(false) => ",\"eof\":false",
                None => "",
            };
            Wire::Text(text_with_id(id, &base64_object(key, bytes, tail)))
        }
    })
}

/// An `http/request/bodyDelta` without `error`: a body-delta frame on a binary connection,
/// else the JSON notification built in one buffer. `None` for a delta with an error (the
/// caller encodes it with serde; it is rare and small).
pub(super) fn encode_body_delta(binary: bool, delta: &HttpBodyDeltaNotification) -> Option<Wire> {
    if delta.error.is_some() {
        return None;
    }
    let bytes = &delta.delta_base64.0;
    if binary {
        return Some(Wire::Binary(binary::encode_body_delta(
            &delta.request_id,
            delta.seq,
            delta.done,
            bytes,
        )));
    }
    let request_id = serde_json::to_string(&delta.request_id).ok()?;
    let mut text = String::with_capacity(128 + request_id.len() + bytes.len().div_ceil(3) * 4);
    let _ = write!(
        text,
        "{{\"method\":\"{}\",\"params\":{{\"requestId\":{request_id},\"seq\":{},\"deltaBase64\":\"",
        method::HTTP_REQUEST_BODY_DELTA,
        delta.seq
    );
    base64_simd::STANDARD.encode_append(bytes, &mut text);
    let _ = write!(text, "\",\"done\":{},\"error\":null}}}}", delta.done);
    Some(Wire::Text(text))
}

/// Encodes one output chunk for a connection: a binary frame or the JSON notification.
pub(super) fn encode_output(
    binary: bool,
    id: &str,
    id_json: &str,
    seq: Seq,
    stream: Stream,
    bytes: &[u8],
) -> Wire {
    if binary {
        Wire::Binary(binary::encode_output(id, seq.0, stream, bytes))
    } else {
        Wire::Text(output_frame(id_json, seq, stream, bytes))
    }
}
