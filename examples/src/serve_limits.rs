//! `execd serve` flags for the server's limits (docs/PROTOCOL.md §2.3), and the range check of
//! every numeric serve option: a value out of range is refused at startup with one line and
//! exit code 1 (a value that does not parse at all is clap's: exit code 2).

use std::time::Duration;

use execd_core::server::MAX_CONFIG_DURATION;
use execd_core::ServerConfig;
use execd_runtime::transport::Limits;

use crate::serve_auth::Refusal;

/// The limit flags of `execd serve`; each defaults to the core's or transport's default.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeLimitsArgs {
    /// Most open connections (default 1024).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most sessions, attached or detached (default 1024).
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Most process entries per session, closed ones still retained included (default 1024).
    #[arg(long, value_name = "N")]
    max_processes_per_session: Option<usize>,
    /// Most requests awaiting a deferred answer per connection (default 256).
    #[arg(long, value_name = "N")]
    max_inflight_requests: Option<usize>,
    /// Largest output chunk in bytes: pipes are read, and queued chunks merged, up to it
    /// (default 262144).
    #[arg(long, value_name = "BYTES")]
    max_chunk_bytes: Option<usize>,
    /// Lossless output (clients that ask for it): unacknowledged output bytes per process at
    /// which its pipes stop being read until the client acknowledges (default 1048576;
    /// capped at the retention of 1 MiB).
    #[arg(long, value_name = "BYTES")]
    lossless_window_bytes: Option<usize>,
    /// Seconds without input before a WebSocket client is pinged (default 30; 0 disables
    /// pings and the pong timeout).
    #[arg(long, value_name = "SECONDS")]
    ping_interval: Option<u64>,
    /// Seconds a pinged WebSocket client may stay silent before it is dropped (default 60;
    /// 0 never drops a silent client).
    #[arg(long, value_name = "SECONDS")]
    pong_timeout: Option<u64>,
}

impl ServeLimitsArgs {
    /// Applies the flags to `core` and returns the transport limits, after checking every
    /// value of `core` (the other serve flags included) and of the transport.
    ///
    /// # Errors
    /// A [`Refusal`] naming the first value out of range.
    pub(crate) fn apply(&self, core: &mut ServerConfig) -> anyhow::Result<Limits> {
        let counts = [
            (self.max_connections, &mut core.max_connections),
            (self.max_sessions, &mut core.max_sessions),
            (
                self.max_processes_per_session,
                &mut core.max_processes_per_session,
            ),
            (self.max_inflight_requests, &mut core.max_inflight_requests),
            (self.max_chunk_bytes, &mut core.max_chunk_bytes),
            (self.lossless_window_bytes, &mut core.lossless_window_bytes),
        ];
        for (flag, field) in counts {
            if let Some(value) = flag {
                *field = value;
            }
        }
        core.validate()
            .map_err(|e| Refusal::new(format!("invalid server option: {e}")))?;
        let mut limits = Limits::default();
        if let Some(secs) = self.ping_interval {
            limits.ping_interval = seconds("--ping-interval", secs)?;
        }
        if let Some(secs) = self.pong_timeout {
            limits.pong_timeout = seconds("--pong-timeout", secs)?;
        }
        Ok(limits)
    }
}

/// `secs` as a duration, `None` for 0; refuses more than [`MAX_CONFIG_DURATION`].
fn seconds(flag: &str, secs: u64) -> anyhow::Result<Option<Duration>> {
    let value = Duration::from_secs(secs);
    if value > MAX_CONFIG_DURATION {
        return Err(Refusal::new(format!(
            "invalid server option: {flag} {secs} is too long (at most {} seconds)",
            MAX_CONFIG_DURATION.as_secs()
        ))
        .into());
    }
    Ok((secs > 0).then_some(value))
}
