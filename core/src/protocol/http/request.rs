use std::ffi::OsString;
use std::fmt;

use ::http::header::{HeaderName, HeaderValue};
use ::http::uri::{Authority, Scheme, Uri};
use ::http::Method;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::protocol::Base64Bytes;

/// `http/request` params: `{requestId, method, url, headers?, bodyBase64?, timeoutMs?,
/// redirectPolicy?, streamResponse?}`.
///
/// Decoding checks only the shapes (a missing `requestId`, a bad `bodyBase64` or an unknown
/// `redirectPolicy` fail here, worded by serde and the base64 crate as in the Codex
/// exec-server); [`validate`](HttpRequestParams::validate) checks the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestParams {
    /// Client-chosen id; required. A streamed request reserves it until its terminal
    /// `bodyDelta`; a buffered one does not (any string, even `""`, is accepted).
    pub request_id: String,
    /// The method, case-sensitive, any HTTP token (`GET`, `FOO`).
    pub method: String,
    /// An absolute `http:` or `https:` URL.
    pub url: String,
    /// Request headers in order, repeats kept. Omitted = none.
    #[serde(default)]
    pub headers: Vec<HttpHeaderParam>,
    /// The request body (base64 on the wire). Omitted = empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<Base64Bytes>,
    /// Deadline for headers and body together, in ms from the start. Omitted or `null` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What to do with a 3xx. Omitted or `null` = [`RedirectPolicy::Follow`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_policy: Option<RedirectPolicy>,
    /// Send the body as `http/request/bodyDelta` notifications after the response.
    #[serde(default)]
    pub stream_response: bool,
}

/// One request header: `{name, value, valueEnvVar?}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderParam {
    /// The header name (any case; sent lower-case).
    pub name: String,
    /// The value; required even with `valueEnvVar`, where it is the prefix (`"Bearer "`).
    pub value: String,
    /// The executor's environment variable whose value is appended to `value` (matches the
    /// Codex exec-server; capability `httpHeaderEnvVars`). Unset → `-32602`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_env_var: Option<String>,
}

/// `redirectPolicy`: `"follow"` or `"stop"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RedirectPolicy {
    /// Follow up to 10 redirects (the 11th fails with "too many redirects"); 301, 302 and 303
    /// turn a non-`HEAD` request into a body-less `GET`, 307 and 308 repeat it.
    #[default]
    Follow,
    /// Return a 3xx response as it is.
    Stop,
}

/// ext `http/cancel` params: `{requestId}`. Cancels the active streamed request with that id
/// (its terminal delta then carries an error); an unknown id is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpCancelParams {
    /// The streamed request's id.
    pub request_id: String,
}

/// A validated `http/request`: what the runtime's HTTP runner performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, as sent.
    pub method: Method,
    /// The URL: absolute, scheme `http` or `https`, a non-empty host, no user info (moved into
    /// an `authorization` header), no fragment, path at least `/`.
    pub url: Uri,
    /// Headers in request order, repeats kept, env values resolved. The runner adds `host`
    /// and `accept: */*` unless present here, and `content-length` for a body.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body; empty = none.
    pub body: Vec<u8>,
    /// Deadline for headers and body, in ms from the start; `None` = none.
    pub timeout_ms: Option<u64>,
    /// Follow redirects ([`RedirectPolicy::Follow`]).
    pub follow_redirects: bool,
    /// Stream the body as `bodyDelta` notifications.
    pub stream: bool,
}

impl HttpRequest {
    /// `true` for `https` URLs.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == Some(&Scheme::HTTPS)
    }

    /// The URL's host as written, without brackets around an IPv6 literal.
    pub fn host(&self) -> &str {
        let host = self.url.host().unwrap_or_default();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The URL's port, or the scheme's default (80, 443).
    pub fn port(&self) -> u16 {
        self.url
            .port_u16()
            .unwrap_or(if self.is_https() { 443 } else { 80 })
    }
}

