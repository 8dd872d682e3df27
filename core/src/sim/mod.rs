//! The one simulation harness of the core (feature `fuzzing`, and this crate's unit tests):
//! a [`Server`], a [`Client`], the network between them, fake children answering the
//! server's commands, and a simulated clock. The unit tests of both machines, the fuzz
//! bodies, the proptests and the benches drive it, so a fix to how time, the network or a
//! child is simulated lands everywhere at once (quinn-proto's `Pair`, firezone's simulator).
//!
//! - **Clock**: [`Sim::now`] moves only with [`Sim::advance`] / [`Sim::advance_to_next_timer`],
//!   which fire both machines' timers.
//! - **Network**: the client's transport is [`Sim::link`] (a server connection); frames wait
//!   in [`Sim::c2s`] / [`Sim::s2c`] until [`Sim::step`] delivers one. Connections opened with
//!   [`Sim::connect_raw`] have no client: what the server sends on them is collected in
//!   [`Sim::frames`] and [`Sim::closed`], for tests that speak JSON-RPC by hand.
//! - **Children**: every [`Command`] is recorded in [`Sim::commands`]; with
//!   [`Sim::answer_commands`] on, the fake children of [`children`] answer them (a `cat` that
//!   echoes stdin, exits at stdin EOF, on a signal or a kill).
//! - **Driving**: [`Sim::pump`] moves every output of both machines into the network, the
//!   children and the records until nothing moves (no frame is delivered); [`Sim::step`]
//!   delivers one frame, then pumps; [`Sim::drive`] steps until both sides are quiet.
//!
//! Harness code: a panic is a failed test, so `expect` is the point.

#![allow(clippy::expect_used, clippy::panic)]

pub mod children;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub use children::FakeProc;

use crate::client::{Client, ClientConfig, ClientEvent};
use crate::ids::{ConnId, ProcessKey};
use crate::server::{Command, ExitStatus, Output, ProcessEvent, Server, ServerConfig};

/// Most frames [`Sim::drive`] delivers before calling it a livelock.
pub const DRIVE_LIMIT: usize = 10_000;

/// Server, client, network, children and clock; see the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    /// The simulated time every input is stamped with.
    pub now: Instant,
    /// The server machine.
    pub server: Server,
    /// The client machine (idle until [`Sim::connect`]).
    pub client: Client,
    /// The server connection the client's transport reaches, while it is up.
    pub link: Option<ConnId>,
    /// Connections whose client side dropped without the server noticing yet, with the
    /// frames still on their way to the server (it reads them before it notices, see
    /// [`Sim::notice_drops`]).
    pub stale: Vec<(ConnId, VecDeque<String>)>,
    /// Frames in flight from the client to the server (on `link`).
    pub c2s: VecDeque<String>,
    /// Frames in flight from the server to the client (on `link`).
    pub s2c: VecDeque<String>,
    /// Connections without a client ([`Sim::connect_raw`]).
    pub raw: BTreeSet<ConnId>,
    /// Frames the server sent on raw connections, in order.
    pub frames: Vec<(ConnId, String)>,
    /// Binary frames the server sent (ext, PROTOCOL.md §2.5), on any connection, in order.
    /// They are reported written at once; on the link they also reach the client at once,
    /// ahead of text frames still in [`Sim::s2c`] (binary frames are not queued).
    pub binary_frames: Vec<(ConnId, Vec<u8>)>,
    /// Raw connections the server closed, in order.
    pub closed: Vec<ConnId>,
    /// Connections the server dropped ([`Output::Drop`]), in order; the harness reports the
    /// disconnect at once, as a runtime does.
    pub dropped: Vec<ConnId>,
    /// Raw connections whose peer does not read: what the server sends them is not reported
    /// written ([`Server::handle_sent`]) until [`Sim::flush_raw`]; the bytes held, by
    /// connection. Other raw connections report every frame written at once.
    pub stalled: BTreeMap<ConnId, usize>,
    /// Connections whose reading the server paused ([`Command::PauseReading`]).
    pub reading_paused: BTreeSet<ConnId>,
    /// Every command the server gave, in order (whether or not the children answer it).
    pub commands: Vec<Command>,
    /// Whether to record [`Sim::commands`] (off in the benches).
    pub record_commands: bool,
    /// Whether the fake children answer commands.
    pub answer_commands: bool,
    /// The fake children, by process key.
    pub procs: BTreeMap<ProcessKey, FakeProc>,
    /// Answer a spawn at once with `Spawned` (off: [`Sim::held_spawns`] waits for
    /// [`Sim::release_spawns`]).
    pub auto_spawn: bool,
    /// Spawns not answered yet.
    pub held_spawns: Vec<ProcessKey>,
    /// Answer the client's `Reconnect` by opening a transport (`false`: by failing).
    pub connect_ok: bool,
    /// Answer `Reconnect` at all while pumping (off: the test connects by hand).
    pub auto_connect: bool,
    /// Every `initialize` frame the client sent.
    pub initializes: usize,
    /// Every event the client gave, in order.
    pub events: Vec<ClientEvent>,
}

