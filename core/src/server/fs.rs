//! The `fs/*` methods (PROTOCOL.md, filesystem): validated here, performed by the runtime.
//!
//! A request decodes to an [`FsOp`] (`decode_fs_request`), leaves as [`Command::Fs`] under a
//! fresh [`FsTicket`], and is answered when the runtime feeds the result back with
//! [`Server::handle_fs`]. The answer goes to the connection that asked, and only while that
//! connection still holds its session; otherwise it is dropped. File handles and watches
//! belong to the connection: when it goes, [`Command::FsCloseConnection`] tells the runtime to
//! drop them, and late answers for it are ignored.
//!
//! `fs/watchMissing` keeps the watch ids of each connection here: a live id is not installed
//! twice (`{watching: false}`, as the reference answers), an empty `missing` list removes the
//! watch ([`Command::UnwatchMissing`]), and each watch fires `fs/missingChanged {watchId}`
//! at most once ([`Server::handle_fs_watch_event`]), as observed on the reference.
//!
//! The `sandbox` field of fs requests is decoded exactly (a malformed one is `-32602`) and
//! enforced (PROTOCOL.md, Sandbox): the resolved policy is checked here on the paths as given
//! ([`crate::sandbox::check_fs_op`]: a refused write `-32603` "Read-only file system (os error
//! 30)", a refused read `-32600` "Permission denied (os error 13)"), and travels with the
//! [`Command::Fs`] so the runtime checks the canonical paths again (no symlink escape).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use super::binary::encode_fs_bytes;
use super::outbound::{ok, Reply};
use super::{Command, ConnPhase, Output, Server};
use crate::ids::ConnId;
use crate::protocol::fs::{MissingChangedNotification, WatchMissingParams, WatchMissingResult};
use crate::protocol::{host_path, method, FsError, FsOp, FsRequest, FsResult};
use crate::rpc::{self, RequestId, RpcError};
use crate::sandbox::{check_fs_op, ResolveContext, SandboxPolicy};

/// Pieces an `fs/readFile` may read ahead of the client (credits issued with the command).
const READ_FILE_PIECE_WINDOW: usize = 4;

/// Spare bytes in front of each piece given to [`Server::handle_fs_piece`]: the header of
/// the result frame it becomes (PROTOCOL.md §2.5).
pub const FS_PIECE_HEADROOM: usize = crate::protocol::binary::HEADER_BYTES;

/// Bytes per piece of an `fs/readFile` result sent as binary result frames (one WebSocket
/// frame each with its header, see `OUT_FRAGMENT` in the runtime's transport).
pub(super) const READ_FILE_PIECE_BYTES: usize = 1 << 20;

/// Most live `fs/watchMissing` watches per connection; more are refused with `-32600`. The
/// reference publishes no bound.
pub const MAX_WATCHES_PER_CONNECTION: usize = 1024;

/// Names one fs operation (or watch install) between [`Command::Fs`] /
/// [`Command::WatchMissing`] and [`Server::handle_fs`]. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FsTicket(pub(crate) u64);

impl FsTicket {
    /// The raw number, for logs and runtime tables.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FsTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fs-{}", self.0)
    }
}

/// The fs bookkeeping of the server: requests in flight and each connection's watches.
#[derive(Debug, Default)]
pub(super) struct FsState {
    next_ticket: u64,
    pending: BTreeMap<FsTicket, Pending>,
    conns: BTreeMap<ConnId, ConnFs>,
    /// Piece credits held while their connection is congested.
    held: BTreeMap<ConnId, Vec<FsTicket>>,
}

/// One request waiting for the runtime.
#[derive(Debug)]
struct Pending {
    conn: ConnId,
    id: RequestId,
    install: Install,
    /// An `fs/readFile` answered whole: counted in [`ConnFs::whole_reads`] while it runs.
    whole_read: bool,
}

/// What a ticket installs besides answering its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Install {
    /// Nothing: a plain fs operation.
    Nothing,
    /// `fs/watchMissing` watch `watchId`.
    Missing(u64),
    /// `fs/watch` watch `watchId` (ext; `server/fs_watch.rs`).
    Watch(u64),
}

