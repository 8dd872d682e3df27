//! ext: binary frames (PROTOCOL.md §2.5): `process/output`, `process/write`, the byte-carrying
//! `fs/readFile` and `fs/readBlock` results and `http/request/bodyDelta` as WebSocket binary
//! messages with a small fixed header and the raw bytes, no base64 and no JSON.
//! Negotiated per connection at `initialize` (`binaryFrames: true`); never sent to a client
//! that did not ask, so Codex clients see the reference's JSON.
//!
//! Layout (all integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | magic `0xEB` (never the first byte of a JSON text) |
//! | 1 | 1 | kind: `0x01` output, `0x03` result, `0x04` body delta (server → client); `0x02` write (client → server) |
//! | 2 | 1 | stream: `0` stdout, `1` stderr, `2` pty (output); `0` (every other kind) |
//! | 3 | 1 | flags: bit 0 `last` (result: `eof`; body delta: `done`), bit 1 `more` (result); `0` for output and write |
//! | 4 | 8 | output, body delta: seq (u64, ≥ 1); write, result: the JSON-RPC request id (i64) |
//! | 12 | 2 | id length `P` in bytes: output, write: the processId (1..=65,535); body delta: the requestId; result: 0 |
//! | 14 | 2 | writeId length `W` in bytes (write: 1..=65,535; every other kind: 0) |
//! | 16 | 4 | payload length `N` in bytes (u32) |
//! | 20 | P | processId or requestId, UTF-8 |
//! | 20+P | W | writeId, UTF-8 |
//! | 20+P+W | N | payload: the raw bytes; the frame ends here |
//!
//! A result frame stands for the JSON response `{"id", "result"}` to an `fs/readFile`
//! (`{dataBase64}`, flags 0) or `fs/readBlock` (`{chunk, eof}`) request with an integer id; the
//! client knows which by the id. An `fs/readFile` result may come as several result frames with
//! the same id, each but the last flagged `more`, whose payloads in order are the file; an
//! error response to the id after such frames voids them. A body-delta frame stands for `http/request/bodyDelta
//! {requestId, seq, deltaBase64, done}` without `error` (a delta with an error stays JSON).

use super::Stream;

/// The first byte of every binary frame; no JSON text starts with it.
pub const BINARY_MAGIC: u8 = 0xEB;
/// Kind byte of a `process/output` frame (server → client).
pub const KIND_OUTPUT: u8 = 0x01;
/// Kind byte of a `process/write` frame (client → server).
pub const KIND_WRITE: u8 = 0x02;
/// Kind byte of a result frame: the bytes of an `fs/readFile` or `fs/readBlock` result
/// (server → client).
pub const KIND_RESULT: u8 = 0x03;
/// Kind byte of an `http/request/bodyDelta` frame (server → client).
pub const KIND_BODY_DELTA: u8 = 0x04;
/// Flags bit of result and body-delta frames: `eof` of an `fs/readBlock` result, `done` of a
/// body delta.
pub const FLAG_LAST: u8 = 0x01;
/// Flags bit of result frames: the result continues in the next result frame with the same id
/// (an `fs/readFile` result sent in pieces); the payloads of the frames, in order, are the
/// bytes.
pub const FLAG_MORE: u8 = 0x02;
/// Bytes of the fixed part of the header, before the ids.
pub const HEADER_BYTES: usize = 20;

/// Whether `frame` is meant as a binary frame (its first byte is [`BINARY_MAGIC`]).
pub fn is_binary_frame(frame: &[u8]) -> bool {
    frame.first() == Some(&BINARY_MAGIC)
}

/// A decoded `process/output` frame, borrowing from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFrame<'a> {
    /// The process.
    pub process_id: &'a str,
    /// The chunk's seq (the same number the JSON notification would carry).
    pub seq: u64,
    /// The stream.
    pub stream: Stream,
    /// The raw bytes.
    pub chunk: &'a [u8],
}

