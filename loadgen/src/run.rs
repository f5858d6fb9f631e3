//! The driver: closed loop (every worker sends its next request as soon as the last one is
//! answered) or open loop (requests are due at a fixed rate whatever the server does, and each
//! latency is measured from the time its request was due, so a slow server cannot hide queueing:
//! no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pulse_sim::TrafficConfig;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::bodies::BodyPool;
use crate::check::{Failure, check_answer};
use crate::report::{Report, Setup, Tally};
use crate::transport::{Connector, Proto, Sender, Target, TlsOptions, TransportError};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Base URL of the server (`http://127.0.0.1:8080`).
    pub url: String,
    /// Site key (`?k=`).
    pub site: String,
    /// `Origin` header to send, if any.
    pub origin: Option<String>,
    /// The HTTP version.
    pub proto: Proto,
    /// Connections (h1: one per worker).
    pub connections: usize,
    /// Concurrent requests per connection (h2, h3; h1 always 1).
    pub streams: usize,
    /// Open loop at this many requests per second; closed loop when `None`.
    pub rate: Option<f64>,
    /// Measured time, after the warmup.
    pub duration: Duration,
    /// Time before measuring starts (requests are sent but not counted).
    pub warmup: Duration,
    /// Stop after this many measured requests (closed loop), if sooner than `duration`.
    pub requests: Option<u64>,
    /// Events per batch.
    pub events_per_batch: usize,
    /// Distinct readers.
    pub readers: usize,
    /// Seed of the simulated traffic.
    pub seed: u64,
    /// Distinct bodies to prepare (default: enough for the whole run, within limits).
    pub pool: Option<usize>,
    /// Time for one request before it counts as an error (`timeout`).
    pub timeout: Duration,
    /// TLS trust settings for `https://`.
    pub tls: TlsOptions,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The target, TLS settings or the first connections failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The options make no run (zero connections, a rate of 0…).
    #[error("invalid options: {0}")]
    Options(String),
}

/// Counters shared with the progress line.
#[derive(Debug, Default)]
struct Live {
    done: AtomicU64,
    errors: AtomicU64,
    issued_measured: AtomicU64,
}

/// How many bodies to prepare when `--pool` is not given.
fn default_pool(opts: &RunOptions) -> usize {
    let total = opts.duration + opts.warmup;
    let wanted = match (opts.rate, opts.requests) {
        (Some(rate), _) => (rate * total.as_secs_f64()).ceil() as usize + 64,
        (None, Some(n)) => n as usize + 1_000,
        (None, None) => 20_000,
    };
    wanted.clamp(256, 300_000)
}

/// Runs the load and reports on the measured window.
pub async fn run(opts: &RunOptions) -> Result<Report, RunError> {
    if opts.connections == 0 || opts.streams == 0 {
        return Err(RunError::Options(
            "connections and streams must be at least 1".into(),
        ));
    }
    if opts.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(RunError::Options(
            "the rate must be a positive number".into(),
        ));
    }
    let target = Target::parse(&opts.url, &opts.site)?;
    let connector =
        Arc::new(Connector::new(opts.proto, target, opts.origin.as_deref(), &opts.tls).await?);
    let count = opts.pool.unwrap_or_else(|| default_pool(opts)).max(1);
    let traffic = TrafficConfig {
        site_key: opts.site.clone(),
        readers: opts.readers.max(1),
        seed: opts.seed,
        ..TrafficConfig::default()
    };
    let (events, now) = (opts.events_per_batch, crate::now_ms());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = tokio::task::spawn_blocking(move || {
        Arc::new(BodyPool::generate(&traffic, events, count, now, threads))
    })
    .await
    .map_err(|e| RunError::Options(format!("generating bodies: {e}")))?;

    // Connections first, so that handshakes are not measured.
    let streams = if opts.proto == Proto::H1 {
        1
    } else {
        opts.streams
    };
    let mut senders = Vec::with_capacity(opts.connections * streams);
    for _ in 0..opts.connections {
        let sender = connector.connect().await?;
        for _ in 1..streams {
            if let Some(shared) = sender.share() {
                senders.push(shared);
            }
        }
        senders.push(sender);
    }

    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let queue = opts.rate.map(|rate| {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        tokio::spawn(dispatch(tx, rate, start, end));
        Arc::new(Mutex::new(rx))
    });
    let done = Arc::new(AtomicBool::new(false));
    let progress = opts.progress.then(|| {
        tokio::spawn(progress_line(
            Arc::clone(&live),
            Arc::clone(&done),
            start,
            measure_from,
        ))
    });

    let workers: Vec<_> = senders
        .into_iter()
        .map(|sender| {
            let worker = Worker {
                connector: Arc::clone(&connector),
                pool: Arc::clone(&pool),
                live: Arc::clone(&live),
                queue: queue.clone(),
                measure_from,
                end,
                requests: opts.requests,
                timeout: opts.timeout,
            };
            tokio::spawn(worker.run(sender))
        })
        .collect();
    drop(queue);
    let mut tally = Tally::default();
    let mut last = None;
    for w in workers {
        if let Ok((t, l)) = w.await {
            tally.merge(&t);
            last = last.max(l);
        }
    }
    done.store(true, Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    if pool.cycled() {
        eprintln!(
            "note: the {} prepared bodies were sent more than once (raise --pool for unique events)",
            pool.len()
        );
    }
    // The window ends at the last answer; for a timed run, not before the planned end (an open
    // loop at a low rate may have its last answer well before it).
    let stop = match (opts.rate, opts.requests) {
        (None, Some(_)) => last.unwrap_or(end),
        _ => last.map_or(end, |l: Instant| l.max(end)),
    };
    let elapsed = stop.saturating_duration_since(measure_from);
    let setup = Setup {
        url: connector.target().collect.to_string(),
        proto: opts.proto.as_str().to_owned(),
        mode: if opts.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_owned(),
        target_rate: opts.rate,
        connections: opts.connections,
        streams,
        events_per_batch: opts.events_per_batch,
        readers: opts.readers,
    };
    Ok(tally.report(setup, elapsed))
}

