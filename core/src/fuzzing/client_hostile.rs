//! The hostile frames of the `client_ops` harness, and whether each could change what a
//! correct client delivers (a forgery taints the run) or must be ignored (harmless).

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use serde_json::json;

use super::client_child::FakeProc;
use super::client_expect::Expect;
use super::client_ops::{pool_id, Hostile};
use crate::client::Client;
use crate::ids::ProcessKey;
use crate::rpc::{self, Inbound};

/// What a hostile frame may be built from.
pub(crate) struct Material<'a> {
    pub(crate) client: &'a Client,
    pub(crate) expect: &'a Expect,
    pub(crate) procs: &'a BTreeMap<ProcessKey, FakeProc>,
    /// Frames the client already handled, with the process entry a notification came from.
    pub(crate) history: &'a VecDeque<(String, Option<ProcessKey>)>,
    /// Request ids of the frames the client sent.
    pub(crate) sent_ids: &'a [i64],
}

/// The frame for `h` and whether it is harmless; `None` when there is nothing to build it
/// from yet.
pub(crate) fn frame(h: &Hostile, m: &Material<'_>) -> Option<(Vec<u8>, bool)> {
    Some(match h {
        Hostile::Garbage(bytes) => {
            // Random bytes that happen to decode into a message are not garbage.
            let harmless = matches!(rpc::decode(&bytes.0), Err(_) | Ok(Inbound::Request { .. }));
            (bytes.0.clone(), harmless)
        }
        Hostile::UnknownNotification => {
            let text =
                json!({"method": "process/unknown", "params": {"processId": "p0", "seq": 1}});
            (text.to_string().into_bytes(), true)
        }
        Hostile::StrayResponse(n) => {
            let id = (1i64 << 40) + i64::from(*n);
            (
                json!({"id": id, "result": {}}).to_string().into_bytes(),
                true,
            )
        }
        Hostile::UntrackedNotification(n) => {
            let params = json!({"processId": format!("zz{n}"), "seq": 1, "stream": "stdout", "chunk": "eA=="});
            let text = json!({"method": "process/output", "params": params});
            (text.to_string().into_bytes(), true)
        }
        Hostile::Replay(n) => {
            let len = m.history.len();
            let (text, key) = m.history.get(len.checked_sub(1)? - usize::from(*n) % len)?;
            let harmless = match key {
                None => true,
                Some(k) => m.expect.replay_is_duplicate(&m.procs[k].pid, *k),
            };
            (text.clone().into_bytes(), harmless)
        }
        Hostile::Forged {
            kind,
            pid,
            delta,
            bytes,
        } => {
            let pid = pool_id(*pid);
            let base = m.client.last_seq(&pid).map_or(0, |s| s.0);
            let seq = base.saturating_add_signed(i64::from(*delta));
            let chunk = base64::engine::general_purpose::STANDARD.encode(&bytes.0);
            let (method, params) = match kind % 3 {
                0 => (
                    "process/output",
                    json!({"processId": pid, "seq": seq, "stream": "stdout", "chunk": chunk}),
                ),
                1 => (
                    "process/exited",
                    json!({"processId": pid, "seq": seq, "exitCode": 7}),
                ),
                _ => ("process/closed", json!({"processId": pid, "seq": seq})),
            };
            let text = json!({"method": method, "params": params});
            (text.to_string().into_bytes(), false)
        }
        Hostile::ForgedResponse { back, kind, seq } => {
            let len = m.sent_ids.len();
            let id = m
                .sent_ids
                .get(len.checked_sub(1)? - usize::from(*back) % len)?;
            let seq = u64::from(*seq);
            let text = match kind % 4 {
                0 => {
                    let chunks = json!([{"seq": seq, "stream": "stdout", "chunk": "eA=="}]);
                    let result = json!({
                        "chunks": chunks,
                        "nextSeq": seq + 1 + seq % 3,
                        "exited": seq % 2 == 0,
                        "exitCode": 0,
                        "closed": seq % 4 == 0,
                        "failure": null,
                    });
                    json!({"id": id, "result": result})
                }
                1 => {
                    let error = json!({"code": -32600, "message": "unknown process id p1"});
                    json!({"id": id, "error": error})
                }
                2 => {
                    let message = "session is already attached to another connection";
                    json!({"id": id, "error": {"code": -32010, "message": message}})
                }
                _ => json!({"id": id, "result": {"sessionId": 5, "processId": []}}),
            };
            (text.to_string().into_bytes(), false)
        }
    })
}
