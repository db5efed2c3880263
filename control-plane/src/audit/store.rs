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
use loupe_audit::merkle::Hash;

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
    /// The database cannot be reached (or went away in the middle of a commit).
    #[error("audit storage is unavailable: {0}")]
    Unavailable(String),
    /// The database's schema was written by a newer version of the control plane.
    #[error(
        "the audit database has schema version {found}; this control plane knows versions up to {supported}: upgrade it (or restore the database it had)"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A decision was taken on a session another writer changed meanwhile.
    #[error(
        "session {session} was changed concurrently (stored version {stored}, expected {expected})"
    )]
    Conflict {
        session: String,
        stored: u64,
        expected: u64,
    },
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

/// A session as the control plane stores it: the columns it is found by, its body (JSON
/// written and read by [`crate::state`]; opaque to the log), and its version.
///
/// **Versions make concurrent changes safe** (optimistic concurrency, as several control-plane
/// replicas on one database need): a session is stored at version 1, and each change stores
/// the next version. A change is accepted only if the stored row is still at the version before
/// it (absent, for version 1); otherwise the decision was taken on a stale view — another
/// replica changed the session meanwhile — and its whole append is refused with
/// [`super::AppendError::Conflict`], so of two replicas approving, closing or revoking the same
/// session at once, one wins and is recorded, and the other is refused and recorded nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub requester: String,
    pub service: String,
    pub state: String,
    pub body: String,
    pub version: u64,
}

/// A change of the control plane's state, committed together with the events that record
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// Stores this version of the session: inserts it (version 1) or replaces the version
    /// before it.
    PutSession(SessionRow),
}

impl StateChange {
    /// The session this change stores.
    pub fn session(&self) -> &SessionRow {
        match self {
            StateChange::PutSession(row) => row,
        }
    }
}

/// The signed checkpoint a batch carries: it covers every event up to and including the
/// batch's last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointWrite {
    pub size: u64,
    pub note: String,
    /// Also keep it in the history of checkpoints (once a second or so), not only as the
    /// latest.
    pub archive: bool,
}

/// What one commit writes.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Events with consecutive sequence numbers following the stored ones (may be empty).
    pub events: Vec<StoredEvent>,
    /// The state changes those events record, in order.
    pub state: Vec<StateChange>,
    /// The checkpoint covering the log as it stands after this batch.
    pub checkpoint: CheckpointWrite,
    /// The tree's frontier after this batch ([`Frontier`]).
    pub frontier: Frontier,
}

/// What a writer needs to extend the tree without rereading it: the tree size, the leaf hash
/// of the last event (the next event's `prev`), and the right edge — the roots of the maximal
/// full subtrees, largest first (one per set bit of the size). Stored with every commit in the
/// log's coordination row, so a writer that catches up on what others appended can check that
/// it arrives at the same tree they extended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    pub size: u64,
    pub last_leaf: Hash,
    pub right_edge: Vec<Hash>,
}

impl Frontier {
    /// The stored form: `last_leaf` then each right-edge hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 * (1 + self.right_edge.len()));
        out.extend_from_slice(&self.last_leaf);
        for hash in &self.right_edge {
            out.extend_from_slice(hash);
        }
        out
    }

    /// The frontier of a tree of `size` leaves stored as `bytes`.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Result<Frontier, StoreError> {
        let hashes: Vec<Hash> = bytes
            .chunks(32)
            .map(Hash::try_from)
            .collect::<Result<_, _>>()
            .map_err(|_| {
                StoreError::Corrupt("the stored frontier is not a list of hashes".into())
            })?;
        let Some((last_leaf, right_edge)) = hashes.split_first() else {
            return Err(StoreError::Corrupt("the stored frontier is empty".into()));
        };
        if right_edge.len() != size.count_ones() as usize {
            return Err(StoreError::Corrupt(format!(
                "the stored frontier of a tree of {size} has {} subtree roots",
                right_edge.len()
            )));
        }
        Ok(Frontier {
            size,
            last_leaf: *last_leaf,
            right_edge: right_edge.to_vec(),
        })
    }
}

/// The log as a writer holds it for one commit, other writers kept out: what they committed
/// since this writer last looked, and the stored versions of sessions.
pub trait HeldLog {
    /// Events stored from sequence `from` on (those this writer has not seen: committed by
    /// another writer, or by its own commit that reported failure but landed), in order.
    fn events_from(&mut self, from: u64) -> Result<Vec<StoredEvent>, StoreError>;

    /// Sessions changed by commits that made the log larger than `size`, as stored now.
    fn sessions_changed_after(&mut self, size: u64) -> Result<Vec<SessionRow>, StoreError>;

    /// The stored rows of the sessions named (absent ones are left out).
    fn sessions(&mut self, ids: &[&str]) -> Result<Vec<SessionRow>, StoreError>;

    /// The latest checkpoint: `(size, note)`.
    fn head(&mut self) -> Result<Option<(u64, String)>, StoreError>;

    /// The stored frontier, where the backend keeps one (several writers share it).
    fn frontier(&mut self) -> Result<Option<Frontier>, StoreError>;
}

/// What the writer gives the store to call once it holds the log: it returns the batch to
/// commit, sealed after whatever the log holds (see [`AuditStore::commit`]).
pub type Seal<'a> = dyn FnMut(&mut dyn HeldLog) -> Result<Option<Batch>, StoreError> + 'a;

/// The write side, owned by the log's writer thread.
pub trait AuditStore: Send + 'static {
    /// Commits one batch in one transaction, sequenced after everything stored.
    ///
    /// The store takes the log's write lock (in PostgreSQL, the coordination row, `SELECT …
    /// FOR UPDATE`; in SQLite, the one write transaction), then calls `seal` once, with the
    /// log as held, to learn what to write: `seal` catches up on what others appended and
    /// returns the batch, numbered after it — or `None` when there is nothing left to write.
    /// When this returns `Ok`, the batch's events, state changes and checkpoint are all on
    /// stable storage; when it returns `Err`, none of them may be relied on — the caller
    /// assumes nothing is acknowledged, and catches up on what is stored before writing again
    /// (a commit whose acknowledgement was lost may still have landed).
    fn commit(&mut self, seal: &mut Seal<'_>) -> Result<(), StoreError>;

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

    /// A reader whose every read sees the database as it was at one moment (the log's check
    /// at start reads the events and the checkpoint that must cover them). A store with one
    /// writer, which is not writing yet, needs nothing more than [`open`](Self::open).
    fn open_snapshot(&self) -> Result<Box<dyn AuditReader>, StoreError> {
        self.open()
    }
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

    /// The history of checkpoints (kept about once a second), `(size, note)`, smallest first.
    /// The latest may be only in [`latest_checkpoint`](Self::latest_checkpoint).
    fn checkpoints(&mut self) -> Result<Vec<(u64, String)>, StoreError>;

    /// Every stored session.
    fn sessions(&mut self) -> Result<Vec<SessionRow>, StoreError>;
}
