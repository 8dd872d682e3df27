//! Per-process delivery cursor: seq-ordered delivery, duplicate suppression, the reorder buffer
//! and the reconciliation of a `process/read` result with what was already delivered.

use std::collections::BTreeMap;

use crate::protocol::{ReadChunk, ReadResult, Stream};

/// Most out-of-order events buffered per process before the missing ones are given up on and
/// reported as a gap (a correct server never gets close: the buffer only spans one read).
const MAX_AHEAD: usize = 65_536;

/// One process event ready for delivery, in seq order. Seqs are raw `u64`s here; the client
/// wraps them in [`crate::Seq`] on the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// An output chunk.
    Output {
        seq: u64,
        stream: Stream,
        chunk: Vec<u8>,
    },
    /// The exit.
    Exited {
        seq: u64,
        exit_code: i32,
        sandbox_denied: bool,
    },
    /// The close (always the last event of a process).
    Closed { seq: u64 },
    /// `lost_chunks` seqs before `first_retained_seq` cannot be delivered.
    Gap {
        lost_chunks: u64,
        first_retained_seq: u64,
    },
}

impl Delivery {
    fn seq(&self) -> Option<u64> {
        match self {
            Delivery::Output { seq, .. }
            | Delivery::Exited { seq, .. }
            | Delivery::Closed { seq } => Some(*seq),
            Delivery::Gap { .. } => None,
        }
    }
}

/// What follows a paged read result ([`Tracker::on_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// It was complete and reconciled: nothing more to read.
    Done,
    /// A page was delivered: read on from the cursor.
    More,
    /// It could not be settled as a page: read once more without `maxBytes`.
    Unpaged,
}

/// Delivery state of one tracked process.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Every seq up to this one is delivered or reported lost (0: nothing yet).
    delivered: u64,
    /// Events that arrived ahead of a missing seq, by seq.
    ahead: BTreeMap<u64, Delivery>,
    exit_delivered: bool,
    closed: bool,
    /// The id of the gap-filling `process/read` in flight.
    pub(crate) reading: Option<i64>,
    /// The `afterSeq` of that read.
    pub(crate) read_after: u64,
    /// Whether that read carries a `maxBytes` (see [`Tracker::on_page`]).
    pub(crate) read_paged: bool,
    /// The `process/start` request that created this tracker, until it succeeds.
    pub(crate) start_request: Option<i64>,
    /// Output delivered since the last `process/ack` (lossless output).
    pub(crate) since_ack: super::ack::SinceAck,
}

impl Tracker {
    /// A tracker for a process being started by request `start_request`.
    pub(crate) fn new(start_request: i64) -> Self {
        Tracker {
            start_request: Some(start_request),
            ..Tracker::default()
        }
    }

