//! The event ids of the batches between admission and their state update, so that a batch sent
//! again (`resent`) while its first send is still being stored waits for it, and then finds its
//! events held by reader state instead of storing them a second time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Stripes of the set (by the id's low bits).
const STRIPES: usize = 64;

/// Event ids in flight, with how many batches carry each.
#[derive(Debug)]
pub(crate) struct InFlight {
    stripes: Box<[Mutex<HashMap<u128, u32>>]>,
    done: tokio::sync::Notify,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            done: tokio::sync::Notify::new(),
        }
    }
}

/// A batch's ids in flight until dropped.
#[derive(Debug)]
pub(crate) struct Entered<'a> {
    set: &'a InFlight,
    ids: Vec<u128>,
}

impl InFlight {
    fn stripe(&self, id: u128) -> &Mutex<HashMap<u128, u32>> {
        &self.stripes[(id as usize) % STRIPES]
    }

    /// Marks `ids` in flight until the guard is dropped.
    pub(crate) fn enter(&self, ids: Vec<u128>) -> Entered<'_> {
        for &id in &ids {
            if let Ok(mut s) = self.stripe(id).lock() {
                *s.entry(id).or_default() += 1;
            }
        }
        Entered { set: self, ids }
    }

    fn any(&self, ids: &[u128]) -> bool {
        ids.iter().any(|id| {
            self.stripe(*id)
                .lock()
                .map(|s| s.contains_key(id))
                .unwrap_or(false)
        })
    }

    /// Waits until none of `ids` is in flight, at most `wait`. Whether none is.
    pub(crate) async fn wait_clear(&self, ids: &[u128], wait: Duration) -> bool {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.any(ids) {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return !self.any(ids);
            }
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        for &id in &self.ids {
            if let Ok(mut s) = self.set.stripe(id).lock()
                && let Some(n) = s.get_mut(&id)
            {
                *n -= 1;
                if *n == 0 {
                    s.remove(&id);
                }
            }
        }
        self.set.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_resend_waits_for_its_first_send() {
        let set = Arc::new(InFlight::default());
        assert!(set.wait_clear(&[1, 2], Duration::from_millis(1)).await);
        let first = set.enter(vec![1, 2]);
        let again = set.enter(vec![2]);
        assert!(
            !set.wait_clear(&[2], Duration::from_millis(20)).await,
            "still in flight"
        );
        drop(again);
        let waiter = {
            let set = Arc::clone(&set);
            tokio::spawn(async move { set.wait_clear(&[2, 3], Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap());
        assert!(set.wait_clear(&[1], Duration::ZERO).await);
    }
}
