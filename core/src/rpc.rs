//! The JSON-RPC envelope: request ids, error codes, inbound decoding and outbound encoding.
//!
//! The dialect is the Codex exec-server's: messages carry no `"jsonrpc"` member (one is
//! accepted and ignored when present), ids are strings or signed 64-bit integers echoed back
//! exactly, and a frame that cannot be decoded is answered with id `-1`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON-RPC request id: a string or a signed 64-bit integer, echoed back as received.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestId {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(String),
}

impl RequestId {
    /// The id used to answer a frame whose own id could not be read (matches the Codex
    /// exec-server; JSON-RPC 2.0 would use `null`).
    pub const UNREADABLE: RequestId = RequestId::Int(-1);
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Int(n) => n.fmt(f),
            RequestId::Str(s) => write!(f, "{s:?}"),
        }
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestId::Int(n) => s.serialize_i64(*n),
            RequestId::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl de::Visitor<'_> for IdVisitor {
            type Value = RequestId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a signed 64-bit integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RequestId, E> {
                Ok(RequestId::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RequestId, E> {
                i64::try_from(v)
                    .map(RequestId::Int)
                    .map_err(|_| E::custom("request id out of the i64 range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RequestId, E> {
                Ok(RequestId::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<RequestId, E> {
                Ok(RequestId::Str(v))
            }
        }
        d.deserialize_any(IdVisitor)
    }
}

/// JSON-RPC error codes used by execd (the Codex exec-server's set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `-32700`: not used on the wire by the reference (it answers parse errors with -32600),
    /// kept for completeness.
    ParseError,
    /// `-32600`: invalid request, and every state error (not initialized, unknown process id, …).
    InvalidRequest,
    /// `-32601`: unknown method.
    MethodNotFound,
    /// `-32602`: params failed to decode or validate.
    InvalidParams,
    /// `-32603`: internal error (spawn failure, I/O).
    Internal,
    /// `-32004`: not found (filesystem).
    NotFound,
    /// `-32010`: the session is attached to another connection.
    SessionAttached,
}

impl ErrorCode {
    /// The integer on the wire.
    pub fn code(self) -> i64 {
        match self {
            ErrorCode::ParseError => -32700,
            ErrorCode::InvalidRequest => -32600,
            ErrorCode::MethodNotFound => -32601,
            ErrorCode::InvalidParams => -32602,
            ErrorCode::Internal => -32603,
            ErrorCode::NotFound => -32004,
            ErrorCode::SessionAttached => -32010,
        }
    }

    /// The code for an integer from the wire, if it is one of ours.
    pub fn from_code(code: i64) -> Option<ErrorCode> {
        Some(match code {
            -32700 => ErrorCode::ParseError,
            -32600 => ErrorCode::InvalidRequest,
            -32601 => ErrorCode::MethodNotFound,
            -32602 => ErrorCode::InvalidParams,
            -32603 => ErrorCode::Internal,
            -32004 => ErrorCode::NotFound,
            -32010 => ErrorCode::SessionAttached,
            _ => return None,
        })
    }
}

/// A JSON-RPC error object: `{"code", "message", "data"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    /// The error code.
    pub code: i64,
    /// A human-readable description.
    pub message: String,
    /// Optional structured detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl RpcError {
    /// An error with `code` and `message` and no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code: code.code(),
            message: message.into(),
            data: None,
        }
    }

    /// `-32600` with `message`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// `-32602` with `message`.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParams, message)
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// One decoded inbound frame, borrowing from the frame text.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// `{"id", "method", "params"?}`.
    Request {
        /// The id to answer with.
        id: RequestId,
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params (absent = `None`).
        params: Option<&'a RawValue>,
    },
    /// `{"method", "params"?}` without an id.
    Notification {
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params.
        params: Option<&'a RawValue>,
    },
    /// `{"id", "result"}`.
    Response {
        /// The id of the request answered.
        id: RequestId,
        /// The raw result.
        result: &'a RawValue,
    },
    /// `{"id", "error"}`.
    Error {
        /// The id of the request answered (`-1` when the peer could not read ours).
        id: RequestId,
        /// The error.
        error: RpcError,
    },
}

/// Why a frame could not be decoded into an [`Inbound`]. The answer always uses
/// [`RequestId::UNREADABLE`] unless `id` could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The id of the frame, when it could be read.
    pub id: Option<RequestId>,
    /// What is wrong.
    pub message: String,
}

