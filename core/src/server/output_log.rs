//! A process's retained output: a ring of chunks bounded in bytes and in count, and how much of
//! it the client has acknowledged (lossless output, PROTOCOL.md §5.11).

use std::collections::VecDeque;

use crate::ids::Seq;
use crate::protocol::Stream;

/// One retained chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) seq: Seq,
    pub(crate) stream: Stream,
    pub(crate) bytes: Vec<u8>,
}

/// Retained output of one process, oldest first. When a push exceeds either bound the oldest
/// chunks are evicted (the Codex exec-server drops them silently; execd remembers how far it
/// evicted so readers can be told what they lost). In lossless mode only acknowledged chunks
/// are evicted: the server pauses the process before its unacknowledged output passes the
/// bounds (see `server::lossless`).
#[derive(Debug)]
pub(crate) struct OutputLog {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    max_bytes: usize,
    max_chunks: usize,
    /// The highest seq evicted, `Seq(0)` when nothing was.
    evicted_through: Seq,
    /// Lossless mode: chunks after `acked` are never evicted.
    lossless: bool,
    /// The highest seq acknowledged or evicted: chunks after it are unacknowledged.
    acked: Seq,
    /// Bytes of the retained chunks after `acked`.
    unacked_bytes: usize,
    /// Retained chunks after `acked`.
    unacked_chunks: usize,
}

impl OutputLog {
    pub(crate) fn new(max_bytes: usize, max_chunks: usize) -> Self {
        OutputLog {
            chunks: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_chunks: max_chunks.max(1),
            evicted_through: Seq(0),
            lossless: false,
            acked: Seq(0),
            unacked_bytes: 0,
            unacked_chunks: 0,
        }
    }

    /// Appends a chunk (seqs must increase) and evicts the oldest chunks past the bounds. The
    /// newest chunk is always kept, even when it alone exceeds the byte bound.
    pub(crate) fn push(&mut self, chunk: Chunk) {
        self.bytes += chunk.bytes.len();
        if chunk.seq > self.acked {
            self.unacked_bytes += chunk.bytes.len();
            self.unacked_chunks += 1;
        }
        self.chunks.push_back(chunk);
        self.evict();
    }

    /// Evicts the oldest chunks while past a bound (in lossless mode: acknowledged ones only).
    fn evict(&mut self) {
        while self.chunks.len() > 1
            && (self.bytes > self.max_bytes || self.chunks.len() > self.max_chunks)
        {
            if self.lossless && self.chunks.front().is_some_and(|c| c.seq > self.acked) {
                return;
            }
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.bytes.len();
                self.evicted_through = old.seq;
                if old.seq > self.acked {
                    self.unacked_bytes -= old.bytes.len();
                    self.unacked_chunks -= 1;
                    self.acked = old.seq;
                }
            }
        }
    }

    /// Switches lossless mode; leaving it evicts down to the bounds at once.
    pub(crate) fn set_lossless(&mut self, lossless: bool) {
        self.lossless = lossless;
        self.evict();
    }

    /// The client holds everything up to `seq` (callers clamp it to the last seq assigned):
    /// those chunks no longer count as unacknowledged. Acks never move back.
    pub(crate) fn ack(&mut self, seq: Seq) {
        if seq <= self.acked {
            return;
        }
        let start = self.chunks.partition_point(|c| c.seq <= self.acked);
        for c in self.chunks.range(start..) {
            if c.seq > seq {
                break;
            }
            self.unacked_bytes -= c.bytes.len();
            self.unacked_chunks -= 1;
        }
        self.acked = seq;
        self.evict();
    }

    /// Unacknowledged retained output: (bytes, chunks).
    pub(crate) fn unacked(&self) -> (usize, usize) {
        (self.unacked_bytes, self.unacked_chunks)
    }

    /// The highest evicted seq (`Seq(0)` if none).
    pub(crate) fn evicted_through(&self) -> Seq {
        self.evicted_through
    }

    /// The seq of the oldest retained chunk.
    pub(crate) fn first_seq(&self) -> Option<Seq> {
        self.chunks.front().map(|c| c.seq)
    }

    /// Whether a chunk with seq > `after` is retained.
    pub(crate) fn has_after(&self, after: Seq) -> bool {
        self.chunks.back().is_some_and(|c| c.seq > after)
    }

    /// Retained chunks with seq > `after`, oldest first.
    pub(crate) fn after(&self, after: Seq) -> impl Iterator<Item = &Chunk> {
        let start = self.chunks.partition_point(|c| c.seq <= after);
        self.chunks.range(start..)
    }

    /// All retained chunks, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter()
    }

    /// Retained bytes.
    #[cfg(test)]
    pub(crate) fn retained_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, len: usize) -> Chunk {
        Chunk {
            seq: Seq(seq),
            stream: Stream::Stdout,
            bytes: vec![b'x'; len],
        }
    }

    #[test]
    fn evicts_oldest_past_byte_bound() {
        let mut log = OutputLog::new(10, 100);
        for seq in 1..=4 {
            log.push(chunk(seq, 4));
        }
        assert_eq!(log.first_seq(), Some(Seq(3)));
        assert_eq!(log.evicted_through(), Seq(2));
        assert_eq!(log.retained_bytes(), 8);
    }

    #[test]
    fn evicts_oldest_past_chunk_bound() {
        let mut log = OutputLog::new(1000, 2);
        for seq in 1..=5 {
            log.push(chunk(seq, 1));
        }
        let seqs: Vec<u64> = log.iter().map(|c| c.seq.0).collect();
        assert_eq!(seqs, [4, 5]);
    }

    #[test]
    fn keeps_an_oversized_newest_chunk() {
        let mut log = OutputLog::new(4, 10);
        log.push(chunk(1, 2));
        log.push(chunk(2, 100));
        assert_eq!(log.first_seq(), Some(Seq(2)));
        assert_eq!(log.retained_bytes(), 100);
    }

    #[test]
    fn lossless_evicts_only_acknowledged_chunks() {
        let mut log = OutputLog::new(10, 100);
        log.set_lossless(true);
        for seq in 1..=4 {
            log.push(chunk(seq, 4));
        }
        assert_eq!(
            log.first_seq(),
            Some(Seq(1)),
            "nothing acknowledged, nothing evicted"
        );
        assert_eq!(log.unacked(), (16, 4));
        log.ack(Seq(3));
        assert_eq!(log.unacked(), (4, 1));
        assert_eq!(
            log.first_seq(),
            Some(Seq(3)),
            "acknowledged chunks evicted to the bound"
        );
        assert_eq!(log.evicted_through(), Seq(2));
        log.ack(Seq(1));
        assert_eq!(log.unacked(), (4, 1), "acks never move back");
        log.push(chunk(5, 4));
        log.set_lossless(false);
        assert_eq!(log.first_seq(), Some(Seq(4)));
        assert_eq!(log.unacked(), (8, 2));
        log.push(chunk(6, 4));
        assert_eq!(log.unacked(), (8, 2), "eviction counts as acknowledgement");
    }

    #[test]
    fn after_skips_seen_chunks() {
        let mut log = OutputLog::new(1000, 100);
        for seq in [1, 2, 4, 5] {
            log.push(chunk(seq, 1));
        }
        let seqs: Vec<u64> = log.after(Seq(2)).map(|c| c.seq.0).collect();
        assert_eq!(seqs, [4, 5]);
        assert!(log.has_after(Seq(4)));
        assert!(!log.has_after(Seq(5)));
    }
}
