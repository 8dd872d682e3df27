//! Inbound WebSocket frame guard: sits between the socket and tungstenite and rewrites the
//! inbound frame stream so that memory grows only with bytes actually received.
//!
//! tungstenite reserves a frame's declared length as soon as it has parsed the header, and
//! zero-fills that reservation again on every read until the payload is complete: a 14-byte
//! header declaring 256 MiB costs 256 MiB of zeroed memory, and trickling bytes into it costs a
//! 256 MiB memset per read. No tungstenite setting avoids that except its frame limit. So the
//! guard parses the frame headers itself and hands tungstenite an equivalent stream of frames
//! of at most [`CHUNK`] bytes each:
//!
//! - a data frame is split into fragments of at most [`CHUNK`] bytes (fragmentation does not
//!   change a WebSocket message); the client's mask key is kept (fragments start at multiples
//!   of 4 bytes, so the key stays aligned);
//! - a message whose declared length passes `max_frame_bytes` has its remaining payload
//!   consumed and discarded here; tungstenite sees empty fragments and the reader is told
//!   ([`Verdict::too_large`]) to report it as too large;
//! - a message passing the hard limit, a control frame over 125 bytes, set reserved bits or a
//!   reserved opcode end the connection at the header, before any payload is buffered;
//! - text messages are handed over as binary, with [`Verdict::text`] recording the original
//!   type, so the reader checks UTF-8 itself (and closes with 1007, RFC 6455 §7.4.1).
//!
//! Bytes up to the first `\r\n\r\n` (the HTTP handshake) pass through unchanged, and so does
//! everything after a response other than `101` (a refused client handshake and its body).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

/// Largest fragment handed to tungstenite, in bytes; a multiple of 4 (mask alignment).
pub(super) const CHUNK: usize = 64 << 10;
/// Bytes read from the socket per read.
const INPUT_BUFFER: usize = 8 << 10;

/// What the guard learned about one complete data message, in delivery order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    /// The message was sent as text (opcode 1): its payload must be UTF-8.
    pub(super) text: bool,
    /// The message's declared length, when it passed `max_frame_bytes` and its payload was
    /// discarded.
    pub(super) too_large: Option<u64>,
}

/// Why the guard ended the connection; the reader turns it into a Close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Violation {
    /// A message's declared length passed the hard limit (Close 1009).
    TooBig {
        /// The message's declared length so far.
        len: u64,
        /// The hard limit.
        limit: usize,
    },
    /// A malformed frame header (Close 1002).
    Protocol(&'static str),
}

impl Violation {
    fn to_io(self) -> io::Error {
        let message = match self {
            Violation::TooBig { len, limit } => {
                format!("websocket message of {len} bytes exceeds the hard limit of {limit} bytes")
            }
            Violation::Protocol(what) => format!("websocket protocol error: {what}"),
        };
        io::Error::new(io::ErrorKind::InvalidData, message)
    }
}

/// A byte stream whose inbound WebSocket frames are rewritten by a [`Reframer`].
pub(super) struct FrameGuard<S> {
    inner: S,
    reframer: Reframer,
    input: Box<[u8]>,
    /// Rewritten bytes not yet handed to tungstenite: `output[out_pos..]`.
    output: Vec<u8>,
    out_pos: usize,
    /// Bytes read from the socket so far (any inbound byte shows the peer is alive).
    received: u64,
}

impl<S> FrameGuard<S> {
    pub(super) fn new(inner: S, max_frame_bytes: usize, hard_limit_bytes: usize) -> Self {
        Self {
            inner,
            reframer: Reframer::new(max_frame_bytes, hard_limit_bytes),
            input: vec![0; INPUT_BUFFER].into_boxed_slice(),
            output: Vec::new(),
            out_pos: 0,
            received: 0,
        }
    }

    /// Bytes read from the socket so far.
    pub(super) fn received(&self) -> u64 {
        self.received
    }

    /// The verdict on the next data message tungstenite delivers.
    pub(super) fn next_verdict(&mut self) -> Option<Verdict> {
        self.reframer.verdicts.pop_front()
    }

