//! Coalescing of output that queued up behind a busy event loop: consecutive
//! [`ProcessEvent::Output`] chunks of one process and stream waiting in the pumps' channel are
//! merged, up to the core's
//! [`max_chunk_bytes`](execd_core::ServerConfig::max_chunk_bytes), before the core numbers
//! them, so one seq and one frame carry what would have been many. Nothing waits for more: a
//! chunk alone in the channel is handed on as it is (an idle process's output is not
//! delayed), and only what is already queued is merged.

use async_channel::Receiver;
use execd_core::ProcessEvent;

/// Merges queued output chunks; holds the one event read past a run of mergeable chunks.
#[derive(Debug)]
pub(crate) struct Coalescer<K> {
    limit: usize,
    held: Option<(K, ProcessEvent)>,
}

impl<K: Copy + PartialEq> Coalescer<K> {
    /// Merges into chunks of at most `limit` bytes (a chunk read larger stays as it is).
    pub(crate) fn new(limit: usize) -> Self {
        Coalescer { limit, held: None }
    }

    /// The next event to hand to the core without waiting: the held one, else the next queued
    /// one; merged with the chunks queued behind it.
    pub(crate) fn next(&mut self, rx: &Receiver<(K, ProcessEvent)>) -> Option<(K, ProcessEvent)> {
        let first = self.held.take().or_else(|| rx.try_recv().ok())?;
        Some(self.merge(first, rx))
    }

    /// `first` (just received) merged with the output chunks of the same process and stream
    /// queued right behind it. An event that does not merge is held for [`next`](Self::next).
    pub(crate) fn merge(
        &mut self,
        first: (K, ProcessEvent),
        rx: &Receiver<(K, ProcessEvent)>,
    ) -> (K, ProcessEvent) {
        let (key, event) = first;
        let ProcessEvent::Output { stream, mut bytes } = event else {
            return (key, event);
        };
        while bytes.len() < self.limit {
            let Some(next) = self.held.take().or_else(|| rx.try_recv().ok()) else {
                break;
            };
            match next {
                (
                    k,
                    ProcessEvent::Output {
                        stream: s,
                        bytes: more,
                    },
                ) if k == key && s == stream && bytes.len() + more.len() <= self.limit => {
                    bytes.extend_from_slice(&more);
                }
                other => {
                    self.held = Some(other);
                    break;
                }
            }
        }
        (key, ProcessEvent::Output { stream, bytes })
    }

    /// Whether an event is held (the loop must hand it on before it waits).
    pub(crate) fn has_held(&self) -> bool {
        self.held.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use execd_core::protocol::Stream;

    fn out(stream: Stream, bytes: &[u8]) -> ProcessEvent {
        ProcessEvent::Output {
            stream,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn queued_chunks_of_one_stream_merge_up_to_the_limit_and_order_is_kept() {
        let (tx, rx) = async_channel::unbounded();
        let events = [
            (1, out(Stream::Stdout, b"ab")),
            (1, out(Stream::Stdout, b"cd")),
            (1, out(Stream::Stdout, b"ef")),
            (1, out(Stream::Stdout, b"g")),
            (1, out(Stream::Stderr, b"E")),
            (2, out(Stream::Stdout, b"x")),
            (
                1,
                ProcessEvent::Exited {
                    status: execd_core::ExitStatus::Code(0),
                },
            ),
            (1, out(Stream::Stdout, b"late")),
        ];
        for e in events {
            tx.try_send(e).expect("unbounded");
        }
        let mut c = Coalescer::new(5);
        let mut got = Vec::new();
        while let Some(e) = c.next(&rx) {
            got.push(e);
        }
        assert!(!c.has_held());
        assert_eq!(
            got,
            vec![
                (1, out(Stream::Stdout, b"abcd")),
                (1, out(Stream::Stdout, b"efg")),
                (1, out(Stream::Stderr, b"E")),
                (2, out(Stream::Stdout, b"x")),
                (
                    1,
                    ProcessEvent::Exited {
                        status: execd_core::ExitStatus::Code(0),
                    }
                ),
                (1, out(Stream::Stdout, b"late")),
            ]
        );
    }

    #[test]
    fn a_lone_chunk_is_handed_on_at_once() {
        let (tx, rx) = async_channel::unbounded::<(u8, ProcessEvent)>();
        let mut c = Coalescer::new(1 << 20);
        let merged = c.merge((1, out(Stream::Pty, b"$ ")), &rx);
        assert_eq!(merged, (1, out(Stream::Pty, b"$ ")));
        assert!(!c.has_held());
        drop(tx);
    }
}
