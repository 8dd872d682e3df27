//! `http/request` through a [`Client`]: buffered, or streamed with the body pulled chunk by
//! chunk from an [`HttpBody`].

use execd_core::protocol::{
    method, HttpBodyDeltaNotification, HttpCancelParams, HttpRequestParams, HttpRequestResult,
};

use super::driver::Cmd;
use super::{Client, Error};

/// Deltas queued between the driver and an [`HttpBody`] (each at most 1 MiB) before the driver
/// waits, which stops it reading the connection: a slow reader slows the server's download.
pub(crate) const DELTA_QUEUE: usize = 16;

/// What the driver hands an [`HttpBody`]: the next delta, or why none will come.
pub(crate) type DeltaItem = Result<HttpBodyDeltaNotification, Error>;

impl<R> Client<R> {
    /// `http/request`, buffered: the server performs the request and answers with status,
    /// headers and the whole body. `params.stream_response` is ignored (set to `false`).
    ///
    /// # Errors
    /// [`Error::Rpc`]: `-32602` for invalid params, `-32600` over the session's limit of
    /// concurrent requests, `-32603` "http/request failed: …" when the request failed before
    /// its response (or its body could not be read); [`Error::Closed`] as for
    /// [`call`](Self::call).
    pub async fn http_request(
        &self,
        mut params: HttpRequestParams,
    ) -> Result<HttpRequestResult, Error> {
        params.stream_response = false;
        let params =
            serde_json::to_value(&params).map_err(|e| Error::InvalidResult(e.to_string()))?;
        let result = self.call(method::HTTP_REQUEST, params).await?;
        serde_json::from_value(result).map_err(|e| Error::InvalidResult(e.to_string()))
    }

    /// `http/request`, streamed: returns the response head (status, headers, empty body) and an
    /// [`HttpBody`] yielding the body as the server reads it from the network. The server reads
    /// only as fast as the body is consumed. `params.request_id` must not name another active
    /// stream of this client (`-32602`); `params.stream_response` is set.
    ///
    /// # Errors
    /// As [`http_request`](Self::http_request).
    pub async fn http_request_stream(
        &self,
        mut params: HttpRequestParams,
    ) -> Result<(HttpRequestResult, HttpBody), Error> {
        params.stream_response = true;
        let request_id = params.request_id.clone();
        let params =
            serde_json::to_value(&params).map_err(|e| Error::InvalidResult(e.to_string()))?;
        let (deltas_tx, deltas) = async_channel::bounded(DELTA_QUEUE);
        let (reply, rx) = async_channel::bounded(1);
        self.send(Cmd::HttpStream {
            request_id: request_id.clone(),
            params,
            deltas: deltas_tx,
            reply,
        })
        .await?;
        let result = rx.recv().await.map_err(|_| Error::Closed)??;
        let head: HttpRequestResult =
            serde_json::from_value(result).map_err(|e| Error::InvalidResult(e.to_string()))?;
        let body = HttpBody {
            request_id,
            client: self.erased(),
            deltas,
            next_seq: 1,
            done: false,
        };
        Ok((head, body))
    }

    /// ext `http/cancel`: ends this client's active streamed request `request_id` (its body
    /// then fails with "cancelled"). An unknown id is not an error.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn http_cancel(&self, request_id: &str) -> Result<(), Error> {
        let params = HttpCancelParams {
            request_id: request_id.to_owned(),
        };
        let params =
            serde_json::to_value(&params).map_err(|e| Error::InvalidResult(e.to_string()))?;
        self.call(method::HTTP_CANCEL, params).await.map(|_| ())
    }
}

/// The body of a streamed `http/request`, delta by delta. Dropping it before the end cancels
/// the request on the server (`http/cancel`).
///
/// Read it (or drop it) promptly: like process output, a body whose queue is full stops the
/// client reading its connection, so every other answer on the session waits behind it.
#[derive(Debug)]
pub struct HttpBody {
    request_id: String,
    client: Client,
    deltas: async_channel::Receiver<DeltaItem>,
    next_seq: u64,
    done: bool,
}

impl HttpBody {
    /// The request's `requestId`.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The next body bytes (one `bodyDelta`, at most 1 MiB), or `None` at the end of the body.
    ///
    /// # Errors
    /// [`Error::HttpBody`] when the body ended early (the server's `error`: a read failure,
    /// the timeout, `"cancelled"`); [`Error::Closed`] when the connection dropped (the server
    /// cancels the request then); [`Error::InvalidResult`] for a delta out of seq order.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            if self.done {
                return Ok(None);
            }
            let delta = match self.deltas.recv().await {
                Ok(item) => item,
                Err(_) => Err(Error::Closed),
            };
            let delta = match delta {
                Ok(delta) => delta,
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            };
            if delta.seq != self.next_seq {
                self.done = true;
                return Err(Error::InvalidResult(format!(
                    "bodyDelta seq {} where {} was due",
                    delta.seq, self.next_seq
                )));
            }
            self.next_seq += 1;
            if delta.done {
                self.done = true;
                return match delta.error {
                    Some(error) => Err(Error::HttpBody(error)),
                    None => Ok(None),
                };
            }
            if !delta.delta_base64.0.is_empty() {
                return Ok(Some(delta.delta_base64.0));
            }
        }
    }

    /// Reads the rest of the body into one buffer.
    ///
    /// # Errors
    /// As [`next_chunk`](Self::next_chunk).
    pub async fn collect(mut self) -> Result<Vec<u8>, Error> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl Drop for HttpBody {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Fire and forget: nobody awaits the answer.
        let (reply, _) = async_channel::bounded(1);
        let params = serde_json::json!({ "requestId": self.request_id });
        let _ = self.client.shared.cmds.try_send(Cmd::Call {
            method: method::HTTP_CANCEL.to_owned(),
            params,
            reply,
        });
    }
}
