//! The HTTP runner's rules (PROTOCOL.md "HTTP runner"): `http/request` validated here, performed
//! by the runtime under a [`HttpTicket`], answered on the connection that sent it; a streamed
//! body becomes `http/request/bodyDelta` notifications pulled one network read at a time; ext
//! `http/cancel`.
//!
//! Flow control: the runtime reads a streamed body chunk only with a credit, a
//! [`Command::HttpPull`] issued after the head and after each chunk's deltas were queued for the
//! connection. While that connection is congested (see `congestion`) the credit is held here
//! and issued when it drains, so a large body to a slow client waits on the network instead of
//! in server memory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::time::Instant;

use super::binary::encode_body_delta;
use super::outbound::{ok, Reply};
use super::{Command, Output, Server, SessionId};
use crate::ids::ConnId;
use crate::protocol::{
    method, request_failed_message, BodyStreams, HttpBodyDeltaNotification, HttpCancelParams,
    HttpRequestParams, HttpRequestResult,
};
use crate::rpc::{self, ErrorCode, RequestId, RpcError};

/// The error of a cancelled streamed request's terminal delta (ext `http/cancel`).
pub(super) const CANCELLED: &str = "cancelled";

/// Body reads a streamed request may have in flight (credits issued after the head).
const CREDIT_WINDOW: usize = 4;

/// A server-wide handle for one `http/request`, allocated by the core when it asks the runtime
/// to perform it ([`Command::Http`]). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HttpTicket(pub(crate) u64);

impl HttpTicket {
    /// The raw number, for logs and runtime tables.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for HttpTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http-{}", self.0)
    }
}

/// What happened to an `http/request`, reported by the runtime through
/// [`Server::handle_http`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpEvent {
    /// The response head arrived: the `http/request` result. Buffered: with the whole body;
    /// streamed: with an empty body, the body following as [`HttpEvent::Chunk`]s.
    Head(HttpRequestResult),
    /// One streamed body chunk as read from the network (any size; the core splits it into
    /// deltas of at most 1 MiB). Only after a [`Command::HttpPull`] credit.
    Chunk(Vec<u8>),
    /// The streamed body ended: `None` at its end, or why it stopped early (a read error, the
    /// timeout).
    End(Option<String>),
    /// The request failed before its result: the whole `-32603` message (see
    /// [`request_failed_message`] and
    /// [`body_failed_message`](crate::protocol::body_failed_message)).
    Failed(String),
}

/// Every `http/request` in flight, and each connection's streamed `requestId`s.
#[derive(Debug, Default)]
pub(super) struct HttpState {
    next: u64,
    requests: BTreeMap<HttpTicket, Pending>,
    streams: BTreeMap<ConnId, BodyStreams>,
    /// Credits held while their connection is congested.
    held: BTreeMap<ConnId, Vec<HttpTicket>>,
}

impl HttpState {
    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }
}

#[derive(Debug)]
struct Pending {
    /// The connection that sent it: the only one its answers go to.
    conn: ConnId,
    sid: SessionId,
    /// The JSON-RPC id, until the result is sent.
    id: RequestId,
    request_id: String,
    stream: bool,
    /// The result was sent; a streamed request is now sending deltas.
    answered: bool,
}

impl Server {
    /// `http/request`: validates the params (`-32602`, with `valueEnvVar`s read from
    /// [`ServerConfig::host_env`](super::ServerConfig::host_env)), applies the per-session limit
    /// (`-32600`), reserves a streamed `requestId` on this connection (`-32602` while active),
    /// and asks the runtime to perform it. Answered later, from [`Server::handle_http`].
    pub(super) fn http_request(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        sid: SessionId,
        params: HttpRequestParams,
    ) -> Reply {
        let request_id = params.request_id.clone();
        let host_env = &self.config.host_env;
        let lookup = |var: &str| host_env.get(var).map(OsString::from);
        let request = params.validate(&lookup).map_err(|e| RpcError {
            code: e.code(),
            message: e.to_string(),
            data: None,
        })?;
        let max = self.config.max_http_requests;
        let in_flight = self.http.requests.values().filter(|p| p.sid == sid).count();
        if in_flight >= max {
            return Err(RpcError::invalid_request(format!(
                "too many concurrent http/request calls: at most {max} per session"
            )));
        }
        if request.stream {
            self.http
                .streams
                .entry(conn)
                .or_default()
                .reserve(&request_id)
                .map_err(|e| RpcError {
                    code: e.code(),
                    message: e.to_string(),
                    data: None,
                })?;
        }
        self.http.next += 1;
        let ticket = HttpTicket(self.http.next);
        self.http.requests.insert(
            ticket,
            Pending {
                conn,
                sid,
                id: id.clone(),
                request_id,
                stream: request.stream,
                answered: false,
            },
        );
        self.out
            .push_back(Output::Command(Command::Http { ticket, request }));
        Ok(None)
    }

