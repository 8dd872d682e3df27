//! ext binary frames (PROTOCOL.md §2.5): negotiation, binary `process/output`, binary
//! `process/write`, and the answers to malformed binary frames.

use serde_json::{json, Value};

use super::{b64, error_code, Harness};
use crate::protocol::binary::{
    decode_output, encode_body_delta, encode_result, encode_write, OutputFrame, HEADER_BYTES,
};
use crate::protocol::fs::{ReadBlockResult, ReadFileResult};
use crate::protocol::{Base64Bytes, FsError, FsErrorKind, FsResult, HttpRequestResult, Stream};
use crate::server::{Command, HttpEvent, ServerConfig, FS_PIECE_HEADROOM};
use crate::ConnId;

impl Harness {
    /// A connection on a binary-capable transport with a fresh session; `ask`: whether its
    /// `initialize` asks for binary frames. Returns the connection and the `initialize`
    /// result.
    fn binary_session(&mut self, ask: bool) -> (ConnId, Value) {
        let conn = self.connect();
        self.sim.server.allow_binary_frames(conn);
        let mut params = json!({"clientName": "test"});
        if ask {
            params["binaryFrames"] = json!(true);
        }
        let r = self.call(conn, 0, "initialize", params);
        self.send(conn, json!({"method": "initialized", "params": {}}));
        (conn, r[0]["result"].clone())
    }

    /// The binary frames sent to `conn`, removed.
    fn take_binary(&mut self, conn: ConnId) -> Vec<Vec<u8>> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sim.binary_frames)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.sim.binary_frames = rest;
        mine.into_iter().map(|(_, f)| f).collect()
    }

    fn send_binary(&mut self, conn: ConnId, frame: &[u8]) {
        self.sim.send_raw(conn, frame);
        self.drain();
    }
}

#[test]
fn binary_output_is_negotiated_and_seqs_stay_contiguous_with_json_events() {
    let mut h = Harness::new();
    let (conn, init) = h.binary_session(true);
    assert_eq!(init["binaryFrames"], json!(true));
    assert_eq!(init["capabilities"]["binaryFrames"], json!(true));
    let key = h.start(conn, "p", json!({}));
    h.output(key, Stream::Stdout, b"out\xff");
    h.output(key, Stream::Stderr, b"err");
    h.finish(key, 0);
    let binary = h.take_binary(conn);
    let decoded: Vec<OutputFrame<'_>> = binary
        .iter()
        .map(|f| decode_output(f).expect("valid output frame"))
        .collect();
    assert_eq!(
        decoded,
        vec![
            OutputFrame {
                process_id: "p",
                seq: 1,
                stream: Stream::Stdout,
                chunk: b"out\xff"
            },
            OutputFrame {
                process_id: "p",
                seq: 2,
                stream: Stream::Stderr,
                chunk: b"err"
            },
        ]
    );
    // Exit and close stay JSON and take the next seqs.
    let frames = h.take(conn);
    assert_eq!(frames[0]["params"]["seq"], json!(3));
    assert_eq!(frames[1]["method"], json!("process/closed"));
    assert_eq!(frames[1]["params"]["seq"], json!(4));
    // process/read still answers in JSON, with the same seqs.
    let r = h.call(conn, 9, "process/read", json!({"processId": "p"}));
    assert_eq!(r[0]["result"]["chunks"][0]["chunk"], json!(b64(b"out\xff")));
    assert_eq!(r[0]["result"]["nextSeq"], json!(5));
}

#[test]
fn clients_that_do_not_ask_or_cannot_get_binary_frames_see_json() {
    let mut h = Harness::new();
    // A Codex client on a WebSocket: binary is possible, not asked for.
    let (json_conn, init) = h.binary_session(false);
    assert!(init.get("binaryFrames").is_none(), "{init}");
    assert_eq!(init["capabilities"]["binaryFrames"], json!(true));
    // A stdio-like transport: asked for, impossible.
    let stdio = h.connect();
    let r = h.call(
        stdio,
        0,
        "initialize",
        json!({"clientName": "t", "binaryFrames": true}),
    );
    assert!(r[0]["result"].get("binaryFrames").is_none());
    assert_eq!(r[0]["result"]["capabilities"]["binaryFrames"], json!(false));
    h.send(stdio, json!({"method": "initialized", "params": {}}));
    // A binary client on the same server.
    let (bin_conn, _) = h.binary_session(true);
    for conn in [json_conn, stdio, bin_conn] {
        let key = h.start(conn, "p", json!({}));
        h.output(key, Stream::Stdout, b"x");
    }
    for conn in [json_conn, stdio] {
        assert!(h.take_binary(conn).is_empty());
        assert_eq!(
            h.take(conn),
            vec![
                json!({"method": "process/output", "params": {"processId": "p", "seq": 1, "stream": "stdout", "chunk": b64(b"x")}})
            ]
        );
    }
    assert_eq!(h.take_binary(bin_conn).len(), 1);
    assert!(h.take(bin_conn).is_empty());
}

