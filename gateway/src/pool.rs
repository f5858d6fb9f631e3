//! Buffers reused from request to request (decoded bodies, log records), so that the ingest
//! path does not allocate and fault in fresh pages for each. Bounded: at most `MAX_KEPT`
//! buffers are kept, and none larger than `MAX_KEPT_BYTES` (a larger one is dropped, so a
//! burst of big bodies does not pin memory).

use std::sync::Mutex;

/// Most buffers kept.
const MAX_KEPT: usize = 256;
/// Largest buffer kept, in bytes of capacity.
const MAX_KEPT_BYTES: usize = 1 << 20;

/// A pool of byte buffers.
#[derive(Debug, Default)]
pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// An empty buffer, reused when one is free.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default()
    }

    /// Gives a buffer back for reuse (cleared), unless the pool is full or it is too large.
    pub fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > MAX_KEPT_BYTES {
            return;
        }
        buf.clear();
        if let Ok(mut free) = self.free.lock()
            && free.len() < MAX_KEPT
        {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_cleared_and_big_ones_are_dropped() {
        let pool = BufPool::default();
        let mut b = pool.take();
        b.extend_from_slice(b"abc");
        let cap = b.capacity();
        pool.put(b);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
        pool.put(Vec::with_capacity(MAX_KEPT_BYTES + 1));
        assert_eq!(pool.take().capacity(), 0);
    }
}
