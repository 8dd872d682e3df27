//! ext binary frames (PROTOCOL.md §2.5) over real WebSockets and real children: a client that
//! negotiated them gets every byte in binary `process/output` frames with contiguous seqs,
//! while a JSON client of the same server gets the reference's JSON; binary `process/write`
//! frames reach stdin, and malformed ones are answered without ending the connection.

use std::sync::Arc;

use execd_core::protocol::binary::{encode_write, HEADER_BYTES};
use execd_core::ServerConfig;
use serde_json::{json, Value};

use super::server::{start_server, Client};
use crate::runtime::Runtime;

impl Client {
    /// A session whose `initialize` asks for binary frames; returns the `initialize` result.
    async fn binary_session(rt: &Arc<dyn Runtime>, url: &str) -> (Client, Value) {
        let mut c = Client::connect(rt, url).await;
        let r = c
            .call(
                "initialize",
                json!({"clientName": "test", "binaryFrames": true}),
            )
            .await;
        c.send_raw(&json!({"method": "initialized", "params": {}}).to_string())
            .await;
        (c, r["result"].clone())
    }

    /// Sends a binary frame and returns the response to it.
    async fn binary_call(&mut self, frame: Vec<u8>) -> Value {
        self.send_binary(frame).await;
        loop {
            let msg = self.recv().await;
            if msg.get("id").is_some() {
                return msg;
            }
            self.notifications.push_back(msg);
        }
    }
}

/// `seq -w 1 N` as the child prints it.
fn numbers(n: usize) -> Vec<u8> {
    let width = n.to_string().len();
    (1..=n)
        .flat_map(|i| format!("{i:0width$}\n").into_bytes())
        .collect()
}

/// A binary-negotiated client receives every byte of 3.5 MiB in binary frames with seqs
/// contiguous from 1 (output, then the JSON `exited` and `closed`); a JSON client of the same
/// server, running the same command at the same time, sees only JSON.
pub async fn binary_client_gets_every_byte_and_a_json_client_beside_it_gets_json(
    rt: Arc<dyn Runtime>,
) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut bin, init) = Client::binary_session(&rt, &server.url).await;
    assert_eq!(init["binaryFrames"], json!(true), "{init}");
    assert_eq!(init["capabilities"]["binaryFrames"], json!(true));
    let (mut text, _) = Client::session(&rt, &server.url).await;
    let argv = ["seq", "-w", "1", "524288"];
    let r = bin.start("big", &argv, json!({})).await;
    assert!(r.get("result").is_some(), "{r}");
    let r = text.start("big", &argv, json!({})).await;
    assert!(r.get("result").is_some(), "{r}");
    let want = numbers(524_288);
    assert_eq!(want.len(), 7 << 19, "3.5 MiB: 524,288 lines of 7 bytes");
    let run = bin.until_closed("big").await;
    run.assert_well_formed();
    assert_eq!(run.stdout.len(), want.len());
    assert!(run.stdout == want, "bytes differ");
    assert!(run.binary_outputs > 0);
    assert_eq!(
        run.binary_outputs,
        run.seqs.len() - 2,
        "every output came binary"
    );
    let run = text.until_closed("big").await;
    run.assert_well_formed();
    assert!(run.stdout == want, "bytes differ");
    assert_eq!(run.binary_outputs, 0, "the JSON client sees JSON only");
}

/// Binary `process/write` frames reach stdin once per `writeId` and are answered with their
/// request id; a short header, a wrong kind, a truncated frame and an oversized frame get
/// `-32600` naming the fault, an unknown process gets `unknownProcess`, and the connection
/// keeps working.
pub async fn binary_writes_reach_stdin_and_malformed_ones_get_errors(rt: Arc<dyn Runtime>) {
    let mut config = ServerConfig::default();
    config.max_frame_bytes = 4096;
    let server = start_server(&rt, config).await;
    let (mut c, _) = Client::binary_session(&rt, &server.url).await;
    let r = c.start("cat", &["cat"], json!({"pipeStdin": true})).await;
    assert!(r.get("result").is_some(), "{r}");
    let good = encode_write(7, "cat", "w1", b"\x00\xffhello\n");
    let cases: Vec<(Vec<u8>, i64, &str)> = vec![
        (
            good[..HEADER_BYTES - 4].to_vec(),
            -1,
            "shorter than the 20-byte header",
        ),
        ([&good[..1], &[0x01], &good[2..]].concat(), 7, "kind 0x01"),
        (good[..good.len() - 1].to_vec(), 7, "header announces"),
        (
            encode_write(8, "cat", "w9", &vec![b'x'; 8192]),
            -1,
            "exceeds the limit of 4096 bytes",
        ),
    ];
    for (frame, id, want) in cases {
        let r = c.binary_call(frame).await;
        assert_eq!(r["id"], json!(id), "{want}: {r}");
        assert_eq!(r["error"]["code"], json!(-32600), "{want}: {r}");
        let msg = r["error"]["message"].as_str().expect("message");
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
    }
    let r = c.binary_call(encode_write(9, "nope", "w2", b"x")).await;
    assert_eq!(r, json!({"id": 9, "result": {"status": "unknownProcess"}}));
    for id in [10, 11] {
        // The second is a retry with the same writeId: accepted, not written again.
        let r = c
            .binary_call(encode_write(id, "cat", "w1", b"\x00\xffhello\n"))
            .await;
        assert_eq!(r, json!({"id": id, "result": {"status": "accepted"}}));
    }
    let r = c
        .call("process/closeStdin", json!({"processId": "cat"}))
        .await;
    assert!(r.get("result").is_some(), "{r}");
    let run = c.until_closed("cat").await;
    run.assert_well_formed();
    assert_eq!(
        run.stdout, b"\x00\xffhello\n",
        "written once, echoed binary"
    );
    assert!(run.binary_outputs > 0);
}