/// One connection's fs state.
#[derive(Debug, Default)]
struct ConnFs {
    in_flight: usize,
    /// Live watch ids (installing or installed).
    watches: BTreeMap<u64, ()>,
    /// Whole-file reads running (at most `max_whole_file_reads`).
    whole_reads: usize,
    /// Whole-file reads waiting for one of them to end (and the connection to drain).
    waiting: VecDeque<Command>,
}

impl FsState {
    /// Number of fs requests waiting for the runtime.
    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

impl Server {
    /// Every `fs/*` request but `fs/watchMissing`: one [`Command::Fs`], answered later.
    ///
    /// Errors: `-32600` when the connection already has
    /// [`max_fs_in_flight`](super::ServerConfig::max_fs_in_flight) requests in flight.
    pub(super) fn fs_request(&mut self, conn: ConnId, id: &RequestId, req: FsRequest) -> Reply {
        let sandbox = self.fs_sandbox(&req)?;
        let ticket = self.fs_ticket(conn, id, Install::Nothing)?;
        // A whole file for a binary connection streams in pieces (PROTOCOL.md §2.5), so the
        // read, the send and the client's receive overlap.
        let pieces = (matches!(req.op, FsOp::ReadFile { .. })
            && matches!(id, RequestId::Int(_))
            && self.binary_on(conn))
        .then_some(READ_FILE_PIECE_BYTES);
        let whole_read = pieces.is_none() && matches!(req.op, FsOp::ReadFile { .. });
        let command = Command::Fs {
            ticket,
            conn,
            op: req.op,
            sandbox,
            pieces,
        };
        if whole_read {
            if let Some(p) = self.fs.pending.get_mut(&ticket) {
                p.whole_read = true;
            }
            self.fs
                .conns
                .entry(conn)
                .or_default()
                .waiting
                .push_back(command);
            self.start_whole_reads(conn);
            return Ok(None);
        }
        self.out.push_back(Output::Command(command));
        if pieces.is_some() {
            for _ in 0..READ_FILE_PIECE_WINDOW {
                self.fs_piece_credit(ticket, conn);
            }
        }
        Ok(None)
    }

    /// One more piece for `fs/readFile` `ticket`: a [`Command::FsPull`] now, or when `conn`
    /// drains.
    fn fs_piece_credit(&mut self, ticket: FsTicket, conn: ConnId) {
        if self.is_congested(conn) {
            self.fs.held.entry(conn).or_default().push(ticket);
        } else {
            self.out
                .push_back(Output::Command(Command::FsPull { ticket }));
        }
    }

    /// `conn` drained below the low mark: its held piece credits go out, and waiting
    /// whole-file reads start.
    pub(super) fn release_fs_credits(&mut self, conn: ConnId) {
        for ticket in self.fs.held.remove(&conn).unwrap_or_default() {
            if self.fs.pending.contains_key(&ticket) {
                self.out
                    .push_back(Output::Command(Command::FsPull { ticket }));
            }
        }
        self.start_whole_reads(conn);
    }

    /// Starts the waiting whole-file reads of `conn` up to
    /// [`max_whole_file_reads`](super::ServerConfig::max_whole_file_reads) running, unless it
    /// is congested (its answers would only pile up).
    fn start_whole_reads(&mut self, conn: ConnId) {
        let limit = self.config.max_whole_file_reads;
        let congested = self.is_congested(conn);
        let Some(c) = self.fs.conns.get_mut(&conn) else {
            return;
        };
        while c.whole_reads < limit && !congested {
            let Some(command) = c.waiting.pop_front() else {
                break;
            };
            c.whole_reads += 1;
            self.out.push_back(Output::Command(command));
        }
    }

    /// A piece of the file an `fs/readFile` with [`Command::Fs::pieces`] is reading: `piece`
    /// holds [`FS_PIECE_HEADROOM`] spare bytes, then the file's bytes. It is sent at once as
    /// a result frame flagged `more` (its header written into the spare bytes: no copy), to
    /// the connection that asked while it holds its session, and earns the next piece's
    /// [`Command::FsPull`] (held while the connection is congested). Pieces for unknown
    /// tickets (the connection is gone) are dropped, as is a piece shorter than the headroom.
    pub fn handle_fs_piece(&mut self, now: Instant, ticket: FsTicket, piece: Vec<u8>) {
        let Some(p) = self.fs.pending.get(&ticket) else {
            return;
        };
        let (conn, id) = (p.conn, p.id.clone());
        if let RequestId::Int(n) = id {
            if self.owns_session(conn) && self.binary_on(conn) {
                if let Some(frame) = crate::protocol::binary::result_in_place(n, piece) {
                    self.transmit_wire(conn, super::binary::Wire::Binary(frame));
                }
            }
        }
        self.fs_piece_credit(ticket, conn);
        self.settle(now);
    }