/// Why `http/request` params are invalid; every case answers `-32602` with the
/// [`Display`](fmt::Display) text (worded as by the Codex exec-server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpRequestError {
    /// `method` is not an HTTP token.
    #[error("http/request method is invalid: invalid HTTP method")]
    Method,
    /// `url` does not parse, is relative, or has no host.
    #[error("http/request url is invalid: {0}")]
    Url(String),
    /// `url` has a scheme other than `http`/`https`.
    #[error("http/request only supports http and https URLs, got {0}")]
    Scheme(String),
    /// A header name is not an HTTP token.
    #[error("http/request header name is invalid: invalid HTTP header name")]
    HeaderName,
    /// A header value (after appending the env value) has a control character.
    #[error("http/request header value is invalid for {0}: failed to parse header value")]
    HeaderValue(String),
    /// A streamed request reuses the id of a stream still active (see
    /// [`BodyStreams`](super::BodyStreams)).
    #[error("http/request streamResponse requestId `{0}` is already active")]
    StreamActive(String),
    /// A header's `valueEnvVar` is not set in the executor's environment.
    #[error("http/request header {name} requires executor environment variable {var}")]
    EnvVar {
        /// The header name as sent.
        name: String,
        /// The variable.
        var: String,
    },
}

impl HttpRequestError {
    /// The JSON-RPC error code: always `-32602` (invalid params).
    pub fn code(&self) -> i64 {
        -32602
    }
}

impl HttpRequestParams {
    /// Checks the values and builds the [`HttpRequest`]. `env` looks up a `valueEnvVar` in the
    /// executor's environment (the core reads none itself; the runtime passes
    /// `std::env::var_os` or a snapshot).
    ///
    /// Checked in this order: method, URL, then each header's name, env variable and value.
    ///
    /// # Errors
    /// The first invalid value, as an [`HttpRequestError`] (`-32602`).
    pub fn validate(
        self,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<HttpRequest, HttpRequestError> {
        let method =
            Method::from_bytes(self.method.as_bytes()).map_err(|_| HttpRequestError::Method)?;
        let (url, basic_auth) = parse_url(&self.url)?;
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for header in self.headers {
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| HttpRequestError::HeaderName)?;
            let mut value = header.value.into_bytes();
            if let Some(var) = header.value_env_var {
                let Some(extra) = env(&var) else {
                    return Err(HttpRequestError::EnvVar {
                        name: header.name,
                        var,
                    });
                };
                value.extend_from_slice(extra.as_encoded_bytes());
            }
            let value = HeaderValue::from_bytes(&value)
                .map_err(|_| HttpRequestError::HeaderValue(header.name))?;
            headers.push((name, value));
        }
        if let Some(auth) = basic_auth {
            if !headers
                .iter()
                .any(|(name, _)| name == ::http::header::AUTHORIZATION)
            {
                headers.push((::http::header::AUTHORIZATION, auth));
            }
        }
        Ok(HttpRequest {
            method,
            url,
            headers,
            body: self.body_base64.map(|b| b.0).unwrap_or_default(),
            timeout_ms: self.timeout_ms,
            follow_redirects: self.redirect_policy.unwrap_or_default() == RedirectPolicy::Follow,
            stream: self.stream_response,
        })
    }
}