/// A decoded `process/write` frame, borrowing from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFrame<'a> {
    /// The JSON-RPC request id the answer (a JSON `{status}` response) carries.
    pub id: i64,
    /// The process.
    pub process_id: &'a str,
    /// The write id, deduplicated as in `process/write`.
    pub write_id: &'a str,
    /// The raw bytes for stdin.
    pub chunk: &'a [u8],
}

/// A decoded result frame (kind `0x03`), borrowing from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultFrame<'a> {
    /// The id of the `fs/readFile` or `fs/readBlock` request answered.
    pub id: i64,
    /// `eof` of an `fs/readBlock` result (always `false` for `fs/readFile`).
    pub eof: bool,
    /// The result continues in the next result frame with this id ([`FLAG_MORE`]).
    pub more: bool,
    /// The bytes: the whole file, or the block.
    pub data: &'a [u8],
}

/// A decoded `http/request/bodyDelta` frame (kind `0x04`), borrowing from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDeltaFrame<'a> {
    /// The streamed request.
    pub request_id: &'a str,
    /// The delta's seq (from 1).
    pub seq: u64,
    /// The body ended with this delta.
    pub done: bool,
    /// The body bytes (at most 1 MiB).
    pub delta: &'a [u8],
}

/// Any frame a server sends, decoded by its kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    /// `process/output`.
    Output(OutputFrame<'a>),
    /// The bytes of an `fs/readFile` or `fs/readBlock` result.
    Result(ResultFrame<'a>),
    /// `http/request/bodyDelta`.
    BodyDelta(BodyDeltaFrame<'a>),
}

/// Why a binary frame could not be decoded; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid binary frame: {message}")]
pub struct BinaryFrameError {
    /// The request id, when the fixed header of a write frame could be read.
    pub id: Option<i64>,
    /// What is wrong.
    pub message: String,
}

/// Encodes a `process/output` frame: the header, then `chunk` copied once behind it.
/// `process_id` longer than 65,535 bytes is cut (ids are bounded far below that by
/// `maxIdBytes`).
pub fn encode_output(process_id: &str, seq: u64, stream: Stream, chunk: &[u8]) -> Vec<u8> {
    encode_frame(
        (KIND_OUTPUT, 0),
        stream_byte(stream),
        seq.to_be_bytes(),
        (process_id, ""),
        chunk,
    )
}

/// Encodes a `process/write` frame with request id `id`.
pub fn encode_write(id: i64, process_id: &str, write_id: &str, chunk: &[u8]) -> Vec<u8> {
    encode_frame(
        (KIND_WRITE, 0),
        0,
        id.to_be_bytes(),
        (process_id, write_id),
        chunk,
    )
}

/// Encodes a result frame answering request `id` with `data` (`eof` for `fs/readBlock`;
/// `more` when another piece of the result follows).
pub fn encode_result(id: i64, eof: bool, more: bool, data: &[u8]) -> Vec<u8> {
    let flags = if eof { FLAG_LAST } else { 0 } | if more { FLAG_MORE } else { 0 };
    encode_frame((KIND_RESULT, flags), 0, id.to_be_bytes(), ("", ""), data)
}

/// A result frame flagged `more` for request `id` built in place: `buf` holds
/// [`HEADER_BYTES`] spare bytes, then the payload; the header is written over the spare bytes.
/// `None` when `buf` is shorter than the header.
pub fn result_in_place(id: i64, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    let payload = buf.len().checked_sub(HEADER_BYTES)?;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    encode_header_into(
        &mut header,
        (KIND_RESULT, FLAG_MORE),
        0,
        id.to_be_bytes(),
        "",
        "",
        payload,
    );
    buf[..HEADER_BYTES].copy_from_slice(&header);
    Some(buf)
}

/// Encodes an `http/request/bodyDelta` frame (without `error`).
pub fn encode_body_delta(request_id: &str, seq: u64, done: bool, delta: &[u8]) -> Vec<u8> {
    let flags = if done { FLAG_LAST } else { 0 };
    encode_frame(
        (KIND_BODY_DELTA, flags),
        0,
        seq.to_be_bytes(),
        (request_id, ""),
        delta,
    )
}

/// Decodes any frame a server sends, by its kind byte.
///
/// # Errors
/// [`BinaryFrameError`] as [`decode_output`], [`decode_result`] and [`decode_body_delta`], or
/// for a kind no server sends.
pub fn decode_server_frame(frame: &[u8]) -> Result<ServerFrame<'_>, BinaryFrameError> {
    match frame.get(1) {
        Some(&KIND_RESULT) => decode_result(frame).map(ServerFrame::Result),
        Some(&KIND_BODY_DELTA) => decode_body_delta(frame).map(ServerFrame::BodyDelta),
        _ => decode_output(frame).map(ServerFrame::Output),
    }
}

/// Decodes a result frame.
///
/// # Errors
/// [`BinaryFrameError`] for a short frame, a wrong magic, kind or stream byte, flags other than
/// [`FLAG_LAST`] and [`FLAG_MORE`], a processId or writeId, or a payload length that does not
/// match.
pub fn decode_result(frame: &[u8]) -> Result<ResultFrame<'_>, BinaryFrameError> {
    let raw = decode_raw(frame, KIND_RESULT)?;
    let id = i64::from_be_bytes(raw.word);
    let fail = |message: &str| BinaryFrameError {
        id: Some(id),
        message: message.to_owned(),
    };
    if raw.stream != 0 {
        return Err(fail("stream byte of a result frame must be 0"));
    }
    if !raw.process_id.is_empty() || !raw.write_id.is_empty() {
        return Err(fail("a result frame carries no processId or writeId"));
    }
    if raw.flags & !(FLAG_LAST | FLAG_MORE) != 0 {
        return Err(fail(&format!(
            "flags {:#04x}, only bits 0 and 1 may be set",
            raw.flags
        )));
    }
    Ok(ResultFrame {
        id,
        eof: raw.flags & FLAG_LAST != 0,
        more: raw.flags & FLAG_MORE != 0,
        data: raw.payload,
    })
}

