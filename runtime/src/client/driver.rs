//! The client's driver task: owns the sans-IO client and the transport, and serves the
//! handles' commands.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use execd_core::client::{ClientError, ClientEvent, LostReason};
use execd_core::protocol::{method, StartParams};
use execd_core::RequestId;
use futures_lite::future;
use tracing::{debug, info, trace};

use super::fs_watch::{ChangeItem, FsChange};
use super::http::DeltaItem;
use super::process::{Event, EventSender};
use super::{with_timeout, Error, Status};
use crate::runtime::{BoxFuture, Child, Runtime};
use crate::transport::{self, FrameReader, FrameWriter, Inbound, Limits};

type Reply = Sender<Result<serde_json::Value, Error>>;
/// The answer to an `fs/readFile` or `fs/readBlock` call: the bytes and `eof`.
pub(super) type DataReply = Sender<Result<(Vec<u8>, bool), Error>>;

/// A request from a handle.
pub(super) enum Cmd {
    Call {
        method: String,
        params: serde_json::Value,
        reply: Reply,
    },
    /// `fs/readFile` or `fs/readBlock`: answered with the bytes, from a binary result frame
    /// (PROTOCOL.md §2.5) or from the JSON result.
    DataCall {
        method: String,
        params: serde_json::Value,
        reply: DataReply,
    },
    Start {
        /// Boxed: the `sandbox` object makes it far larger than the other commands.
        params: Box<StartParams>,
        events: EventSender,
        reply: Reply,
    },
    Write {
        process_id: String,
        bytes: Vec<u8>,
        reply: Reply,
    },
    /// ext `fs/watch`: the watch's changes go to `changes` until it is removed or the
    /// connection drops.
    FsWatch {
        watch_id: u64,
        params: serde_json::Value,
        changes: Sender<ChangeItem>,
        reply: Reply,
    },
    /// A streamed `http/request`: its deltas go to `deltas` until the terminal one.
    HttpStream {
        request_id: String,
        params: serde_json::Value,
        deltas: Sender<DeltaItem>,
        reply: Reply,
    },
    Close,
}

/// How to open a new transport for a reconnect.
pub(super) enum Connector {
    Ws {
        rt: Arc<dyn Runtime>,
        url: String,
        limits: Limits,
        timeout: Duration,
        security: transport::ClientSecurity,
    },
    /// A new `ssh HOST execd bridge` child per connection.
    Ssh(super::ssh::SshConnector),
    /// Nothing to reconnect to (stdio child, in-process pair).
    None,
}

impl Connector {
    pub(super) async fn connect(&self) -> io::Result<(FrameReader, FrameWriter)> {
        match self {
            Connector::Ws {
                rt,
                url,
                limits,
                timeout,
                security,
            } => with_timeout(
                &**rt,
                *timeout,
                transport::ws_connect_with(Arc::clone(rt), url, limits.clone(), security),
            )
            .await
            .unwrap_or_else(|| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no WebSocket handshake from {url} within {timeout:?}"),
                ))
            }),
            Connector::Ssh(ssh) => ssh.connect().await,
            Connector::None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "this transport cannot be reopened",
            )),
        }
    }
}

/// WebSocket close code 1001: the server is going away (shutting down).
const CLOSE_GOING_AWAY: u16 = 1001;

/// How long a stdio server child may take to exit after its stdin closed.
const CHILD_EXIT_GRACE: Duration = Duration::from_secs(5);

