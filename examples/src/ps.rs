//! `execd ps`: list the processes of a session (`process/list`, ext).

use std::process::ExitCode;

use anyhow::Context as _;
use execd_core::protocol::{method, ListResult, ProcessInfo};
use serde_json::json;

use crate::remote_session::RemoteSession;

#[derive(Debug, clap::Args)]
pub(crate) struct PsArgs {
    /// Server URL (`ws://HOST:PORT` or `wss://…`).
    #[arg(long, value_name = "URL")]
    url: String,
    #[command(flatten)]
    security: crate::serve_auth::RunSecurityArgs,
    /// The session to list, as printed by `execd run --detach`. It must be detached: listing
    /// resumes it, then detaches it again (its TTL starts anew). Without it a new, empty
    /// session is listed (a connection sees only its own session).
    #[arg(value_name = "SESSION")]
    session: Option<String>,
}

pub(crate) fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    smol::block_on(async {
        let security = args.security.client_security(&args.url)?;
        let remote = RemoteSession::open(&args.url, &security, args.session.as_deref()).await?;
        let listed = remote.call(method::PROCESS_LIST, json!({})).await;
        remote.detach().await;
        let listed: ListResult = serde_json::from_value(
            listed.map_err(|e| anyhow::anyhow!("process/list failed: {e}"))?,
        )
        .context("unreadable process/list result")?;
        print!("{}", table(&listed.processes));
        Ok(ExitCode::SUCCESS)
    })
}

/// `PROCESS STATE PID EXIT TTY COMMAND`, one row per process, columns padded.
fn table(processes: &[ProcessInfo]) -> String {
    let mut rows = vec![[
        "PROCESS".to_owned(),
        "STATE".to_owned(),
        "PID".to_owned(),
        "EXIT".to_owned(),
        "TTY".to_owned(),
        "COMMAND".to_owned(),
    ]];
    for p in processes {
        rows.push([
            p.process_id.clone(),
            p.state.clone(),
            p.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            p.exit_code
                .map_or_else(|| "-".to_owned(), |c| c.to_string()),
            if p.tty { "yes" } else { "no" }.to_owned(),
            p.argv
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (w, cell) in widths.iter().zip(row.iter()) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    out
}

/// `arg` as a POSIX shell word: unchanged when it is plain, else in single quotes.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_with_spaces_are_quoted() {
        assert_eq!(shell_quote("echo"), "echo");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
