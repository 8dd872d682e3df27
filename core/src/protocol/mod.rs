//! Wire types of the Codex exec-server dialect, one file per concept.

mod sandbox;
mod signal;
mod stream;

pub use sandbox::SandboxType;
pub use signal::{Signal, UnknownSignal};
pub use stream::Stream;
