//! The narrow storage interface of the audit log.
//!
//! The log needs very little from storage: commit a [`Batch`] — already-encoded events, the
//! state changes they record, and the signed checkpoint that covers them — atomically and
//! durably, and read events, checkpoints and state back. Everything that makes the log
//! tamper-evident (sequencing, hashing, the tree, signing, the self-check) stays in
//! [`super::log`], so a PostgreSQL backend for several control-plane replicas only has to
//! implement these traits — and, because the state a decision changes is part of the batch,
//! it keeps "one decision, one transaction" by committing the batch in one transaction, as
//! SQLite does.

use std::sync::Arc;

use loupe_audit::event::AuditEvent;

use super::query::Filter;

/// Why storage failed. The log turns any of these into a refused append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No space left for the write.
    #[error("audit storage is full: {0}")]
    Full(String),
    /// The database or its directory cannot be written.
    #[error("audit storage is read-only: {0}")]
    ReadOnly(String),
    /// The operating system reported an I/O error.
    #[error("audit storage I/O error: {0}")]
    Io(String),
    /// The stored data is not what the log wrote.
    #[error("audit storage is corrupt: {0}")]
    Corrupt(String),
    /// Any other failure of the backend.
    #[error("audit storage failed: {0}")]
    Other(String),
}

/// One event as stored: its canonical bytes plus the columns queries filter on, which are
/// copies of fields inside `line` (the log checks they agree when it starts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub session: Option<String>,
    pub service: Option<String>,
    pub point: Option<String>,
    /// The canonical bytes, exactly as hashed.
    pub line: Vec<u8>,
}

impl StoredEvent {
    /// The stored form of `event`, whose canonical bytes are `line`.
    pub fn new(event: &AuditEvent, line: Vec<u8>) -> Self {
        Self {
            seq: event.seq,
            time_ms: event.time_ms,
            actor: event.actor.id.clone(),
            action: event.action.as_str().to_owned(),
            outcome: event.decision.outcome.as_str().to_owned(),
            session: event.session.clone(),
            service: event.service.clone(),
            point: event.point.clone(),
            line,
        }
    }
}

/// A stored event borrowed from storage while it is visited (see [`AuditReader::visit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredEventRef<'a> {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub session: Option<&'a str>,
    pub service: Option<&'a str>,
    pub point: Option<&'a str>,
    pub line: &'a [u8],
}

impl StoredEvent {
    /// This event, borrowed.
    pub fn borrowed(&self) -> StoredEventRef<'_> {
        StoredEventRef {
            seq: self.seq,
            time_ms: self.time_ms,
            actor: &self.actor,
            action: &self.action,
            outcome: &self.outcome,
            session: self.session.as_deref(),
            service: self.service.as_deref(),
            point: self.point.as_deref(),
            line: &self.line,
        }
    }
}

/// A session as the control plane stores it: the columns it is found by, and its body (JSON
/// written and read by [`crate::state`]; opaque to the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub requester: String,
    pub service: String,
    pub state: String,
    pub body: String,
}

/// A change of the control plane's state, committed together with the events that record
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// Inserts the session, or replaces the stored version of it.
    PutSession(SessionRow),
}

/// The signed checkpoint a batch carries: it covers every event up to and including the
/// batch's last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointWrite<'a> {
    pub size: u64,
    pub note: &'a str,
    /// Also keep it in the history of checkpoints (once a second or so), not only as the
    /// latest.
    pub archive: bool,
}

/// What one commit writes.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Events with consecutive sequence numbers following the stored ones (may be empty).
    pub events: &'a [StoredEvent],
    /// The state changes those events record, in order.
    pub state: &'a [StateChange],
    /// The checkpoint covering the log as it stands after this batch.
    pub checkpoint: CheckpointWrite<'a>,
}

/// The write side, owned by the log's single writer thread.
pub trait AuditStore: Send + 'static {
    /// Commits `batch` in one transaction: when this returns `Ok`, its events, its state
    /// changes and its checkpoint are all on stable storage; when it returns `Err`, none of
    /// them may be relied on — the caller assumes nothing is acknowledged, and looks at what
    /// is stored before writing again (a failed `fsync` may still have landed).
    fn commit(&mut self, batch: &Batch<'_>) -> Result<(), StoreError>;

    /// Housekeeping off the append path (the writer calls it when it is idle), such as
    /// keeping a write-ahead log small.
    fn maintain(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where read connections come from (shared with query threads).
    fn readers(&self) -> Arc<dyn ReaderSource>;
}

/// Opens read connections.
pub trait ReaderSource: Send + Sync {
    /// A new reader.
    fn open(&self) -> Result<Box<dyn AuditReader>, StoreError>;
}

/// The read side: any number of these, on any thread.
pub trait AuditReader: Send {
    /// How many events are stored.
    fn count(&mut self) -> Result<u64, StoreError>;

    /// Events with `seq >= from`, in sequence order, at most `limit`.
    fn scan(&mut self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError>;

    /// Calls `visit` with each event from `seq >= from` on, in sequence order, until it returns
    /// `false` or the events run out; returns how many it visited. Events are lent, not
    /// copied: this is how the log re-reads everything when it starts.
    fn visit(
        &mut self,
        from: u64,
        visit: &mut dyn FnMut(StoredEventRef<'_>) -> bool,
    ) -> Result<u64, StoreError>;

    /// Events matching `filter` with `seq > after` (all if `None`), in sequence order, at
    /// most `limit`.
    fn query(
        &mut self,
        filter: &Filter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The stored checkpoint with the largest tree size: `(size, note)`.
    fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, StoreError>;

    /// Every stored session.
    fn sessions(&mut self) -> Result<Vec<SessionRow>, StoreError>;
}