/// A string that borrows from the frame unless it contains escapes (serde does not borrow a
/// `Cow` nested in an `Option` on its own).
#[derive(Deserialize)]
struct BorrowedStr<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
}

/// Keeps a present `null` as `Some(null)` so that `"id": null` is told apart from no id.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// Counts the JSON values in `text` cheaply (one pass, strings skipped), stopping early once
/// past `limit`. Used to cap the work one message may cost before it is parsed.
pub fn exceeds_value_budget(text: &[u8], limit: usize) -> bool {
    // Each value counted below starts at a distinct byte, so a text no longer than the limit
    // cannot exceed it: skip the scan (every small frame, and most large ones).
    text.len() > limit && scan_exceeds(text, limit)
}

/// The scan behind [`exceeds_value_budget`].
fn scan_exceeds(text: &[u8], limit: usize) -> bool {
    let mut count = 0usize;
    let mut i = 0;
    let mut in_value = false;
    while i < text.len() {
        match text[i] {
            b'"' => {
                // Skip the string; escapes hide quotes.
                i += 1;
                while i < text.len() {
                    match text[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if !in_value {
                    count += 1;
                }
                in_value = false;
            }
            b'[' | b'{' => {
                count += 1;
                in_value = false;
            }
            b',' | b':' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r' => in_value = false,
            _ => {
                if !in_value {
                    count += 1;
                    in_value = true;
                }
            }
        }
        if count > limit {
            return true;
        }
        i += 1;
    }
    false
}

/// Decodes one frame. `text` must be a complete JSON object.
///
/// # Errors
/// [`DecodeError`] when the frame is not JSON, not an object, has an id that is neither a
/// string nor an i64, or fits none of the four message shapes.
pub fn decode(text: &[u8]) -> Result<Inbound<'_>, DecodeError> {
    // serde decodes a struct from a JSON array positionally, which would read
    // `[2,"process/start",{…}]` as a request; only an object is a message (a JSON-RPC batch is
    // not supported).
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<de::IgnoredAny>(text).is_ok() {
        return Err(DecodeError {
            id: None,
            message: "invalid JSON-RPC message: expected an object (batches are not supported)"
                .to_owned(),
        });
    }
    let raw: RawFrame<'_> = serde_json::from_slice(text).map_err(|e| DecodeError {
        id: None,
        message: format!("invalid JSON-RPC message: {e}"),
    })?;
    let id = match raw.id {
        None => None,
        Some(raw_id) => Some(
            serde_json::from_str::<RequestId>(raw_id.get()).map_err(|_| DecodeError {
                id: None,
                message: format!("invalid request id {}", raw_id.get()),
            })?,
        ),
    };
    let method = raw.method.map(|m| m.0);
    match (id, method, raw.result, raw.error) {
        // A method wins over result/error, as in the reference.
        (Some(id), Some(method), _, _) => Ok(Inbound::Request {
            id,
            method,
            params: raw.params,
        }),
        (None, Some(method), _, _) => Ok(Inbound::Notification {
            method,
            params: raw.params,
        }),
        (Some(id), None, Some(result), None) => Ok(Inbound::Response { id, result }),
        (Some(id), None, None, Some(error)) => Ok(Inbound::Error { id, error }),
        // Answered with id -1 like every undecodable frame (the reference does the same).
        _ => Err(DecodeError {
            id: None,
            message: "invalid JSON-RPC message: expected a request, notification or response"
                .to_owned(),
        }),
    }
}

/// Encodes `{"id":…,"result":…}`.
pub fn encode_response<T: Serialize>(id: &RequestId, result: &T) -> String {
    #[derive(Serialize)]
    struct Response<'a, T> {
        id: &'a RequestId,
        result: &'a T,
    }
    to_json(&Response { id, result })
}

/// Encodes `{"id":…,"error":{…}}`.
pub fn encode_error(id: &RequestId, error: &RpcError) -> String {
    #[derive(Serialize)]
    struct ErrorResponse<'a> {
        id: &'a RequestId,
        error: &'a RpcError,
    }
    to_json(&ErrorResponse { id, error })
}

/// Encodes `{"id":…,"method":…,"params":…}`.
pub fn encode_request<T: Serialize>(id: &RequestId, method: &str, params: &T) -> String {
    #[derive(Serialize)]
    struct Request<'a, T> {
        id: &'a RequestId,
        method: &'a str,
        params: &'a T,
    }
    to_json(&Request { id, method, params })
}