    /// The last seq delivered in order (0 before the first).
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Whether `closed` was delivered; the tracker is then dropped.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether events wait behind a missing seq.
    pub(crate) fn has_gap(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// A notification. Duplicates (seq already delivered, or a second exit) are dropped; an
    /// event ahead of a missing seq is buffered. Returns whether a gap is now open, so the
    /// caller may read it from the server.
    pub(crate) fn on_notification(&mut self, event: Delivery, out: &mut Vec<Delivery>) -> bool {
        let Some(seq) = event.seq() else {
            return self.has_gap();
        };
        if self.closed
            || seq <= self.delivered
            || (self.exit_delivered && matches!(event, Delivery::Exited { .. }))
        {
            return self.has_gap();
        }
        if seq == self.delivered.saturating_add(1) {
            self.deliver(event, out);
            self.drain(out);
        } else {
            self.ahead.entry(seq).or_insert(event);
            if self.ahead.len() > MAX_AHEAD {
                self.flush_with_gaps(out);
            }
        }
        self.has_gap()
    }

    /// Reconciles the result of a `process/read` sent with `afterSeq` ≤ the cursor at the time
    /// (always the case: the cursor only moves forward). Everything in `(delivered, nextSeq)`
    /// is accounted for: retained chunks; the close at `nextSeq - 1`; the exit, if not yet
    /// delivered, at the highest seq no chunk uses (inside the retained range the exit is the
    /// only such seq; when it fell inside the evicted range its exact seq is unknown and it is
    /// reported right after the gap); every other unused seq is an evicted chunk, reported as a
    /// [`Delivery::Gap`] in its place. Then buffered notifications are flushed; if a gap is
    /// still open (only a misbehaving server leaves one) it is reported as lost.
    pub(crate) fn on_read(&mut self, result: ReadResult, out: &mut Vec<Delivery>) {
        self.reading = None;
        if self.closed {
            return;
        }
        self.reconcile(result, out);
        self.flush_with_gaps(out);
    }

    /// The result of a paged `process/read` (sent with `afterSeq` = `after` and a `maxBytes`).
    ///
    /// With `maxBytes` the server may stop early: the result then ends at its last chunk
    /// (`nextSeq` = that seq + 1) while `exited`/`closed` still describe the whole process, so
    /// such a page cannot be reconciled as complete. A result whose `nextSeq` is not its last
    /// chunk's seq + 1 (or that has no chunk) was not cut and goes to [`Tracker::on_read`].
    /// Of a page that may have been cut, only the run of consecutive chunks from the first one
    /// after the cursor is delivered, and what lies between the cursor and that first chunk
    /// (evicted chunks, or the exit) is settled with the server's `lostChunks` count: every
    /// seq in `(after, first chunk)` is an evicted chunk or the exit, so `lostChunks` equal to
    /// the hole means no exit, one less means the exit is in it. A hole that count does not
    /// explain (a server without the ext fields) asks for an unpaged read.
    pub(crate) fn on_page(
        &mut self,
        after: u64,
        result: ReadResult,
        out: &mut Vec<Delivery>,
    ) -> Page {
        let last = result.chunks.last().map(|c| c.seq);
        let maybe_cut = last.and_then(|s| s.checked_add(1)) == Some(result.next_seq);
        if !maybe_cut {
            self.on_read(result, out);
            return Page::Done;
        }
        self.reading = None;
        if self.closed {
            return Page::Done;
        }
        let a = self.delivered;
        let mut chunks: BTreeMap<u64, ReadChunk> = BTreeMap::new();
        for c in result.chunks {
            if c.seq > a {
                chunks.entry(c.seq).or_insert(c);
            }
        }
        let Some(&first) = chunks.keys().next() else {
            // Notifications delivered the page meanwhile: read on from the cursor.
            if a > after {
                return Page::More;
            }
            // Nothing past the cursor: let a complete read settle the rest.
            return Page::Unpaged;
        };
        let hole = first.saturating_sub(after.min(a)).saturating_sub(1);
        let lost = if result.first_retained_seq.is_some() {
            result.lost_chunks
        } else {
            0
        };
        let exit_in_hole = if hole == lost {
            false
        } else if result.exited && Some(hole) == lost.checked_add(1) {
            true
        } else {
            return Page::Unpaged;
        };
        let mut run = Vec::new();
        let mut next = first;
        for (seq, c) in chunks {
            if seq != next {
                break;
            }
            run.push(c);
            next = next.saturating_add(1);
        }
        // The run as a complete read of `(a, next)`: the hole before it becomes a gap (and
        // the exit, when it is in there), nothing is closed.
        let page = ReadResult {
            chunks: run,
            next_seq: next,
            exited: exit_in_hole,
            exit_code: result.exit_code,
            closed: false,
            failure: None,
            sandbox_denied: result.sandbox_denied,
            first_retained_seq: None,
            lost_chunks: 0,
        };
        self.reconcile(page, out);
        self.drain(out);
        Page::More
    }

    /// Accounts for everything in `(delivered, nextSeq)` of a complete read (see
    /// [`Tracker::on_read`]), without flushing the buffer.
    fn reconcile(&mut self, result: ReadResult, out: &mut Vec<Delivery>) {
        let a = self.delivered;
        let end = result.next_seq.max(a.saturating_add(1));
        let mut items: BTreeMap<u64, Delivery> = BTreeMap::new();
        for c in result.chunks {
            if c.seq > a && c.seq < end {
                items.entry(c.seq).or_insert(Delivery::Output {
                    seq: c.seq,
                    stream: c.stream,
                    chunk: c.chunk.0,
                });
            }
        }
        let mut closed_fallback = false;
        if result.closed {
            let s = end - 1;
            if s > a && !items.contains_key(&s) {
                items.insert(s, Delivery::Closed { seq: s });
            } else {
                closed_fallback = true;
            }
        }
        let exit_code = result.exit_code.unwrap_or(-1);
        let sandbox_denied = result.sandbox_denied;
        let mut exit_fallback = false;
        if result.exited && !self.exit_delivered {
            match highest_hole(&items, a, end) {
                Some(s) => {
                    items.insert(
                        s,
                        Delivery::Exited {
                            seq: s,
                            exit_code,
                            sandbox_denied,
                        },
                    );
                }
                None => exit_fallback = true,
            }
        }
        let mut cursor = a;
        for (seq, event) in items {
            if seq > cursor.saturating_add(1) {
                out.push(Delivery::Gap {
                    lost_chunks: seq - cursor - 1,
                    first_retained_seq: seq,
                });
            }
            if exit_fallback && matches!(event, Delivery::Closed { .. }) {
                exit_fallback = false;
                self.deliver_exit_fallback(cursor, exit_code, sandbox_denied, out);
            }
            self.deliver(event, out);
            cursor = seq;
        }
        if end - 1 > cursor {
            out.push(Delivery::Gap {
                lost_chunks: end - 1 - cursor,
                first_retained_seq: end,
            });
            self.delivered = self.delivered.max(end - 1);
        }
        if exit_fallback {
            self.deliver_exit_fallback(self.delivered, exit_code, sandbox_denied, out);
        }
        if closed_fallback && !self.closed {
            let seq = self.delivered;
            self.deliver(Delivery::Closed { seq }, out);
        }
    }

    /// A gap-filling read failed: report whatever is still missing as lost and deliver what was
    /// buffered behind it.
    pub(crate) fn on_read_failed(&mut self, out: &mut Vec<Delivery>) {
        self.reading = None;
        self.flush_with_gaps(out);
    }

    fn deliver_exit_fallback(
        &mut self,
        seq: u64,
        exit_code: i32,
        sandbox_denied: bool,
        out: &mut Vec<Delivery>,
    ) {
        if !self.exit_delivered {
            self.deliver(
                Delivery::Exited {
                    seq,
                    exit_code,
                    sandbox_denied,
                },
                out,
            );
        }
    }

    fn deliver(&mut self, event: Delivery, out: &mut Vec<Delivery>) {
        if self.closed {
            return;
        }
        match &event {
            Delivery::Exited { .. } if self.exit_delivered => return,
            Delivery::Exited { .. } => self.exit_delivered = true,
            Delivery::Closed { .. } => self.closed = true,
            _ => {}
        }
        if let Some(seq) = event.seq() {
            self.delivered = self.delivered.max(seq);
        }
        out.push(event);
        if self.closed {
            self.ahead.clear();
        }
    }

    /// Delivers buffered events that are next in line; drops those already covered.
    fn drain(&mut self, out: &mut Vec<Delivery>) {
        while let Some(entry) = self.ahead.first_entry() {
            let seq = *entry.key();
            if seq <= self.delivered {
                entry.remove();
            } else if seq == self.delivered.saturating_add(1) {
                let event = entry.remove();
                self.deliver(event, out);
            } else {
                break;
            }
        }
    }

    /// Delivers every buffered event, reporting each run of missing seqs before it as lost.
    fn flush_with_gaps(&mut self, out: &mut Vec<Delivery>) {
        loop {
            self.drain(out);
            let Some(&first) = self.ahead.keys().next() else {
                return;
            };
            out.push(Delivery::Gap {
                lost_chunks: first - self.delivered - 1,
                first_retained_seq: first,
            });
            self.delivered = first - 1;
        }
    }
}

/// The highest seq in `(after, end)` that no item uses.
fn highest_hole(items: &BTreeMap<u64, Delivery>, after: u64, end: u64) -> Option<u64> {
    let mut candidate = end - 1;
    for &k in items.keys().rev() {
        if k == candidate {
            candidate -= 1;
        } else if k < candidate {
            break;
        }
    }
    (candidate > after).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ReadChunk;

    fn out(seq: u64, b: &str) -> Delivery {
        Delivery::Output {
            seq,
            stream: Stream::Stdout,
            chunk: b.as_bytes().to_vec(),
        }
    }

    fn read(chunks: &[u64], next_seq: u64, exited: bool, closed: bool) -> ReadResult {
        ReadResult {
            chunks: chunks
                .iter()
                .map(|&seq| ReadChunk {
                    seq,
                    stream: Stream::Stdout,
                    chunk: format!("{seq}").into_bytes().into(),
                })
                .collect(),
            next_seq,
            exited,
            exit_code: exited.then_some(3),
            closed,
            failure: None,
            sandbox_denied: false,
            first_retained_seq: None,
            lost_chunks: 0,
        }
    }

    fn seqs(events: &[Delivery]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Delivery::Output { seq, .. } => format!("o{seq}"),
                Delivery::Exited { seq, .. } => format!("e{seq}"),
                Delivery::Closed { seq } => format!("c{seq}"),
                Delivery::Gap {
                    lost_chunks,
                    first_retained_seq,
                } => format!("gap{lost_chunks}<{first_retained_seq}"),
            })
            .collect()
    }

    #[test]
    fn in_order_notifications_pass_and_duplicates_drop() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        assert!(!t.on_notification(out(1, "a"), &mut ev));
        assert!(!t.on_notification(out(1, "a"), &mut ev));
        assert!(!t.on_notification(out(2, "b"), &mut ev));
        assert_eq!(seqs(&ev), ["o1", "o2"]);
        assert_eq!(t.delivered(), 2);
    }

    #[test]
    fn events_ahead_of_a_gap_wait_for_the_read() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        t.on_notification(out(1, "a"), &mut ev);
        assert!(t.on_notification(out(4, "d"), &mut ev));
        assert_eq!(seqs(&ev), ["o1"]);
        t.on_read(read(&[2, 3], 4, false, false), &mut ev);
        assert_eq!(seqs(&ev), ["o1", "o2", "o3", "o4"]);
        assert!(!t.has_gap());
    }

    #[test]
    fn exit_and_close_are_inferred_from_a_read_once() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        // output 1, exited 2, output 3, closed 4; the exit notification also arrives late.
        t.on_read(read(&[1, 3], 5, true, true), &mut ev);
        t.on_notification(
            Delivery::Exited {
                seq: 2,
                exit_code: 3,
                sandbox_denied: false,
            },
            &mut ev,
        );
        t.on_notification(Delivery::Closed { seq: 4 }, &mut ev);
        assert_eq!(seqs(&ev), ["o1", "e2", "o3", "c4"]);
        assert!(t.is_closed());
    }

    #[test]
    fn evicted_chunks_become_a_gap() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        // 1, 2 evicted; exit 3; 4 retained; closed 5.
        t.on_read(read(&[4], 6, true, true), &mut ev);
        assert_eq!(seqs(&ev), ["gap2<3", "e3", "o4", "c5"]);
    }

    #[test]
    fn a_delivered_exit_is_not_repeated_by_a_read() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        t.on_notification(
            Delivery::Exited {
                seq: 1,
                exit_code: 0,
                sandbox_denied: false,
            },
            &mut ev,
        );
        t.on_read(read(&[2], 4, true, true), &mut ev);
        assert_eq!(seqs(&ev), ["e1", "o2", "c3"]);
    }

    #[test]
    fn malformed_reads_still_end_in_one_exit_and_one_close() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        // nextSeq claims nothing new, yet exited and closed are set.
        t.on_notification(out(1, "a"), &mut ev);
        t.on_read(read(&[1, 0, 99], 1, true, true), &mut ev);
        assert_eq!(seqs(&ev), ["o1", "e1", "c1"]);
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        t.on_read(read(&[u64::MAX], u64::MAX, true, true), &mut ev);
        let ends: Vec<String> = seqs(&ev)
            .into_iter()
            .filter(|s| !s.starts_with("gap"))
            .collect();
        assert_eq!(ends.len(), 2, "one exit and one close: {ev:?}");
        assert!(t.is_closed());
    }

    #[test]
    fn a_cut_page_delivers_only_its_run_and_infers_nothing_past_it() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        t.on_notification(out(6, "f"), &mut ev);
        // Exited and closed describe the process, not the page: 1..3 of a process that ended.
        assert_eq!(
            t.on_page(0, read(&[1, 2, 3], 4, true, true), &mut ev),
            Page::More
        );
        assert_eq!(seqs(&ev), ["o1", "o2", "o3"]);
        assert!(t.has_gap(), "6 still waits");
        // A page stops at the first hole (the exit at 5 in a retained range).
        assert_eq!(
            t.on_page(3, read(&[4, 6], 7, true, true), &mut ev),
            Page::More
        );
        assert_eq!(seqs(&ev), ["o1", "o2", "o3", "o4"]);
        // The hole at the cursor with nothing evicted is the exit; 6 comes from the buffer.
        assert_eq!(t.on_page(4, read(&[6], 7, true, true), &mut ev), Page::More);
        assert_eq!(seqs(&ev), ["o1", "o2", "o3", "o4", "e5", "o6"]);
        // A result that was not cut is reconciled whole.
        assert_eq!(t.on_page(6, read(&[], 8, true, true), &mut ev), Page::Done);
        assert_eq!(seqs(&ev), ["o1", "o2", "o3", "o4", "e5", "o6", "c7"]);
    }

    #[test]
    fn a_cut_page_after_evicted_output_reports_the_gap_from_lost_chunks() {
        let evicted = |chunks: &[u64], next_seq, lost| ReadResult {
            first_retained_seq: chunks.first().copied(),
            lost_chunks: lost,
            ..read(chunks, next_seq, true, false)
        };
        // 1, 2 evicted, 3 retained: no exit in the hole.
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        assert_eq!(t.on_page(0, evicted(&[3], 4, 2), &mut ev), Page::More);
        assert_eq!(seqs(&ev), ["gap2<3", "o3"]);
        // 1, 2 evicted, exit at 3 (inside the evicted range's span), 4 retained.
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        assert_eq!(t.on_page(0, evicted(&[4], 5, 2), &mut ev), Page::More);
        assert_eq!(seqs(&ev), ["gap2<3", "e3", "o4"]);
        // A hole the count does not explain (no ext fields) asks for an unpaged read.
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        assert_eq!(
            t.on_page(0, read(&[4], 5, false, false), &mut ev),
            Page::Unpaged
        );
        assert!(ev.is_empty());
        assert_eq!(t.delivered(), 0);
    }

    #[test]
    fn a_failed_read_flushes_the_buffer_behind_a_gap() {
        let mut t = Tracker::default();
        let mut ev = Vec::new();
        t.on_notification(out(3, "c"), &mut ev);
        t.on_read_failed(&mut ev);
        assert_eq!(seqs(&ev), ["gap2<3", "o3"]);
    }
}