/// Parses an absolute http(s) URL: drops the fragment, moves user info into a `Basic`
/// `authorization` value, and makes an empty path `/`.
///
/// Stricter than the WHATWG parser the Codex exec-server uses: a space or non-ASCII character
/// is refused rather than percent-encoded, and a host is never IDNA-mapped.
fn parse_url(url: &str) -> Result<(Uri, Option<HeaderValue>), HttpRequestError> {
    let without_fragment = url.split_once('#').map_or(url, |(before, _)| before);
    // A scheme other than http(s) is named even when `Uri` cannot parse the rest (`file:///x`).
    if let Some((scheme, _)) = without_fragment.split_once(':') {
        let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        let lower = scheme.to_ascii_lowercase();
        if is_scheme && lower != "http" && lower != "https" {
            return Err(HttpRequestError::Scheme(lower));
        }
    }
    let uri: Uri = without_fragment
        .parse()
        .map_err(|e: ::http::uri::InvalidUri| HttpRequestError::Url(e.to_string()))?;
    let mut parts = uri.into_parts();
    let scheme = match &parts.scheme {
        None => return Err(HttpRequestError::Url("relative URL without a base".into())),
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        Some(s) => return Err(HttpRequestError::Scheme(s.as_str().to_ascii_lowercase())),
    };
    let Some(authority) = parts.authority.take() else {
        return Err(HttpRequestError::Url("empty host".into()));
    };
    let (authority, basic_auth) = match authority.as_str().rsplit_once('@') {
        None => (authority, None),
        Some((userinfo, host)) => {
            let host: Authority = host
                .parse()
                .map_err(|e: ::http::uri::InvalidUri| HttpRequestError::Url(e.to_string()))?;
            (host, Some(basic_auth(userinfo)))
        }
    };
    if authority.host().is_empty() {
        return Err(HttpRequestError::Url("empty host".into()));
    }
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(::http::uri::PathAndQuery::from_static("/"));
    }
    let uri = Uri::from_parts(parts).map_err(|e| HttpRequestError::Url(e.to_string()))?;
    Ok((uri, basic_auth))
}

/// `Basic base64(user:password)` from percent-encoded URL user info.
fn basic_auth(userinfo: &str) -> HeaderValue {
    let decoded = percent_decode(userinfo);
    let mut value = b"Basic ".to_vec();
    value.extend_from_slice(
        base64::engine::general_purpose::STANDARD
            .encode(decoded)
            .as_bytes(),
    );
    // Base64 output and the prefix are visible ASCII: always a valid header value.
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static("Basic"))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