/// Decodes an `http/request/bodyDelta` frame.
///
/// # Errors
/// [`BinaryFrameError`] for a short frame, a wrong magic, kind or stream byte, flags other than
/// [`FLAG_LAST`], seq 0, a non-UTF-8 requestId, a writeId, or a payload length that does not
/// match.
pub fn decode_body_delta(frame: &[u8]) -> Result<BodyDeltaFrame<'_>, BinaryFrameError> {
    let raw = decode_raw(frame, KIND_BODY_DELTA)?;
    let fail = |message: &str| BinaryFrameError {
        id: None,
        message: message.to_owned(),
    };
    if raw.stream != 0 {
        return Err(fail("stream byte of a body-delta frame must be 0"));
    }
    let seq = u64::from_be_bytes(raw.word);
    if seq == 0 {
        return Err(fail("seq 0"));
    }
    if !raw.write_id.is_empty() {
        return Err(fail("a body-delta frame carries no writeId"));
    }
    Ok(BodyDeltaFrame {
        request_id: raw.process_id,
        seq,
        done: last_flag(raw.flags).map_err(|m| fail(&m))?,
        delta: raw.payload,
    })
}

/// The `last` bit of a flags byte that may carry only it.
fn last_flag(flags: u8) -> Result<bool, String> {
    if flags & !FLAG_LAST != 0 {
        return Err(format!("flags {flags:#04x}, only bit 0 may be set"));
    }
    Ok(flags & FLAG_LAST != 0)
}

/// Decodes a `process/output` frame.
///
/// # Errors
/// [`BinaryFrameError`] for a short frame, a wrong magic, kind, stream or flags byte, seq 0,
/// an empty or non-UTF-8 processId, a writeId, or a payload length that does not match.
pub fn decode_output(frame: &[u8]) -> Result<OutputFrame<'_>, BinaryFrameError> {
    let raw = decode_raw(frame, KIND_OUTPUT)?;
    let fail = |message: &str| BinaryFrameError {
        id: None,
        message: message.to_owned(),
    };
    check_process_frame(&raw).map_err(|m| fail(&m))?;
    let stream = match raw.stream {
        0 => Stream::Stdout,
        1 => Stream::Stderr,
        2 => Stream::Pty,
        _ => return Err(fail("unknown stream byte")),
    };
    let seq = u64::from_be_bytes(raw.word);
    if seq == 0 {
        return Err(fail("seq 0"));
    }
    if !raw.write_id.is_empty() {
        return Err(fail("an output frame carries no writeId"));
    }
    Ok(OutputFrame {
        process_id: raw.process_id,
        seq,
        stream,
        chunk: raw.payload,
    })
}

