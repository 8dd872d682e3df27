//! A minimal protocol client for measuring: one WebSocket, requests with integer ids, frames
//! parsed only as far as a measurement needs.
//!
//! It talks to the server with async-tungstenite directly rather than through a runtime crate,
//! so that it measures any server the same way and shares no code with the server under test.
//! `wss://` goes through futures-rustls (ring) directly, for the same reason.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};
use async_tungstenite::WebSocketStream;
use futures::{AsyncRead, AsyncWrite, SinkExt as _, StreamExt as _};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use serde::Deserialize;
use serde_json::{json, Value};
use smol::net::TcpStream;

/// How long any single wait for a server message may take before the run fails.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// One protocol connection.
pub(crate) struct Conn {
    ws: WebSocketStream<Stream>,
    next_id: i64,
}

/// The connection under the WebSocket: plain TCP (`ws://`) or TLS over TCP (`wss://`).
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// A client TLS configuration trusting only the PEM CA certificate(s) `ca_pem`, with session
/// resumption off so that every connect does a full handshake, as a fresh client process does.
pub(crate) fn tls_client_config(ca_pem: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.context("invalid CA PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The members of a server message the measurements look at; borrowed from the frame.
#[derive(Deserialize)]
pub(crate) struct Msg<'a> {
    #[serde(default)]
    pub(crate) id: Option<i64>,
    #[serde(default, borrow)]
    pub(crate) method: Option<&'a str>,
    #[serde(default, borrow)]
    pub(crate) params: Option<Params<'a>>,
    #[serde(default)]
    pub(crate) error: Option<Value>,
    /// A response's result (`sandboxType` of a start is checked).
    #[serde(default)]
    pub(crate) result: Option<Value>,
}

/// Notification params (`process/output`, `process/exited`, `process/closed`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Params<'a> {
    #[serde(borrow)]
    pub(crate) process_id: &'a str,
    #[serde(default)]
    pub(crate) seq: u64,
    /// `process/exited`'s exit code.
    #[serde(default)]
    pub(crate) exit_code: Option<i64>,
}

impl Msg<'_> {
    /// A response or error (no method).
    pub(crate) fn is_response(&self) -> bool {
        self.id.is_some() && self.method.is_none()
    }

    /// The process id of a notification.
    pub(crate) fn process_id(&self) -> Option<&str> {
        self.params.as_ref().map(|p| p.process_id)
    }
}

/// One server message.
pub(crate) enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl std::ops::Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }
}

impl Frame {
    /// Splits a `process/output` text frame into its `chunk` string and the rest of the frame
    /// (the frame with the chunk's contents cut out), so that only the few dozen bytes of the
    /// rest go through the JSON parser. `None` when the frame has no `"chunk":"` member.
    ///
    /// With `chunk_last`, the string is taken to end at the frame's last quote, as when
    /// `chunk` is the last member (execd and the reference put it last); the caller checks the
    /// result and splits again without it if that was wrong. Otherwise it ends at the next
    /// quote (base64 holds no quote or backslash).
    pub(crate) fn split_chunk(&self, chunk_last: bool) -> Option<(&str, String)> {
        self.split_string(r#""chunk":""#, chunk_last)
    }

    /// [`split_chunk`](Frame::split_chunk) for the string member whose opening is `key`
    /// (`"name":"`).
    pub(crate) fn split_string(&self, key: &str, last: bool) -> Option<(&str, String)> {
        let Frame::Text(text) = self else {
            return None;
        };
        let text = text.as_str();
        let start = text.find(key)? + key.len();
        let end = if last {
            text.rfind('"').filter(|end| *end >= start)?
        } else {
            start + text[start..].find('"')?
        };
        let mut rest = String::with_capacity(text.len() - (end - start));
        rest.push_str(&text[..start]);
        rest.push_str(&text[end..]);
        Some((&text[start..end], rest))
    }
}

/// The number of bytes `chunk` encodes if it is the standard base64 (with padding) of zero
/// bytes, checked on the text itself: the encoding of zeros is all `A`s with a last group of
/// `AAAA`, `AAA=` or `AA==`, and no other string decodes to zeros under a strict decoder.
pub(crate) fn base64_zeros_len(chunk: &[u8]) -> Option<u64> {
    if chunk.len() % 4 != 0 {
        return None;
    }
    let Some(body_len) = chunk.len().checked_sub(4) else {
        return chunk.is_empty().then_some(0);
    };
    let (body, last) = chunk.split_at(body_len);
    // An OR over all bytes vectorizes; `all` with its early exit does not.
    if body.iter().fold(0, |acc, b| acc | (b ^ b'A')) != 0 {
        return None;
    }
    let tail = match last {
        b"AAAA" => 3,
        b"AAA=" => 2,
        b"AA==" => 1,
        _ => return None,
    };
    Some((body_len / 4 * 3 + tail) as u64)
}

/// Parses a server frame.
pub(crate) fn parse(frame: &[u8]) -> anyhow::Result<Msg<'_>> {
    serde_json::from_slice(frame).with_context(|| {
        format!(
            "unexpected server message: {}",
            String::from_utf8_lossy(&frame[..frame.len().min(200)])
        )
    })
}

