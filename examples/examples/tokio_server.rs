//! An execd server embedded in an existing tokio application.
//!
//! The server runs as one task beside the application's own work (here a heartbeat) and stops
//! with it on Ctrl-C; the processes it started die with it.
//!
//! ```sh
//! cargo run --example tokio_server
//! execd run --url ws://127.0.0.1:PORT -- uname -a    # from another terminal
//! ```

use std::time::Duration;

use execd_tokio::{ServerOptions, WsServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = WsServer::bind("127.0.0.1:0".parse()?, ServerOptions::default()).await?;
    println!("execd listening on {}", server.url());
    // A runtime worker polls the server and forks its children; workers live as long as the
    // runtime, so the children's PR_SET_PDEATHSIG stays armed.
    let mut execd = tokio::spawn(server.run());

    let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = heartbeat.tick() => println!("app: still doing its own work"),
            _ = tokio::signal::ctrl_c() => break,
            served = &mut execd => {
                served??;
                break;
            }
        }
    }
    // Dropping the server task kills the processes it started.
    execd.abort();
    Ok(())
}
