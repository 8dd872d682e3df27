//! A minimal client on smol: connect, run `sh -c 'read x; echo got $x'`, write its stdin,
//! print its output. Start a server first (`execd serve` prints its URL):
//!
//! ```sh
//! cargo run --example smol_client -- ws://127.0.0.1:4000
//! ```

use execd_core::protocol::StartParams;
use execd_core::PathUri;
use execd_smol::{Client, Event};

fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: smol_client ws://HOST:PORT"))?;
    smol::block_on(async {
        let client = Client::connect(&url).await?;
        println!("session {}", client.session_id().unwrap_or_default());
        let process = client
            .start(StartParams {
                process_id: "greeter".into(),
                argv: vec!["sh".into(), "-c".into(), "read x; echo got $x".into()],
                cwd: PathUri::from_host_path(&std::env::current_dir()?)?,
                env: std::env::vars().collect(),
                tty: false,
                pipe_stdin: true,
                arg0: None,
                env_policy: None,
                sandbox: None,
                enforce_managed_network: false,
            })
            .await?;
        // Written once even if the connection drops and the client resumes the session.
        process.write("hello\n").await?;
        while let Some(event) = process.next_event().await {
            match event {
                Event::Output { chunk, .. } => print!("{}", String::from_utf8_lossy(&chunk)),
                Event::Exited { exit_code, .. } => println!("exit code {exit_code}"),
                _ => {}
            }
        }
        Ok(())
    })
}
