//! `http/request`: the HTTP runner's wire types, their validation, and the sequencing of a
//! streamed body into `http/request/bodyDelta` notifications.
//!
//! The flow: the server decodes [`HttpRequestParams`], [`validates`](HttpRequestParams::validate)
//! them into an [`HttpRequest`] (or answers `-32602`), the runtime performs it, and the result
//! goes back as an [`HttpRequestResult`] (buffered, or with an empty body when streamed) followed,
//! when streamed, by the [`HttpBodyDeltaNotification`]s a [`BodyStream`] numbers.

mod body_stream;
mod body_streams;
mod request;
mod response;

pub use body_stream::BodyStream;
pub use body_streams::BodyStreams;
pub use request::{
    HttpCancelParams, HttpHeaderParam, HttpRequest, HttpRequestError, HttpRequestParams,
    RedirectPolicy,
};
pub use response::{
    body_failed_message, request_failed_message, HttpBodyDeltaNotification, HttpHeader,
    HttpRequestResult,
};
