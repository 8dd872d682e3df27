use serde::{Deserialize, Serialize};

/// Which output stream a chunk came from. On the wire: `"stdout"`, `"stderr"` or `"pty"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    /// The child's standard output pipe.
    Stdout,
    /// The child's standard error pipe.
    Stderr,
    /// The PTY master of a `tty: true` process (stdout and stderr merged by the terminal).
    Pty,
}

impl Stream {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Pty => "pty",
        }
    }
}