impl Sim {
    /// A simulation with the default server and client configurations.
    pub fn new() -> Self {
        Self::with(ServerConfig::default(), ClientConfig::default())
    }

    /// A simulation with these configurations; fixed seeds make every run the same.
    pub fn with(server: ServerConfig, client: ClientConfig) -> Self {
        Sim {
            now: Instant::now(),
            server: Server::new(server, [42; 32]),
            client: Client::new(client, [0xab; 16]),
            link: None,
            stale: Vec::new(),
            c2s: VecDeque::new(),
            s2c: VecDeque::new(),
            raw: BTreeSet::new(),
            frames: Vec::new(),
            binary_frames: Vec::new(),
            closed: Vec::new(),
            dropped: Vec::new(),
            stalled: BTreeMap::new(),
            reading_paused: BTreeSet::new(),
            commands: Vec::new(),
            record_commands: true,
            answer_commands: true,
            procs: BTreeMap::new(),
            auto_spawn: true,
            held_spawns: Vec::new(),
            connect_ok: true,
            auto_connect: true,
            initializes: 0,
            events: Vec::new(),
        }
    }

    // ----- raw connections ---------------------------------------------------------------

    /// Opens a server connection with no client behind it.
    pub fn connect_raw(&mut self) -> ConnId {
        self.connect_raw_as(None)
    }

    /// Like [`Sim::connect_raw`], for a connection that authenticated as `principal`.
    pub fn connect_raw_as(&mut self, principal: Option<crate::Principal>) -> ConnId {
        let conn = self.server.handle_connect_as(self.now, principal);
        self.raw.insert(conn);
        conn
    }

    /// One frame on a raw connection, then [`Sim::pump`].
    pub fn send_raw(&mut self, conn: ConnId, text: &[u8]) {
        self.server
            .handle_message(self.now, conn, text)
            .expect("the connection is open");
        self.pump();
    }

    /// Drops a raw connection, then [`Sim::pump`].
    pub fn disconnect_raw(&mut self, conn: ConnId) {
        if self.dropped.contains(&conn) {
            // The harness reported it when the server dropped it.
            self.pump();
            return;
        }
        self.server
            .handle_disconnect(self.now, conn)
            .expect("the connection is open");
        self.pump();
    }

    /// The peer of raw connection `conn` stops reading (see [`Sim::stalled`]).
    pub fn stall_raw(&mut self, conn: ConnId) {
        self.stalled.entry(conn).or_insert(0);
    }

    /// The peer of stalled raw connection `conn` reads everything sent so far and keeps
    /// reading; the server is told, then [`Sim::pump`].
    pub fn flush_raw(&mut self, conn: ConnId) {
        if let Some(bytes) = self.stalled.remove(&conn) {
            self.server.handle_sent(self.now, conn, bytes);
        }
        self.pump();
    }