/// Sends the due time of each request of an open-loop run into the queue, at `rate` per second
/// from `start` until `end`. When the timer fires late, every request already due is queued at
/// once, with the time it was due.
async fn dispatch(tx: mpsc::UnboundedSender<Instant>, rate: f64, start: Instant, end: Instant) {
    let mut k: u64 = 0;
    loop {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        if due >= end {
            return;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        if tx.send(due).is_err() {
            return;
        }
        k += 1;
    }
}

async fn progress_line(
    live: Arc<Live>,
    done: Arc<AtomicBool>,
    start: Instant,
    measure_from: Instant,
) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = 0;
    while !done.load(Relaxed) {
        tick.tick().await;
        let now = Instant::now();
        let n = live.done.load(Relaxed);
        let phase = if now < measure_from {
            "warmup"
        } else {
            "measure"
        };
        eprintln!(
            "[{:>4.0}s {phase}] {n} requests ({}/s), {} errors",
            now.duration_since(start).as_secs_f64(),
            n - last,
            live.errors.load(Relaxed)
        );
        last = n;
    }
}

struct Worker {
    connector: Arc<Connector>,
    pool: Arc<BodyPool>,
    live: Arc<Live>,
    queue: Option<Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>>,
    measure_from: Instant,
    end: Instant,
    requests: Option<u64>,
    timeout: Duration,
}

impl Worker {
    /// Sends requests until the run ends; returns its tally and its last measured answer time.
    async fn run(self, mut sender: Sender) -> (Tally, Option<Instant>) {
        let mut tally = Tally::default();
        let mut last = None;
        let mut broken = false;
        loop {
            let due = match &self.queue {
                Some(queue) => match queue.lock().await.recv().await {
                    Some(due) => due,
                    None => break,
                },
                None => {
                    let now = Instant::now();
                    if now >= self.end {
                        break;
                    }
                    if now >= self.measure_from
                        && let Some(n) = self.requests
                        && self.live.issued_measured.fetch_add(1, Relaxed) >= n
                    {
                        break;
                    }
                    now
                }
            };
            let Some(body) = self.pool.next() else { break };
            if broken {
                // Reconnect once per request while the connection is down.
                match self.connector.connect().await {
                    Ok(s) => {
                        sender = s;
                        broken = false;
                    }
                    Err(e) => {
                        let outcome = Err(Failure {
                            status: 0,
                            reason: e.reason().to_owned(),
                        });
                        self.count(
                            &mut tally,
                            &mut last,
                            due,
                            body.events,
                            body.bytes.len(),
                            &outcome,
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
            let sent = tokio::time::timeout(
                self.timeout,
                self.connector.post(&mut sender, body.bytes.clone()),
            )
            .await;
            let outcome = match sent {
                Ok(Ok((status, answer))) => check_answer(status, &answer, body.events),
                Ok(Err(e)) => {
                    broken = true;
                    Err(Failure {
                        status: 0,
                        reason: e.reason().to_owned(),
                    })
                }
                Err(_) => {
                    // The request may still be in flight on this connection: use a new one.
                    broken = true;
                    Err(Failure {
                        status: 0,
                        reason: "timeout".to_owned(),
                    })
                }
            };
            self.count(
                &mut tally,
                &mut last,
                due,
                body.events,
                body.bytes.len(),
                &outcome,
            );
            if broken {
                // Do not spin on a server that refuses the protocol.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        (tally, last)
    }

    fn count(
        &self,
        tally: &mut Tally,
        last: &mut Option<Instant>,
        due: Instant,
        events: usize,
        bytes: usize,
        outcome: &Result<u32, Failure>,
    ) {
        let now = Instant::now();
        self.live.done.fetch_add(1, Relaxed);
        if outcome.is_err() {
            self.live.errors.fetch_add(1, Relaxed);
        }
        if due >= self.measure_from {
            tally.record(now.saturating_duration_since(due), events, bytes, outcome);
            *last = (*last).max(Some(now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RunOptions {
        RunOptions {
            url: "http://127.0.0.1:1".into(),
            site: "demo".into(),
            origin: None,
            proto: Proto::H1,
            connections: 1,
            streams: 1,
            rate: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            requests: None,
            events_per_batch: 10,
            readers: 10,
            seed: 1,
            pool: None,
            timeout: Duration::from_secs(1),
            tls: TlsOptions::default(),
            progress: false,
        }
    }

    #[test]
    fn the_pool_covers_an_open_loop_run() {
        let mut o = opts();
        o.rate = Some(1000.0);
        assert_eq!(default_pool(&o), 11_064);
        o.rate = None;
        assert_eq!(default_pool(&o), 20_000);
        o.requests = Some(10);
        assert_eq!(default_pool(&o), 1_010);
    }

    #[tokio::test]
    async fn bad_options_are_refused_before_connecting() {
        let mut o = opts();
        o.connections = 0;
        assert!(matches!(run(&o).await, Err(RunError::Options(_))));
        let mut o = opts();
        o.rate = Some(0.0);
        assert!(matches!(run(&o).await, Err(RunError::Options(_))));
        let mut o = opts();
        o.proto = Proto::H3;
        assert!(matches!(
            run(&o).await,
            Err(RunError::Transport(TransportError::Url(_)))
        ));
    }
}
