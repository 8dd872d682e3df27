//! The server loop's HTTP side: performs the core's [`Command::Http`], [`Command::HttpPull`] and
//! [`Command::HttpCancel`] with one [`HttpRunner`], a task per request, and reports
//! [`HttpEvent`]s back through a channel.
//!
//! [`Command::Http`]: execd_core::Command::Http
//! [`Command::HttpPull`]: execd_core::Command::HttpPull
//! [`Command::HttpCancel`]: execd_core::Command::HttpCancel

use std::collections::HashMap;
use std::sync::Arc;

use async_channel::{Receiver, Sender};
use execd_core::protocol::{body_failed_message, request_failed_message, HttpRequest};
use execd_core::{HttpEvent, HttpTicket};
use tracing::debug;

use super::HttpRunner;
use crate::runtime::{Runtime, Task};

/// Events queued between the request tasks and the loop. Each streamed request has at most one
/// chunk on its way (one credit at a time), so this bounds nothing a client can grow.
const EVENT_QUEUE: usize = 256;

/// The `http/request`s in flight, by ticket.
pub(crate) struct HttpService {
    runtime: Arc<dyn Runtime>,
    runner: Arc<HttpRunner>,
    events: Sender<(HttpTicket, HttpEvent)>,
    requests: HashMap<HttpTicket, Running>,
}

struct Running {
    /// Dropping it cancels the request and closes its network connection.
    _task: Task,
    /// One `()` per body chunk the task may read.
    credits: Sender<()>,
    stream: bool,
}

impl HttpService {
    /// A service over `runner`; its events arrive on the returned receiver.
    pub(crate) fn new(
        runtime: Arc<dyn Runtime>,
        runner: HttpRunner,
    ) -> (HttpService, Receiver<(HttpTicket, HttpEvent)>) {
        let (events, rx) = async_channel::bounded(EVENT_QUEUE);
        let service = HttpService {
            runtime,
            runner: Arc::new(runner),
            events,
            requests: HashMap::new(),
        };
        (service, rx)
    }

    /// Starts request `ticket`.
    pub(crate) fn start(&mut self, ticket: HttpTicket, request: HttpRequest) {
        debug!(%ticket, method = %request.method, stream = request.stream, "http: request");
        let (credits, credit_rx) = async_channel::unbounded();
        let stream = request.stream;
        let task = self.runtime.spawn(Box::pin(perform(
            Arc::clone(&self.runner),
            ticket,
            request,
            credit_rx,
            self.events.clone(),
        )));
        self.requests.insert(
            ticket,
            Running {
                _task: task,
                credits,
                stream,
            },
        );
    }

    /// Stops `ticket`: its task is dropped, which closes its connection.
    pub(crate) fn cancel(&mut self, ticket: HttpTicket) {
        if self.requests.remove(&ticket).is_some() {
            debug!(%ticket, "http: cancelled");
        }
    }

    /// Notes an event on its way into the core: the last one of a request ends its entry.
    pub(crate) fn on_event(&mut self, ticket: HttpTicket, event: &HttpEvent) {
        let last = match event {
            HttpEvent::Head(_) => self.requests.get(&ticket).is_some_and(|r| !r.stream),
            HttpEvent::Chunk(_) => false,
            _ => true,
        };
        if last {
            self.requests.remove(&ticket);
        }
    }

    /// Drops every request (the server stops).
    pub(crate) fn clear(&mut self) {
        self.requests.clear();
    }

    /// One more body chunk for `ticket` ([`Command::HttpPull`]: the core issues it only while
    /// the connection is not congested).
    ///
    /// [`Command::HttpPull`]: execd_core::Command::HttpPull
    pub(crate) fn grant(&self, ticket: HttpTicket) {
        if let Some(r) = self.requests.get(&ticket) {
            let _ = r.credits.try_send(());
        }
    }
}

/// One request: the head (or the whole body when buffered), then one chunk per credit.
async fn perform(
    runner: Arc<HttpRunner>,
    ticket: HttpTicket,
    request: HttpRequest,
    credits: Receiver<()>,
    events: Sender<(HttpTicket, HttpEvent)>,
) {
    let stream = request.stream;
    let response = match runner.request(request).await {
        Ok(response) => response,
        Err(e) => {
            debug!(%ticket, error = %e, "http: request failed");
            let _ = events
                .send((ticket, HttpEvent::Failed(request_failed_message(&e))))
                .await;
            return;
        }
    };
    if !stream {
        let event = match response.collect().await {
            Ok(result) => HttpEvent::Head(result),
            Err(e) => HttpEvent::Failed(body_failed_message(&e)),
        };
        let _ = events.send((ticket, event)).await;
        return;
    }
    let mut response = response;
    if events
        .send((ticket, HttpEvent::Head(response.result())))
        .await
        .is_err()
    {
        return;
    }
    while credits.recv().await.is_ok() {
        let event = match response.chunk().await {
            Ok(Some(bytes)) => HttpEvent::Chunk(Vec::from(bytes)),
            Ok(None) => HttpEvent::End(None),
            Err(e) => HttpEvent::End(Some(e.to_string())),
        };
        let last = !matches!(event, HttpEvent::Chunk(_));
        if events.send((ticket, event)).await.is_err() || last {
            return;
        }
    }
}
