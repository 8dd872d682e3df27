//! An in-process transport: two connected frame channels, no sockets and no framing.

use std::io;

use async_channel::{Receiver, Sender};

use super::{FrameReader, FrameWriter, Inbound, Limits, ReaderInner, WriterInner};

/// Frames queued in one direction before [`FrameWriter::send`] waits for the reader.
const QUEUE_FRAMES: usize = 1024;

/// Two connected ends of an in-process connection: what one end's writer sends, the other
/// end's reader receives, in order. Used by [`crate::LocalExecutor`] to put a
/// [`crate::Client`] in front of an in-process server without a socket.
///
/// Frames larger than `limits.max_frame_bytes` arrive as [`Inbound::TooLarge`], as on the
/// other transports. Closing (or dropping) a writer ends the other end's reader after the
/// frames already queued.
pub fn memory_pair(limits: Limits) -> ((FrameReader, FrameWriter), (FrameReader, FrameWriter)) {
    let (a_tx, a_rx) = async_channel::bounded(QUEUE_FRAMES);
    let (b_tx, b_rx) = async_channel::bounded(QUEUE_FRAMES);
    let end = |rx, tx| {
        (
            FrameReader {
                inner: ReaderInner::Mem(MemReader {
                    rx,
                    max: limits.max_frame_bytes,
                }),
            },
            FrameWriter {
                inner: WriterInner::Mem(MemWriter { tx: Some(tx) }),
            },
        )
    };
    (end(a_rx, b_tx), end(b_rx, a_tx))
}

pub(super) struct MemReader {
    rx: Receiver<String>,
    max: usize,
}

impl MemReader {
    pub(super) async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        let text = self.rx.recv().await.ok()?;
        Some(Ok(if text.len() > self.max {
            Inbound::TooLarge { len: text.len() }
        } else {
            Inbound::Frame(text.into_bytes())
        }))
    }
}

pub(super) struct MemWriter {
    tx: Option<Sender<String>>,
}

impl MemWriter {
    pub(super) async fn send(&mut self, text: String) -> io::Result<()> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, "in-process peer closed");
        let tx = self.tx.as_ref().ok_or_else(closed)?;
        tx.send(text).await.map_err(|_| closed())
    }

    pub(super) fn close(&mut self) {
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_in_order_and_close_ends_the_reader() {
        futures_lite::future::block_on(async {
            let limits = Limits {
                max_frame_bytes: 4,
                ..Limits::default()
            };
            let ((mut a_rx, mut a_tx), (mut b_rx, mut b_tx)) = memory_pair(limits);
            a_tx.send("one".into()).await.expect("open");
            a_tx.send("three".into()).await.expect("open");
            b_tx.send("back".into()).await.expect("open");
            a_tx.close().await.expect("close");
            let got = b_rx.recv().await.expect("frame").expect("ok");
            assert_eq!(got, Inbound::Frame(b"one".to_vec()));
            let got = b_rx.recv().await.expect("frame").expect("ok");
            assert_eq!(got, Inbound::TooLarge { len: 5 });
            assert!(
                b_rx.recv().await.is_none(),
                "closed after the queued frames"
            );
            let got = a_rx.recv().await.expect("frame").expect("ok");
            assert_eq!(got, Inbound::Frame(b"back".to_vec()));
            assert!(a_tx.send("late".into()).await.is_err());
        });
    }
}