#[test]
fn binary_writes_are_answered_with_their_id_and_deduplicated() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(true);
    let key = h.start(conn, "cat", json!({"pipeStdin": true}));
    h.send_binary(conn, &encode_write(41, "cat", "w1", b"\x00hello"));
    assert_eq!(
        h.take(conn),
        vec![json!({"id": 41, "result": {"status": "accepted"}})]
    );
    assert_eq!(
        h.take_commands(),
        vec![Command::WriteStdin {
            key,
            bytes: b"\x00hello".to_vec()
        }]
    );
    // A retry with the same writeId is accepted again without a second write.
    h.send_binary(conn, &encode_write(42, "cat", "w1", b"\x00hello"));
    assert_eq!(
        h.take(conn),
        vec![json!({"id": 42, "result": {"status": "accepted"}})]
    );
    assert!(h.take_commands().is_empty());
    // Unknown process: the status JSON writes get.
    h.send_binary(conn, &encode_write(43, "nope", "w2", b"x"));
    assert_eq!(
        h.take(conn),
        vec![json!({"id": 43, "result": {"status": "unknownProcess"}})]
    );
}

#[test]
fn malformed_binary_frames_get_an_error_and_the_connection_keeps_working() {
    let mut h = Harness::with_config(ServerConfig {
        max_frame_bytes: 1024,
        ..ServerConfig::default()
    });
    let (conn, _) = h.binary_session(true);
    h.start(conn, "cat", json!({"pipeStdin": true}));
    let good = encode_write(5, "cat", "w1", b"data");
    let cases: Vec<(Vec<u8>, i64, &str)> = vec![
        // Too short for the header: the id cannot be read.
        (
            good[..HEADER_BYTES - 1].to_vec(),
            -1,
            "shorter than the 20-byte header",
        ),
        // A wrong kind: the id can.
        ([&good[..1], &[0x01], &good[2..]].concat(), 5, "kind 0x01"),
        (good[..good.len() - 2].to_vec(), 5, "header announces"),
        (
            encode_write(6, "cat", "w", &[0; 2000]),
            -1,
            "exceeds the limit of 1024 bytes",
        ),
    ];
    for (frame, id, want) in cases {
        h.send_binary(conn, &frame);
        let r = h.take(conn);
        assert_eq!(r.len(), 1, "{want}: {r:?}");
        assert_eq!(r[0]["id"], json!(id), "{want}");
        assert_eq!(error_code(&r[0]), -32600, "{want}");
        let msg = r[0]["error"]["message"].as_str().expect("message");
        assert!(msg.contains(want), "{msg} should contain {want}");
        assert!(h.take_commands().is_empty());
    }
    h.send_binary(conn, &good);
    assert_eq!(
        h.take(conn),
        vec![json!({"id": 5, "result": {"status": "accepted"}})]
    );
}

#[test]
fn binary_looking_frames_from_clients_that_did_not_ask_are_json_errors() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(false);
    h.start(conn, "cat", json!({"pipeStdin": true}));
    h.send_binary(conn, &encode_write(5, "cat", "w1", b"data"));
    let r = h.take(conn);
    assert_eq!(r[0]["id"], json!(-1));
    let msg = r[0]["error"]["message"].as_str().expect("message");
    assert!(msg.starts_with("invalid JSON-RPC message"), "{msg}");
    assert!(h.take_commands().is_empty());
}

// ----- result and body-delta frames ----------------------------------------------------------

