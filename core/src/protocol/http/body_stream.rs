use super::HttpBodyDeltaNotification;
use crate::protocol::Base64Bytes;
use crate::Seq;

/// Numbers a streamed response body into `http/request/bodyDelta` notifications: seq from 1,
/// deltas of at most [`MAX_DELTA`](BodyStream::MAX_DELTA) bytes, one terminal delta.
///
/// Pure bookkeeping: feed it the chunks as the network delivers them ([`chunk`]), then
/// [`finish`] once, with the error if the body ended early. After `finish` both return
/// nothing, so a late chunk or a second end (a cancel racing the end of the body) is dropped.
///
/// [`chunk`]: BodyStream::chunk
/// [`finish`]: BodyStream::finish
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyStream {
    request_id: String,
    next_seq: Seq,
    done: bool,
}

impl BodyStream {
    /// The largest delta, in decoded bytes: 1 MiB (matches the Codex exec-server).
    pub const MAX_DELTA: usize = 1 << 20;

    /// A stream for `request_id`, before its first delta.
    pub fn new(request_id: String) -> BodyStream {
        BodyStream {
            request_id,
            next_seq: Seq::FIRST,
            done: false,
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Whether the terminal delta was produced.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The deltas for `bytes` (one per [`MAX_DELTA`](Self::MAX_DELTA) bytes, in order); none
    /// for an empty chunk or after [`finish`](Self::finish). A chunk within the limit is moved,
    /// not copied.
    pub fn chunk(&mut self, bytes: Vec<u8>) -> Vec<HttpBodyDeltaNotification> {
        if self.done || bytes.is_empty() {
            return Vec::new();
        }
        if bytes.len() <= Self::MAX_DELTA {
            return vec![self.delta(bytes, false, None)];
        }
        bytes
            .chunks(Self::MAX_DELTA)
            .map(|part| part.to_vec())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|part| self.delta(part, false, None))
            .collect()
    }

    /// The terminal delta: `{"deltaBase64":"","done":true,"error":error}`. `None` if it was
    /// already produced.
    pub fn finish(&mut self, error: Option<String>) -> Option<HttpBodyDeltaNotification> {
        if self.done {
            return None;
        }
        let last = self.delta(Vec::new(), true, error);
        self.done = true;
        Some(last)
    }

    fn delta(
        &mut self,
        bytes: Vec<u8>,
        done: bool,
        error: Option<String>,
    ) -> HttpBodyDeltaNotification {
        let seq = self.next_seq;
        self.next_seq = seq.next();
        HttpBodyDeltaNotification {
            request_id: self.request_id.clone(),
            seq: seq.0,
            delta_base64: Base64Bytes(bytes),
            done,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seq_starts_at_one_and_the_terminal_delta_is_empty() {
        let mut stream = BodyStream::new("s".into());
        let first = stream.chunk(b"abc".to_vec());
        assert_eq!(first.len(), 1);
        assert_eq!(
            (
                first[0].seq,
                first[0].delta_base64.0.as_slice(),
                first[0].done
            ),
            (1, &b"abc"[..], false)
        );
        assert!(stream.chunk(Vec::new()).is_empty());
        let last = stream.finish(None).expect("first finish");
        assert_eq!(
            (last.seq, last.delta_base64.0.len(), last.done, last.error),
            (2, 0, true, None)
        );
        assert!(stream.is_done());
    }

    #[test]
    fn nothing_follows_the_terminal_delta() {
        let mut stream = BodyStream::new("s".into());
        let last = stream
            .finish(Some("timed out".into()))
            .expect("first finish");
        assert_eq!((last.seq, last.error.as_deref()), (1, Some("timed out")));
        assert!(stream.chunk(b"late".to_vec()).is_empty());
        assert_eq!(stream.finish(None), None);
    }

    #[test]
    fn a_large_chunk_is_split_at_one_mib() {
        let mut stream = BodyStream::new("s".into());
        let deltas = stream.chunk(vec![7; 2 * BodyStream::MAX_DELTA + 5]);
        let sizes: Vec<_> = deltas
            .iter()
            .map(|d| (d.seq, d.delta_base64.0.len()))
            .collect();
        assert_eq!(
            sizes,
            [
                (1, BodyStream::MAX_DELTA),
                (2, BodyStream::MAX_DELTA),
                (3, 5)
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever the chunking, the deltas carry the bytes in order, each non-empty and at
        /// most MAX_DELTA, with consecutive seqs from 1 and exactly one terminal delta.
        #[test]
        fn deltas_reassemble_the_body(sizes in prop::collection::vec(0usize..3 * BodyStream::MAX_DELTA, 0..4)) {
            let mut stream = BodyStream::new("s".into());
            let mut sent = Vec::new();
            let mut deltas = Vec::new();
            for (i, size) in sizes.iter().enumerate() {
                let chunk = vec![i as u8; *size];
                sent.extend_from_slice(&chunk);
                deltas.extend(stream.chunk(chunk));
            }
            deltas.extend(stream.finish(None));
            let mut got = Vec::new();
            for (i, d) in deltas.iter().enumerate() {
                prop_assert_eq!(d.seq, i as u64 + 1);
                prop_assert_eq!(d.done, i + 1 == deltas.len());
                prop_assert!(d.done || (!d.delta_base64.0.is_empty() && d.delta_base64.0.len() <= BodyStream::MAX_DELTA));
                got.extend_from_slice(&d.delta_base64.0);
            }
            prop_assert_eq!(got, sent);
        }
    }
}