/// Decodes a `process/write` frame.
///
/// # Errors
/// [`BinaryFrameError`] (with the request id once the fixed header was read) for a short
/// frame, a wrong magic, kind, stream or flags byte, an empty or non-UTF-8 processId or
/// writeId, or a payload length that does not match.
pub fn decode_write(frame: &[u8]) -> Result<WriteFrame<'_>, BinaryFrameError> {
    let raw = decode_raw(frame, KIND_WRITE)?;
    let id = i64::from_be_bytes(raw.word);
    let fail = |message: &str| BinaryFrameError {
        id: Some(id),
        message: message.to_owned(),
    };
    check_process_frame(&raw).map_err(|m| fail(&m))?;
    if raw.stream != 0 {
        return Err(fail("stream byte of a write frame must be 0"));
    }
    if raw.write_id.is_empty() {
        return Err(fail("writeId must not be empty"));
    }
    Ok(WriteFrame {
        id,
        process_id: raw.process_id,
        write_id: raw.write_id,
        chunk: raw.payload,
    })
}

/// The rules output and write frames share: flags 0, a processId.
fn check_process_frame(raw: &RawFrame<'_>) -> Result<(), String> {
    if raw.flags != 0 {
        return Err(format!("flags {:#04x}, expected 0", raw.flags));
    }
    if raw.process_id.is_empty() {
        return Err("processId must not be empty".to_owned());
    }
    Ok(())
}

/// The fields every kind shares.
struct RawFrame<'a> {
    stream: u8,
    flags: u8,
    word: [u8; 8],
    process_id: &'a str,
    write_id: &'a str,
    payload: &'a [u8],
}

fn decode_raw(frame: &[u8], kind: u8) -> Result<RawFrame<'_>, BinaryFrameError> {
    let header: &[u8; HEADER_BYTES] = frame
        .get(..HEADER_BYTES)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| BinaryFrameError {
            id: None,
            message: format!(
                "{} bytes is shorter than the {HEADER_BYTES}-byte header",
                frame.len()
            ),
        })?;
    let [magic, got_kind, stream, flags, w0, w1, w2, w3, w4, w5, w6, w7, p0, p1, i0, i1, n0, n1, n2, n3] =
        *header;
    let word = [w0, w1, w2, w3, w4, w5, w6, w7];
    // The request id of a write is readable from here on.
    let id = matches!(kind, KIND_WRITE | KIND_RESULT).then(|| i64::from_be_bytes(word));
    let fail = |message: String| BinaryFrameError { id, message };
    if magic != BINARY_MAGIC {
        return Err(fail(format!(
            "magic byte {magic:#04x}, expected {BINARY_MAGIC:#04x}"
        )));
    }
    if got_kind != kind {
        return Err(fail(format!("kind {got_kind:#04x}, expected {kind:#04x}")));
    }
    let pid_len = usize::from(u16::from_be_bytes([p0, p1]));
    let wid_len = usize::from(u16::from_be_bytes([i0, i1]));
    let payload_len = u32::from_be_bytes([n0, n1, n2, n3]) as usize;
    let expected = HEADER_BYTES + pid_len + wid_len + payload_len;
    if frame.len() != expected {
        return Err(fail(format!(
            "frame is {} bytes, the header announces {expected} \
             (processId {pid_len}, writeId {wid_len}, payload {payload_len})",
            frame.len()
        )));
    }
    let ids = &frame[HEADER_BYTES..HEADER_BYTES + pid_len + wid_len];
    let (pid, wid) = ids.split_at(pid_len);
    let text = |what: &str, bytes| {
        std::str::from_utf8(bytes).map_err(|_| fail(format!("{what} is not UTF-8")))
    };
    Ok(RawFrame {
        stream,
        flags,
        word,
        process_id: text(
            if kind == KIND_BODY_DELTA {
                "requestId"
            } else {
                "processId"
            },
            pid,
        )?,
        write_id: text("writeId", wid)?,
        payload: &frame[HEADER_BYTES + pid_len + wid_len..],
    })
}