#[test]
fn fs_byte_results_are_result_frames_on_binary_connections_for_integer_ids() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(true);
    let read_block = json!({"handleId": "h", "offset": 0, "len": 4});
    h.send(
        conn,
        json!({"id": 5, "method": "fs/readBlock", "params": read_block}),
    );
    let (ticket, ..) = h.take_fs();
    h.fs_answer(
        ticket,
        Ok(FsResult::ReadBlock(ReadBlockResult {
            chunk: Base64Bytes(b"ab\xff".to_vec()),
            eof: true,
        })),
    );
    assert!(h.take(conn).is_empty(), "no JSON answer besides the frame");
    assert_eq!(
        h.take_binary(conn),
        vec![encode_result(5, true, false, b"ab\xff")]
    );
    h.send(
        conn,
        json!({"id": 6, "method": "fs/readFile", "params": {"path": "file:///tmp/x"}}),
    );
    let (ticket, ..) = h.take_fs();
    h.fs_answer(ticket, Ok(read_file_result(&[0, 255, 1])));
    assert_eq!(
        h.take_binary(conn),
        vec![encode_result(6, false, false, &[0, 255, 1])]
    );
    // A string id cannot be carried: JSON.
    h.send(
        conn,
        json!({"id": "s", "method": "fs/readFile", "params": {"path": "file:///tmp/x"}}),
    );
    let (ticket, ..) = h.take_fs();
    h.fs_answer(ticket, Ok(read_file_result(&[0, 255, 1])));
    assert!(h.take_binary(conn).is_empty());
    assert_eq!(
        h.take(conn),
        vec![json!({"id": "s", "result": {"dataBase64": "AP8B"}})]
    );
    // Errors stay JSON.
    h.send(
        conn,
        json!({"id": 8, "method": "fs/readBlock", "params": read_block}),
    );
    let (ticket, ..) = h.take_fs();
    h.fs_answer(
        ticket,
        Err(FsError::new(
            FsErrorKind::NotFound,
            "No such file or directory (os error 2)",
        )),
    );
    assert!(h.take_binary(conn).is_empty());
    assert_eq!(error_code(&h.take(conn)[0]), -32004);
}

#[test]
fn read_file_on_binary_connections_streams_in_pieces_without_a_copy() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(true);
    h.send(
        conn,
        json!({"id": 9, "method": "fs/readFile", "params": {"path": "file:///tmp/x"}}),
    );
    let (ticket, pieces) = match h.take_commands().as_slice() {
        [Command::Fs { ticket, pieces, .. }, ..] => (*ticket, *pieces),
        other => panic!("{other:?}"),
    };
    assert_eq!(pieces, Some(1 << 20), "a binary connection asks for pieces");
    let now = h.sim.now;
    let piece = [&[0u8; FS_PIECE_HEADROOM][..], b"abc"].concat();
    h.sim.server.handle_fs_piece(now, ticket, piece);
    h.drain();
    h.fs_answer(ticket, Ok(read_file_result(b"de")));
    assert_eq!(
        h.take_binary(conn),
        vec![
            encode_result(9, false, true, b"abc"),
            encode_result(9, false, false, b"de")
        ]
    );
    // A piece after the answer (unknown ticket) is dropped.
    let piece = [&[0u8; FS_PIECE_HEADROOM][..], b"late"].concat();
    h.sim.server.handle_fs_piece(now, ticket, piece);
    h.drain();
    assert!(h.take_binary(conn).is_empty());
    h.take_commands();
    // JSON connections and string ids get the whole file in one answer.
    let (json_conn, _) = h.binary_session(false);
    h.send(
        json_conn,
        json!({"id": 1, "method": "fs/readFile", "params": {"path": "file:///tmp/x"}}),
    );
    h.send(
        conn,
        json!({"id": "s", "method": "fs/readFile", "params": {"path": "file:///tmp/x"}}),
    );
    let commands = h.take_commands();
    assert_eq!(commands.len(), 2);
    assert!(commands
        .iter()
        .all(|c| matches!(c, Command::Fs { pieces: None, .. })));
}

#[test]
fn read_file_pieces_are_read_on_credits_held_while_the_connection_is_congested() {
    let mut h = Harness::with_config(ServerConfig {
        congestion_high_bytes: 1000,
        congestion_low_bytes: 100,
        ..ServerConfig::default()
    });
    let (conn, _) = h.binary_session(true);
    h.send(
        conn,
        json!({"id": 9, "method": "fs/readFile", "params": {"path": "file:///tmp/x"}}),
    );
    let commands = h.take_commands();
    let Some(Command::Fs { ticket, .. }) = commands.first() else {
        panic!("{commands:?}")
    };
    let ticket = *ticket;
    let pulls = |commands: &[Command]| {
        commands
            .iter()
            .filter(|c| matches!(c, Command::FsPull { ticket: t } if *t == ticket))
            .count()
    };
    assert_eq!(pulls(&commands), 4, "a window of credits with the command");
    let now = h.sim.now;
    let piece = |len: usize| [&[0u8; FS_PIECE_HEADROOM][..], &vec![7; len]].concat();
    h.sim.server.handle_fs_piece(now, ticket, piece(10));
    h.drain();
    assert_eq!(pulls(&h.take_commands()), 1, "each piece earns one more");
    h.sim.stall_raw(conn);
    h.sim.server.handle_fs_piece(now, ticket, piece(4000));
    h.drain();
    let held = h.take_commands();
    assert_eq!(pulls(&held), 0, "no credit while congested: {held:?}");
    h.sim.flush_raw(conn);
    assert_eq!(pulls(&h.take_commands()), 1, "the credit follows the drain");
}

