//! The bundle in force: swapped atomically, read without blocking writers for long. A batch
//! takes the bundle once and uses it throughout, so it sees one bundle or the other, never a
//! mix.

use std::sync::{Arc, RwLock};

use super::Bundle;

/// Holds the active bundle.
#[derive(Debug)]
pub struct ActiveBundle(RwLock<Arc<Bundle>>);

impl ActiveBundle {
    /// Starts with `bundle`.
    pub fn new(bundle: Bundle) -> Self {
        Self(RwLock::new(Arc::new(bundle)))
    }

    /// The bundle in force now.
    pub fn get(&self) -> Arc<Bundle> {
        match self.0.read() {
            Ok(b) => Arc::clone(&b),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts `bundle` in force; returns the one it replaces.
    pub fn set(&self, bundle: Arc<Bundle>) -> Arc<Bundle> {
        let mut guard = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *guard, bundle)
    }
}