/// Encodes `{"method":…,"params":…}`.
pub fn encode_notification<T: Serialize>(method: &str, params: &T) -> String {
    #[derive(Serialize)]
    struct Notification<'a, T> {
        method: &'a str,
        params: &'a T,
    }
    to_json(&Notification { method, params })
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing our own plain structs (string keys, no maps with non-string keys, no
    // failing Serialize impls) into a String cannot fail.
    serde_json::to_string(value).unwrap_or_else(|e| {
        format!(r#"{{"id":-1,"error":{{"code":-32603,"message":"encode failed: {e}"}}}}"#)
    })
}

/// serde's description of a decode failure without its ` at line L column C` suffix, as the
/// reference words it (e.g. ``missing field `cwd` ``).
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Decodes `params` into `T`, treating absent params as `{}`.
///
/// # Errors
/// `-32602` with serde's description of the mismatch.
pub fn decode_params<'a, T: Deserialize<'a>>(params: Option<&'a RawValue>) -> Result<T, RpcError> {
    let text = params.map_or("{}", RawValue::get);
    let text = if text == "null" { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| RpcError::invalid_params(serde_message(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_four_shapes() {
        assert!(matches!(
            decode(br#"{"id":1,"method":"a","params":{}}"#),
            Ok(Inbound::Request { id: RequestId::Int(1), ref method, params: Some(_) }) if method == "a"
        ));
        assert!(matches!(
            decode(br#"{"jsonrpc":"2.0","method":"n"}"#),
            Ok(Inbound::Notification { ref method, params: None }) if method == "n"
        ));
        assert!(matches!(
            decode(br#"{"id":"x","result":{}}"#),
            Ok(Inbound::Response { .. })
        ));
        assert!(matches!(
            decode(br#"{"id":-5,"error":{"code":-32600,"message":"m"}}"#),
            Ok(Inbound::Error {
                id: RequestId::Int(-5),
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_frames() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"3",
            br#"{"id":1.5,"method":"a"}"#,
            br#"{"id":null,"method":"a"}"#,
            br#"{"id":{},"method":"a"}"#,
            br#"{"id":1}"#,
            br#"{}"#,
            br#"{"id":18446744073709551615,"method":"a"}"#,
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn arrays_are_not_decoded_positionally() {
        for batch in [
            &br#"[2,"process/start",{"processId":"p","argv":["true"],"cwd":"file:///"}]"#[..],
            br#" [{"id":1,"method":"initialize"}]"#,
        ] {
            let e = decode(batch).expect_err("an array is not a message");
            assert!(e.message.contains("expected an object"), "{}", e.message);
        }
    }

    #[test]
    fn ids_round_trip_exactly() {
        for raw in [r#"-9223372036854775808"#, r#"7"#, r#""a\"b""#, r#""""#] {
            let id: RequestId = serde_json::from_str(raw).expect("valid id");
            assert_eq!(serde_json::to_string(&id).expect("serializes"), raw);
        }
    }

    #[test]
    fn value_budget_counts_values_not_bytes() {
        assert!(!exceeds_value_budget(br#"{"a":"x,y,z,[,{"}"#, 3));
        assert!(exceeds_value_budget(br#"{"a":[1,2,3]}"#, 4));
        assert!(!exceeds_value_budget(br#"{"a":[1,2,3]}"#, 6));
        let big = format!("[{}0]", "0,".repeat(300_000));
        assert!(exceeds_value_budget(big.as_bytes(), 262_144));
        // The shortcut for texts no longer than the limit.
        assert!(!exceeds_value_budget(b"[1,2]", 5));
        assert!(exceeds_value_budget(b"[1,2]", 2));
        assert!(!exceeds_value_budget(br#""\\\"""#, 1));
    }

    proptest::proptest! {
        /// The scan never counts more values than bytes, so skipping it for texts no longer
        /// than the limit changes no answer.
        #[test]
        fn value_count_never_exceeds_the_length(text in "[\\[\\]{}\",:a1 \\\\]{0,40}") {
            proptest::prop_assert!(!scan_exceeds(text.as_bytes(), text.len()));
        }
    }

    #[test]
    fn encodes_without_jsonrpc_member() {
        assert_eq!(
            encode_error(&RequestId::UNREADABLE, &RpcError::invalid_request("x")),
            r#"{"id":-1,"error":{"code":-32600,"message":"x"}}"#
        );
        assert_eq!(
            encode_response(&RequestId::Str("a".into()), &serde_json::json!({})),
            r#"{"id":"a","result":{}}"#
        );
    }
}