pub(super) struct Driver {
    rt: Arc<dyn Runtime>,
    core: execd_core::Client,
    connector: Arc<Connector>,
    cmds: Receiver<Cmd>,
    status: Arc<Status>,
    /// Until the first session is ready (or lost).
    ready: Option<Sender<Result<(), LostReason>>>,
    child: Option<Child>,
    calls: HashMap<RequestId, Reply>,
    /// `fs/readFile` and `fs/readBlock` calls, answered with bytes.
    data_calls: HashMap<RequestId, DataReply>,
    /// Start calls, until answered: their result is checked before the process is reported.
    starts: HashMap<RequestId, String>,
    processes: HashMap<String, EventSender>,
    /// Streamed `http/request`s by `requestId`, from the call until the terminal delta.
    http_streams: HashMap<String, Sender<DeltaItem>>,
    /// Their calls, until answered: an error answer ends the stream.
    http_calls: HashMap<RequestId, String>,
    /// `fs/watch` watches by `watchId`, from the call until removed or the connection drops.
    fs_watches: HashMap<u64, Sender<ChangeItem>>,
    /// Their calls, until answered: an error answer ends the stream.
    fs_watch_calls: HashMap<RequestId, u64>,
    reader: Option<FrameReader>,
    writer: Option<FrameWriter>,
    connecting: Option<BoxFuture<'static, io::Result<(FrameReader, FrameWriter)>>>,
    /// Between a drop and the resume (or the end): `Event::Reconnecting` was sent.
    recovering: bool,
    /// The server closed with "going away": the session ends as `LostReason::ServerStopped`.
    server_stopped: bool,
}

enum Wake {
    Cmd(Cmd),
    HandlesGone,
    Frame(Option<io::Result<Inbound>>),
    Connected(io::Result<(FrameReader, FrameWriter)>),
    Timer,
}

impl Driver {
    pub(super) fn new(
        rt: Arc<dyn Runtime>,
        core: execd_core::Client,
        connector: Connector,
        cmds: Receiver<Cmd>,
        status: Arc<Status>,
        ready: Sender<Result<(), LostReason>>,
        child: Option<Child>,
    ) -> Self {
        Driver {
            rt,
            core,
            connector: Arc::new(connector),
            cmds,
            status,
            ready: Some(ready),
            child,
            calls: HashMap::new(),
            data_calls: HashMap::new(),
            starts: HashMap::new(),
            processes: HashMap::new(),
            http_streams: HashMap::new(),
            http_calls: HashMap::new(),
            fs_watches: HashMap::new(),
            fs_watch_calls: HashMap::new(),
            reader: None,
            writer: None,
            connecting: None,
            recovering: false,
            server_stopped: false,
        }
    }

    pub(super) async fn run(mut self, reader: FrameReader, writer: FrameWriter) {
        self.reader = Some(reader);
        self.writer = Some(writer);
        self.core.handle_connected(self.rt.now());
        loop {
            self.flush().await;
            self.dispatch().await;
            if self.reader.is_some() && self.core.is_closed() {
                // The session is gone: drop the transport (the core sends nothing more).
                self.drop_transport();
            }
            let wake = self.wait().await;
            let now = self.rt.now();
            match wake {
                Wake::Cmd(cmd) => self.on_cmd(now, cmd),
                Wake::HandlesGone => break,
                Wake::Frame(Some(Ok(Inbound::Frame(bytes)))) => {
                    trace!(len = bytes.len(), "client: frame");
                    self.core.handle_message(now, &bytes);
                }
                Wake::Frame(Some(Ok(_))) => {
                    debug!("client: oversized frame from the server dropped")
                }
                Wake::Frame(Some(Err(e))) => {
                    debug!(error = %e, "client: connection failed");
                    self.disconnected(now);
                }
                Wake::Frame(None) => {
                    let code = self.reader.as_ref().and_then(FrameReader::close_code);
                    debug!(?code, "client: connection closed by the server");
                    if code == Some(CLOSE_GOING_AWAY) {
                        // The server is shutting down; its sessions go with it.
                        self.server_stopped = true;
                        self.drop_transport();
                        self.core.close();
                    } else {
                        self.disconnected(now);
                    }
                }
                Wake::Connected(Ok((reader, writer))) => {
                    debug!("client: reconnected");
                    self.reader = Some(reader);
                    self.writer = Some(writer);
                    self.core.handle_connected(now);
                }
                Wake::Connected(Err(e)) => {
                    debug!(error = %e, "client: reconnect failed");
                    self.core.handle_connect_failed(now);
                }
                Wake::Timer => self.core.handle_timeout(now),
            }
        }
        self.shutdown().await;
    }

