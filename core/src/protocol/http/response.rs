use ::http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::protocol::Base64Bytes;

/// `http/request` result: `{status, headers, bodyBase64}`. A streamed response carries
/// `bodyBase64: ""`; its body follows as [`HttpBodyDeltaNotification`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestResult {
    /// The final response's status code (after redirects, when followed).
    pub status: u16,
    /// The response headers, names lower-case.
    pub headers: Vec<HttpHeader>,
    /// The whole body when buffered; empty when streamed.
    pub body_base64: Base64Bytes,
}

/// One response header: `{name, value}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHeader {
    /// Lower-case name.
    pub name: String,
    /// The value.
    pub value: String,
}

impl HttpRequestResult {
    /// The result for a response head: header names lower-case (as `http` stores them), in
    /// the map's iteration order (a name's repeats together, in arrival order), values that
    /// are not visible ASCII dropped — matches the Codex exec-server, which drops e.g. a UTF-8
    /// `café` as well as non-UTF-8 bytes.
    pub fn new<'a>(
        status: u16,
        headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
        body: Vec<u8>,
    ) -> HttpRequestResult {
        HttpRequestResult {
            status,
            headers: headers
                .into_iter()
                .filter_map(|(name, value)| {
                    Some(HttpHeader {
                        name: name.as_str().to_owned(),
                        value: value.to_str().ok()?.to_owned(),
                    })
                })
                .collect(),
            body_base64: Base64Bytes(body),
        }
    }
}

/// `http/request/bodyDelta` params: `{requestId, seq, deltaBase64, done, error}`. Built by a
/// [`BodyStream`](super::BodyStream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBodyDeltaNotification {
    /// The streamed request.
    pub request_id: String,
    /// 1 for the first delta of the request, then +1 each.
    pub seq: u64,
    /// Body bytes (at most 1 MiB); empty in the terminal delta.
    pub delta_base64: Base64Bytes,
    /// `true` only in the last delta of the request.
    pub done: bool,
    /// Why the body ended early (a read error, the timeout, a cancel); `null` otherwise. Always
    /// present on the wire.
    pub error: Option<String>,
}

/// The `-32603` message for a request that failed before its response head (connect, TLS,
/// send, redirect or timeout failure): `http/request failed: {cause}`.
pub fn request_failed_message(cause: &dyn std::fmt::Display) -> String {
    format!("http/request failed: {cause}")
}

/// The `-32603` message for a buffered request whose body failed after the head arrived:
/// `failed to read http/request response body: {cause}` (worded as by the Codex exec-server).
pub fn body_failed_message(cause: &dyn std::fmt::Display) -> String {
    format!("failed to read http/request response body: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderMap;

    #[test]
    fn result_lower_cases_names_and_drops_values_that_are_not_visible_ascii() {
        let mut map = HeaderMap::new();
        map.append("X-Ok", HeaderValue::from_static("plain"));
        map.append("x-multi", HeaderValue::from_static("1"));
        map.append(
            "X-Utf",
            HeaderValue::from_bytes("café".as_bytes()).expect("obs-text"),
        );
        map.append(
            "X-Bin",
            HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text"),
        );
        map.append("X-Multi", HeaderValue::from_static("2"));
        let result = HttpRequestResult::new(200, &map, b"hi".to_vec());
        let json = serde_json::to_value(&result).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"status": 200, "headers": [
                {"name": "x-ok", "value": "plain"},
                {"name": "x-multi", "value": "1"}, {"name": "x-multi", "value": "2"},
            ], "bodyBase64": "aGk="})
        );
    }

    #[test]
    fn delta_serializes_every_field_and_a_null_error() {
        let delta = HttpBodyDeltaNotification {
            request_id: "s1".into(),
            seq: 2,
            delta_base64: Base64Bytes::default(),
            done: true,
            error: None,
        };
        assert_eq!(
            serde_json::to_string(&delta).expect("json"),
            r#"{"requestId":"s1","seq":2,"deltaBase64":"","done":true,"error":null}"#
        );
    }

    #[test]
    fn failure_message_has_the_reference_prefix() {
        assert_eq!(
            request_failed_message(&"too many redirects"),
            "http/request failed: too many redirects"
        );
    }
}