impl Conn {
    /// Opens a WebSocket to `url` (`ws://HOST:PORT[/path]`) without the protocol handshake.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Conn> {
        Conn::connect_with(url, None).await
    }

    /// Opens a WebSocket to `url` without the protocol handshake: `ws://HOST:PORT[/path]`, or
    /// `wss://…` verified with `tls`.
    pub(crate) async fn connect_with(
        url: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Conn> {
        let (authority, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, None),
            (None, Some(rest)) => (
                rest,
                Some(tls.with_context(|| format!("no TLS configuration for {url}"))?),
            ),
            (None, None) => bail!("not a ws:// or wss:// URL: {url}"),
        };
        let authority = authority.split('/').next().unwrap_or(authority);
        let tcp = TcpStream::connect(authority)
            .await
            .with_context(|| format!("cannot connect to {authority}"))?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let host = authority
                    .rsplit_once(':')
                    .map_or(authority, |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                    .with_context(|| format!("invalid server name {host:?}"))?;
                let tls = TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {authority} failed"))?;
                Stream::Tls(Box::new(tls))
            }
        };
        // Small read buffer: the idle-session stage holds a thousand of these.
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .max_message_size(None)
            .max_frame_size(None);
        let (ws, _) = async_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {url} failed"))?;
        Ok(Conn { ws, next_id: 1 })
    }

    /// Opens a WebSocket and a session: `initialize`, its response, `initialized`.
    pub(crate) async fn open(url: &str) -> anyhow::Result<Conn> {
        let mut c = Conn::connect(url).await?;
        c.initialize().await?;
        Ok(c)
    }

    /// [`Conn::open`] asking for binary frames (ext, PROTOCOL.md §2.5); `None` when the
    /// server did not turn them on (the reference, or a stdio server).
    pub(crate) async fn open_binary(url: &str) -> anyhow::Result<Option<Conn>> {
        let mut c = Conn::connect(url).await?;
        let on = c.initialize_with(true).await?;
        if on {
            return Ok(Some(c));
        }
        c.close().await;
        Ok(None)
    }

    /// [`Conn::open`] asking for binary frames; the connection and whether the server turned
    /// them on (a server that did not keeps the connection as a JSON one).
    pub(crate) async fn open_preferring_binary(url: &str) -> anyhow::Result<(Conn, bool)> {
        let mut c = Conn::connect(url).await?;
        let on = c.initialize_with(true).await?;
        Ok((c, on))
    }

    /// The protocol handshake: `initialize`, its response, `initialized`.
    pub(crate) async fn initialize(&mut self) -> anyhow::Result<()> {
        self.initialize_with(false).await.map(drop)
    }

    /// The handshake, asking for binary frames when `binary`; returns whether the server
    /// turned them on.
    async fn initialize_with(&mut self, binary: bool) -> anyhow::Result<bool> {
        let c = self;
        let mut params = json!({"clientName": "execd-bench"});
        if binary {
            params["binaryFrames"] = json!(true);
        }
        let id = c.request("initialize", params).await?;
        let result = c.wait_result(id).await?;
        c.queue(json!({"method": "initialized", "params": {}}).to_string())
            .await?;
        c.flush().await?;
        Ok(result["binaryFrames"] == json!(true))
    }

    /// Queues one frame without flushing.
    pub(crate) async fn queue(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.feed(Message::text(text)).await?;
        Ok(())
    }

    /// Writes every queued frame.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        self.ws.flush().await?;
        Ok(())
    }

    /// Queues a request without flushing; returns its id.
    pub(crate) async fn queue_request(
        &mut self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<i64> {
        let id = self.next_id;
        self.next_id += 1;
        self.queue(json!({"id": id, "method": method, "params": params}).to_string())
            .await?;
        Ok(id)
    }

    /// Sends a request; returns its id.
    pub(crate) async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<i64> {
        let id = self.queue_request(method, params).await?;
        self.flush().await?;
        Ok(id)
    }

    /// The next text or binary message.
    pub(crate) async fn frame(&mut self) -> anyhow::Result<Frame> {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => return Ok(Frame::Text(text)),
                    Some(Ok(Message::Binary(bytes))) => return Ok(Frame::Binary(bytes)),
                    // tungstenite answers pings by itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => {
                        bail!("the server closed the connection")
                    }
                    Some(Err(e)) => return Err(anyhow!(e).context("WebSocket read failed")),
                }
            }
        };
        futures_lite::future::or(next, async {
            smol::Timer::after(FRAME_TIMEOUT).await;
            Err(anyhow!(
                "no message from the server within {FRAME_TIMEOUT:?}"
            ))
        })
        .await
    }

    /// Waits for the response to request `id`, skipping notifications; fails on an error.
    pub(crate) async fn wait_response(&mut self, id: i64) -> anyhow::Result<()> {
        self.wait_result(id).await.map(drop)
    }

    /// Waits for the response to request `id`, skipping notifications (binary ones too);
    /// returns its result, fails on an error.
    pub(crate) async fn wait_result(&mut self, id: i64) -> anyhow::Result<Value> {
        loop {
            let f = self.frame().await?;
            if matches!(&f, Frame::Binary(b) if execd_core::protocol::binary::is_binary_frame(b)) {
                continue;
            }
            let m = parse(&f)?;
            if m.is_response() && m.id == Some(id) {
                if let Some(e) = m.error {
                    bail!("request {id} failed: {e}");
                }
                return Ok(m.result.unwrap_or(Value::Null));
            }
        }
    }

    /// Sends a WebSocket Close and waits briefly for the server to end the connection.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        futures_lite::future::or(drain, async {
            smol::Timer::after(Duration::from_secs(1)).await;
        })
        .await;
    }
}

