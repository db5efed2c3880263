//! Failing storage on command: the seams for testing what the log does when the disk errors
//! at a chosen moment, in addition to tests on a really full file system.
//!
//! - [`FaultInjectingStore`] wraps any store and fails whole commits, before or after they
//!   reach the store.
//! - [`CommitStep`] names each step inside an SQLite commit; a [`StepHook`] given to
//!   [`super::SqliteStore::with_step_hook`] runs at each, and can fail the commit there — or
//!   end the process there, which is how the crash tests stop a control plane half-way
//!   through writing a decision.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::store::{AuditStore, ReaderSource, Seal, StoreError};

/// A step of one SQLite commit, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitStep {
    /// Before the transaction begins.
    Begin,
    /// The events are inserted, nothing else.
    Events,
    /// The state changes are applied too.
    State,
    /// The checkpoint is written too; `COMMIT` comes next.
    Checkpoint,
    /// `COMMIT` returned: everything is durable (a failure here is one the caller cannot
    /// tell from a lost write).
    Committed,
}

impl CommitStep {
    /// Every step, in order.
    pub const ALL: [CommitStep; 5] = [
        CommitStep::Begin,
        CommitStep::Events,
        CommitStep::State,
        CommitStep::Checkpoint,
        CommitStep::Committed,
    ];
}

/// Runs at each [`CommitStep`]; an `Err` fails the commit there.
pub type StepHook = Arc<dyn Fn(CommitStep) -> Result<(), StoreError> + Send + Sync>;

/// A [`StepHook`] that fails the next commit to reach `step`, once, when armed.
#[derive(Clone, Debug, Default)]
pub struct StepFault(Arc<std::sync::Mutex<Option<CommitStep>>>);

impl StepFault {
    /// A fault, disarmed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the next commit that reaches `step`.
    pub fn arm(&self, step: CommitStep) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(step);
    }

    /// Whether the armed fault has not fired yet.
    pub fn is_armed(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// The hook to give the store.
    pub fn hook(&self) -> StepHook {
        let armed = self.0.clone();
        Arc::new(move |step| {
            let mut armed = armed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *armed == Some(step) {
                *armed = None;
                return Err(StoreError::Io(format!("injected I/O error at {step:?}")));
            }
            Ok(())
        })
    }
}

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
    fn commit(&mut self, seal: &mut Seal<'_>) -> Result<(), StoreError> {
        self.run(|inner| inner.commit(seal))
    }

    fn maintain(&mut self) -> Result<(), StoreError> {
        self.inner.maintain()
    }

    fn readers(&self) -> Arc<dyn ReaderSource> {
        self.inner.readers()
    }
}
