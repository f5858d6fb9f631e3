//! `pulse-floor`: the floor server, which does only the unavoidable work of a collect request
//! (read, decode, parse, answer a fixed decision); benchmarks compare the gateway against it.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;

/// Answers `POST /v1/collect` like a Pulse gateway that stores nothing and always allows:
/// the cost floor of a collect endpoint. HTTP/1.1 and HTTP/2 with prior knowledge (h2c).
#[derive(Parser, Debug)]
#[command(name = "pulse-floor", version)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        // The first line on stdout names the address (tests and scripts read it).
        println!(
            "pulse floor listening on http://{}/",
            listener.local_addr()?
        );
        pulse_load::serve_floor(listener, shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
