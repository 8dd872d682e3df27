//! A process's retained output: a ring of chunks bounded in bytes and in count.

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
/// evicted so readers can be told what they lost).
#[derive(Debug)]
pub(crate) struct OutputLog {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    max_bytes: usize,
    max_chunks: usize,
    /// The highest seq evicted, `Seq(0)` when nothing was.
    evicted_through: Seq,
}

impl OutputLog {
    pub(crate) fn new(max_bytes: usize, max_chunks: usize) -> Self {
        OutputLog {
            chunks: VecDeque::new(),
            bytes: 0,
            max_bytes,
            max_chunks: max_chunks.max(1),
            evicted_through: Seq(0),
        }
    }

    /// Appends a chunk (seqs must increase) and evicts the oldest chunks past the bounds. The
    /// newest chunk is always kept, even when it alone exceeds the byte bound.
    pub(crate) fn push(&mut self, chunk: Chunk) {
        self.bytes += chunk.bytes.len();
        self.chunks.push_back(chunk);
        while self.chunks.len() > 1
            && (self.bytes > self.max_bytes || self.chunks.len() > self.max_chunks)
        {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.bytes.len();
                self.evicted_through = old.seq;
            }
        }
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
