//! A storage wrapper that fails on command: the seam for testing what the log does when the
//! disk errors at a chosen moment, in addition to tests on a really full file system.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::store::{AuditStore, ReaderSource, StoreError, StoredEvent};

/// Wraps a store; while the switch is on, every write fails with an I/O error.
pub struct FaultInjectingStore<S> {
    inner: S,
    failing: Arc<AtomicBool>,
}

/// Turns the injected failure on and off from outside the writer thread.
#[derive(Clone, Debug)]
pub struct FaultSwitch(Arc<AtomicBool>);

impl FaultSwitch {
    /// Makes every following write fail (`true`) or pass through (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.0.store(failing, Ordering::SeqCst);
    }
}

impl<S: AuditStore> FaultInjectingStore<S> {
    /// Wraps `inner`, passing writes through until the switch is turned on.
    pub fn new(inner: S) -> (Self, FaultSwitch) {
        let failing = Arc::new(AtomicBool::new(false));
        let switch = FaultSwitch(failing.clone());
        (Self { inner, failing }, switch)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected I/O error (EIO)".into()));
        }
        Ok(())
    }
}

impl<S: AuditStore> AuditStore for FaultInjectingStore<S> {
    fn append(&mut self, batch: &[StoredEvent]) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append(batch)
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_checkpoint(size, note)
    }

    fn readers(&self) -> Arc<dyn ReaderSource> {
        self.inner.readers()
    }
}