    /// ext `http/cancel {requestId}` → `{}`: ends this connection's active streamed request
    /// with that id. After its result the terminal delta carries `error: "cancelled"`; before
    /// it, the request is answered `-32603 "http/request failed: cancelled"`. An unknown or
    /// finished id is not an error.
    pub(super) fn http_cancel(&mut self, conn: ConnId, params: &HttpCancelParams) -> Reply {
        let found = self.http.requests.iter().find_map(|(t, p)| {
            (p.conn == conn && p.stream && p.request_id == params.request_id).then_some(*t)
        });
        if let Some(ticket) = found {
            self.out
                .push_back(Output::Command(Command::HttpCancel { ticket }));
            self.finish_http(ticket, Some(CANCELLED.to_owned()));
        }
        ok(&serde_json::json!({}))
    }

    /// What happened to request `ticket`: see [`HttpEvent`] for the order the runtime reports
    /// in. Events for a request the core already finished (cancelled, or its connection
    /// closed) are ignored, as are events out of order.
    pub fn handle_http(&mut self, now: Instant, ticket: HttpTicket, event: HttpEvent) {
        let Some(p) = self.http.requests.get_mut(&ticket) else {
            return;
        };
        match event {
            HttpEvent::Head(result) if !p.answered => {
                let (conn, id, stream) = (p.conn, p.id.clone(), p.stream);
                p.answered = true;
                self.reply(conn, &id, ok(&result));
                if stream {
                    // A window of reads in flight hides the credit round trip; each chunk
                    // then earns one more.
                    for _ in 0..CREDIT_WINDOW {
                        self.http_credit(ticket, conn);
                    }
                } else {
                    self.http.requests.remove(&ticket);
                }
            }
            HttpEvent::Chunk(bytes) if p.answered => {
                let conn = p.conn;
                let deltas = self
                    .http
                    .streams
                    .get_mut(&conn)
                    .map(|s| s.chunk(&p.request_id, bytes))
                    .unwrap_or_default();
                for delta in deltas {
                    self.send_body_delta(conn, &delta);
                }
                self.http_credit(ticket, conn);
            }
            HttpEvent::End(error) => self.finish_http(ticket, error),
            HttpEvent::Failed(message) => {
                if p.answered {
                    // A body failure after the head ends the stream like `End`.
                    self.finish_http(ticket, Some(message));
                } else {
                    self.fail_http(ticket, message);
                }
            }
            HttpEvent::Head(_) | HttpEvent::Chunk(_) => {}
        }
        self.settle(now);
    }

    /// One more body chunk for `ticket`: a [`Command::HttpPull`] now, or when `conn` drains.
    fn http_credit(&mut self, ticket: HttpTicket, conn: ConnId) {
        if self.is_congested(conn) {
            self.http.held.entry(conn).or_default().push(ticket);
        } else {
            self.out
                .push_back(Output::Command(Command::HttpPull { ticket, conn }));
        }
    }

    /// `conn` drained below the low mark: its held credits go out.
    pub(super) fn release_http_credits(&mut self, conn: ConnId) {
        for ticket in self.http.held.remove(&conn).unwrap_or_default() {
            if self.http.requests.contains_key(&ticket) {
                self.out
                    .push_back(Output::Command(Command::HttpPull { ticket, conn }));
            }
        }
    }

    /// Ends request `ticket`: a streamed body gets its terminal delta (with `error`) and its id
    /// is released; a request still without a result is answered `-32603`.
    fn finish_http(&mut self, ticket: HttpTicket, error: Option<String>) {
        let Some(p) = self.http.requests.get(&ticket) else {
            return;
        };
        if !p.answered {
            let cause = error.unwrap_or_else(|| "response ended before its head".to_owned());
            self.fail_http(ticket, request_failed_message(&cause));
            return;
        }
        let conn = p.conn;
        let Some(p) = self.http.requests.remove(&ticket) else {
            return;
        };
        let last = self
            .http
            .streams
            .get_mut(&conn)
            .and_then(|s| s.finish(&p.request_id, error));
        if let Some(last) = last {
            self.send_body_delta(conn, &last);
        }
    }

