//! Logging that never takes the server down: log lines go to stderr, and a line that cannot be
//! written (closed pipe, `/dev/full`, closed descriptor) is dropped and counted instead of
//! panicking the process (tracing-subscriber's fmt layer reports a failed write with
//! `eprintln!`, which panics when stderr fails).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::fmt::MakeWriter;

/// Log lines (and error reports) dropped because stderr could not take them.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Installs the global subscriber: filter from `EXECD_LOG` (default `warn`), lossy stderr.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EXECD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LossyStderr)
        .with_ansi(rustix::termios::isatty(io::stderr()))
        .log_internal_errors(false)
        .init();
}

/// How many log lines were dropped so far.
pub(crate) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Writes `line` and a newline to stderr, dropping it if stderr fails (`eprintln!` panics).
pub(crate) fn eprint_line(line: &str) {
    let mut w = LossyStderr;
    let _ = writeln!(w, "{line}");
}

/// A [`MakeWriter`] for stderr whose writes always succeed: a failed write is dropped and
/// counted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LossyStderr;

impl<'a> MakeWriter<'a> for LossyStderr {
    type Writer = LossyStderr;

    fn make_writer(&'a self) -> Self::Writer {
        LossyStderr
    }
}

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One write_all per call: the fmt layer hands over a whole line at once.
        if io::stderr().lock().write_all(buf).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().lock().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_report_success_whatever_stderr_does() {
        let mut w = LossyStderr;
        assert_eq!(w.write(b"").ok(), Some(0));
        assert!(w.flush().is_ok());
    }
}