    /// Why the guard failed the stream, if it did.
    pub(super) fn violation(&self) -> Option<Violation> {
        self.reframer.violation
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.output.len() {
                let n = buf.len().min(this.output.len() - this.out_pos);
                buf[..n].copy_from_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if let Some(violation) = this.reframer.violation {
                return Poll::Ready(Err(violation.to_io()));
            }
            let n = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.input))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.received += n as u64;
            this.reframer.feed(&this.input[..n], &mut this.output);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// The sans-IO part of [`FrameGuard`]: bytes in, rewritten bytes out.
#[derive(Debug)]
pub(super) struct Reframer {
    max_frame_bytes: u64,
    hard_limit_bytes: usize,
    state: State,
    /// The data message being received.
    message: Option<Message>,
    verdicts: VecDeque<Verdict>,
    violation: Option<Violation>,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    text: bool,
    len: u64,
    discard: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Copying the HTTP handshake; `matched` bytes of `\r\n\r\n` seen; the head's first
    /// bytes in `start` (`start_len` of them).
    Http {
        matched: usize,
        start: [u8; 12],
        start_len: usize,
    },
    /// A response other than `101` (a refused client handshake): its body is not frames.
    Passthrough,
    /// Collecting a frame header.
    Header { buf: [u8; 14], have: usize },
    /// Copying a control frame's payload unchanged.
    Control { remaining: u64 },
    /// Consuming a discarded payload.
    Discard { remaining: u64 },
    /// Copying a data frame's payload as fragments of at most [`CHUNK`] bytes.
    Data {
        remaining: u64,
        /// Bytes left in the current fragment; a new fragment header is due at 0.
        fragment_left: u64,
        /// Opcode of the next fragment (the frame's own for the first, then continuation).
        opcode: u8,
        fin: bool,
        mask: Option<[u8; 4]>,
    },
}

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;

impl Reframer {
    pub(super) fn new(max_frame_bytes: usize, hard_limit_bytes: usize) -> Self {
        Self {
            max_frame_bytes: max_frame_bytes as u64,
            hard_limit_bytes: hard_limit_bytes.max(max_frame_bytes),
            state: State::Http {
                matched: 0,
                start: [0; 12],
                start_len: 0,
            },
            message: None,
            verdicts: VecDeque::new(),
            violation: None,
        }
    }

    /// Rewrites `input`, appending to `out`. After a violation, input is ignored.
    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() && self.violation.is_none() {
            let copy = matches!(self.state, State::Control { .. });
            match &mut self.state {
                State::Http {
                    matched,
                    start,
                    start_len,
                } => {
                    let mut used = 0;
                    for &b in input {
                        used += 1;
                        if *start_len < start.len() {
                            start[*start_len] = b;
                            *start_len += 1;
                        }
                        *matched = match (*matched, b) {
                            (0 | 2, b'\r') => *matched + 1,
                            (1 | 3, b'\n') => *matched + 1,
                            (_, b'\r') => 1,
                            _ => 0,
                        };
                        if *matched == 4 {
                            break;
                        }
                    }
                    out.extend_from_slice(&input[..used]);
                    if *matched == 4 {
                        // A request (server side) or `HTTP/1.1 101` (client side) is followed
                        // by frames; any other response by its body.
                        let refused = start.starts_with(b"HTTP/") && &start[9..12] != b"101";
                        self.state = if refused {
                            State::Passthrough
                        } else {
                            State::Header {
                                buf: [0; 14],
                                have: 0,
                            }
                        };
                    }
                    input = &input[used..];
                }
                State::Passthrough => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                State::Header { buf, have } => {
                    let need = header_len(&buf[..*have]);
                    let take = (need - *have).min(input.len());
                    buf[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    input = &input[take..];
                    if *have == header_len(&buf[..*have]) {
                        let header = *buf;
                        self.on_header(&header, out);
                    }
                }
                State::Control { remaining } | State::Discard { remaining } => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    if copy {
                        out.extend_from_slice(&input[..take]);
                    }
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                    input = &input[take..];
                }
                State::Data {
                    remaining,
                    fragment_left,
                    opcode,
                    fin,
                    mask,
                } => {
                    if *fragment_left == 0 {
                        let len = (*remaining).min(CHUNK as u64);
                        let last = len == *remaining;
                        write_header(out, *opcode, last && *fin, len, *mask);
                        *opcode = OP_CONTINUATION;
                        *fragment_left = len;
                    }
                    let take = usize::try_from(*fragment_left)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    out.extend_from_slice(&input[..take]);
                    *fragment_left -= take as u64;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                    input = &input[take..];
                }
            }
        }
    }