    /// Sends one `http/request/bodyDelta` to `conn`: a binary frame when it negotiated them
    /// (PROTOCOL.md §2.5), else JSON; a delta with an `error` is always JSON.
    fn send_body_delta(&mut self, conn: ConnId, delta: &HttpBodyDeltaNotification) {
        match encode_body_delta(self.binary_on(conn), delta) {
            Some(wire) => self.transmit_wire(conn, wire),
            None => {
                let text = rpc::encode_notification(method::HTTP_REQUEST_BODY_DELTA, delta);
                self.transmit(conn, text);
            }
        }
    }

    /// Answers request `ticket` with `-32603 message` and forgets it.
    fn fail_http(&mut self, ticket: HttpTicket, message: String) {
        let Some(p) = self.http.requests.remove(&ticket) else {
            return;
        };
        if p.stream {
            if let Some(streams) = self.http.streams.get_mut(&p.conn) {
                streams.release(&p.request_id);
            }
        }
        self.reply(
            p.conn,
            &p.id,
            Err(RpcError::new(ErrorCode::Internal, message)),
        );
    }

    /// `conn` closed: every request it sent is cancelled ([`Command::HttpCancel`]) and
    /// forgotten.
    pub(super) fn cancel_http_of(&mut self, conn: ConnId) {
        let tickets: Vec<HttpTicket> = self
            .http
            .requests
            .iter()
            .filter(|(_, p)| p.conn == conn)
            .map(|(t, _)| *t)
            .collect();
        for ticket in tickets {
            self.http.requests.remove(&ticket);
            self.out
                .push_back(Output::Command(Command::HttpCancel { ticket }));
        }
        self.http.streams.remove(&conn);
        self.http.held.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::panic)]

    use serde_json::{json, Value};

    use super::*;
    use crate::protocol::{Base64Bytes, HttpHeader};
    use crate::server::ServerConfig;
    use crate::sim::Sim;

    fn sim(config: ServerConfig) -> Sim {
        let mut sim = Sim::with(config, crate::client::ClientConfig::default());
        sim.answer_commands = false;
        sim
    }

    /// A raw connection with a session, handshake done.
    fn session(sim: &mut Sim) -> ConnId {
        let conn = sim.connect_raw();
        sim.send_raw(
            conn,
            br#"{"id":0,"method":"initialize","params":{"clientName":"t"}}"#,
        );
        sim.send_raw(conn, br#"{"method":"initialized"}"#);
        sim.take_frames(conn);
        conn
    }

    fn frames(sim: &mut Sim, conn: ConnId) -> Vec<Value> {
        sim.take_frames(conn)
            .iter()
            .map(|t| serde_json::from_str(t).expect("json"))
            .collect()
    }

    fn request(sim: &mut Sim, conn: ConnId, id: i64, params: Value) {
        let msg = json!({"id": id, "method": "http/request", "params": params});
        sim.send_raw(conn, msg.to_string().as_bytes());
    }

    fn get(request_id: &str, stream: bool) -> Value {
        json!({"requestId": request_id, "method": "GET", "url": "http://example.test/x",
               "streamResponse": stream})
    }

    /// The ticket of the single `Command::Http` the last input gave.
    fn take_http(sim: &mut Sim) -> (HttpTicket, crate::protocol::HttpRequest) {
        match sim.take_commands().as_slice() {
            [Command::Http { ticket, request }] => (*ticket, request.clone()),
            other => panic!("expected one Http command, got {other:?}"),
        }
    }

    fn head(body: &[u8]) -> HttpEvent {
        HttpEvent::Head(HttpRequestResult {
            status: 200,
            headers: vec![HttpHeader {
                name: "content-type".into(),
                value: "text/plain".into(),
            }],
            body_base64: Base64Bytes(body.to_vec()),
        })
    }

    fn event(sim: &mut Sim, ticket: HttpTicket, ev: HttpEvent) {
        let now = sim.now;
        sim.server.handle_http(now, ticket, ev);
        sim.pump();
    }

    #[test]
    fn buffered_request_is_answered_once_on_its_connection() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        let other = session(&mut sim);
        request(&mut sim, conn, 5, get("r", false));
        let (ticket, req) = take_http(&mut sim);
        assert_eq!((req.method.as_str(), req.stream), ("GET", false));
        assert!(frames(&mut sim, conn).is_empty(), "answered later");
        event(&mut sim, ticket, head(b"hi"));
        let out = frames(&mut sim, conn);
        assert_eq!(
            out,
            [json!({"id": 5, "result": {"status": 200,
                "headers": [{"name": "content-type", "value": "text/plain"}], "bodyBase64": "aGk="}})]
        );
        assert!(frames(&mut sim, other).is_empty());
        assert!(
            sim.take_commands().is_empty(),
            "no credit for a buffered body"
        );
        assert_eq!(sim.server.http_request_count(), 0);
        event(&mut sim, ticket, head(b"again"));
        assert!(frames(&mut sim, conn).is_empty(), "late events are ignored");
    }

    #[test]
    fn streamed_body_follows_the_response_with_credits_and_a_terminal_delta() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        let (ticket, req) = take_http(&mut sim);
        assert!(req.stream);
        event(&mut sim, ticket, head(b""));
        assert_eq!(frames(&mut sim, conn)[0]["result"]["bodyBase64"], "");
        assert_eq!(
            sim.take_commands(),
            vec![Command::HttpPull { ticket, conn }; CREDIT_WINDOW],
            "the first credits follow the head"
        );
        event(&mut sim, ticket, HttpEvent::Chunk(vec![1; (1 << 20) + 1]));
        let deltas = frames(&mut sim, conn);
        let seqs: Vec<_> = deltas.iter().map(|d| d["params"]["seq"].clone()).collect();
        assert_eq!(seqs, [json!(1), json!(2)]);
        assert!(deltas
            .iter()
            .all(|d| d["method"] == "http/request/bodyDelta" && d["params"]["done"] == false));
        assert_eq!(sim.take_commands(), [Command::HttpPull { ticket, conn }]);
        event(&mut sim, ticket, HttpEvent::End(None));
        assert_eq!(
            frames(&mut sim, conn),
            [
                json!({"method": "http/request/bodyDelta", "params": {"requestId": "s", "seq": 3,
                "deltaBase64": "", "done": true, "error": null}})
            ]
        );
        assert!(sim.take_commands().is_empty());
        // Released: the id may stream again.
        request(&mut sim, conn, 2, get("s", true));
        take_http(&mut sim);
    }

    #[test]
    fn credits_wait_while_the_connection_is_congested() {
        let config = ServerConfig {
            congestion_high_bytes: 1000,
            congestion_low_bytes: 100,
            ..ServerConfig::default()
        };
        let mut sim = sim(config);
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        let (ticket, _) = take_http(&mut sim);
        sim.stall_raw(conn);
        event(&mut sim, ticket, head(b""));
        assert_eq!(sim.take_commands().len(), CREDIT_WINDOW);
        event(&mut sim, ticket, HttpEvent::Chunk(vec![0; 4000]));
        let held = sim.take_commands();
        assert!(
            !held.contains(&Command::HttpPull { ticket, conn }),
            "no credit while congested: {held:?}"
        );
        sim.flush_raw(conn);
        let released = sim.take_commands();
        assert!(
            released.contains(&Command::HttpPull { ticket, conn }),
            "the credit follows the drain: {released:?}"
        );
    }

    #[test]
    fn an_active_stream_id_is_refused_and_a_buffered_request_may_reuse_it() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        take_http(&mut sim);
        request(&mut sim, conn, 2, get("s", true));
        let err = frames(&mut sim, conn);
        assert_eq!(err[0]["error"]["code"], -32602);
        assert_eq!(
            err[0]["error"]["message"],
            "http/request streamResponse requestId `s` is already active"
        );
        assert!(sim.take_commands().is_empty());
        request(&mut sim, conn, 3, get("s", false));
        take_http(&mut sim);
        // Another connection has its own ids.
        let other = session(&mut sim);
        request(&mut sim, other, 1, get("s", true));
        take_http(&mut sim);
    }

    #[test]
    fn cancel_ends_the_stream_with_a_cancelled_delta() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        let (ticket, _) = take_http(&mut sim);
        event(&mut sim, ticket, head(b""));
        event(&mut sim, ticket, HttpEvent::Chunk(b"ab".to_vec()));
        frames(&mut sim, conn);
        sim.take_commands();
        sim.send_raw(
            conn,
            br#"{"id":9,"method":"http/cancel","params":{"requestId":"s"}}"#,
        );
        let out = frames(&mut sim, conn);
        assert_eq!(out[0]["params"]["seq"], 2);
        assert_eq!(out[0]["params"]["done"], true);
        assert_eq!(out[0]["params"]["error"], "cancelled");
        assert_eq!(out[1], json!({"id": 9, "result": {}}));
        assert_eq!(sim.take_commands(), [Command::HttpCancel { ticket }]);
        event(&mut sim, ticket, HttpEvent::Chunk(b"late".to_vec()));
        assert!(frames(&mut sim, conn).is_empty());
        // Unknown ids are not an error.
        sim.send_raw(
            conn,
            br#"{"id":10,"method":"http/cancel","params":{"requestId":"nope"}}"#,
        );
        assert_eq!(frames(&mut sim, conn), [json!({"id": 10, "result": {}})]);
    }

    #[test]
    fn cancel_before_the_head_fails_the_request() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        let (ticket, _) = take_http(&mut sim);
        sim.send_raw(
            conn,
            br#"{"id":2,"method":"http/cancel","params":{"requestId":"s"}}"#,
        );
        let out = frames(&mut sim, conn);
        assert_eq!(out[0]["id"], 1);
        assert_eq!(out[0]["error"]["code"], -32603);
        assert_eq!(out[0]["error"]["message"], "http/request failed: cancelled");
        assert_eq!(out[1], json!({"id": 2, "result": {}}));
        assert_eq!(sim.take_commands(), [Command::HttpCancel { ticket }]);
    }

    #[test]
    fn disconnect_cancels_the_connections_requests() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        let (a, _) = take_http(&mut sim);
        request(&mut sim, conn, 2, get("b", false));
        let (b, _) = take_http(&mut sim);
        sim.disconnect_raw(conn);
        assert_eq!(
            sim.take_commands(),
            [
                Command::HttpCancel { ticket: a },
                Command::HttpCancel { ticket: b }
            ]
        );
        assert_eq!(sim.server.http_request_count(), 0);
        event(&mut sim, a, head(b""));
        assert!(sim.take_commands().is_empty());
    }

    #[test]
    fn failure_before_the_head_is_32603_and_releases_the_id() {
        let mut sim = sim(ServerConfig::default());
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("s", true));
        let (ticket, _) = take_http(&mut sim);
        event(
            &mut sim,
            ticket,
            HttpEvent::Failed("http/request failed: too many redirects".into()),
        );
        let out = frames(&mut sim, conn);
        assert_eq!(
            out,
            [json!({"id": 1, "error": {"code": -32603,
                "message": "http/request failed: too many redirects"}})]
        );
        request(&mut sim, conn, 2, get("s", true));
        take_http(&mut sim);
    }

    #[test]
    fn the_session_limit_is_32600_naming_it() {
        let config = ServerConfig {
            max_http_requests: 2,
            ..ServerConfig::default()
        };
        let mut sim = sim(config);
        let conn = session(&mut sim);
        request(&mut sim, conn, 1, get("a", false));
        request(&mut sim, conn, 2, get("b", true));
        assert_eq!(sim.take_commands().len(), 2);
        request(&mut sim, conn, 3, get("c", false));
        let out = frames(&mut sim, conn);
        assert_eq!(out[0]["error"]["code"], -32600);
        assert_eq!(
            out[0]["error"]["message"],
            "too many concurrent http/request calls: at most 2 per session"
        );
    }

    #[test]
    fn value_env_var_reads_the_host_env_snapshot() {
        let mut config = ServerConfig::default();
        config.host_env.insert("TOKEN".into(), "s3cr3t".into());
        let mut sim = sim(config);
        let conn = session(&mut sim);
        let mut params = get("r", false);
        params["headers"] = json!([{"name": "Authorization", "value": "Bearer ",
                                    "valueEnvVar": "TOKEN"}]);
        request(&mut sim, conn, 1, params.clone());
        let (_, req) = take_http(&mut sim);
        assert_eq!(req.headers[0].1, "Bearer s3cr3t");
        params["headers"][0]["valueEnvVar"] = json!("UNSET");
        request(&mut sim, conn, 2, params);
        let out = frames(&mut sim, conn);
        assert_eq!(out[0]["error"]["code"], -32602);
        assert_eq!(
            out[0]["error"]["message"],
            "http/request header Authorization requires executor environment variable UNSET"
        );
    }

    #[test]
    fn bad_params_are_32602_and_need_a_session() {
        let mut sim = sim(ServerConfig::default());
        let fresh = sim.connect_raw();
        request(&mut sim, fresh, 1, get("r", false));
        assert_eq!(frames(&mut sim, fresh)[0]["error"]["code"], -32600);
        let conn = session(&mut sim);
        request(
            &mut sim,
            conn,
            1,
            json!({"method": "GET", "url": "http://a/"}),
        );
        request(
            &mut sim,
            conn,
            2,
            json!({"requestId": "r", "method": "GET", "url": "ftp://a/"}),
        );
        let out = frames(&mut sim, conn);
        assert!(out.iter().all(|f| f["error"]["code"] == -32602), "{out:?}");
        assert!(sim.take_commands().is_empty());
    }
}
