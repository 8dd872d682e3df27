use std::collections::BTreeMap;

use super::{BodyStream, HttpBodyDeltaNotification, HttpRequestError};

/// The active streamed `http/request`s of one connection, by `requestId`: the reservation rule
/// and a [`BodyStream`] each.
///
/// Only streamed requests reserve their id, from [`reserve`](BodyStreams::reserve) (before the
/// request is sent) until the terminal delta; a second streamed request with an active id is
/// refused, a buffered one may reuse it (matches the Codex exec-server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyStreams {
    active: BTreeMap<String, BodyStream>,
}

impl BodyStreams {
    /// No active streams.
    pub fn new() -> BodyStreams {
        BodyStreams::default()
    }

    /// Reserves `request_id` for a streamed request.
    ///
    /// # Errors
    /// [`HttpRequestError::StreamActive`] (`-32602`) if a stream with that id is active.
    pub fn reserve(&mut self, request_id: &str) -> Result<(), HttpRequestError> {
        if self.active.contains_key(request_id) {
            return Err(HttpRequestError::StreamActive(request_id.to_owned()));
        }
        self.active.insert(
            request_id.to_owned(),
            BodyStream::new(request_id.to_owned()),
        );
        Ok(())
    }

    /// Whether `request_id` is reserved.
    pub fn is_active(&self, request_id: &str) -> bool {
        self.active.contains_key(request_id)
    }

    /// The number of active streams.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether no stream is active.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// The deltas for a body chunk of `request_id`; none for an unknown id.
    pub fn chunk(&mut self, request_id: &str, bytes: Vec<u8>) -> Vec<HttpBodyDeltaNotification> {
        self.active
            .get_mut(request_id)
            .map(|stream| stream.chunk(bytes))
            .unwrap_or_default()
    }

    /// The terminal delta of `request_id` (with `error` if the body ended early) and the
    /// release of its id; `None` for an unknown id.
    pub fn finish(
        &mut self,
        request_id: &str,
        error: Option<String>,
    ) -> Option<HttpBodyDeltaNotification> {
        self.active.remove(request_id)?.finish(error)
    }

    /// Releases `request_id` without a delta: the request failed before its response head
    /// (the client got a `-32603` error instead of a result).
    pub fn release(&mut self, request_id: &str) {
        self.active.remove(request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_active_id_is_refused_until_its_terminal_delta() {
        let mut streams = BodyStreams::new();
        streams.reserve("s").expect("free");
        let err = streams.reserve("s").expect_err("active");
        assert_eq!(
            err.to_string(),
            "http/request streamResponse requestId `s` is already active"
        );
        assert_eq!(err.code(), -32602);
        assert_eq!(streams.chunk("s", b"ab".to_vec()).len(), 1);
        let last = streams.finish("s", None).expect("terminal");
        assert_eq!((last.seq, last.done), (2, true));
        assert!(streams.is_empty());
        streams.reserve("s").expect("free again");
    }

    #[test]
    fn unknown_ids_produce_nothing() {
        let mut streams = BodyStreams::new();
        assert!(streams.chunk("x", b"a".to_vec()).is_empty());
        assert_eq!(streams.finish("x", Some("e".into())), None);
        streams.reserve("y").expect("free");
        streams.release("y");
        assert!(!streams.is_active("y"));
    }
}
