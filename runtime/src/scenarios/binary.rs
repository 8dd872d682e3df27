//! ext binary frames (PROTOCOL.md §2.5) over real WebSockets and real children: a client that
//! negotiated them gets every byte in binary `process/output` frames with contiguous seqs,
//! while a JSON client of the same server gets the reference's JSON; binary `process/write`
//! frames reach stdin, and malformed ones are answered without ending the connection.

use std::sync::Arc;

use execd_core::protocol::binary::{encode_write, HEADER_BYTES};
use execd_core::ServerConfig;
use serde_json::{json, Value};

use super::server::{start_server, Client};
use super::within;
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

/// A Codex client (its `initialize` does not ask for binary frames) on a transport that could
/// carry them sees exactly the reference's frames: an `initialize` answer without
/// `binaryFrames`, and every `process/output` a WebSocket text message with the reference's
/// JSON and base64 chunk, byte for byte. The client is a bare WebSocket, so the message types
/// are the ones on the wire.
pub async fn a_client_that_does_not_ask_gets_the_reference_json_in_text_messages(
    rt: Arc<dyn Runtime>,
) {
    use async_tungstenite::tungstenite::Message;
    use futures::StreamExt as _;

    let server = start_server(&rt, ServerConfig::default()).await;
    let tcp = within(&rt, super::tcp_connect(&rt, server.addr))
        .await
        .expect("tcp");
    let (mut ws, _) = within(&rt, async_tungstenite::client_async(&server.url, tcp))
        .await
        .expect("websocket handshake");
    let init = json!({"id": 1, "method": "initialize", "params": {"clientName": "codex"}});
    within(&rt, ws.send(Message::text(init.to_string())))
        .await
        .expect("send");
    let mut texts = Vec::new();
    let mut binary_messages = 0;
    // Everything up to the `process/closed` of the process started below.
    let mut started = false;
    while !texts.iter().any(|t: &String| t.contains("process/closed")) {
        let msg = within(&rt, ws.next())
            .await
            .expect("the server keeps the connection")
            .expect("websocket message");
        let text = match msg {
            Message::Text(text) => text.to_string(),
            Message::Binary(_) => {
                binary_messages += 1;
                continue;
            }
            _ => continue,
        };
        if !started {
            let init: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(init["id"], json!(1), "{init}");
            assert!(init["result"]["sessionId"].is_string(), "{init}");
            assert!(
                init["result"].get("binaryFrames").is_none(),
                "no binaryFrames for a client that did not ask: {init}"
            );
            let initialized = json!({"method": "initialized", "params": {}});
            let start = json!({"id": 2, "method": "process/start", "params": {
                "processId": "p", "argv": ["printf", "a\\377b"], "cwd": "file:///tmp",
                "env": {"PATH": "/usr/bin:/bin"}, "tty": false,
            }});
            for v in [initialized, start] {
                within(&rt, ws.send(Message::text(v.to_string())))
                    .await
                    .expect("send");
            }
            started = true;
            continue;
        }
        texts.push(text);
    }
    assert_eq!(
        binary_messages, 0,
        "no binary message reached a JSON client"
    );
    let outputs: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("process/output"))
        .collect();
    assert_eq!(
        outputs,
        [
            r#"{"method":"process/output","params":{"processId":"p","seq":1,"stream":"stdout","chunk":"Yf9i"}}"#
        ],
        "the reference's process/output: {texts:?}"
    );
    let _ = within(&rt, ws.close(None)).await;
}

/// Coalescing adds no latency: small writes to `cat` on a binary-frames connection come back
/// one by one, each before the next is written, the echo of each write in its own binary
/// frame (nothing waits for more output to fill a chunk), and the fastest of the round trips
/// takes under 10 ms.
pub async fn idle_small_chunks_go_out_at_once(rt: Arc<dyn Runtime>) {
    let server = start_server(&rt, ServerConfig::default()).await;
    let (mut c, _) = Client::binary_session(&rt, &server.url).await;
    let r = c.start("cat", &["cat"], json!({"pipeStdin": true})).await;
    assert!(r.get("result").is_some(), "{r}");
    let mut fastest = std::time::Duration::MAX;
    for i in 0..20_i64 {
        let line = format!("line {i}\n");
        let sent = rt.now();
        let r = c
            .binary_call(encode_write(
                100 + i,
                "cat",
                &format!("w{i}"),
                line.as_bytes(),
            ))
            .await;
        assert_eq!(r["result"]["status"], json!("accepted"), "{r}");
        let n = c.notification().await;
        fastest = fastest.min(rt.now().saturating_duration_since(sent));
        assert_eq!(n["binary"], json!(true), "{n}");
        assert_eq!(n["params"]["seq"], json!(i + 1), "{n}");
        let chunk = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            n["params"]["chunk"].as_str().expect("chunk"),
        )
        .expect("base64");
        assert_eq!(chunk, line.as_bytes(), "one write, one frame");
    }
    assert!(
        fastest < std::time::Duration::from_millis(10),
        "fastest echo took {fastest:?}"
    );
}
