//! `pulse-floor`: the floor server, which does only the unavoidable work of a collect request
//! (read, decode, parse, answer a fixed decision); benchmarks compare the gateway against it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use pulse_http::{Listeners, Settings, serve_all};
use pulse_load::Floor;

/// Answers `POST /v1/collect` like a Pulse gateway that stores nothing and always allows:
/// the cost floor of a collect endpoint. It runs behind the gateway's own listeners: HTTP/1.1
/// and HTTP/2 (prior knowledge) in cleartext, and with `--tls-listen` TLS (h2, http/1.1) and
/// HTTP/3 on the same port.
#[derive(Parser, Debug)]
#[command(name = "pulse-floor", version)]
struct Args {
    /// Cleartext address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// TLS + QUIC address (port 0: any free port); off when absent.
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Folder for the generated self-signed certificate (`<DIR>/tls/cert.pem`).
    #[arg(long, default_value = "floor-data", value_name = "DIR")]
    data: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let settings = Settings {
        listen: args.listen,
        tls_listen: args.tls_listen,
        data: args.data,
        ..Settings::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listeners = Listeners::bind(settings)
            .await
            .context("binding the listeners")?;
        // The first line on stdout names the address (tests and scripts read it).
        println!("pulse floor listening on http://{}/", listeners.http_addr());
        if let Some(tls) = listeners.https_addr() {
            println!("pulse floor listening on https://{tls}/ (TLS: h2, http/1.1; QUIC: h3)");
        }
        if let Some(cert) = listeners.certificate() {
            println!("  certificate: {}", cert.cert_path.display());
        }
        serve_all(Arc::new(Floor), listeners, shutdown_signal()).await?;
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
