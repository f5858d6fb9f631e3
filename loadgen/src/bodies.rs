//! Request bodies made before a run: batches from [`pulse_sim::Traffic`], encoded exactly
//! as the tracker sends them ([`pulse_tracker::encode_batch`]), so that generating and
//! compressing traffic does not take CPU from the server while it is measured.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use pulse_sim::{Traffic, TrafficConfig};
use pulse_tracker::encode_batch;

/// One request body and how many events it carries.
#[derive(Debug, Clone)]
pub struct Body {
    /// The compact body, as the tracker sends it.
    pub bytes: Bytes,
    /// Events in the batch.
    pub events: usize,
}

/// Bodies handed out in order; after the last one the pool starts over (the repeated batches
/// carry the same event ids, which the gateway stores again and its scorer ignores).
#[derive(Debug)]
pub struct BodyPool {
    bodies: Vec<Body>,
    next: AtomicUsize,
}

impl BodyPool {
    /// Makes `count` bodies of `events` events each from `config`'s readers, sent at `now_ms`,
    /// on `threads` threads (each simulates its own share of the readers).
    pub fn generate(
        config: &TrafficConfig,
        events: usize,
        count: usize,
        now_ms: u64,
        threads: usize,
    ) -> Self {
        let threads = threads.clamp(1, config.readers.max(1)).min(count.max(1));
        let parts: Vec<Vec<Body>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let readers =
                        config.readers / threads + usize::from(t < config.readers % threads);
                    let share = count / threads + usize::from(t < count % threads);
                    let part = TrafficConfig {
                        readers,
                        seed: config.seed.wrapping_add(t as u64 * 0x1000_0000_0000_0001),
                        ..config.clone()
                    };
                    scope.spawn(move || {
                        let mut traffic = Traffic::new(&part);
                        (0..share)
                            .map(|_| {
                                let batch = traffic.next_batch(events, now_ms);
                                Body {
                                    events: batch.events.len(),
                                    bytes: Bytes::from(encode_batch(&batch)),
                                }
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        // Interleave the threads' parts so that every stretch of the run has every reader.
        let mut bodies = Vec::with_capacity(count);
        let longest = parts.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            bodies.extend(parts.iter().filter_map(|p| p.get(i).cloned()));
        }
        Self {
            bodies,
            next: AtomicUsize::new(0),
        }
    }

    /// The next body (cycling). `None` only for an empty pool.
    pub fn next(&self) -> Option<&Body> {
        if self.bodies.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.bodies.get(i % self.bodies.len())
    }

    /// How many distinct bodies there are.
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// Whether bodies were handed out more than once.
    pub fn cycled(&self) -> bool {
        self.next.load(Ordering::Relaxed) > self.bodies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn bodies_are_tracker_frames_of_distinct_readers() {
        let config = TrafficConfig {
            readers: 300,
            ..TrafficConfig::default()
        };
        let now = crate::now_ms();
        let pool = BodyPool::generate(&config, 10, 600, now, 3);
        assert_eq!(pool.len(), 600);
        let mut readers = HashSet::new();
        let mut ids = HashSet::new();
        for _ in 0..pool.len() {
            let body = pool.next().unwrap();
            assert_eq!(body.bytes[..3], pulse_protocol::COMPACT_MAGIC);
            let json = pulse_http::decode_to_vec(&body.bytes, None, 1 << 20).unwrap();
            let parsed = pulse_protocol::parse_batch(&json, now).unwrap();
            assert_eq!(parsed.accepted.len(), 10);
            assert_eq!(body.events, 10);
            readers.insert(parsed.header.anonymous_id.to_string());
            ids.extend(parsed.accepted.iter().map(|e| e.id));
        }
        assert!(readers.len() > 250, "{}", readers.len());
        assert_eq!(ids.len(), 6_000);
        assert!(!pool.cycled());
        pool.next();
        assert!(pool.cycled());
    }
}
