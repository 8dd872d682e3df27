//! Newline-delimited frames over a byte stream (the server's stdin/stdout, or a child's pipes).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};

use super::{FrameReader, FrameWriter, Inbound, Limits, ReaderInner, WriterInner};

/// Builds a transport over a byte stream carrying one frame per line (`\n`-terminated).
///
/// Inbound: a trailing `\r` is stripped, empty lines are skipped, a final line without a newline
/// at EOF is still delivered, and a line longer than [`Limits::max_frame_bytes`] is discarded up
/// to its newline without being buffered and reported as [`Inbound::TooLarge`]. Outbound: each
/// frame is written followed by `\n`, through a 128 KiB buffer. The WebSocket-only fields of
/// `limits` are ignored.
pub fn stdio_transport(
    reader: impl AsyncRead + Unpin + Send + 'static,
    writer: impl AsyncWrite + Unpin + Send + 'static,
    limits: Limits,
) -> (FrameReader, FrameWriter) {
    let reader = FrameReader {
        inner: ReaderInner::Stdio(LineReader::new(Box::new(reader), limits.max_frame_bytes)),
    };
    let writer = FrameWriter {
        inner: WriterInner::Stdio(LineWriter::new(Box::new(writer))),
    };
    (reader, writer)
}

/// Bytes requested from the stream per read; pipes deliver at most 64 KiB at a time on Linux.
const READ_CHUNK: usize = 64 << 10;
/// Output buffer size: frames are coalesced into writes of about this many bytes.
const WRITE_BUFFER: usize = 128 << 10;

/// Splits a byte stream into lines with a bounded buffer.
pub(super) struct LineReader {
    inner: Box<dyn AsyncRead + Unpin + Send>,
    /// Storage; only `buf[start..filled]` holds unconsumed data.
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    /// `buf[start..scanned]` is known to contain no newline.
    scanned: usize,
    /// Bytes of an oversize line dropped so far; `Some` while skipping to its newline.
    discarding: Option<usize>,
    eof: bool,
    done: bool,
    max: usize,
}

impl LineReader {
    fn new(inner: Box<dyn AsyncRead + Unpin + Send>, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            filled: 0,
            scanned: 0,
            discarding: None,
            eof: false,
            done: false,
            max,
        }
    }

    pub(super) async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(item) = self.next_buffered() {
                return Some(Ok(item));
            }
            if self.eof {
                self.done = true;
                return self.finish_at_eof().map(Ok);
            }
            if let Err(e) = self.fill().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Takes the next complete line out of the buffer, if there is one.
    fn next_buffered(&mut self) -> Option<Inbound> {
        loop {
            let Some(offset) = memchr::memchr(b'\n', &self.buf[self.scanned..self.filled]) else {
                self.scanned = self.filled;
                self.bound_partial_line();
                return None;
            };
            let end = self.scanned + offset;
            let line_start = self.start;
            self.start = end + 1;
            self.scanned = self.start;
            if let Some(dropped) = self.discarding.take() {
                let len = strip_cr_len(&self.buf[line_start..end]) + dropped;
                tracing::debug!(len, "stdio transport: discarded oversize line");
                return Some(Inbound::TooLarge { len });
            }
            let line = &self.buf[line_start..line_start + strip_cr_len(&self.buf[line_start..end])];
            if line.is_empty() {
                continue;
            }
            if line.len() > self.max {
                tracing::debug!(len = line.len(), "stdio transport: oversize line");
                return Some(Inbound::TooLarge { len: line.len() });
            }
            tracing::trace!(len = line.len(), "stdio transport: frame");
            return Some(Inbound::Frame(line.to_vec()));
        }
    }

    /// Drops the partial line once it can no longer fit the limit, so memory stays bounded.
    fn bound_partial_line(&mut self) {
        let partial = self.filled - self.start;
        // One spare byte: a line of exactly `max` bytes may still be followed by `\r`.
        let over = match self.discarding {
            Some(_) => true,
            None => partial > self.max.saturating_add(1),
        };
        if over {
            // Keep a trailing `\r` in the buffer: it is part of the line ending if `\n` follows.
            let keep = usize::from(self.buf[self.start..self.filled].last() == Some(&b'\r'));
            let dropped = partial - keep;
            self.discarding = Some(self.discarding.unwrap_or(0) + dropped);
            self.buf.copy_within(self.filled - keep..self.filled, 0);
            self.start = 0;
            self.filled = keep;
            self.scanned = keep;
        }
    }

    /// What remains at EOF: an oversize line being discarded, or a last line without `\n`.
    fn finish_at_eof(&mut self) -> Option<Inbound> {
        let rest = &self.buf[self.start..self.filled];
        let rest = &rest[..strip_cr_len(rest)];
        if let Some(dropped) = self.discarding.take() {
            return Some(Inbound::TooLarge {
                len: dropped + rest.len(),
            });
        }
        if rest.is_empty() {
            None
        } else if rest.len() > self.max {
            Some(Inbound::TooLarge { len: rest.len() })
        } else {
            Some(Inbound::Frame(rest.to_vec()))
        }
    }

    /// Reads more bytes, compacting or growing the buffer first.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            self.scanned = 0;
        } else if self.start > 0 && self.buf.len() - self.filled < READ_CHUNK {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.filled < READ_CHUNK {
            // Grow geometrically, but never much past what one line may need.
            let cap = self.max.saturating_add(1 + 2 * READ_CHUNK);
            let want = (self.buf.len() * 2).min(cap).max(self.filled + READ_CHUNK);
            self.buf.resize(want, 0);
        }
        let inner = &mut self.inner;
        let spare = &mut self.buf[self.filled..];
        let n = poll_fn(|cx| Pin::new(&mut *inner).poll_read(cx, spare)).await?;
        if n == 0 {
            self.eof = true;
        }
        self.filled += n;
        Ok(())
    }
}