fn stream_byte(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Pty => 2,
    }
}

/// One whole frame: the header, then `payload` copied once behind it.
fn encode_frame(
    kind_flags: (u8, u8),
    stream: u8,
    word: [u8; 8],
    (id, write_id): (&str, &str),
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_BYTES + id.len() + write_id.len() + payload.len());
    encode_header_into(
        &mut frame,
        kind_flags,
        stream,
        word,
        id,
        write_id,
        payload.len(),
    );
    frame.extend_from_slice(payload);
    frame
}

fn encode_header_into(
    frame: &mut Vec<u8>,
    (kind, flags): (u8, u8),
    stream: u8,
    word: [u8; 8],
    process_id: &str,
    write_id: &str,
    payload_len: usize,
) {
    let pid = clip(process_id);
    let wid = clip(write_id);
    frame.extend_from_slice(&[BINARY_MAGIC, kind, stream, flags]);
    frame.extend_from_slice(&word);
    frame.extend_from_slice(&(pid.len() as u16).to_be_bytes());
    frame.extend_from_slice(&(wid.len() as u16).to_be_bytes());
    // Chunks and frames are bounded far below 4 GiB (maxFrameBytes); saturate rather than wrap.
    frame.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(pid);
    frame.extend_from_slice(wid);
}

/// At most `u16::MAX` bytes of `s`.
fn clip(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(usize::from(u16::MAX))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn output_frame_layout_is_as_documented() {
        let frame = encode_output("p1", 258, Stream::Stderr, b"hi");
        assert_eq!(
            frame,
            [
                0xEB, 0x01, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 2, 0, 0, 0, 0, 0, 2, b'p', b'1', b'h',
                b'i'
            ]
        );
    }

    #[test]
    fn malformed_frames_name_what_is_wrong() {
        let good = encode_write(7, "cat", "w1", b"data");
        let cases: Vec<(Vec<u8>, &str, Option<i64>)> = vec![
            (good[..10].to_vec(), "shorter than the 20-byte header", None),
            ([&[0xEA], &good[1..]].concat(), "magic byte 0xea", Some(7)),
            (
                [&good[..1], &[9], &good[2..]].concat(),
                "kind 0x09",
                Some(7),
            ),
            (
                [&good[..3], &[1], &good[4..]].concat(),
                "flags 0x01",
                Some(7),
            ),
            (good[..good.len() - 1].to_vec(), "header announces", Some(7)),
            ([&good[..], b"x"].concat(), "header announces", Some(7)),
            (
                encode_write(7, "cat", "", b"d"),
                "writeId must not be empty",
                Some(7),
            ),
            (
                encode_write(7, "", "w", b"d"),
                "processId must not be empty",
                Some(7),
            ),
        ];
        for (frame, want, id) in cases {
            let err = decode_write(&frame).expect_err(want);
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
            assert_eq!(err.id, id, "{want}");
        }
        let mut bad_utf8 = encode_write(7, "ab", "w", b"");
        bad_utf8[HEADER_BYTES] = 0xff;
        assert!(decode_write(&bad_utf8)
            .expect_err("utf8")
            .message
            .contains("processId is not UTF-8"));
        let zero = encode_output("p", 0, Stream::Stdout, b"x");
        assert!(decode_output(&zero)
            .expect_err("seq 0")
            .message
            .contains("seq 0"));
        assert!(decode_output(&good)
            .expect_err("kind")
            .message
            .contains("kind"));
    }

    #[test]
    fn result_and_body_delta_layouts_are_as_documented() {
        assert_eq!(
            encode_result(-2, true, false, b"ab"),
            [
                0xEB, 0x03, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0,
                0, 2, b'a', b'b'
            ]
        );
        assert_eq!(
            encode_body_delta("r", 3, false, b"x"),
            [0xEB, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0, 0, 1, b'r', b'x']
        );
    }

    #[test]
    fn malformed_result_and_body_delta_frames_name_what_is_wrong() {
        let result = encode_result(9, false, false, b"data");
        let mut flags = result.clone();
        flags[3] = 0x04;
        let e = decode_result(&flags).expect_err("flags");
        assert!(e.message.contains("only bits 0 and 1"), "{e}");
        assert_eq!(e.id, Some(9));
        let mut stream = result.clone();
        stream[2] = 1;
        assert!(decode_result(&stream).is_err());
        // A processId on a result frame.
        let with_pid = encode_output("p", 9, Stream::Stdout, b"data");
        let mut as_result = with_pid.clone();
        as_result[1] = KIND_RESULT;
        assert!(decode_result(&as_result)
            .expect_err("pid")
            .message
            .contains("no processId"));
        let zero = encode_body_delta("r", 0, true, b"");
        assert!(decode_body_delta(&zero)
            .expect_err("seq 0")
            .message
            .contains("seq 0"));
        let mut bad = encode_body_delta("r", 1, true, b"");
        bad[HEADER_BYTES] = 0xff;
        assert!(decode_body_delta(&bad)
            .expect_err("utf8")
            .message
            .contains("requestId is not UTF-8"));
        // Output and write frames still refuse flags.
        let mut out = encode_output("p", 1, Stream::Stdout, b"");
        out[3] = FLAG_LAST;
        assert!(decode_output(&out).is_err());
        assert!(matches!(
            decode_server_frame(&encode_write(1, "p", "w", b"")),
            Err(BinaryFrameError { .. })
        ));
    }

    proptest! {
        #[test]
        fn result_and_body_delta_frames_round_trip(
            id in any::<i64>(),
            rid in "[a-z0-9-]{0,40}",
            seq in 1u64..,
            last in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let frame = encode_result(id, last, !last, &data);
            let in_place = result_in_place(id, [&[0u8; HEADER_BYTES][..], &data].concat());
            prop_assert_eq!(in_place, Some(encode_result(id, false, true, &data)));
            prop_assert_eq!(
                decode_server_frame(&frame).expect("result"),
                ServerFrame::Result(ResultFrame { id, eof: last, more: !last, data: &data })
            );
            let frame = encode_body_delta(&rid, seq, last, &data);
            prop_assert_eq!(
                decode_server_frame(&frame).expect("delta"),
                ServerFrame::BodyDelta(BodyDeltaFrame { request_id: &rid, seq, done: last, delta: &data })
            );
        }

        #[test]
        fn output_frames_round_trip(
            pid in "[a-z0-9-]{1,40}",
            seq in 1u64..,
            stream in prop::sample::select(vec![Stream::Stdout, Stream::Stderr, Stream::Pty]),
            chunk in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let frame = encode_output(&pid, seq, stream, &chunk);
            prop_assert!(is_binary_frame(&frame));
            let got = decode_output(&frame).expect("round trip");
            prop_assert_eq!(got, OutputFrame { process_id: &pid, seq, stream, chunk: &chunk });
        }

        #[test]
        fn write_frames_round_trip(
            id in any::<i64>(),
            pid in "[a-z0-9-]{1,40}",
            wid in "[a-z0-9-]{1,40}",
            chunk in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let frame = encode_write(id, &pid, &wid, &chunk);
            let got = decode_write(&frame).expect("round trip");
            prop_assert_eq!(got, WriteFrame { id, process_id: &pid, write_id: &wid, chunk: &chunk });
        }

        #[test]
        fn arbitrary_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_output(&frame);
            let _ = decode_write(&frame);
            let _ = decode_server_frame(&frame);
        }
    }
}
