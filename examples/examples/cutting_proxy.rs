//! A TCP proxy that drops every connection on a period, for trying `execd run`'s recovery by
//! hand:
//!
//! ```sh
//! execd serve --listen ws://127.0.0.1:7000 &
//! cargo run --release --example cutting_proxy -- 127.0.0.1:7000 200   # prints ws://127.0.0.1:PORT
//! execd run --stats --url ws://127.0.0.1:PORT -- seq 1 200000 | md5sum
//! ```

use std::sync::Arc;
use std::time::Duration;

use execd_runtime::scenarios::CuttingProxy;
use execd_smol::SmolRuntime;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(period)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: cutting_proxy TARGET_ADDR PERIOD_MS");
    };
    let target = target.parse()?;
    let period = Duration::from_millis(period.parse()?);
    smol::block_on(async {
        let proxy = Arc::new(CuttingProxy::start(Arc::new(SmolRuntime), target).await?);
        println!("{}", proxy.url());
        proxy.cut_every(period);
        loop {
            smol::Timer::after(Duration::from_secs(5)).await;
            eprintln!(
                "cutting_proxy: {} connections, {} cuts",
                proxy.accepted(),
                proxy.cuts()
            );
        }
    })
}
