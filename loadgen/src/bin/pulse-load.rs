//! `pulse-load`: sends realistic reader traffic to a Pulse collect endpoint and reports what
//! the server sustained; `pulse-load bytes` compares encodings' bytes per event.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pulse_load::{Proto, RunOptions, TlsOptions, bytes_table, run};

/// Load generator for Pulse collect endpoints (the gateway, or pulse-floor). Each request is
/// `POST {url}/v1/collect?k={site}` with a batch encoded exactly as the tracker sends it (the
/// compact body: a binary record, raw-DEFLATEd); every answer is checked (a 200 must accept every
/// event and carry a decision).
#[derive(Parser, Debug)]
#[command(name = "pulse-load", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print bytes per event for JSON, gzip, the compact body without and with the dictionary
    /// the gateway would train on the site's traffic (as the tracker sends it), zstd -3 and zstd
    /// -3 with a trained dictionary, for batches of 1, 10 and 50 events.
    Bytes {
        /// Batches (of other readers) the dictionary is trained on.
        #[arg(long, default_value_t = 1000)]
        train: usize,
        /// Batches measured per batch size.
        #[arg(long, default_value_t = 2000)]
        batches: usize,
        /// Largest dictionary to train, bytes (the compact body's at most 32768).
        #[arg(long, default_value_t = 16384)]
        dict_size: usize,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Base URL of the server: http://HOST:PORT (h1, h2 with prior knowledge) or https://
    /// (h1 or h2 over TLS, h3 over QUIC).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Site key sent as ?k= and in every batch.
    #[arg(long, default_value = "demo")]
    site: String,
    /// Origin header to send (must be allowed for the site); none by default.
    #[arg(long)]
    origin: Option<String>,
    /// HTTP version: h1, h2 or h3.
    #[arg(long, value_enum, default_value = "h1")]
    proto: Proto,
    /// Connections to open (for h1, also the number of concurrent requests).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Concurrent requests per connection for h2 and h3.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Open loop: requests per second, latency measured from each request's due time. Without
    /// it, closed loop: as fast as the connections allow.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured (after the warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Closed loop: stop after this many measured requests (or at --duration, if sooner).
    #[arg(long)]
    requests: Option<u64>,
    /// Events per batch (1 to 100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=100))]
    events_per_batch: u16,
    /// Distinct readers (anonymous ids) sending.
    #[arg(long, default_value_t = 10_000)]
    readers: usize,
    /// Seed of the simulated traffic (default: from the clock, so event ids differ per run).
    #[arg(long)]
    seed: Option<u64>,
    /// Distinct request bodies to prepare before the run (default: enough for the run, up to
    /// 300000; closed loop without --requests: 20000); after that they are sent again.
    #[arg(long)]
    pool: Option<usize>,
    /// Seconds before a request counts as failed (reason `timeout`).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// PEM file of the certificate(s) to trust for https:// (the gateway's self-signed one).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Accept any server certificate. Test use on loopback only: no protection at all.
    #[arg(long)]
    insecure: bool,
    /// Print the report as JSON on stdout (the progress line still goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Exit with status 1 when the share of failed requests is above this (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    max_error_rate: f64,
}

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("--{what} must be a number of seconds >= 0"))
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Some(Command::Bytes {
        train,
        batches,
        dict_size,
        json,
    }) = cli.command
    {
        let table = bytes_table(&[1, 10, 50], batches, dict_size, train)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&table)?);
        } else {
            print!("{}", table.markdown());
            println!(
                "\nbytes per event, mean of {batches} batches per size; dictionary {} bytes",
                table.dictionary_bytes
            );
            let mix: Vec<String> = table
                .mix
                .iter()
                .map(|(k, v)| format!("{k} {:.1}%", v * 100.0))
                .collect();
            println!(
                "event mix: {}; batches from logged-in readers {:.1}%",
                mix.join(", "),
                table.logged_in_batches * 100.0
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let a = cli.run;
    let opts = RunOptions {
        url: a.url,
        site: a.site,
        origin: a.origin,
        proto: a.proto,
        connections: a.connections,
        streams: a.streams,
        rate: a.rate,
        duration: seconds(a.duration, "duration")?,
        warmup: seconds(a.warmup, "warmup")?,
        requests: a.requests,
        events_per_batch: usize::from(a.events_per_batch),
        readers: a.readers,
        seed: a.seed.unwrap_or_else(pulse_load::now_ms),
        pool: a.pool,
        timeout: seconds(a.timeout, "timeout")?,
        tls: TlsOptions {
            ca: a.ca,
            insecure: a.insecure,
        },
        progress: !a.quiet,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(run(&opts))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.error_rate > a.max_error_rate {
        eprintln!(
            "error rate {:.4} is above --max-error-rate {}",
            report.error_rate, a.max_error_rate
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
