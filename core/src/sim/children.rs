//! The fake children of a [`Sim`]: each answers the server's commands like `cat` (echoes its
//! stdin to stdout, exits 0 at stdin EOF, ends on a signal or a kill).

use std::time::Instant;

use super::Sim;
use crate::ids::ProcessKey;
use crate::protocol::Stream;
use crate::server::{Command, ExitStatus, ProcessEvent, Server};

/// One fake child process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FakeProc {
    /// Bytes that reached its stdin.
    pub stdin: Vec<u8>,
    /// Bytes it wrote, in order (echoes included).
    pub produced: Vec<u8>,
    /// Whether it exited.
    pub exited: bool,
    /// Whether the server paused reading its output (it still writes: the harness does not
    /// model a full pipe; tests assert on the flag).
    pub paused: bool,
}

impl Sim {
    /// The children's answer to one command (see the [module docs](self)).
    pub fn answer(&mut self, cmd: Command) {
        match cmd {
            Command::Spawn { key, .. } => {
                self.procs.insert(key, FakeProc::default());
                if self.auto_spawn {
                    self.server
                        .handle_process(self.now, key, ProcessEvent::Spawned { pid: 100 });
                } else {
                    self.held_spawns.push(key);
                }
            }
            Command::WriteStdin { key, bytes } => {
                if let Some(p) = self.procs.get_mut(&key) {
                    p.stdin.extend_from_slice(&bytes);
                }
                self.output(key, &bytes);
                let written = ProcessEvent::StdinWritten { bytes: bytes.len() };
                self.server.handle_process(self.now, key, written);
            }
            Command::CloseStdin { key } => self.finish(key, ExitStatus::Code(0)),
            Command::Signal { key, signal } => {
                self.finish(key, ExitStatus::Signal(signal.number()));
            }
            Command::Kill { key } => self.finish(key, ExitStatus::Signal(9)),
            Command::PauseOutput { key } | Command::ResumeOutput { key } => {
                if let Some(p) = self.procs.get_mut(&key) {
                    p.paused = matches!(cmd, Command::PauseOutput { .. });
                }
            }
            _ => {}
        }
    }
}

/// `Exited { status }`, then EOF on stdout and stderr, fed to `server`.
pub fn exit_and_eof(server: &mut Server, now: Instant, key: ProcessKey, status: ExitStatus) {
    server.handle_process(now, key, ProcessEvent::Exited { status });
    for stream in [Stream::Stdout, Stream::Stderr] {
        server.handle_process(now, key, ProcessEvent::Eof { stream });
    }
}