/// Length of `line` without one trailing `\r`.
fn strip_cr_len(line: &[u8]) -> usize {
    match line.last() {
        Some(b'\r') => line.len() - 1,
        _ => line.len(),
    }
}

/// Writes frames as `\n`-terminated lines through a buffer.
pub(super) struct LineWriter {
    inner: BufWriter<Box<dyn AsyncWrite + Unpin + Send>>,
}

impl LineWriter {
    fn new(inner: Box<dyn AsyncWrite + Unpin + Send>) -> Self {
        Self {
            inner: BufWriter::with_capacity(WRITE_BUFFER, inner),
        }
    }

    pub(super) async fn send(&mut self, text: String) -> io::Result<()> {
        if memchr::memchr(b'\n', text.as_bytes()).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "stdio frame contains a newline",
            ));
        }
        tracing::trace!(len = text.len(), "stdio transport: send");
        self.inner.write_all(text.as_bytes()).await?;
        self.inner.write_all(b"\n").await
    }

    pub(super) async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    pub(super) async fn close(&mut self) -> io::Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8], max: usize, chunk: usize) -> Vec<Inbound> {
        let chunks: Vec<io::Result<Vec<u8>>> =
            input.chunks(chunk.max(1)).map(|c| Ok(c.to_vec())).collect();
        let reader = futures::stream::iter(chunks).into_async_read();
        let mut lines = LineReader::new(Box::new(reader), max);
        futures_lite::future::block_on(async {
            let mut out = Vec::new();
            while let Some(item) = lines.recv().await {
                out.push(item.expect("in-memory reads never fail"));
            }
            out
        })
    }

    fn frame(s: &str) -> Inbound {
        Inbound::Frame(s.as_bytes().to_vec())
    }

    use futures::TryStreamExt as _;

    #[test]
    fn splits_lines_strips_cr_and_skips_empty_lines() {
        for chunk in [1, 2, 3, 7, 1024] {
            let got = frames(b"a\r\n\nbc\n\r\nd", 10, chunk);
            assert_eq!(
                got,
                vec![frame("a"), frame("bc"), frame("d")],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn oversize_line_is_reported_and_skipped() {
        for chunk in [1, 3, 5, 64] {
            let got = frames(b"12345\n123456789\r\nok\n", 5, chunk);
            assert_eq!(
                got,
                vec![frame("12345"), Inbound::TooLarge { len: 9 }, frame("ok")],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn line_of_exactly_max_with_crlf_is_a_frame() {
        for chunk in [1, 2, 6, 7] {
            let got = frames(b"12345\r\nx\n", 5, chunk);
            assert_eq!(got, vec![frame("12345"), frame("x")], "chunk {chunk}");
        }
    }

    #[test]
    fn oversize_line_at_eof_is_reported() {
        let got = frames(b"ok\n1234567", 3, 2);
        assert_eq!(got, vec![frame("ok"), Inbound::TooLarge { len: 7 }]);
    }
}
