//! One function written against `Executor`, run on this host or on a server:
//!
//! ```sh
//! cargo run --example executor                          # LocalExecutor, in-process
//! cargo run --example executor -- ws://127.0.0.1:4000   # RemoteExecutor through a server
//! ```

use std::collections::BTreeMap;

use execd_core::protocol::{StartParams, Stream};
use execd_core::PathUri;
use execd_smol::{Client, Event, Executor, LocalExecutor, RemoteExecutor, ServerOptions};

/// Runs `uname -a` wherever `executor` runs processes; returns its stdout and exit code.
async fn uname(executor: &dyn Executor) -> anyhow::Result<(String, i32)> {
    let params = StartParams {
        process_id: format!("uname-{}", uuid::Uuid::new_v4()),
        argv: vec!["uname".into(), "-a".into()],
        cwd: PathUri::parse("file:///")?,
        env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        tty: false,
        pipe_stdin: false,
        arg0: None,
        env_policy: None,
        sandbox: None,
        enforce_managed_network: false,
    };
    let process = executor.start(params).await?;
    let (mut stdout, mut code) = (Vec::new(), -1);
    while let Some(event) = process.next_event().await {
        match event {
            Event::Output {
                stream: Stream::Stdout,
                chunk,
                ..
            } => stdout.extend(chunk),
            Event::Exited { exit_code, .. } => code = exit_code,
            _ => {}
        }
    }
    Ok((String::from_utf8_lossy(&stdout).into_owned(), code))
}

fn main() -> anyhow::Result<()> {
    smol::block_on(async {
        let executor: Box<dyn Executor> = match std::env::args().nth(1) {
            Some(url) => Box::new(RemoteExecutor::from(Client::connect(&url).await?)),
            None => Box::new(LocalExecutor::new(ServerOptions::default()).await?),
        };
        let (out, code) = uname(executor.as_ref()).await?;
        print!("{out}");
        println!("exit code {code}");
        Ok(())
    })
}