impl fmt::Display for RedirectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedirectPolicy::Follow => "follow",
            RedirectPolicy::Stop => "stop",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: serde_json::Value) -> Result<HttpRequestParams, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    fn validate(json: serde_json::Value) -> Result<HttpRequest, String> {
        let env = |var: &str| (var == "TOKEN").then(|| OsString::from("s3cr3t"));
        params(json)?.validate(&env).map_err(|e| e.to_string())
    }

    fn get(url: &str) -> serde_json::Value {
        serde_json::json!({"requestId": "r", "method": "GET", "url": url})
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let req = validate(get("http://example.com")).expect("valid");
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.url.to_string(), "http://example.com/");
        assert_eq!(
            (req.host(), req.port(), req.is_https()),
            ("example.com", 80, false)
        );
        assert!(req.headers.is_empty() && req.body.is_empty());
        assert_eq!(
            (req.timeout_ms, req.follow_redirects, req.stream),
            (None, true, false)
        );
    }

    #[test]
    fn every_field_is_carried_over() {
        let req = validate(serde_json::json!({
            "requestId": "r", "method": "FOO", "url": "https://[::1]:8443/a/b?c=d#frag",
            "headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"},
                        {"name": "Authorization", "value": "Bearer ", "valueEnvVar": "TOKEN"}],
            "bodyBase64": "AP8=", "timeoutMs": 1500, "redirectPolicy": "stop",
            "streamResponse": true,
        }))
        .expect("valid");
        assert_eq!(req.method.as_str(), "FOO");
        assert_eq!(req.url.to_string(), "https://[::1]:8443/a/b?c=d");
        assert_eq!(
            (req.host(), req.port(), req.is_https()),
            ("::1", 8443, true)
        );
        let headers: Vec<_> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-a", "1"),
                ("x-a", "2"),
                ("authorization", "Bearer s3cr3t")
            ]
        );
        assert_eq!(req.body, [0, 255]);
        assert_eq!(
            (req.timeout_ms, req.follow_redirects, req.stream),
            (Some(1500), false, true)
        );
    }

    #[test]
    fn shape_errors_are_worded_like_the_reference() {
        let missing = params(serde_json::json!({"method": "GET", "url": "http://a/"}));
        assert!(missing
            .expect_err("no id")
            .contains("missing field `requestId`"));
        let mut bad_body = get("http://a/");
        bad_body["bodyBase64"] = "!!".into();
        assert!(params(bad_body)
            .expect_err("bad base64")
            .contains("Invalid symbol 33, offset 0."));
        let mut bad_policy = get("http://a/");
        bad_policy["redirectPolicy"] = "bogus".into();
        assert!(params(bad_policy)
            .expect_err("bad policy")
            .contains("unknown variant `bogus`, expected `follow` or `stop`"));
        let no_value = serde_json::json!({"requestId": "r", "method": "GET", "url": "http://a/",
            "headers": [{"name": "x", "valueEnvVar": "TOKEN"}]});
        assert!(params(no_value)
            .expect_err("no value")
            .contains("missing field `value`"));
    }

    #[test]
    fn invalid_values_are_refused_with_the_reference_messages() {
        let cases = [
            (
                serde_json::json!({"requestId": "r", "method": "G ET", "url": "http://a/"}),
                "http/request method is invalid: invalid HTTP method",
            ),
            (
                get("/echo"),
                "http/request url is invalid: relative URL without a base",
            ),
            (
                get("ftp://a/x"),
                "http/request only supports http and https URLs, got ftp",
            ),
            (
                get("file:///etc/passwd"),
                "http/request only supports http and https URLs, got file",
            ),
            (
                serde_json::json!({"requestId": "r", "method": "GET", "url": "http://a/",
                "headers": [{"name": "bad name", "value": "1"}]}),
                "http/request header name is invalid: invalid HTTP header name",
            ),
            (
                serde_json::json!({"requestId": "r", "method": "GET", "url": "http://a/",
                "headers": [{"name": "x", "value": "a\nb"}]}),
                "http/request header value is invalid for x: failed to parse header value",
            ),
            (
                serde_json::json!({"requestId": "r", "method": "GET", "url": "http://a/",
                "headers": [{"name": "X-Tok", "value": "", "valueEnvVar": "UNSET"}]}),
                "http/request header X-Tok requires executor environment variable UNSET",
            ),
        ];
        for (json, message) in cases {
            assert_eq!(
                validate(json.clone()).expect_err(message),
                message,
                "{json}"
            );
        }
        for url in ["http://", "http://a b/", "https://:80/", "not a url", ""] {
            let err = validate(get(url)).expect_err(url);
            assert!(
                err.starts_with("http/request url is invalid: "),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn user_info_becomes_basic_auth_unless_authorization_is_given() {
        let req = validate(get("http://us%65r:p%40ss@host:81/x")).expect("valid");
        assert_eq!(req.url.to_string(), "http://host:81/x");
        let (name, value) = &req.headers[0];
        // base64("user:p@ss")
        assert_eq!(
            (name.as_str(), value.to_str().ok()),
            ("authorization", Some("Basic dXNlcjpwQHNz"))
        );

        let mut explicit = get("http://u:p@host/");
        explicit["headers"] = serde_json::json!([{"name": "Authorization", "value": "Bearer t"}]);
        let req = validate(explicit).expect("valid");
        assert_eq!(req.headers.len(), 1);
        assert_eq!(req.headers[0].1, "Bearer t");
    }

    #[test]
    fn cancel_params_round_trip() {
        let p: HttpCancelParams = serde_json::from_str(r#"{"requestId":"s1"}"#).expect("valid");
        assert_eq!(p.request_id, "s1");
        assert_eq!(
            serde_json::to_string(&p).expect("json"),
            r#"{"requestId":"s1"}"#
        );
    }
}
