//! execd-core: the sans-IO core of execd.

pub mod ids;
pub mod protocol;
pub mod server;

pub use ids::{ConnId, ProcessKey, Seq};
pub use server::{Command, ExitStatus, Output, ProcessEvent, SpawnSpec};