/// Sends requests `0..n` on `c` with at most `window` unanswered: `request(i)` gives request
/// `i`'s method and params. Every frame that arrives goes to `on_frame` with the index of the
/// request it answers (`None` for a notification). An error response is an error.
///
/// The window matters for the reference: with a few hundred requests pipelined on one
/// connection, codex exec-server 0.169 stops answering (seen at ~230–370 responses).
pub(crate) async fn windowed(
    c: &mut Conn,
    n: usize,
    window: usize,
    mut request: impl FnMut(usize) -> (&'static str, Value),
    mut on_frame: impl FnMut(Option<usize>, &Frame) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut in_flight = std::collections::BTreeMap::new();
    let (mut sent, mut answered) = (0, 0);
    while answered < n {
        while sent < n && in_flight.len() < window {
            let (method, params) = request(sent);
            in_flight.insert(c.queue_request(method, params).await?, sent);
            sent += 1;
        }
        c.flush().await?;
        let frame = c
            .frame()
            .await
            .with_context(|| format!("{answered} of {n} answered"))?;
        let index = match response_id(&frame)? {
            Some(id) => {
                answered += 1;
                Some(
                    in_flight
                        .remove(&id)
                        .with_context(|| format!("unexpected response {id}"))?,
                )
            }
            None => None,
        };
        on_frame(index, &frame)?;
    }
    Ok(())
}

/// The id of a successful response; `None` for a notification; an error response is an error.
/// Only the head of a frame that starts with `{"id":N,"result"` is looked at (big results).
pub(crate) fn response_id(frame: &[u8]) -> anyhow::Result<Option<i64>> {
    use execd_core::protocol::binary::{decode_server_frame, is_binary_frame, ServerFrame};
    if is_binary_frame(frame) {
        // A result frame (ext, PROTOCOL.md §2.5) answers its request; other binary frames are
        // notifications.
        return Ok(match decode_server_frame(frame) {
            Ok(ServerFrame::Result(r)) => Some(r.id),
            _ => None,
        });
    }
    let head = &frame[..frame.len().min(40)];
    let fast = std::str::from_utf8(head)
        .ok()
        .and_then(|s| s.strip_prefix(r#"{"id":"#))
        .and_then(|r| r.split_once(r#","result""#))
        .and_then(|(n, _)| n.parse::<i64>().ok());
    if fast.is_some() {
        return Ok(fast);
    }
    let m = parse(frame)?;
    if let Some(e) = m.error {
        bail!("request {:?} failed: {e}", m.id);
    }
    Ok(m.id.filter(|_| m.is_response()))
}

/// `process/start` params for a non-PTY process in `/tmp` with a minimal `PATH`.
pub(crate) fn start_params(process_id: &str, argv: &[&str], pipe_stdin: bool) -> Value {
    json!({
        "processId": process_id, "argv": argv, "cwd": "file:///tmp",
        "env": {"PATH": "/usr/bin:/bin"}, "tty": false, "pipeStdin": pipe_stdin,
    })
}

/// Fails unless a response carries no error.
pub(crate) fn check_response(m: &Msg<'_>, what: &str) -> anyhow::Result<()> {
    ensure!(
        m.error.is_none(),
        "{what} failed: {}",
        m.error.as_ref().map_or_else(String::new, Value::to_string)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_of_zeros_is_recognised_on_the_text() {
        for n in 0..20 {
            let text = base64_simd::STANDARD.encode_to_string(vec![0u8; n]);
            assert_eq!(base64_zeros_len(text.as_bytes()), Some(n as u64), "{text}");
        }
        for bad in [
            "AB==", "AAA", "AAAAAQ==", "AAAA\"}}", "BAAA", "A===", "AAAAAA=A",
        ] {
            assert_eq!(base64_zeros_len(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn splits_the_chunk_out_of_an_output_frame() {
        let last = Frame::Text(
            r#"{"method":"process/output","params":{"processId":"p","seq":3,"stream":"stdout","chunk":"AAAA"}}"#.into(),
        );
        for chunk_last in [true, false] {
            let (chunk, rest) = last.split_chunk(chunk_last).expect("has a chunk");
            assert_eq!(chunk, "AAAA");
            assert_eq!(
                rest,
                r#"{"method":"process/output","params":{"processId":"p","seq":3,"stream":"stdout","chunk":""}}"#
            );
        }
        let first = Frame::Text(
            r#"{"method":"process/output","params":{"chunk":"AAAA","processId":"p","seq":3}}"#
                .into(),
        );
        let (chunk, _) = first.split_chunk(true).expect("has a chunk");
        assert_eq!(
            base64_zeros_len(chunk.as_bytes()),
            None,
            "wrong split is caught"
        );
        let (chunk, rest) = first.split_chunk(false).expect("has a chunk");
        assert_eq!(chunk, "AAAA");
        assert_eq!(
            parse(rest.as_bytes()).expect("parses").process_id(),
            Some("p")
        );
        assert!(Frame::Text(r#"{"id":1,"result":{}}"#.into())
            .split_chunk(true)
            .is_none());
    }
}