    /// The frames sent on `conn` so far, removed from [`Sim::frames`].
    pub fn take_frames(&mut self, conn: ConnId) -> Vec<String> {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.frames)
            .into_iter()
            .partition(|(c, _)| *c == conn);
        self.frames = rest;
        mine.into_iter().map(|(_, text)| text).collect()
    }

    /// The commands recorded so far, removed.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    // ----- the client's transport --------------------------------------------------------

    /// Opens the client's transport (the client sends `initialize`), then [`Sim::pump`].
    pub fn connect(&mut self) {
        self.open_link();
        self.pump();
    }

    fn open_link(&mut self) {
        let conn = self.server.handle_connect(self.now);
        self.link = Some(conn);
        self.client.handle_connected(self.now);
    }

    /// The client's transport drops and the frames in flight are lost. The server learns of
    /// it now (`server_notices`) or at [`Sim::notice_drops`].
    pub fn drop_link(&mut self, server_notices: bool) {
        let Some(conn) = self.link.take() else {
            return;
        };
        self.c2s.clear();
        self.s2c.clear();
        if server_notices {
            self.server
                .handle_disconnect(self.now, conn)
                .expect("the link's connection is open");
        } else {
            self.stale.push((conn, VecDeque::new()));
        }
        self.client.handle_disconnect(self.now);
    }

    /// The server reads what was still on its way on each dropped connection, then notices
    /// the drop; then [`Sim::pump`].
    pub fn notice_drops(&mut self) {
        for (conn, frames) in std::mem::take(&mut self.stale) {
            for text in frames {
                // Closed by an earlier frame: the rest is not read.
                if self
                    .server
                    .handle_message(self.now, conn, text.as_bytes())
                    .is_err()
                {
                    break;
                }
                self.pump();
            }
            self.server.handle_disconnect(self.now, conn).ok();
        }
        self.pump();
    }

    // ----- driving -----------------------------------------------------------------------

    /// Moves what each side produced into the network, the children and the records, and
    /// answers `Reconnect`, until nothing moves. Delivers no frame.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(text) = self.client.poll_transmit() {
                moved = true;
                if text.contains(r#""method":"initialize""#) {
                    self.initializes += 1;
                }
                if self.link.is_some() {
                    self.c2s.push_back(text);
                }
            }
            while let Some(ev) = self.client.poll_event() {
                moved = true;
                if ev == ClientEvent::Reconnect && self.auto_connect {
                    if self.connect_ok {
                        self.open_link();
                    } else {
                        self.client.handle_connect_failed(self.now);
                    }
                }
                self.events.push(ev);
            }
            while let Some(out) = self.server.poll_output() {
                moved = true;
                self.route(out);
            }
            if !moved {
                break;
            }
        }
    }

    fn route(&mut self, out: Output) {
        match out {
            Output::Transmit { conn, text } => {
                if Some(conn) == self.link {
                    self.s2c.push_back(text);
                } else if self.raw.contains(&conn) {
                    let len = text.len();
                    self.frames.push((conn, text));
                    match self.stalled.get_mut(&conn) {
                        Some(held) => *held += len,
                        None => self.server.handle_sent(self.now, conn, len),
                    }
                }
            }
            Output::TransmitBinary { conn, frame } => {
                match self.stalled.get_mut(&conn) {
                    Some(held) => *held += frame.len(),
                    None => self.server.handle_sent(self.now, conn, frame.len()),
                }
                if Some(conn) == self.link {
                    self.client.handle_message(self.now, &frame);
                }
                self.binary_frames.push((conn, frame));
            }
            Output::Drop { conn } => {
                self.dropped.push(conn);
                self.stalled.remove(&conn);
                if Some(conn) == self.link {
                    self.drop_link(true);
                } else {
                    self.stale.retain(|(c, _)| *c != conn);
                    self.server.handle_disconnect(self.now, conn).ok();
                }
            }
            Output::Close { conn } => {
                if Some(conn) == self.link {
                    self.drop_link(true);
                } else if self.raw.contains(&conn) {
                    self.closed.push(conn);
                } else {
                    self.stale.retain(|(c, _)| *c != conn);
                    self.server.handle_disconnect(self.now, conn).ok();
                }
            }
            Output::Command(cmd) => {
                match cmd {
                    Command::PauseReading { conn } => {
                        self.reading_paused.insert(conn);
                    }
                    Command::ResumeReading { conn } => {
                        self.reading_paused.remove(&conn);
                    }
                    _ => {}
                }
                if self.record_commands {
                    self.commands.push(cmd.clone());
                }
                if self.answer_commands {
                    self.answer(cmd);
                }
            }
        }
    }

    /// Delivers one frame (to the server first, else to the client), then pumps; `false`
    /// when nothing was in flight.
    pub fn step(&mut self) -> bool {
        self.deliver_c2s() || self.deliver_s2c()
    }

    /// Delivers the next frame to the server, then pumps.
    pub fn deliver_c2s(&mut self) -> bool {
        let (Some(conn), Some(text)) = (self.link, self.c2s.pop_front()) else {
            return false;
        };
        self.server
            .handle_message(self.now, conn, text.as_bytes())
            .expect("the link's server connection is open");
        self.pump();
        true
    }

    /// Delivers the next frame to the client, then pumps.
    pub fn deliver_s2c(&mut self) -> bool {
        let Some(text) = self.s2c.pop_front() else {
            return false;
        };
        if let Some(conn) = self.link {
            self.server.handle_sent(self.now, conn, text.len());
        }
        self.client.handle_message(self.now, text.as_bytes());
        self.pump();
        true
    }

    /// Pumps, then steps until nothing is in flight; `false` when `limit` frames did not get
    /// there.
    pub fn drive_bounded(&mut self, limit: usize) -> bool {
        self.pump();
        for _ in 0..limit {
            if !self.step() {
                return true;
            }
        }
        false
    }

    /// [`Sim::drive_bounded`] with [`DRIVE_LIMIT`].
    ///
    /// # Panics
    /// When the network does not settle (a livelock).
    pub fn drive(&mut self) {
        assert!(
            self.drive_bounded(DRIVE_LIMIT),
            "the simulation did not settle"
        );
    }

    // ----- time --------------------------------------------------------------------------

    /// Time passes: both machines' timers due by then fire, then [`Sim::pump`].
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        self.pump();
    }

    /// Advances to the earlier of both machines' next timers (not backwards); `false` when
    /// neither has one.
    pub fn advance_to_next_timer(&mut self) -> bool {
        let next = match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        self.advance(next.saturating_duration_since(self.now));
        true
    }

    // ----- processes ---------------------------------------------------------------------

    /// Feeds `event` of process `key` to the server, then [`Sim::pump`].
    pub fn event(&mut self, key: ProcessKey, event: ProcessEvent) {
        self.server.handle_process(self.now, key, event);
        self.pump();
    }

    /// Answers the held spawns with `Spawned`, then [`Sim::pump`].
    pub fn release_spawns(&mut self) {
        for key in std::mem::take(&mut self.held_spawns) {
            self.server
                .handle_process(self.now, key, ProcessEvent::Spawned { pid: 100 });
        }
        self.pump();
    }

    /// The child `key` writes `bytes` to stdout (no pump).
    pub fn output(&mut self, key: ProcessKey, bytes: &[u8]) {
        if let Some(p) = self.procs.get_mut(&key) {
            p.produced.extend_from_slice(bytes);
        }
        let ev = ProcessEvent::Output {
            stream: crate::protocol::Stream::Stdout,
            bytes: bytes.to_vec(),
        };
        self.server.handle_process(self.now, key, ev);
    }

    /// The child `key` exits with `status` and both pipes reach EOF (once; no pump).
    pub fn finish(&mut self, key: ProcessKey, status: ExitStatus) {
        if let Some(p) = self.procs.get_mut(&key) {
            if p.exited {
                return;
            }
            p.exited = true;
        }
        children::exit_and_eof(&mut self.server, self.now, key, status);
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}