    /// Waits for the first of: a command, a frame, a finished reconnect, the core's timer.
    async fn wait(&mut self) -> Wake {
        let deadline = self.core.poll_timeout();
        let rt = self.rt.clone();
        let cmds = &self.cmds;
        let reader = &mut self.reader;
        let connecting = &mut self.connecting;
        let commands = async {
            match cmds.recv().await {
                Ok(cmd) => Wake::Cmd(cmd),
                Err(_) => Wake::HandlesGone,
            }
        };
        let frames = async {
            match reader {
                Some(r) => Wake::Frame(r.recv().await),
                None => future::pending().await,
            }
        };
        let reconnect = async {
            match connecting {
                Some(connect) => Wake::Connected(connect.await),
                None => future::pending().await,
            }
        };
        let timer = async {
            match deadline {
                Some(at) => {
                    rt.sleep_until(at).await;
                    Wake::Timer
                }
                None => future::pending().await,
            }
        };
        let wake = future::or(commands, future::or(frames, future::or(reconnect, timer))).await;
        if matches!(wake, Wake::Connected(_)) {
            self.connecting = None;
        }
        wake
    }

    fn on_cmd(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Call {
                method,
                params,
                reply,
            } => match self.core.call(now, &method, params) {
                Ok(id) => {
                    self.calls.insert(id, reply);
                }
                Err(e) => answer_refused(&reply, e),
            },
            Cmd::DataCall {
                method,
                params,
                reply,
            } => match self.core.call(now, &method, params) {
                Ok(id) => {
                    self.data_calls.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.try_send(Err(refused(e)));
                }
            },
            Cmd::Start {
                params,
                events,
                reply,
            } => {
                let process_id = params.process_id.clone();
                match self.core.start(now, *params) {
                    Ok(id) => {
                        // Registered before any event can arrive, so none is missed.
                        self.processes.insert(process_id.clone(), events);
                        self.starts.insert(id.clone(), process_id);
                        self.calls.insert(id, reply);
                    }
                    Err(e) => answer_refused(&reply, e),
                }
            }
            Cmd::Write {
                process_id,
                bytes,
                reply,
            } => match self.core.write(now, &process_id, bytes) {
                Ok(id) => {
                    self.calls.insert(id, reply);
                }
                Err(e) => answer_refused(&reply, e),
            },
            Cmd::HttpStream {
                request_id,
                params,
                deltas,
                reply,
            } => match self.core.call(now, method::HTTP_REQUEST, params) {
                Ok(id) => {
                    // Registered before the call goes out, so no delta is missed.
                    self.http_streams.insert(request_id.clone(), deltas);
                    self.http_calls.insert(id.clone(), request_id);
                    self.calls.insert(id, reply);
                }
                Err(e) => answer_refused(&reply, e),
            },
            Cmd::FsWatch {
                watch_id,
                params,
                changes,
                reply,
            } => match self.core.call(now, method::FS_WATCH, params) {
                Ok(id) => {
                    // Registered before the call goes out, so no change is missed.
                    self.fs_watches.insert(watch_id, changes);
                    self.fs_watch_calls.insert(id.clone(), watch_id);
                    self.calls.insert(id, reply);
                }
                Err(e) => answer_refused(&reply, e),
            },
            Cmd::Close => self.core.close(),
        }
    }

    fn disconnected(&mut self, now: Instant) {
        self.drop_transport();
        // The server cancels a streamed request, and drops the watches, when its connection
        // drops.
        self.end_http_streams();
        self.core.handle_disconnect(now);
    }

    fn drop_transport(&mut self) {
        self.reader = None;
        self.writer = None;
    }

    /// Sends what the core wants sent, then flushes once.
    async fn flush(&mut self) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let mut sent = false;
        let mut result = Ok(());
        while let Some(text) = self.core.poll_transmit() {
            sent = true;
            result = writer.send(text).await;
            if result.is_err() {
                break;
            }
        }
        if sent && result.is_ok() {
            result = writer.flush().await;
        }
        if let Err(e) = result {
            debug!(error = %e, "client: send failed");
            self.disconnected(self.rt.now());
        }
    }

    /// Acts on every event of the core.
    async fn dispatch(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                ClientEvent::Connected {
                    session_id,
                    resumed,
                } => {
                    self.status.set_session(&session_id);
                    if resumed {
                        self.status.reconnects.fetch_add(1, Ordering::Relaxed);
                        info!(session = %session_id, "client: session resumed");
                    }
                    if std::mem::take(&mut self.recovering) {
                        self.notify_all(&Event::Resumed);
                    }
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.try_send(Ok(()));
                    }
                }
                ClientEvent::Response { id, result } => {
                    if let Some(process_id) = self.starts.remove(&id) {
                        if result.is_err() {
                            self.processes.remove(&process_id);
                        }
                    }
                    if let Some(watch_id) = self.fs_watch_calls.remove(&id) {
                        if result.is_err() {
                            self.fs_watches.remove(&watch_id);
                        }
                    }
                    if let Some(request_id) = self.http_calls.remove(&id) {
                        if result.is_err() {
                            self.http_streams.remove(&request_id);
                        }
                    }
                    if let Some(reply) = self.calls.remove(&id) {
                        let _ = reply.try_send(result.map_err(Error::from));
                    } else if let Some(reply) = self.data_calls.remove(&id) {
                        let _ = reply.try_send(result.map_err(Error::from).and_then(json_data));
                    }
                }
                ClientEvent::DataResponse { id, data, eof } => {
                    if let Some(reply) = self.data_calls.remove(&id) {
                        let _ = reply.try_send(Ok((data, eof)));
                    }
                }
                ClientEvent::Output {
                    process_id,
                    seq,
                    stream,
                    chunk,
                } => {
                    self.deliver(&process_id, Event::Output { seq, stream, chunk }, false)
                        .await;
                }
                ClientEvent::Exited {
                    process_id,
                    seq,
                    exit_code,
                    sandbox_denied,
                } => {
                    let event = Event::Exited {
                        seq,
                        exit_code,
                        sandbox_denied,
                    };
                    self.deliver(&process_id, event, false).await;
                }
                ClientEvent::Closed { process_id, seq } => {
                    self.deliver(&process_id, Event::Closed { seq }, true).await;
                }
                ClientEvent::Gap {
                    process_id,
                    lost_chunks,
                    first_retained_seq,
                } => {
                    let event = Event::Gap {
                        lost_chunks,
                        first_retained_seq,
                    };
                    self.deliver(&process_id, event, false).await;
                }
                ClientEvent::ProcessLost { process_id } => {
                    self.deliver(&process_id, Event::ProcessLost, true).await;
                }
                ClientEvent::Reconnect => {
                    if !std::mem::replace(&mut self.recovering, true) {
                        self.notify_all(&Event::Reconnecting);
                    }
                    self.reconnect();
                }
                ClientEvent::SessionLost { reason } => {
                    let reason = if self.server_stopped {
                        LostReason::ServerStopped
                    } else {
                        reason
                    };
                    info!(?reason, "client: session lost");
                    self.status.closed.store(true, Ordering::Release);
                    self.drop_transport();
                    self.connecting = None;
                    for (_, events) in self.processes.drain() {
                        events.try_send(Event::SessionLost(reason.clone()));
                    }
                    self.end_http_streams();
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.try_send(Err(reason));
                    }
                }
                ClientEvent::FsChanged(changed) => {
                    let Some(changes) = self.fs_watches.get(&changed.watch_id) else {
                        continue;
                    };
                    let watch_id = changed.watch_id;
                    // Waits while the watch's queue is full: backpressure onto the connection.
                    if changes.send(Ok(FsChange::from(changed))).await.is_err() {
                        self.fs_watches.remove(&watch_id);
                    }
                }
                ClientEvent::HttpBodyDelta(delta) => {
                    let Some(deltas) = self.http_streams.get(&delta.request_id) else {
                        continue;
                    };
                    let request_id = delta.request_id.clone();
                    let done = delta.done;
                    // Waits while the body's queue is full: backpressure onto the connection.
                    if deltas.send(Ok(delta)).await.is_err() || done {
                        self.http_streams.remove(&request_id);
                    }
                }
                _ => {}
            }
        }
    }

    /// Every streamed `http/request` body, and every `fs/watch` stream, fails with
    /// [`Error::Closed`].
    fn end_http_streams(&mut self) {
        self.http_calls.clear();
        for (_, deltas) in self.http_streams.drain() {
            let _ = deltas.try_send(Err(Error::Closed));
        }
        self.fs_watch_calls.clear();
        for (_, changes) in self.fs_watches.drain() {
            let _ = changes.try_send(Err(Error::Closed));
        }
    }

    /// Hands `event` to the process's handle, waiting while its queue is full (backpressure
    /// onto the connection). `last`: the stream ends after it.
    async fn deliver(&mut self, process_id: &str, event: Event, last: bool) {
        let Some(events) = self.processes.get(process_id) else {
            return;
        };
        if events.send(event).await.is_err() || last {
            // Every handle is gone (nobody listens), or the stream ended.
            self.processes.remove(process_id);
        }
    }

    /// Hands an informational event to every process, dropping it where the queue is full.
    fn notify_all(&self, event: &Event) {
        for events in self.processes.values() {
            events.try_send(event.clone());
        }
    }

    fn reconnect(&mut self) {
        self.drop_transport();
        let connector = self.connector.clone();
        self.connecting = Some(Box::pin(async move { connector.connect().await }));
    }

    async fn shutdown(mut self) {
        self.core.close();
        self.dispatch().await;
        if let Some(mut writer) = self.writer.take() {
            let _ = with_timeout(&*self.rt, Duration::from_secs(1), writer.close()).await;
        }
        self.reader = None;
        if let Some(mut child) = self.child.take() {
            // The stdio server stops when its stdin closes (dropped with the writer above);
            // give it a moment, then kill it.
            drop(child.stdin.take());
            let status = &mut child.status;
            if with_timeout(&*self.rt, CHILD_EXIT_GRACE, &mut *status)
                .await
                .is_none()
            {
                debug!("client: the server child did not exit; killing it");
                if let Some(pid) = rustix::process::Pid::from_raw(child.pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                let _ = status.await;
            }
        }
    }
}

fn answer_refused(reply: &Reply, e: ClientError) {
    let _ = reply.try_send(Err(refused(e)));
}

fn refused(e: ClientError) -> Error {
    match e {
        ClientError::ReservedMethod(m) => Error::ReservedMethod(m),
        _ => Error::Closed,
    }
}

/// The bytes of a JSON `fs/readFile` (`{dataBase64}`) or `fs/readBlock` (`{chunk, eof}`)
/// result.
fn json_data(result: serde_json::Value) -> Result<(Vec<u8>, bool), Error> {
    let text = result
        .get("dataBase64")
        .or_else(|| result.get("chunk"))
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| Error::InvalidResult(format!("no bytes in {result}")))?;
    let data = base64_simd::STANDARD
        .decode_to_vec(text)
        .map_err(|e| Error::InvalidResult(format!("bad base64: {e}")))?;
    let eof = result.get("eof").and_then(serde_json::Value::as_bool);
    Ok((data, eof.unwrap_or(false)))
}
