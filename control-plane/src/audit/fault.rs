//! A storage wrapper that fails on command: the seam for testing what the log does when the
//! disk errors at a chosen moment, in addition to tests on a really full file system.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::store::{AuditStore, ReaderSource, StoreError, StoredEvent};

/// How writes behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Writes pass through.
    None,
    /// Writes fail with an I/O error and nothing is written.
    FailBeforeWrite,
    /// Writes reach storage, then report an I/O error — as when `fsync` fails after the data
    /// went out: the caller cannot know whether the write is durable.
    FailAfterWrite,
}

/// Wraps a store; writes behave as its [`FaultSwitch`] says.
pub struct FaultInjectingStore<S> {
    inner: S,
    fault: Arc<AtomicU8>,
}

/// Sets the fault from outside the writer thread.
#[derive(Clone, Debug)]
pub struct FaultSwitch(Arc<AtomicU8>);

impl FaultSwitch {
    /// Makes the following writes behave as `fault` says.
    pub fn set(&self, fault: Fault) {
        self.0.store(fault as u8, Ordering::SeqCst);
    }

    /// Shorthand: fail every write before it happens (`true`) or pass writes through.
    pub fn set_failing(&self, failing: bool) {
        self.set(if failing {
            Fault::FailBeforeWrite
        } else {
            Fault::None
        });
    }
}

impl<S: AuditStore> FaultInjectingStore<S> {
    /// Wraps `inner`, passing writes through until the switch says otherwise.
    pub fn new(inner: S) -> (Self, FaultSwitch) {
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let switch = FaultSwitch(fault.clone());
        (Self { inner, fault }, switch)
    }

    fn fault(&self) -> Fault {
        match self.fault.load(Ordering::SeqCst) {
            x if x == Fault::FailBeforeWrite as u8 => Fault::FailBeforeWrite,
            x if x == Fault::FailAfterWrite as u8 => Fault::FailAfterWrite,
            _ => Fault::None,
        }
    }

    fn run(
        &mut self,
        write: impl FnOnce(&mut S) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let injected = || Err(StoreError::Io("injected I/O error (EIO)".into()));
        match self.fault() {
            Fault::None => write(&mut self.inner),
            Fault::FailBeforeWrite => injected(),
            Fault::FailAfterWrite => {
                write(&mut self.inner)?;
                injected()
            }
        }
    }
}

impl<S: AuditStore> AuditStore for FaultInjectingStore<S> {
    fn append(&mut self, batch: &[StoredEvent]) -> Result<(), StoreError> {
        self.run(|inner| inner.append(batch))
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        self.run(|inner| inner.put_checkpoint(size, note))
    }

    fn readers(&self) -> Arc<dyn ReaderSource> {
        self.inner.readers()
    }
}
