//! `gateway`: runs the Pulse gateway, or reads its store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pulse_gateway::{Config, Gateway, Listeners, LogFiles, TOKEN_ENV, TokenSource, serve_all};

mod remote;
use remote::{admin_call, limits_patch, percent_encode};

/// The Pulse gateway: collects reader events from publisher pages, stores them durably and
/// answers each batch with a paywall decision. With no arguments it reads ./pulse.toml when
/// present, else runs with built-in defaults. On Kafka the same binary also runs the split
/// tier: `[cluster] role = "gateway"` (stateless) or `"scorer"` (owns partitions of reader
/// state), e.g. `PULSE_CLUSTER__ROLE=scorer gateway --config pulse.toml`.
#[derive(Parser, Debug)]
#[command(name = "gateway", version)]
struct Args {
    /// Configuration file (TOML; see examples/pulse.toml for every key). Any key can be
    /// overridden in the environment as `PULSE_<TABLE>__<KEY>` (e.g. `PULSE_SERVER__LISTEN`).
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
    /// What to log: a level (error, warn, info, debug, trace) or a RUST_LOG-style filter
    /// (`info,pulse_scorer=debug`). Default: `RUST_LOG` when set, else info.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,
    /// Log lines as `text` (coloured on a terminal only) or `json` (one object per line).
    #[arg(long, global = true, default_value = "text", value_name = "FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check the configuration file and its bundle and exit (every problem is listed).
    Check,
    /// Work with bundles (the features, model and rules the scorer runs).
    Bundle {
        #[command(subcommand)]
        action: BundleAction,
        /// Admin address, overriding `server.admin_listen` (e.g. `http://127.0.0.1:9090`).
        #[arg(long, global = true, value_name = "URL")]
        admin: Option<String>,
        /// Admin token, overriding `PULSE_ADMIN_TOKEN`, `server.admin_token` and
        /// `<data>/admin.token`.
        #[arg(long, global = true, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Show one reader of a running gateway: every feature's value and what it is made of,
    /// and the decision the active bundle makes now ("why was this reader walled?").
    Reader {
        /// The reader key: the user id of a logged-in reader, else the anonymous id.
        id: String,
        /// Erase the reader instead (a data subject's request): their state, and their
        /// records in the embedded logs (events, decisions, dead letters that mention them);
        /// in Kafka mode an erasure record goes to the events topic. Prints what was erased.
        #[arg(long)]
        erase: bool,
        /// Admin address, overriding `server.admin_listen` (e.g. `http://127.0.0.1:9090`).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Admin token, overriding `PULSE_ADMIN_TOKEN`, `server.admin_token` and
        /// `<data>/admin.token`.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
    /// Print the stored events (or dead letters, or decisions) of the embedded store as JSON
    /// lines, oldest first, and exit. Works beside a running gateway too: then only whole,
    /// checksummed blocks are read (what was written up to now).
    Dump {
        /// Print dead letters instead of events.
        #[arg(long, conflicts_with = "decisions")]
        dead_letters: bool,
        /// Print the decision log instead of events: one JSON object per decision, with its
        /// bundle, rule, model score, experiment arm and probability, and feature snapshot.
        #[arg(long)]
        decisions: bool,
    },
    /// Backtest: run a bundle over the stored event log (every batch decided as live traffic
    /// would have been) beside the configured one, and print the distribution of their
    /// decisions by action, rule and experiment arm. Reader state is held in memory (about
    /// 6.5 KB per reader and bundle); works beside a running gateway (whole blocks written so
    /// far). The request's device and country are unknown to the replay.
    Replay {
        /// The candidate bundle (TOML).
        #[arg(long, value_name = "FILE")]
        bundle: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of a log record as the logs, the Kafka topics and
    /// `/admin/export` hold it now (the files in `protocol/schema/`): `event`, `dead_letter`
    /// or `decision`.
    Schema {
        /// The record: `event`, `dead_letter` or `decision`.
        record: String,
    },
    /// Show or change the rate limits of a running gateway through its admin API.
    Limits {
        #[command(subcommand)]
        action: LimitsAction,
        /// Admin address, overriding `server.admin_listen` (e.g. `http://127.0.0.1:9090`).
        #[arg(long, value_name = "URL")]
        admin: Option<String>,
        /// Admin token, overriding `PULSE_ADMIN_TOKEN`, `server.admin_token` and
        /// `<data>/admin.token`.
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BundleAction {
    /// Check a bundle file (and its model): prints its id, features, model and rules, or every
    /// problem (exit status 1). Needs no running gateway.
    Check {
        /// The bundle (TOML).
        file: PathBuf,
    },
    /// Show the bundle a running gateway decides with, and those activated before (JSON).
    Show,
    /// Check a bundle file and its model here, then activate it on a running gateway: in force
    /// at once when it keeps the features, else after its state is rebuilt from the log. It is
    /// kept under the gateway's data folder and named in its config file. In Kafka mode it is
    /// published on the control topic, and every gateway activates it.
    Activate {
        /// The bundle (TOML).
        file: PathBuf,
    },
    /// Activate the bundle that was active before the current one.
    Rollback,
}

#[derive(Subcommand, Debug)]
enum LimitsAction {
    /// Print the limits in force (JSON).
    Show,
    /// Change limits, e.g. `ip_requests.per_second=50 ip_requests.burst=200`; the change is
    /// checked, applied at once and written back to the gateway's config file (in Kafka mode,
    /// published on the control topic: every gateway applies it and enforces its share).
    Set {
        /// `name.field=value` pairs (fields: per_second, burst; or `max_keys=N`).
        #[arg(required = true, value_name = "KEY=VALUE")]
        changes: Vec<String>,
    },
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (colour codes only on a terminal).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`), for log collectors.
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs go to stderr; stdout carries the addresses (scripts read its first line) and the
    // output of the subcommands.
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty()))
        .unwrap_or_else(|| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("--log {filter:?}: {e}"))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    if let Some(Command::Schema { record }) = &args.command {
        let Some(kind) = pulse_protocol::RecordSchema::parse(record) else {
            anyhow::bail!("no record {record:?}: event, dead_letter or decision");
        };
        print!("{}", kind.json_schema());
        return Ok(());
    }
    if let Some(Command::Bundle {
        action: BundleAction::Check { file },
        ..
    }) = &args.command
    {
        return bundle_check(file);
    }
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new("pulse.toml").exists() => Config::load("pulse.toml".as_ref())?,
        None => Config::from_env()?,
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
            let bundle = config.scorer.load_bundle()?;
            println!(
                "configuration ok: {} site(s), bundle {} ({}, {} features, {} rules)",
                config.sites.len(),
                bundle.id,
                bundle.name,
                bundle.features.len(),
                bundle.rules.len()
            );
            Ok(())
        }
        Some(Command::Bundle {
            action,
            admin,
            token,
        }) => match action {
            BundleAction::Check { .. } => Ok(()),
            BundleAction::Show => {
                let value = admin_call(&config, admin, token, "GET", "/admin/bundle", None)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
                Ok(())
            }
            BundleAction::Activate { file } => {
                let bundle = match pulse_scorer::Bundle::read(&file) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        std::process::exit(1);
                    }
                };
                let files: serde_json::Map<String, serde_json::Value> = bundle
                    .files
                    .iter()
                    .map(|(name, bytes)| {
                        let text = String::from_utf8_lossy(bytes).into_owned();
                        (name.clone(), serde_json::Value::String(text))
                    })
                    .collect();
                let body = serde_json::json!({"bundle": &*bundle.source, "files": files});
                let value = admin_call(&config, admin, token, "PUT", "/admin/bundle", Some(body))?;
                println!("{}", serde_json::to_string_pretty(&value)?);
                Ok(())
            }
            BundleAction::Rollback => {
                let value = admin_call(
                    &config,
                    admin,
                    token,
                    "POST",
                    "/admin/bundle/rollback",
                    Some(serde_json::json!({})),
                )?;
                println!("{}", serde_json::to_string_pretty(&value)?);
                Ok(())
            }
        },
        Some(Command::Reader {
            id,
            erase,
            admin,
            token,
        }) => {
            let path = format!("/admin/readers/{}", percent_encode(&id));
            let method = if erase { "DELETE" } else { "GET" };
            let value = admin_call(&config, admin, token, method, &path, None)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        Some(Command::Dump {
            dead_letters,
            decisions,
        }) => dump(&config, dead_letters, decisions),
        Some(Command::Replay { bundle, json }) => replay(&config, &bundle, json),
        Some(Command::Limits {
            action,
            admin,
            token,
        }) => limits(&config, action, admin, token),
        // Answered before the configuration is read.
        Some(Command::Schema { .. }) => Ok(()),
        None => run(config),
    }
}

/// The logs of the configured data folder: locked, or read-only beside a running gateway.
fn log_files(config: &Config) -> anyhow::Result<LogFiles> {
    let data = &config.server.data;
    if !data.join("log").is_dir() {
        anyhow::bail!(
            "{} holds no log (is it a gateway's data folder?)",
            data.display()
        );
    }
    let (files, live) = LogFiles::open_or_read_only(data)?;
    if live {
        eprintln!(
            "a gateway has {} open: reading the blocks written so far",
            data.join("log").display()
        );
    }
    Ok(files)
}

fn dump(config: &Config, dead_letters: bool, decisions: bool) -> anyhow::Result<()> {
    let log = match (dead_letters, decisions) {
        (true, _) => "dead_letters",
        (_, true) => "decisions",
        _ => "events",
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    log_files(config)?.dump(log, &mut out)?;
    Ok(std::io::Write::flush(&mut out)?)
}

/// `gateway replay --bundle FILE [--json]`.
fn replay(config: &Config, candidate: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let active = config.scorer.load_bundle()?;
    let candidate = pulse_scorer::Bundle::read(candidate)
        .map_err(|e| anyhow::anyhow!("{}: {e}", candidate.display()))?;
    let files = log_files(config)?;
    let report = pulse_gateway::backtest(&files, active, candidate)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn run(config: Config) -> anyhow::Result<()> {
    // Before any thread: this may start the program again, with the same arguments.
    let pages = pulse_scorer::huge_pages(config.scorer.huge_pages);
    tracing::info!(heap = %pages, "reader-state memory");
    if config.sites.is_empty() {
        tracing::warn!("no [[sites]] configured: every batch will be refused (unknown_site_key)");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let data = config.server.data.clone();
        let drain_delay = std::time::Duration::from_millis(config.server.drain_delay_ms);
        let listeners = Listeners::bind(config.listen_settings())
            .await
            .context("binding the listeners")?;
        let listening = listener_lines(&listeners);
        // The listeners answer at once (/healthz ok, /readyz 503 "starting") while the stores
        // open and reader state is brought up to date.
        let starting = Arc::new(pulse_gateway::Starting::default());
        let draining = Arc::clone(&starting);
        let shutdown = async move {
            shutdown_signal().await;
            pulse_gateway::notify("STOPPING=1\nSTATUS=draining");
            if let Some(gw) = draining.gateway() {
                gw.set_draining();
            }
            if !drain_delay.is_zero() {
                tracing::info!(
                    ms = drain_delay.as_millis() as u64,
                    "stopping: /readyz answers 503, still serving for drain_delay_ms"
                );
                tokio::time::sleep(drain_delay).await;
            }
        };
        let serving = tokio::spawn(serve_all(Arc::clone(&starting), listeners, shutdown));
        let opened = tokio::task::spawn_blocking(move || Gateway::open(config))
            .await
            .context("opening the stores")?;
        let gateway =
            Arc::new(opened.with_context(|| format!("opening the stores in {}", data.display()))?);
        starting.ready(Arc::clone(&gateway));
        if serving.is_finished() {
            // Stopped while starting: close what was opened.
            gateway.close().await.context("closing the stores")?;
            return serving.await.context("the listeners")?.map_err(Into::into);
        }
        print_addresses(&gateway, &listening);
        pulse_gateway::notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=serving",
            std::process::id()
        ));
        tokio::spawn(reload_on_hangup(Arc::clone(&gateway)));
        serving.await.context("the listeners")??;
        tracing::info!("stopped");
        Ok(())
    })
}

/// What the listeners are, for stdout: their addresses and certificate (taken before they are
/// handed to the server).
struct Listening {
    http: SocketAddr,
    admin: Option<SocketAddr>,
    lines: Vec<String>,
}

fn listener_lines(listeners: &Listeners) -> Listening {
    let addr = listeners.http_addr();
    let mut lines = vec![format!("pulse gateway listening on http://{addr}/")];
    if let Some(admin) = listeners.admin_addr() {
        lines.push(format!("pulse admin listening on http://{admin}/"));
    }
    if let Some(tls) = listeners.https_addr() {
        let quic = if listeners.quic_addr().is_some() {
            "; QUIC: h3"
        } else {
            ""
        };
        lines.push(format!(
            "pulse gateway listening on https://{tls}/ (TLS: h2, http/1.1{quic})"
        ));
    }
    if let Some(cert) = listeners.certificate() {
        let kind = if cert.self_signed {
            " (self-signed)"
        } else {
            ""
        };
        lines.push(format!("  certificate: {}{kind}", cert.cert_path.display()));
        lines.push(format!("  sha256:      {}", cert.sha256));
        lines.push(format!("  spki sha256: {}", cert.spki_sha256_base64));
        tracing::info!(
            cert = %cert.cert_path.display(),
            self_signed = cert.self_signed,
            sha256 = %cert.sha256,
            spki_sha256 = %cert.spki_sha256_base64,
            "TLS certificate"
        );
    }
    Listening {
        http: addr,
        admin: listeners.admin_addr(),
        lines,
    }
}

/// The addresses on stdout, once the gateway serves: the first line names the HTTP address
/// (tests and scripts read it, and take it to mean "ready").
fn print_addresses(gateway: &Gateway, listening: &Listening) {
    let addr = listening.http;
    for line in &listening.lines {
        println!("{line}");
    }
    let server = &gateway.config.server;
    if server.site_dir.is_some() {
        println!("  demo site:  http://{addr}/   (the first three articles are free)");
    }
    println!("  collect:    POST http://{addr}/v1/collect?k=<site key>");
    println!("  health:     http://{addr}/healthz");
    println!("  readiness:  http://{addr}/readyz");
    if let Some(admin) = listening.admin {
        println!(
            "  admin:      http://{admin}/admin/limits, /admin/reload, /metrics (token {})",
            match gateway.admin_token_source() {
                TokenSource::Env => format!("from {TOKEN_ENV}"),
                TokenSource::Config => "from server.admin_token".to_owned(),
                TokenSource::File(path) => format!("in {}", path.display()),
            }
        );
        println!("  operations: http://{admin}/ops/   (sign in with that token)");
    }
    println!("  store:      {}", server.data.display());
    println!("  sink:       {}", gateway.sink_kind());
}

/// Re-reads the config file on SIGHUP and applies what can change while running (the same
/// reload as `POST /admin/reload`). A bad file is reported and changes nothing.
async fn reload_on_hangup(gateway: Arc<Gateway>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP; reload through the admin API only");
        return;
    };
    while hup.recv().await.is_some() {
        pulse_gateway::notify("RELOADING=1\nSTATUS=reloading the configuration");
        let gw = Arc::clone(&gateway);
        // Reading and checking the file is blocking work: off the runtime's threads.
        let reloaded = tokio::task::spawn_blocking(move || gw.control().reload()).await;
        gateway.metrics.config_reload(matches!(reloaded, Ok(Ok(_))));
        pulse_gateway::notify(&format!(
            "READY=1\nSTATUS=serving (last reload: {})",
            if matches!(reloaded, Ok(Ok(_))) {
                "applied"
            } else {
                "refused"
            }
        ));
        match reloaded {
            Ok(Ok(applied)) => tracing::info!(
                limits = ?applied.limits,
                bundle = ?applied.bundle,
                sites = applied.sites,
                "SIGHUP: configuration reloaded ([server], [limits], [transport], [sink] and [dead_letters] need a restart)"
            ),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: configuration refused; nothing changed")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
        }
    }
}

/// `gateway bundle check FILE`.
fn bundle_check(file: &std::path::Path) -> anyhow::Result<()> {
    match pulse_scorer::Bundle::read(file) {
        Ok(bundle) => {
            println!(
                "bundle ok: {} ({}), feature set {:016x}, {} features:",
                bundle.id,
                bundle.name,
                bundle.feature_set,
                bundle.features.len()
            );
            for f in &bundle.features {
                let window = f.window.map(|w| format!(" over {w}")).unwrap_or_default();
                println!("  {}: {}{window}", f.name, f.template);
            }
            if let Some(m) = &bundle.model {
                println!(
                    "model: {} ({}, {} inputs, {} trees)",
                    m.file,
                    m.model.format().as_str(),
                    m.inputs.len(),
                    m.model.trees()
                );
            }
            println!(
                "{} rules: {}",
                bundle.rules.len(),
                bundle.rules.ids().join(", ")
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            std::process::exit(1);
        }
    }
}

/// `gateway limits show|set`.
fn limits(
    config: &Config,
    action: LimitsAction,
    admin: Option<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let value = match action {
        LimitsAction::Show => admin_call(config, admin, token, "GET", "/admin/limits", None)?,
        LimitsAction::Set { changes } => {
            let patch = limits_patch(&changes)?;
            admin_call(config, admin, token, "PUT", "/admin/limits", Some(patch))?
        }
    };
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
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
