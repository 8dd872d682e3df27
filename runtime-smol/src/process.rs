//! The OS process layer: spawning children for the core's `Command::Spawn`, pumping their
//! output, exit and stdin, and delivering signals and PTY resizes. See
//! [`execd_runtime::process`] for the rules.

use std::fmt;

use async_channel::Sender;
use execd_core::protocol::Signal;
use execd_core::{ProcessEvent, ProcessKey, SpawnSpec};

use crate::runtime;

/// The children the server runs, keyed by `K` (the core's [`ProcessKey`] by default), with
/// their tasks on smol's global executor. See [`execd_runtime::process::ProcessTable`] for how
/// children are spawned, signalled and reaped.
#[derive(Debug)]
pub struct ProcessTable<K = ProcessKey>(execd_runtime::process::ProcessTable<K>);

impl<K> ProcessTable<K>
where
    K: Copy + Ord + fmt::Debug + Send + Sync + 'static,
{
    /// A table that reports process events on `events`.
    pub fn new(events: Sender<(K, ProcessEvent)>) -> Self {
        ProcessTable(execd_runtime::process::ProcessTable::new(
            runtime::shared(),
            events,
        ))
    }

    /// Starts `spec` as process `key`; returns `Spawned { pid }` or `SpawnFailed { error }`.
    pub fn spawn(&mut self, key: K, spec: SpawnSpec) -> ProcessEvent {
        self.0.spawn(key, spec)
    }

    /// Queues `bytes` for the child's stdin (pipe or PTY master). Never waits.
    pub fn write_stdin(&mut self, key: K, bytes: Vec<u8>) {
        self.0.write_stdin(key, bytes);
    }

    /// Closes the child's stdin pipe once the queued writes are written.
    pub fn close_stdin(&mut self, key: K) {
        self.0.close_stdin(key);
    }

    /// Delivers `signal` to the process group the child leads, until the process has closed.
    pub fn signal(&mut self, key: K, signal: Signal) {
        self.0.signal(key, signal);
    }

    /// SIGKILLs the process group the child leads.
    pub fn kill(&mut self, key: K) {
        self.0.kill(key);
    }

    /// Sets the terminal size of a PTY process to `rows` × `cols`.
    pub fn resize(&mut self, key: K, rows: u16, cols: u16) {
        self.0.resize(key, rows, cols);
    }

    /// Forgets `key` without killing the child.
    pub fn release(&mut self, key: K) {
        self.0.release(key);
    }

    /// SIGKILLs the process group of every process in the table.
    pub fn kill_all(&mut self) {
        self.0.kill_all();
    }
}
