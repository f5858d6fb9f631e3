//! A fault-injecting HTTP/1.1 proxy in front of a gateway, for measuring delivery: it forwards
//! every request (one per connection, `Connection: close`), except that some `POST /v1/collect`
//! are answered `503 store_unavailable` with `Retry-After: 1` without reaching the gateway, as a
//! gateway whose store is down answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Collect requests answered 503 so far.
    pub refused: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Forwards to `upstream` (`http://host:port`), answering 503 to the collect requests whose
    /// number `n` (from 0) has `n % every == 1` (every one with `every == 1`; none with 0).
    pub fn start(upstream: &str, every: u64) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, refused) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (flag, count) = (Arc::clone(&stop), Arc::clone(&refused));
        let thread = std::thread::spawn(move || {
            let collects = Arc::new(AtomicU64::new(0));
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let (upstream, collects, count) =
                            (upstream.clone(), Arc::clone(&collects), Arc::clone(&count));
                        std::thread::spawn(move || {
                            let _ = serve(client, &upstream, every, &collects, &count);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            url,
            refused,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    every: u64,
    collects: &AtomicU64,
    refused: &AtomicU64,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.clone();
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut client = client;
    if request_line.starts_with("POST /v1/collect") {
        let n = collects.fetch_add(1, Ordering::Relaxed);
        if every > 0 && (every == 1 || n % every == 1) {
            refused.fetch_add(1, Ordering::Relaxed);
            let body = br#"{"error":{"code":"store_unavailable","message":"injected by the test's proxy"}}"#;
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 access-control-allow-origin: *\r\naccess-control-expose-headers: Retry-After\r\n\
                 retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            client.write_all(answer.as_bytes())?;
            client.write_all(body)?;
            return Ok(());
        }
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(b"connection: close\r\n\r\n")?;
    up.write_all(&body)?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    client.write_all(&answer)
}