    /// Decides what a complete header becomes.
    fn on_header(&mut self, header: &[u8; 14], out: &mut Vec<u8>) {
        let fin = header[0] & 0x80 != 0;
        let rsv = header[0] & 0x70;
        let opcode = header[0] & 0x0f;
        let masked = header[1] & 0x80 != 0;
        let (len, at) = match header[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([header[2], header[3]])), 4),
            127 => {
                let mut b = [0; 8];
                b.copy_from_slice(&header[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = masked.then(|| [header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let next_header = State::Header {
            buf: [0; 14],
            have: 0,
        };
        if rsv != 0 {
            self.violation = Some(Violation::Protocol("reserved bits set"));
            return;
        }
        match opcode {
            8..=10 => {
                if len > 125 {
                    self.violation = Some(Violation::Protocol("control frame over 125 bytes"));
                    return;
                }
                let header_bytes = at + if masked { 4 } else { 0 };
                out.extend_from_slice(&header[..header_bytes]);
                self.state = if len == 0 {
                    next_header
                } else {
                    State::Control { remaining: len }
                };
                return;
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
            _ => {
                self.violation = Some(Violation::Protocol("reserved opcode"));
                return;
            }
        }
        let message = match (opcode, self.message) {
            (OP_CONTINUATION, Some(message)) => message,
            (OP_CONTINUATION, None) => {
                self.violation = Some(Violation::Protocol("continuation without a message"));
                return;
            }
            (_, Some(_)) => {
                self.violation = Some(Violation::Protocol("new message inside a fragmented one"));
                return;
            }
            (opcode, None) => Message {
                text: opcode == OP_TEXT,
                len: 0,
                discard: false,
            },
        };
        let total = message.len.saturating_add(len);
        if total > self.hard_limit_bytes as u64 {
            self.violation = Some(Violation::TooBig {
                len: total,
                limit: self.hard_limit_bytes,
            });
            return;
        }
        let message = Message {
            len: total,
            discard: message.discard || total > self.max_frame_bytes,
            ..message
        };
        // Text is handed over as binary: the reader checks UTF-8 (see the module doc).
        let out_opcode = if opcode == OP_CONTINUATION {
            OP_CONTINUATION
        } else {
            OP_BINARY
        };
        if fin {
            self.verdicts.push_back(Verdict {
                text: message.text,
                too_large: message.discard.then_some(message.len),
            });
            self.message = None;
        } else {
            self.message = Some(message);
        }
        if message.discard || len == 0 {
            write_header(out, out_opcode, fin, 0, mask);
            self.state = if len == 0 {
                next_header
            } else {
                State::Discard { remaining: len }
            };
        } else {
            self.state = State::Data {
                remaining: len,
                fragment_left: 0,
                opcode: out_opcode,
                fin,
                mask,
            };
        }
    }
}

/// The full length of the header whose first bytes are `start` (at least 2, at most 14).
fn header_len(start: &[u8]) -> usize {
    if start.len() < 2 {
        return 2;
    }
    let ext = match start[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if start[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

fn write_header(out: &mut Vec<u8>, opcode: u8, fin: bool, len: u64, mask: Option<[u8; 4]>) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, opcode, fin, payload.len() as u64, mask);
        match mask {
            Some(m) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4])),
            None => out.extend_from_slice(payload),
        }
        out
    }

    /// Parses rewritten frames back into (fin, opcode, unmasked payload).
    fn parse(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let hl = header_len(bytes);
            let (len, at) = match bytes[1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().expect("8 length bytes")) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let mask = (bytes[1] & 0x80 != 0).then(|| &bytes[at..at + 4]);
            let payload: Vec<u8> = bytes[hl..hl + len]
                .iter()
                .enumerate()
                .map(|(i, b)| mask.map_or(*b, |m| b ^ m[i % 4]))
                .collect();
            frames.push((bytes[0] & 0x80 != 0, bytes[0] & 0x0f, payload));
            bytes = &bytes[hl + len..];
        }
        frames
    }

    fn reframer(max: usize, hard: usize) -> Reframer {
        let mut r = Reframer::new(max, hard);
        let mut out = Vec::new();
        r.feed(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\nA: b\r\n\r\n");
        r
    }

    /// Feeds `input` one byte at a time (the worst case for state handling).
    fn feed_bytewise(r: &mut Reframer, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in input {
            r.feed(std::slice::from_ref(b), &mut out);
        }
        out
    }

    #[test]
    fn large_frame_is_split_into_masked_fragments_carrying_the_same_bytes() {
        let mut r = reframer(1 << 20, 1 << 20);
        let payload: Vec<u8> = (0..CHUNK * 2 + 10).map(|i| (i % 251) as u8).collect();
        let out = feed_bytewise(&mut r, &frame(true, OP_TEXT, &payload, Some([1, 2, 3, 4])));
        let frames = parse(&out);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            (frames[0].0, frames[0].1, frames[0].2.len()),
            (false, OP_BINARY, CHUNK)
        );
        assert_eq!((frames[1].0, frames[1].1), (false, OP_CONTINUATION));
        assert_eq!((frames[2].0, frames[2].1), (true, OP_CONTINUATION));
        let joined: Vec<u8> = frames.into_iter().flat_map(|f| f.2).collect();
        assert_eq!(joined, payload);
        assert_eq!(
            r.verdicts.pop_front(),
            Some(Verdict {
                text: true,
                too_large: None
            })
        );
    }

    #[test]
    fn oversized_message_is_discarded_and_reported_with_its_length() {
        let mut r = reframer(100, 1 << 20);
        let mut input = frame(false, OP_BINARY, &[7; 60], Some([9, 9, 9, 9]));
        input.extend(frame(true, OP_CONTINUATION, &[7; 60], Some([9, 9, 9, 9])));
        input.extend(frame(true, 9, b"ping", Some([1, 1, 1, 1])));
        input.extend(frame(true, OP_TEXT, b"ok", Some([5, 6, 7, 8])));
        let frames = parse(&feed_bytewise(&mut r, &input));
        assert_eq!(
            frames,
            vec![
                (false, OP_BINARY, vec![7; 60]),
                (true, OP_CONTINUATION, vec![]),
                (true, 9, b"ping".to_vec()),
                (true, OP_BINARY, b"ok".to_vec()),
            ]
        );
        assert_eq!(
            r.verdicts.pop_front().expect("a verdict").too_large,
            Some(120)
        );
        assert_eq!(
            r.verdicts.pop_front(),
            Some(Verdict {
                text: true,
                too_large: None
            })
        );
    }

    #[test]
    fn huge_declared_length_costs_nothing_until_the_hard_limit() {
        let mut r = reframer(1024, 256 << 20);
        let mut out = Vec::new();
        let mut header = Vec::new();
        write_header(&mut header, OP_BINARY, true, 256 << 20, Some([0; 4]));
        r.feed(&header, &mut out);
        r.feed(&[0; 4096], &mut out);
        assert!(out.len() < 32, "{} bytes handed over", out.len());
        assert!(r.violation.is_none());

        let mut r = reframer(1024, 256 << 20);
        let mut header = Vec::new();
        write_header(&mut header, OP_BINARY, true, 1 << 40, Some([0; 4]));
        r.feed(&header, &mut Vec::new());
        assert!(matches!(r.violation, Some(Violation::TooBig { .. })));
    }

    #[test]
    fn a_refused_handshake_body_passes_through() {
        let mut r = Reframer::new(1024, 4096);
        let response = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\n\x82\xffbad";
        assert_eq!(feed_bytewise(&mut r, response), response);
        assert!(r.violation.is_none());

        let mut r = Reframer::new(1024, 4096);
        let mut input = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        input.extend(frame(true, OP_TEXT, b"hi", None));
        let out = feed_bytewise(&mut r, &input);
        assert!(out.ends_with(&frame(true, OP_BINARY, b"hi", None)));
    }

    #[test]
    fn oversized_control_frame_ends_the_stream() {
        let mut r = reframer(1024, 4096);
        let mut header = Vec::new();
        write_header(&mut header, 9, true, 1 << 30, None);
        r.feed(&header, &mut Vec::new());
        assert_eq!(
            r.violation,
            Some(Violation::Protocol("control frame over 125 bytes"))
        );
    }
}