#[test]
fn fs_byte_results_on_json_connections_are_the_reference_json() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(false);
    for (eof, id) in [(false, 3), (true, 4)] {
        h.send(
            conn,
            json!({"id": id, "method": "fs/readBlock",
                   "params": {"handleId": "h", "offset": 0, "len": 9}}),
        );
        let (ticket, ..) = h.take_fs();
        let bytes: Vec<u8> = (0..=255).collect();
        h.fs_answer(
            ticket,
            Ok(FsResult::ReadBlock(ReadBlockResult {
                chunk: Base64Bytes(bytes.clone()),
                eof,
            })),
        );
        assert!(h.take_binary(conn).is_empty());
        assert_eq!(
            h.take(conn),
            vec![json!({"id": id, "result": {"chunk": b64(&bytes), "eof": eof}})]
        );
    }
}

#[test]
fn body_deltas_are_binary_frames_but_a_delta_with_an_error_stays_json() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(true);
    let mut tickets = Vec::new();
    for (id, request_id) in [(7, "r"), (8, "q")] {
        tickets.push(h.streamed_request(conn, id, request_id));
    }
    h.http_event(tickets[0], HttpEvent::Chunk(vec![1, 2, 3]));
    h.http_event(tickets[0], HttpEvent::End(Some("boom".to_owned())));
    h.http_event(tickets[1], HttpEvent::End(None));
    assert_eq!(
        h.take_binary(conn),
        vec![
            encode_body_delta("r", 1, false, &[1, 2, 3]),
            encode_body_delta("q", 1, true, &[]),
        ]
    );
    assert_eq!(
        h.take(conn),
        vec![
            json!({"method": "http/request/bodyDelta", "params": {"requestId": "r",
                    "seq": 2, "deltaBase64": "", "done": true, "error": "boom"}})
        ]
    );
}

#[test]
fn body_deltas_on_json_connections_are_the_reference_json() {
    let mut h = Harness::new();
    let (conn, _) = h.binary_session(false);
    let ticket = h.streamed_request(conn, 7, "r\"x");
    h.http_event(ticket, HttpEvent::Chunk(vec![0, 255]));
    h.http_event(ticket, HttpEvent::End(None));
    assert!(h.take_binary(conn).is_empty());
    assert_eq!(
        h.take(conn),
        vec![
            json!({"method": "http/request/bodyDelta", "params": {"requestId": "r\"x",
                   "seq": 1, "deltaBase64": "AP8=", "done": false, "error": null}}),
            json!({"method": "http/request/bodyDelta", "params": {"requestId": "r\"x",
                   "seq": 2, "deltaBase64": "", "done": true, "error": null}}),
        ]
    );
}

fn read_file_result(bytes: &[u8]) -> FsResult {
    FsResult::ReadFile(ReadFileResult {
        data_base64: Base64Bytes(bytes.to_vec()),
    })
}

impl Harness {
    /// A streamed `http/request` (id `id`) on `conn` whose 200 head arrived and was answered;
    /// its ticket.
    fn streamed_request(
        &mut self,
        conn: ConnId,
        id: i64,
        request_id: &str,
    ) -> crate::server::HttpTicket {
        self.send(
            conn,
            json!({"id": id, "method": "http/request", "params": {"requestId": request_id,
                   "method": "GET", "url": "http://example.test/", "streamResponse": true}}),
        );
        let ticket = self
            .take_commands()
            .into_iter()
            .find_map(|c| match c {
                Command::Http { ticket, .. } => Some(ticket),
                _ => None,
            })
            .expect("an Http command");
        self.http_event(
            ticket,
            HttpEvent::Head(HttpRequestResult {
                status: 200,
                headers: Vec::new(),
                body_base64: Base64Bytes(Vec::new()),
            }),
        );
        assert_eq!(self.response(conn, id)["result"]["status"], json!(200));
        ticket
    }

    fn http_event(&mut self, ticket: crate::server::HttpTicket, event: HttpEvent) {
        let now = self.sim.now;
        self.sim.server.handle_http(now, ticket, event);
        self.drain();
    }
}