    /// `fs/watchMissing {watchId, missing, present?}`.
    ///
    /// An empty `missing` removes the watch (`{watching: false}`); a live `watchId`, or a list
    /// of only foreign-host paths, is `{watching: false}` with nothing installed (the
    /// reference's answers); otherwise a [`Command::WatchMissing`], answered by the runtime.
    ///
    /// Errors: `-32600` past the in-flight bound or [`MAX_WATCHES_PER_CONNECTION`].
    pub(super) fn watch_missing(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        params: WatchMissingParams,
    ) -> Reply {
        let not_watching = || ok(&WatchMissingResult { watching: false });
        let watch_id = params.watch_id;
        if params.missing.is_empty() {
            let removed = self
                .fs
                .conns
                .get_mut(&conn)
                .and_then(|c| c.watches.remove(&watch_id))
                .is_some();
            if removed {
                self.out
                    .push_back(Output::Command(Command::UnwatchMissing { conn, watch_id }));
            }
            return not_watching();
        }
        let live = self.fs.conns.get(&conn).map_or(0, |c| c.watches.len());
        if self
            .fs
            .conns
            .get(&conn)
            .is_some_and(|c| c.watches.contains_key(&watch_id))
        {
            return not_watching();
        }
        if live >= MAX_WATCHES_PER_CONNECTION {
            return Err(RpcError::invalid_request(format!(
                "at most {MAX_WATCHES_PER_CONNECTION} fs/watchMissing watches may be live per connection"
            )));
        }
        // A foreign-host path can never appear here; the reference answers `watching: false`.
        let missing: Vec<_> = params
            .missing
            .iter()
            .filter_map(|uri| host_path(uri).ok())
            .collect();
        if missing.is_empty() {
            return not_watching();
        }
        let present = match params.present.as_ref().map(host_path) {
            None => None,
            Some(Ok(path)) => Some(path),
            Some(Err(_)) => return not_watching(),
        };
        let ticket = self.fs_ticket(conn, id, Install::Missing(watch_id))?;
        self.fs
            .conns
            .entry(conn)
            .or_default()
            .watches
            .insert(watch_id, ());
        self.out.push_back(Output::Command(Command::WatchMissing {
            ticket,
            conn,
            watch_id,
            missing,
            present,
        }));
        Ok(None)
    }

    /// The runtime finished the fs operation (or watch install) `ticket`: answer the request
    /// that asked for it, if its connection still holds its session. Unknown tickets (their
    /// connection is gone) are ignored.
    pub fn handle_fs(&mut self, now: Instant, ticket: FsTicket, result: Result<FsResult, FsError>) {
        let Some(p) = self.fs.pending.remove(&ticket) else {
            return;
        };
        if let Some(c) = self.fs.conns.get_mut(&p.conn) {
            c.in_flight = c.in_flight.saturating_sub(1);
            if p.whole_read {
                c.whole_reads = c.whole_reads.saturating_sub(1);
            }
        }
        match p.install {
            Install::Nothing => {}
            Install::Missing(watch_id) => self.on_watch_installed(p.conn, watch_id, &result),
            Install::Watch(watch_id) => {
                self.on_fs_watch_installed(p.conn, watch_id, ticket, result.is_ok());
            }
        }
        if self.owns_session(p.conn) {
            let bytes = result
                .as_ref()
                .ok()
                .and_then(|r| encode_fs_bytes(self.binary_on(p.conn), &p.id, r));
            match bytes {
                Some(wire) => self.transmit_wire(p.conn, wire),
                None => {
                    let reply = match result {
                        Ok(r) => ok(&r),
                        Err(e) => Err(e.to_rpc_error()),
                    };
                    self.reply(p.conn, &p.id, reply);
                }
            }
        }
        if p.whole_read {
            // After the answer was queued: a congested connection starts nothing more.
            self.start_whole_reads(p.conn);
        }
        self.settle(now);
    }

