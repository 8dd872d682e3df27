//! One-line, user-facing messages for the ways a connection to a server fails or ends: no
//! repeated causes, no `Debug` formatting, no OS error numbers.

use std::io;

use execd_runtime::client::LostReason;
use execd_runtime::ConnectError;

/// Where `execd` talks to: a WebSocket URL or a local `execd serve --listen stdio` child.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// `--url`, with its recovery window in seconds (0: recovery off).
    Url { url: String, recovery_window: u64 },
    /// The local stdio child.
    Local,
}

impl Target {
    /// "ws://…" or "the local execd server".
    fn name(&self) -> String {
        match self {
            Target::Url { url, .. } => url.clone(),
            Target::Local => "the local execd server".to_owned(),
        }
    }
}

/// `cannot connect to URL: WHY`, for a failed [`Client::connect`](execd_runtime::Client).
pub(crate) fn connect_failed(target: &Target, error: &ConnectError) -> anyhow::Error {
    let why = match error {
        ConnectError::Io(e) => io_reason(target, e),
        ConnectError::Session(LostReason::Protocol(_)) => "not an execd server".to_owned(),
        ConnectError::Session(LostReason::Rejected(e)) => {
            format!("the server refused the session: {}", e.message)
        }
        ConnectError::Session(_) => "the connection closed during the handshake".to_owned(),
        other => strip_os_error(&other.to_string()),
    };
    match target {
        Target::Url { url, .. } => anyhow::anyhow!("cannot connect to {url}: {why}"),
        Target::Local => anyhow::anyhow!("cannot start a local execd server: {why}"),
    }
}

/// Why a session ended, as one line (without the `execd: ` prefix).
pub(crate) fn session_lost(target: &Target, reason: &LostReason) -> String {
    let name = target.name();
    match (reason, target) {
        (LostReason::ServerStopped, _) => format!("the server at {name} shut down"),
        (
            LostReason::WindowExhausted,
            Target::Url {
                recovery_window, ..
            },
        ) => format!("connection to {name} lost; gave up reconnecting after {recovery_window} s"),
        (LostReason::Rejected(e), _) => {
            format!("cannot resume the session at {name}: {}", e.message)
        }
        (LostReason::Protocol(why), _) => format!("{name} broke the protocol: {why}"),
        (LostReason::ClosedLocally, _) => "the client was closed".to_owned(),
        _ => format!("connection to {name} lost"),
    }
}

/// The line printed when recovery starts.
pub(crate) fn reconnecting(target: &Target) -> String {
    match target {
        Target::Url {
            url,
            recovery_window,
        } => format!("connection to {url} lost; reconnecting for up to {recovery_window} s"),
        Target::Local => "reconnecting".to_owned(),
    }
}

/// The line printed when recovery succeeded.
pub(crate) fn reconnected(target: &Target) -> String {
    format!("reconnected to {}", target.name())
}

/// The text of a server's error about a command that could not start, without the OS error
/// number (`No such file or directory`).
pub(crate) fn start_failed(message: &str) -> String {
    strip_os_error(message)
}

fn io_reason(target: &Target, e: &io::Error) -> String {
    let text = e.to_string();
    let is_wss = matches!(target, Target::Url { url, .. } if url.starts_with("wss://"));
    match e.kind() {
        // `websocket handshake refused: HTTP 404 Not Found: body`
        io::ErrorKind::ConnectionRefused if text.starts_with("websocket handshake refused") => {
            let status = text
                .split(": ")
                .nth(1)
                .unwrap_or("no WebSocket upgrade")
                .to_owned();
            format!("not an execd server (it answered {status})")
        }
        io::ErrorKind::PermissionDenied if text.starts_with("websocket handshake refused") => {
            let rest = text.trim_start_matches("websocket handshake refused: ");
            format!("authentication refused ({rest})")
        }
        io::ErrorKind::TimedOut => "no WebSocket handshake within 10 s".to_owned(),
        // tungstenite's HTTP parse errors: something answered, but not with a WebSocket.
        io::ErrorKind::InvalidData | io::ErrorKind::Other if !is_wss => {
            "not an execd server".to_owned()
        }
        _ => strip_os_error(&text),
    }
}

/// `Connection refused (os error 111)` → `Connection refused`.
fn strip_os_error(text: &str) -> String {
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_numbers_are_dropped() {
        assert_eq!(
            strip_os_error("Connection refused (os error 111)"),
            "Connection refused"
        );
        assert_eq!(strip_os_error("plain"), "plain");
    }

    #[test]
    fn a_refused_handshake_names_the_http_status() {
        let target = Target::Url {
            url: "ws://h:1".to_owned(),
            recovery_window: 25,
        };
        let e = io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "websocket handshake refused: HTTP 404 Not Found: nope",
        );
        assert_eq!(
            io_reason(&target, &e),
            "not an execd server (it answered HTTP 404 Not Found)"
        );
    }
}
