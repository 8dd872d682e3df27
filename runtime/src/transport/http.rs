//! The HTTP request head the WebSocket server reads before handing the socket to tungstenite:
//! routing (`/readyz`, `Origin` refusal, upgrade) and replaying the bytes already read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Largest request head accepted, in bytes.
pub(super) const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most headers parsed in a request head; more is answered with 400.
const MAX_HEADERS: usize = 64;

/// What to do with a request, decided from its head alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /readyz`: answer 200 `ok` and close.
    Ready,
    /// The request carries an `Origin` header: answer 403 and close (PROTOCOL.md: browser pages
    /// must not reach a local executor).
    Forbidden,
    /// A WebSocket upgrade: replay the head into the WebSocket handshake.
    Upgrade,
    /// A plain request for `/`: answer 400 and close.
    BadRequest,
    /// A plain request for another path: answer 404 and close.
    NotFound,
    /// The head exceeds [`MAX_HEAD_BYTES`]: answer 431 and close.
    HeadTooLarge,
}

impl Route {
    /// The complete HTTP response for a route that does not upgrade.
    pub(super) fn response(self) -> &'static [u8] {
        match self {
            Route::Ready => {
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            }
            Route::Forbidden => {
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Route::BadRequest => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Route::NotFound => {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Route::HeadTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            Route::Upgrade => b"",
        }
    }
}

/// Reads from `stream` until the end of the request head (`\r\n\r\n`).
///
/// Returns every byte read (the head and anything the client sent after it) and the route, or
/// `Ok(None)` if the peer closed before completing a head. Reads at most [`MAX_HEAD_BYTES`].
pub(super) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<Option<(Vec<u8>, Route)>> {
    let mut buf = vec![0; MAX_HEAD_BYTES];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.truncate(filled);
            return Ok(Some((buf, Route::HeadTooLarge)));
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(None);
        }
        // The terminator may straddle two reads: rescan the last 3 old bytes.
        let from = filled.saturating_sub(3);
        filled += n;
        if let Some(pos) = memchr::memmem::find(&buf[from..filled], b"\r\n\r\n") {
            let head_len = from + pos + 4;
            let route = route(&buf[..head_len]);
            buf.truncate(filled);
            return Ok(Some((buf, route)));
        }
    }
}

/// Routes a complete request head (ending in `\r\n\r\n`).
pub(super) fn route(head: &[u8]) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return Route::BadRequest,
    }
    if req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("origin"))
    {
        return Route::Forbidden;
    }
    let path = req.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if req.method == Some("GET") && path == "/readyz" {
        return Route::Ready;
    }
    let upgrade = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && h.value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"websocket"))
    });
    if upgrade {
        Route::Upgrade
    } else if path == "/" {
        Route::BadRequest
    } else {
        Route::NotFound
    }
}

/// The value of the first `Authorization` header of a complete request head, if any.
pub(super) fn authorization(head: &[u8]) -> Option<&[u8]> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return None,
    }
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .map(|h| h.value)
}

/// The complete `401 Unauthorized` response for a refused handshake, with the reference's
/// headers: `content-type: text/plain; charset=utf-8`, no `WWW-Authenticate`.
pub(super) fn unauthorized(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A stream that first replays `prefix`, then reads from `inner`; writes go to `inner`.
///
/// Lets tungstenite's server handshake parse a request head this module has already read.
#[derive(Debug)]
pub(super) struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_is_ready_even_with_a_query() {
        assert_eq!(
            route(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Ready
        );
        assert_eq!(route(b"GET /readyz?probe=1 HTTP/1.1\r\n\r\n"), Route::Ready);
    }

    #[test]
    fn any_origin_header_is_forbidden() {
        let head = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\norigin: http://evil\r\n\r\n";
        assert_eq!(route(head), Route::Forbidden);
        assert_eq!(
            route(b"GET /readyz HTTP/1.1\r\nOrigin: null\r\n\r\n"),
            Route::Forbidden
        );
    }

    #[test]
    fn upgrade_token_is_matched_case_insensitively() {
        let head = b"GET /any HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c, WebSocket\r\n\r\n";
        assert_eq!(route(head), Route::Upgrade);
    }

    #[test]
    fn plain_requests_get_400_or_404() {
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(b"GET /x HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /readyz HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"\x00\x01garbage\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn authorization_is_the_first_such_header() {
        let head = b"GET / HTTP/1.1\r\nauthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n";
        assert_eq!(authorization(head), Some(&b"Bearer a"[..]));
        assert_eq!(authorization(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
    }

    #[test]
    fn unauthorized_response_has_the_reference_headers() {
        let response = unauthorized("missing websocket bearer token");
        let text = std::str::from_utf8(&response).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(text.contains("\r\ncontent-type: text/plain; charset=utf-8\r\n"));
        assert!(text.contains("\r\ncontent-length: 30\r\n"));
        assert!(!text.to_ascii_lowercase().contains("www-authenticate"));
        assert!(text.ends_with("\r\n\r\nmissing websocket bearer token"));
    }

    #[test]
    fn prefix_is_replayed_before_inner() {
        let inner: &[u8] = b"world";
        let mut s = Prefixed::new(b"hello ".to_vec(), inner);
        let mut out = String::new();
        futures_lite::future::block_on(s.read_to_string(&mut out)).expect("in-memory read");
        assert_eq!(out, "hello world");
    }
}