    /// A path watched by `watch_id` of `conn` appeared (or its watched ancestor changed):
    /// send `fs/missingChanged {watchId}` once and forget the watch. Events for unknown or
    /// removed watches are ignored.
    pub fn handle_fs_watch_event(&mut self, _now: Instant, conn: ConnId, watch_id: u64) {
        let live = self
            .fs
            .conns
            .get_mut(&conn)
            .and_then(|c| c.watches.remove(&watch_id))
            .is_some();
        if live && self.owns_session(conn) {
            let text = rpc::encode_notification(
                method::FS_MISSING_CHANGED,
                &MissingChangedNotification { watch_id },
            );
            self.transmit(conn, text);
        }
    }

    /// Number of fs requests (and watch installs) waiting for the runtime.
    pub fn pending_fs_count(&self) -> usize {
        self.fs.in_flight()
    }

    /// `conn` closed: forget its requests and watches, and tell the runtime to drop its
    /// handles and watches (only when it used fs at all).
    pub(super) fn drop_fs_of(&mut self, conn: ConnId) {
        self.fs.pending.retain(|_, p| p.conn != conn);
        self.fs.held.remove(&conn);
        self.drop_fs_watches_of(conn);
        if self.fs.conns.remove(&conn).is_some() {
            self.out
                .push_back(Output::Command(Command::FsCloseConnection { conn }));
        }
    }

    /// The resolved `sandbox` of an fs request, after checking its paths against it.
    fn fs_sandbox(&self, req: &FsRequest) -> Result<Option<SandboxPolicy>, RpcError> {
        let Some(params) = req.sandbox.as_ref() else {
            return Ok(None);
        };
        let ctx = ResolveContext {
            cwd: None,
            tmpdir: self.config.host_env.get("TMPDIR").map(PathBuf::from),
        };
        let policy = SandboxPolicy::resolve(params, &ctx)
            .map_err(|e| RpcError::invalid_params(e.to_string()))?;
        if let Some(policy) = &policy {
            check_fs_op(policy, &req.op).map_err(|e| e.to_rpc_error())?;
        }
        Ok(policy)
    }

    /// A fresh ticket for a request of `conn`, counted against its in-flight bound.
    pub(super) fn fs_ticket(
        &mut self,
        conn: ConnId,
        id: &RequestId,
        install: Install,
    ) -> Result<FsTicket, RpcError> {
        let limit = self.config.max_fs_in_flight;
        let c = self.fs.conns.entry(conn).or_default();
        if c.in_flight >= limit {
            return Err(RpcError::invalid_request(format!(
                "too many fs requests in flight on this connection (limit {limit})"
            )));
        }
        c.in_flight += 1;
        self.fs.next_ticket += 1;
        let ticket = FsTicket(self.fs.next_ticket);
        self.fs.pending.insert(
            ticket,
            Pending {
                conn,
                id: id.clone(),
                install,
                whole_read: false,
            },
        );
        Ok(ticket)
    }

    /// The install of `watch_id` was answered: keep the id only when the runtime watches.
    fn on_watch_installed(
        &mut self,
        conn: ConnId,
        watch_id: u64,
        result: &Result<FsResult, FsError>,
    ) {
        let watching = matches!(result, Ok(FsResult::WatchMissing(r)) if r.watching);
        let Some(c) = self.fs.conns.get_mut(&conn) else {
            return;
        };
        if watching {
            if !c.watches.contains_key(&watch_id) {
                // Cleared (or fired) while installing: the runtime's watch is not wanted.
                self.out
                    .push_back(Output::Command(Command::UnwatchMissing { conn, watch_id }));
            }
        } else {
            c.watches.remove(&watch_id);
        }
    }

    /// Whether `conn` is open and its session is attached to it.
    pub(super) fn owns_session(&self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        match c.phase {
            ConnPhase::Ready(sid) | ConnPhase::Initializing(sid) => self
                .sessions
                .get(&sid)
                .is_some_and(|s| s.conn == Some(conn)),
            ConnPhase::New => false,
        }
    }
}
