//! The server state machine.

mod command;

pub use command::{Command, ExitStatus, Output, ProcessEvent, SpawnSpec};
