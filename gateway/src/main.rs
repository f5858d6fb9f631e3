//! `gateway`: runs the Pulse gateway, or reads its store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pulse_gateway::{Config, EmbeddedStore, Gateway, Listeners, serve_all};

/// The Pulse gateway: collects reader events from publisher pages, stores them durably and
/// answers each batch with a paywall decision. With no arguments it reads ./pulse.toml when
/// present, else runs with built-in defaults.
#[derive(Parser, Debug)]
#[command(name = "gateway", version)]
struct Args {
    /// Configuration file (TOML; see examples/pulse.toml for every key).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on for HTTP/1.1, overriding `server.listen` (port 0: any free port).
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address for TLS (HTTP/1.1 and HTTP/2 on TCP) and HTTP/3 (QUIC on UDP, same port),
    /// overriding `server.tls_listen` (port 0: any free port).
    #[arg(long, global = true, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Folder of the embedded store, overriding `server.data`.
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log: tracing::Level,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the configuration file and exit (every problem is listed).
    Check,
    /// Print the stored events (or dead letters) as JSON lines and exit. The gateway must be
    /// stopped: the store is opened exclusively.
    Dump {
        /// Print dead letters instead of events.
        #[arg(long)]
        dead_letters: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(args.log)
        .with_target(false)
        .init();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new("pulse.toml").exists() => Config::load("pulse.toml".as_ref())?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(tls_listen) = args.tls_listen {
        config.server.tls_listen = Some(tls_listen);
    }
    if let Some(data) = args.data {
        config.server.data = data;
    }
    match args.command {
        Some(Command::Check) => {
            println!(
                "configuration ok: {} site(s), meter {}",
                config.sites.len(),
                config.meter.version()
            );
            Ok(())
        }
        Some(Command::Dump { dead_letters }) => dump(&config, dead_letters),
        None => run(config),
    }
}

fn dump(config: &Config, dead_letters: bool) -> anyhow::Result<()> {
    let store = EmbeddedStore::open(&config.server.data)?;
    if dead_letters {
        for dl in store.dead_letters()? {
            println!("{}", serde_json::to_string(&dl)?);
        }
    } else {
        for stored in store.events_from(0) {
            println!("{}", serde_json::to_string(&stored?.record)?);
        }
    }
    Ok(())
}

fn run(config: Config) -> anyhow::Result<()> {
    if config.sites.is_empty() {
        tracing::warn!("no [[sites]] configured: every batch will be refused (unknown_site_key)");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let data = config.server.data.clone();
        let gateway = Arc::new(
            Gateway::open(config)
                .with_context(|| format!("opening the store in {}", data.display()))?,
        );
        let listeners = Listeners::bind(&gateway.config)
            .await
            .context("binding the listeners")?;
        let addr = listeners.http_addr();
        // The first line on stdout names the address (tests and scripts read it).
        println!("pulse gateway listening on http://{addr}/");
        if let Some(tls) = listeners.https_addr() {
            let quic = if listeners.quic_addr().is_some() {
                "; QUIC: h3"
            } else {
                ""
            };
            println!("pulse gateway listening on https://{tls}/ (TLS: h2, http/1.1{quic})");
        }
        if let Some(cert) = listeners.certificate() {
            let kind = if cert.self_signed {
                " (self-signed)"
            } else {
                ""
            };
            println!("  certificate: {}{kind}", cert.cert_path.display());
            println!("  sha256:      {}", cert.sha256);
            println!("  spki sha256: {}", cert.spki_sha256_base64);
            tracing::info!(
                cert = %cert.cert_path.display(),
                self_signed = cert.self_signed,
                sha256 = %cert.sha256,
                spki_sha256 = %cert.spki_sha256_base64,
                "TLS certificate"
            );
        }
        if gateway.config.server.site_dir.is_some() {
            println!("  demo site:  http://{addr}/   (the first three articles are free)");
        }
        println!("  collect:    POST http://{addr}/v1/collect?k=<site key>");
        println!("  health:     http://{addr}/healthz   metrics: http://{addr}/metrics");
        println!("  store:      {}", data.display());
        serve_all(gateway, listeners, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
