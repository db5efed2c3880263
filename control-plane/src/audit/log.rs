//! The running audit log: appends, checkpoints, reads, proofs and exports.
//!
//! **Writing.** One writer thread owns the store. Appenders send their events — with the
//! state change they record, if any ([`AuditLog::append_with_state`]) — and a reply channel
//! through a bounded queue; the writer takes everything waiting (up to
//! [`AuditLogConfig::max_batch`]), gives each event its sequence number, time and `prev`
//! hash, encodes and hashes it, signs the checkpoint of the tree as it will stand, writes the
//! events, the state changes and that checkpoint in one transaction and commits — one fsync
//! shared by every appender in the batch (group commit) — and only then applies the state
//! changes to the [`StateObserver`] (the control plane's in-memory table) and replies. When
//! fewer appenders are waiting than shared the previous commit, it gives the rest up to
//! 300 µs to arrive (they were just answered and are about to send again): one fsync for
//! all of them instead of one for a few and another for the rest. And the batch is completed
//! only once the store holds the log's write lock: appends that arrived while it waited — on
//! a shared database, while other replicas committed — join this commit instead of waiting a
//! whole round of them for the next. So an
//! [`AuditLog::append`] that returns `Ok` means the event is on stable storage, and one that
//! returns `Err` means the action it guards must be refused: the log fails closed. A full
//! disk, an I/O error or a read-only file each come back as a typed [`StoreError`].
//!
//! **Checkpoints: no unsigned tail.** Every commit carries the checkpoint that covers it,
//! signed by the writer before `COMMIT` (Ed25519 signing takes microseconds; the fsync is what
//! costs), so there is never a committed event that no signed checkpoint covers. The latest
//! checkpoint is one replaced row; about once a second (configurable) a commit also keeps its
//! checkpoint in the history, and a ticker makes sure the latest one joins the history within
//! that second when appends stop.
//!
//! **Starting.** [`AuditLog::open`] rereads every stored event, checks that sequence numbers
//! are dense, that each `prev` is its predecessor's leaf hash, that the indexed columns agree
//! with the event, and that the tree matches the latest signed checkpoint — and that the
//! checkpoint covers every event: since no commit leaves an event uncovered, an event past the
//! latest checkpoint was written by something other than this log (a row inserted while the
//! control plane was stopped, however well chained). Anything else refuses the start with
//! [`OpenError::Tampered`], naming the sequence number that broke. (A database last written
//! by a version that signed once a second and crashed holds such a tail too: start that
//! version once, which signs it, before upgrading.) What a local check cannot see — someone
//! with write access to the database deleting the newest events, or rewriting events, *and*
//! deleting or re-signing the checkpoints that cover them — is what checkpoints kept by
//! reviewers are for: `loupe_audit::verify` reports it as a rollback or split view.
//!
//! **Every commit starts by catching up.** The store calls back into the writer once it holds
//! the log's write lock ([`AuditStore::commit`]); the writer reads whatever is stored past the
//! tree it knows, checks it as at start (but for decoding each event in full, which stands in
//! for a signature that events past the latest checkpoint lack: these must be covered by the
//! checkpoint stored with them), adds it to the tree, checks that checkpoint (and, on a shared
//! database, the stored frontier), applies the sessions those commits
//! changed, refuses appends whose session change rests on a stale version
//! ([`AppendError::Conflict`]), and only then numbers its batch. On PostgreSQL that is how
//! several replicas append to one log (see [`super::postgres`]); with one writer it is how a
//! **write that failed but landed** (an fsync error after the data went out) is taken up: the
//! caller was told to refuse, and the next commit continues after whatever is there, never
//! overwriting it, its state changes applied so the in-memory state still equals the stored
//! state (and the log). Events that fail the check leave the writer's view as it was.
//!
//! **Reading** goes through separate read connections, concurrently with the writer. Reading
//! the log is itself an auditable action: the caller records an `audit.read` event first.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loupe_audit::checkpoint::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
use loupe_audit::event::{AuditEvent, EventError, NewEvent};
use loupe_audit::export::ExportWriter;
use loupe_audit::merkle::{Hash, from_hex, leaf_hash};
use loupe_audit::proof::{ProofError, consistency_proof, inclusion_proof};
use tokio::sync::{mpsc, oneshot};

use super::ocsf;
use super::query::{Cursor, Filter, Page};
use super::sqlite::SqliteStore;
use super::store::{
    AuditReader, AuditStore, Batch, CheckpointWrite, Frontier, HeldLog, ReaderSource, SessionRow,
    StateChange, StoreError, StoredEvent, StoredEventRef,
};
use super::tree::{TreeCache, root_of_right_edge};

/// Longest the writer waits for more appenders to join a commit (see [`Writer::run`]).
const GATHER_WAIT: Duration = Duration::from_micros(300);

/// Most events returned by one page.
pub const MAX_PAGE: usize = 10_000;

/// Tuning of the writer.
#[derive(Clone, Debug)]
pub struct AuditLogConfig {
    /// Most events written in one transaction.
    pub max_batch: usize,
    /// Appends that may wait for the writer before `append` itself waits.
    pub queue_depth: usize,
    /// How often a checkpoint is also kept in the history (every commit replaces the
    /// latest).
    pub checkpoint_interval: Duration,
}

impl Default for AuditLogConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            queue_depth: 16_384,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Proof that an append is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub time_ms: u64,
    pub leaf_hash: Hash,
}

/// A checkpoint with the signed note it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The C2SP signed note, as published and exported.
    pub note: String,
}

/// An inclusion proof of event `seq` in the tree of `tree_size` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    pub seq: u64,
    pub tree_size: u64,
    pub leaf_hash: Hash,
    pub path: Vec<Hash>,
}

/// Why an event was not recorded. Whatever the variant, the guarded action must be refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error("audit event not recorded (action refused): {0}")]
    Storage(#[from] StoreError),
    #[error("audit log is closed (action refused)")]
    Closed,
    #[error("audit event cannot be encoded (action refused): {0}")]
    Encoding(String),
    #[error("a state change must come with the events that record it (action refused)")]
    Unrecorded,
    /// The decision rests on a stale view of a session: another writer (a replica on the same
    /// database) changed it first. Nothing was recorded; read the session again and retry.
    #[error("audit event not recorded (action refused): {0}")]
    Conflict(String),
}

/// Learns of every state change once it is durable (and only then), in commit order: the
/// control plane's in-memory session table.
pub trait StateObserver: Send + Sync {
    /// `change` is committed.
    fn applied(&self, change: &StateChange);
}

/// Why the log refused to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit log fails verification at event {seq}: {reason}")]
    Tampered { seq: u64, reason: String },
    #[error("the latest stored checkpoint is not valid: {0}")]
    Checkpoint(NoteError),
    #[error("cannot start the audit writer: {0}")]
    Thread(std::io::Error),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored event {seq} is unreadable: {source}")]
    Event { seq: u64, source: EventError },
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the log has no checkpoint yet")]
    NoCheckpoint,
    #[error("no event {seq}")]
    NotFound { seq: u64 },
}

type Reply<T> = oneshot::Sender<T>;

// Appends are nearly every message: boxing them to shrink the rare ones would cost an
// allocation per event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Append(Pending),
    /// Sign a checkpoint now (if there is anything new) and return the latest.
    Checkpoint(Reply<Result<SignedCheckpoint, AppendError>>),
    /// Wake up and sign a checkpoint if one is due.
    Tick,
    Shutdown(Reply<Result<(), AppendError>>),
}

/// State shared by the writer and readers.
struct Shared {
    tree: RwLock<TreeCache>,
    checkpoint: RwLock<Option<SignedCheckpoint>>,
    readers: Arc<dyn ReaderSource>,
    pool: Mutex<Vec<Box<dyn AuditReader>>>,
    observer: RwLock<Option<Arc<dyn StateObserver>>>,
}

impl Shared {
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut dyn AuditReader) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut reader = match pooled {
            Some(reader) => reader,
            None => self.readers.open()?,
        };
        let result = f(reader.as_mut());
        // A reader whose database went away is dropped, not pooled: the next read reconnects.
        if !matches!(result, Err(ReadError::Store(StoreError::Unavailable(_)))) {
            self.pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reader);
        }
        result
    }
}

/// The audit log. Share it behind an `Arc`; every method takes `&self`.
///
/// `append` and `checkpoint` are async (with `_blocking` twins for plain threads). Reads,
/// proofs and exports are synchronous and touch SQLite: from async code, run them in
/// `spawn_blocking`.
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    verifier: NoteVerifier,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn tampered(seq: u64, reason: impl Into<String>) -> OpenError {
    OpenError::Tampered {
        seq,
        reason: reason.into(),
    }
}

/// The fields of a stored event that the start-up check compares with the row, borrowed from
/// the canonical bytes. Everything else in the event is covered by its hash (and, through the
/// tree, by the signed checkpoint), so it is not decoded here — which keeps re-verification at
/// start fast. Strings with escapes cannot be borrowed; those events take [`OwnedView`].
#[derive(serde::Deserialize)]
struct BorrowedView<'a> {
    seq: u64,
    time_ms: u64,
    #[serde(borrow)]
    actor: ActorView<&'a str>,
    action: &'a str,
    #[serde(borrow)]
    decision: DecisionView<&'a str>,
    session: Option<&'a str>,
    service: Option<&'a str>,
    point: Option<&'a str>,
    prev: &'a str,
}

/// [`BorrowedView`] for events whose strings carry escapes.
#[derive(serde::Deserialize)]
struct OwnedView {
    seq: u64,
    time_ms: u64,
    actor: ActorView<String>,
    action: String,
    decision: DecisionView<String>,
    session: Option<String>,
    service: Option<String>,
    point: Option<String>,
    prev: String,
}

#[derive(serde::Deserialize)]
struct ActorView<S> {
    id: S,
}

#[derive(serde::Deserialize)]
struct DecisionView<S> {
    outcome: S,
}

/// What the start-up check reads from an event.
struct EventFacts {
    seq: u64,
    time_ms: u64,
    prev: Option<Hash>,
    columns_match: bool,
}

fn event_facts(row: &StoredEventRef<'_>) -> Result<EventFacts, serde_json::Error> {
    if let Ok(v) = serde_json::from_slice::<BorrowedView<'_>>(row.line) {
        return Ok(EventFacts {
            seq: v.seq,
            time_ms: v.time_ms,
            prev: from_hex(v.prev),
            columns_match: v.time_ms == row.time_ms
                && v.actor.id == row.actor
                && v.action == row.action
                && v.decision.outcome == row.outcome
                && v.session == row.session
                && v.service == row.service
                && v.point == row.point,
        });
    }
    let v: OwnedView = serde_json::from_slice(row.line)?;
    Ok(EventFacts {
        seq: v.seq,
        time_ms: v.time_ms,
        prev: from_hex(&v.prev),
        columns_match: v.time_ms == row.time_ms
            && v.actor.id == row.actor
            && v.action == row.action
            && v.decision.outcome == row.outcome
            && v.session.as_deref() == row.session
            && v.service.as_deref() == row.service
            && v.point.as_deref() == row.point,
    })
}

/// What re-verifying the stored events yields.
struct Rebuilt {
    tree: TreeCache,
    /// From this sequence on (events no checkpoint covers yet), each event is also decoded in
    /// full and must be in canonical form; `u64::MAX` when a signed checkpoint must cover
    /// every event checked (a writer catching up), which stands in for the full decoding.
    strict_from: u64,
    prev: Hash,
    last_time: u64,
}

/// Rereads events from `tree.size()` on, checking each against its predecessor, and adds them
/// to the tree.
fn rebuild_from(reader: &mut dyn AuditReader, rebuilt: &mut Rebuilt) -> Result<(), OpenError> {
    let mut failure = None;
    reader.visit(
        rebuilt.tree.size(),
        &mut |row| match check_event(&row, rebuilt) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

/// Checks one stored event against the chain so far and adds it to the tree.
fn check_event(row: &StoredEventRef<'_>, rebuilt: &mut Rebuilt) -> Result<(), OpenError> {
    let expected = rebuilt.tree.size();
    if row.seq != expected {
        return Err(tampered(
            expected,
            format!("event is missing (the next stored event is {})", row.seq),
        ));
    }
    let event =
        event_facts(row).map_err(|e| tampered(expected, format!("not an audit event: {e}")))?;
    if event.seq != expected {
        return Err(tampered(
            expected,
            format!("stored as event {expected} but says it is {}", event.seq),
        ));
    }
    if event.prev != Some(rebuilt.prev) {
        return Err(match expected.checked_sub(1) {
            Some(before) => tampered(
                before,
                format!("its hash is not the one event {expected} recorded"),
            ),
            None => tampered(0, "the first event does not start the chain"),
        });
    }
    if event.time_ms < rebuilt.last_time {
        return Err(tampered(
            expected,
            "its time is earlier than the event before it",
        ));
    }
    if !event.columns_match {
        return Err(tampered(expected, "indexed columns differ from the event"));
    }
    if expected >= rebuilt.strict_from
        && let Err(e) = AuditEvent::from_canonical(row.line)
    {
        return Err(tampered(
            expected,
            format!("not a canonical audit event: {e}"),
        ));
    }
    let leaf = leaf_hash(row.line);
    rebuilt.tree.push(leaf);
    rebuilt.prev = leaf;
    rebuilt.last_time = event.time_ms;
    Ok(())
}

impl AuditLog {
    /// Opens the SQLite log in `data_dir` (creating it if needed), re-verifies it and starts
    /// the writer. `signer` is the log's checkpoint key; its name is the log's origin.
    pub fn open(
        data_dir: &Path,
        signer: NoteSigner,
        config: AuditLogConfig,
    ) -> Result<Self, OpenError> {
        Self::open_with_store(SqliteStore::open(data_dir)?, signer, config)
    }

    /// Opens the log over any store.
    pub fn open_with_store<S: AuditStore>(
        store: S,
        signer: NoteSigner,
        config: AuditLogConfig,
    ) -> Result<Self, OpenError> {
        let readers = store.readers();
        // One consistent view for the whole check: other writers on a shared database may
        // append while it runs, and what they append is caught up on before the first commit.
        let mut reader = readers.open_snapshot()?;
        let latest = reader.latest_checkpoint()?;
        let mut rebuilt = Rebuilt {
            tree: TreeCache::new(),
            strict_from: latest.as_ref().map_or(0, |(size, _)| *size),
            prev: [0; 32],
            last_time: 0,
        };
        rebuild_from(reader.as_mut(), &mut rebuilt)?;
        let verifier = signer.verifier();
        let checkpoint = match latest {
            None if rebuilt.tree.size() > 0 => {
                return Err(tampered(
                    0,
                    "no signed checkpoint covers this event (or any): it was not written by the log",
                ));
            }
            None => None,
            Some((size, note)) => {
                let checkpoint = verifier
                    .open_checkpoint(&note)
                    .map_err(OpenError::Checkpoint)?;
                let stored = rebuilt.tree.size();
                if checkpoint.size != size {
                    return Err(tampered(size, "checkpoint stored under the wrong size"));
                }
                if size > stored {
                    return Err(tampered(
                        stored,
                        format!("events {stored}..{size} of the signed checkpoint are missing"),
                    ));
                }
                if size > 0 && rebuilt.tree.root_at(size).ok() != Some(checkpoint.root) {
                    return Err(tampered(
                        size - 1,
                        format!("events do not match the signed checkpoint of size {size}"),
                    ));
                }
                if size < stored {
                    return Err(tampered(
                        size,
                        format!(
                            "the latest signed checkpoint covers events 0..{size}, not this one: every commit is signed, so it was not written by the log"
                        ),
                    ));
                }
                Some(SignedCheckpoint { checkpoint, note })
            }
        };

        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let archived = checkpoint.as_ref().map(|c| c.checkpoint.size);
        let shared = Arc::new(Shared {
            tree: RwLock::new(rebuilt.tree),
            checkpoint: RwLock::new(checkpoint),
            readers,
            pool: Mutex::new(Vec::new()),
            observer: RwLock::new(None),
        });
        let mut writer = Writer {
            store,
            seq: Sequencer {
                signer,
                shared: shared.clone(),
                interval: config.checkpoint_interval,
                prev: rebuilt.prev,
                last_time: rebuilt.last_time,
                archived,
                last_archived: Instant::now(),
                unsure: false,
                sealed: None,
            },
            rx,
            max_batch: config.max_batch.max(1),
            last_batch: 1,
            deferred: None,
        };
        let handle = std::thread::Builder::new()
            .name("loupe-audit-writer".into())
            .spawn(move || writer.run())
            .map_err(OpenError::Thread)?;
        let weak = tx.downgrade();
        let interval = config.checkpoint_interval;
        std::thread::Builder::new()
            .name("loupe-audit-ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let Some(tx) = weak.upgrade() else { return };
                    // A full queue means the writer is busy and will check the time anyway.
                    let _ = tx.try_send(Msg::Tick);
                }
            })
            .map_err(OpenError::Thread)?;
        Ok(Self {
            tx,
            shared,
            verifier,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// Appends `event` and returns once it is durable. On `Err`, refuse the guarded action.
    pub async fn append(&self, event: NewEvent) -> Result<Receipt, AppendError> {
        let receipts = self.append_with_state(vec![event], Vec::new()).await?;
        receipts.into_iter().next().ok_or(AppendError::Closed)
    }

    /// Appends `events` (consecutive, in this order) and commits `state` with them, in one
    /// transaction: when this returns `Ok`, all of it is durable and `state` has been applied
    /// to the [`StateObserver`]; on `Err`, none of it is acknowledged and the guarded action
    /// must be refused. A state change without an event is refused: every change is recorded.
    pub async fn append_with_state(
        &self,
        events: Vec<NewEvent>,
        state: Vec<StateChange>,
    ) -> Result<Vec<Receipt>, AppendError> {
        if events.is_empty() {
            return Err(AppendError::Unrecorded);
        }
        let (reply, receipts) = oneshot::channel();
        self.tx
            .send(Msg::Append((events, state, reply)))
            .await
            .map_err(|_| AppendError::Closed)?;
        receipts.await.map_err(|_| AppendError::Closed)?
    }

    /// [`append`](Self::append) for threads outside an async runtime (it panics inside one).
    pub fn append_blocking(&self, event: NewEvent) -> Result<Receipt, AppendError> {
        let receipts = self.append_with_state_blocking(vec![event], Vec::new())?;
        receipts.into_iter().next().ok_or(AppendError::Closed)
    }

    /// [`append_with_state`](Self::append_with_state) outside an async runtime.
    pub fn append_with_state_blocking(
        &self,
        events: Vec<NewEvent>,
        state: Vec<StateChange>,
    ) -> Result<Vec<Receipt>, AppendError> {
        if events.is_empty() {
            return Err(AppendError::Unrecorded);
        }
        let (reply, receipts) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Append((events, state, reply)))
            .map_err(|_| AppendError::Closed)?;
        receipts.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// Tells `observer` of every state change committed from now on (replacing any earlier
    /// observer). Set it before the first change is appended.
    pub fn observe_state(&self, observer: Arc<dyn StateObserver>) {
        *self
            .shared
            .observer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    /// Every stored session (committed state; see [`StateChange::PutSession`]).
    pub fn sessions(&self) -> Result<Vec<SessionRow>, ReadError> {
        self.shared.with_reader(|r| Ok(r.sessions()?))
    }

    /// The checkpoint covering every durable event (every commit signs one; an empty log gets
    /// its first here).
    pub async fn checkpoint(&self) -> Result<SignedCheckpoint, AppendError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Msg::Checkpoint(reply))
            .await
            .map_err(|_| AppendError::Closed)?;
        done.await.map_err(|_| AppendError::Closed)?
    }

    /// [`checkpoint`](Self::checkpoint) outside an async runtime.
    pub fn checkpoint_blocking(&self) -> Result<SignedCheckpoint, AppendError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Checkpoint(reply))
            .map_err(|_| AppendError::Closed)?;
        done.blocking_recv().map_err(|_| AppendError::Closed)?
    }

    /// Stops the writer after the appends already queued, signing a final checkpoint.
    /// Blocks until done; call it from outside an async runtime (or in `spawn_blocking`).
    pub fn close(&self) -> Result<(), AppendError> {
        let (reply, done) = oneshot::channel();
        let sent = self.tx.blocking_send(Msg::Shutdown(reply)).is_ok();
        let result = if sent {
            done.blocking_recv().unwrap_or(Err(AppendError::Closed))
        } else {
            Ok(())
        };
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        result
    }

    /// The log's verifier key (publish it to reviewers out of band).
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The number of durable events.
    pub fn size(&self) -> u64 {
        self.shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .size()
    }

    /// Whether the storage answers a read now (one round trip to the database): what the
    /// readiness probe reports.
    pub fn reachable(&self) -> Result<(), ReadError> {
        self.shared.with_reader(|r| Ok(r.count().map(drop)?))
    }

    /// The latest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        self.shared
            .checkpoint
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One page of events matching `filter`, after `cursor` (from the start if `None`), at
    /// most `limit` (capped at [`MAX_PAGE`]).
    pub fn query(
        &self,
        filter: &Filter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, ReadError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = self
            .shared
            .with_reader(|r| Ok(r.query(filter, cursor.map(|c| c.0), limit)?))?;
        let full = rows.len() == limit;
        let events = rows.iter().map(parse_row).collect::<Result<Vec<_>, _>>()?;
        let next = match events.last() {
            Some(last) if full => Some(Cursor(last.seq)),
            _ => None,
        };
        Ok(Page { events, next })
    }

    /// Every event matching `filter`, in sequence order, read page by page.
    pub fn stream(&self, filter: Filter) -> QueryStream<'_> {
        QueryStream {
            log: self,
            filter,
            cursor: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// Event `seq`.
    pub fn event(&self, seq: u64) -> Result<AuditEvent, ReadError> {
        let rows = self.shared.with_reader(|r| Ok(r.scan(seq, 1)?))?;
        match rows.first() {
            Some(row) if row.seq == seq => parse_row(row),
            _ => Err(ReadError::NotFound { seq }),
        }
    }

    /// The inclusion proof of event `seq` in the tree of the first `tree_size` events.
    pub fn inclusion_proof(&self, seq: u64, tree_size: u64) -> Result<InclusionProof, ReadError> {
        let tree = self
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if tree_size > tree.size() {
            return Err(ProofError::IndexOutOfRange {
                index: tree_size.saturating_sub(1),
                size: tree.size(),
            }
            .into());
        }
        let path = inclusion_proof(&*tree, seq, tree_size)?;
        let leaf_hash = tree.leaf(seq).ok_or(ReadError::NotFound { seq })?;
        Ok(InclusionProof {
            seq,
            tree_size,
            leaf_hash,
            path,
        })
    }

    /// The consistency proof from the tree of `first` events to the tree of `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ReadError> {
        let tree = self
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if second > tree.size() {
            return Err(ProofError::SizesOutOfOrder {
                first: second,
                second: tree.size(),
            }
            .into());
        }
        Ok(consistency_proof(&*tree, first, second)?)
    }

    /// Writes the JSON Lines export (every event up to the latest checkpoint, then that
    /// checkpoint) to `out`, and returns the checkpoint. Verify it with
    /// `loupe_audit::verify::verify_export`.
    pub fn export_jsonl<W: Write>(&self, out: W) -> Result<SignedCheckpoint, ReadError> {
        let checkpoint = self.latest_checkpoint().ok_or(ReadError::NoCheckpoint)?;
        let size = checkpoint.checkpoint.size;
        let mut export = ExportWriter::new(out);
        while export.events() < size {
            let from = export.events();
            let want = usize::try_from(size - from).unwrap_or(usize::MAX).min(4096);
            let rows = self.shared.with_reader(|r| Ok(r.scan(from, want)?))?;
            if rows.is_empty() {
                return Err(ReadError::NotFound { seq: from });
            }
            for row in rows {
                if row.seq != export.events() {
                    return Err(ReadError::NotFound {
                        seq: export.events(),
                    });
                }
                export.event(&row.line)?;
            }
        }
        export.finish(&checkpoint.note)?;
        Ok(checkpoint)
    }

    /// Writes the events matching `filter` as OCSF JSON, one object per line; returns how
    /// many.
    pub fn export_ocsf<W: Write>(&self, filter: &Filter, mut out: W) -> Result<u64, ReadError> {
        let mut count = 0;
        for event in self.stream(filter.clone()) {
            let object = ocsf::to_ocsf(&event?, self.verifier.name());
            serde_json::to_writer(&mut out, &object).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
            count += 1;
        }
        out.flush()?;
        Ok(count)
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        // Best effort: ask for the final checkpoint; the writer also stops (and signs) once
        // the queue closes as this value goes away. `close` is the way to wait for it.
        let (reply, _done) = oneshot::channel();
        let _ = self.tx.try_send(Msg::Shutdown(reply));
    }
}

fn parse_row(row: &StoredEvent) -> Result<AuditEvent, ReadError> {
    AuditEvent::from_canonical(&row.line).map_err(|source| ReadError::Event {
        seq: row.seq,
        source,
    })
}

/// Iterator over a query's results, fetching a page at a time by cursor.
pub struct QueryStream<'a> {
    log: &'a AuditLog,
    filter: Filter,
    cursor: Option<Cursor>,
    page: std::vec::IntoIter<AuditEvent>,
    done: bool,
}

impl Iterator for QueryStream<'_> {
    type Item = Result<AuditEvent, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.page.next() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            match self.log.query(&self.filter, self.cursor, 1000) {
                Ok(page) => {
                    self.done = page.next.is_none();
                    self.cursor = page.next;
                    self.page = page.events.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The writer thread's state: the store, and everything else ([`Sequencer`]), kept apart so
/// that the store can call back into the sequencer while it holds the log.
struct Writer<S> {
    store: S,
    seq: Sequencer,
    rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    /// How many appends shared the last commit.
    last_batch: usize,
    /// A message other than an append that arrived while a batch was being completed (see
    /// [`Writer::commit`]): handled next.
    deferred: Option<Msg>,
}

/// What the writer knows of the log, and how it seals a batch.
struct Sequencer {
    signer: NoteSigner,
    shared: Arc<Shared>,
    interval: Duration,
    /// Leaf hash of the last durable event.
    prev: Hash,
    /// Time of the last durable event: times never go backwards along the log.
    last_time: u64,
    /// Size of the latest checkpoint kept in the history.
    archived: Option<u64>,
    last_archived: Instant,
    /// A write failed: the store may or may not hold that batch, and the latest checkpoint
    /// this writer published may be behind the store's.
    unsure: bool,
    /// The batch handed to the store, until it says how the commit went.
    sealed: Option<Sealed>,
}

/// A batch as sealed, kept for when its commit returns.
struct Sealed {
    leaves: Vec<Hash>,
    prev: Hash,
    time_ms: u64,
    signed: SignedCheckpoint,
    archive: bool,
    state: Vec<StateChange>,
    replies: Vec<(AppendReply, Vec<Receipt>)>,
}

/// The stored checkpoint, which must cover exactly `tree` (caught up from `known`).
fn covering_checkpoint(
    held: &mut dyn HeldLog,
    tree: &TreeCache,
    known: u64,
    signer: &NoteSigner,
) -> Result<SignedCheckpoint, StoreError> {
    let Some((size, note)) = held.head()? else {
        return Err(StoreError::Corrupt(
            "events were stored without their checkpoint".into(),
        ));
    };
    let checkpoint = signer
        .verifier()
        .open_checkpoint(&note)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if size != tree.size()
        || checkpoint.size != size
        || tree.root_at(size).ok() != Some(checkpoint.root)
    {
        return Err(StoreError::Corrupt(format!(
            "the checkpoint stored with events {known}..{} does not cover them",
            tree.size()
        )));
    }
    Ok(SignedCheckpoint { checkpoint, note })
}

/// Where an appender learns how its append went.
type AppendReply = Reply<Result<Vec<Receipt>, AppendError>>;

/// Events to append, the state changes they record, and where to say how it went.
type Pending = (Vec<NewEvent>, Vec<StateChange>, AppendReply);

impl<S: AuditStore> Writer<S> {
    fn run(&mut self) {
        let mut pending: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut checkpoint_waiters = Vec::new();
        loop {
            let Some(first) = self.deferred.take().or_else(|| self.rx.blocking_recv()) else {
                let _ = self.archive_latest();
                return;
            };
            let mut shutdown = None;
            let mut ticked = false;
            let mut next = Some(first);
            // Group commit: take what is waiting. If fewer appenders are waiting than shared
            // the last commit, the others are most likely about to send again (they were just
            // answered); wait a moment for them rather than pay a whole fsync for a few.
            let expected = self.last_batch.min(self.max_batch);
            let gather_until = Instant::now() + GATHER_WAIT;
            loop {
                match next.take() {
                    Some(Msg::Append(append)) => pending.push(append),
                    Some(Msg::Checkpoint(reply)) => checkpoint_waiters.push(reply),
                    Some(Msg::Tick) => ticked = true,
                    Some(Msg::Shutdown(reply)) => {
                        shutdown = Some(reply);
                        break;
                    }
                    None => {
                        if pending.len() >= expected || Instant::now() >= gather_until {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(20));
                    }
                }
                if pending.len() >= self.max_batch {
                    break;
                }
                next = self.rx.try_recv().ok();
            }
            if !pending.is_empty() {
                self.commit(&mut pending);
            } else if ticked {
                // Idle: the moment for housekeeping, off the append path.
                if self.seq.last_archived.elapsed() >= self.seq.interval {
                    let _ = self.archive_latest();
                }
                if let Err(error) = self.store.maintain() {
                    tracing::warn!(%error, "audit storage housekeeping failed");
                }
            }
            if !checkpoint_waiters.is_empty() {
                let result = self.ensure_checkpoint();
                for reply in checkpoint_waiters.drain(..) {
                    let _ = reply.send(result.clone());
                }
            }
            if let Some(reply) = shutdown {
                let _ = reply.send(self.final_checkpoint());
                return;
            }
        }
    }

    /// Commits `pending` (one transaction, one checkpoint) and answers each appender.
    ///
    /// The batch is completed once the store holds the log: appends that arrived while it
    /// waited for the lock — on a shared database, while other replicas committed — join this
    /// commit rather than wait for the next (up to `max_batch`).
    fn commit(&mut self, pending: &mut Vec<Pending>) {
        let Writer {
            store,
            seq,
            rx,
            max_batch,
            deferred,
            ..
        } = self;
        let mut taken = pending.len();
        let result = store.commit(&mut |held| {
            while pending.len() < *max_batch && deferred.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Append(append)) => pending.push(append),
                    Ok(other) => *deferred = Some(other),
                    Err(_) => break,
                }
            }
            taken = pending.len();
            seq.seal(held, pending, false)
        });
        self.last_batch = taken;
        let sealed = self.seq.sealed.take();
        match result {
            Ok(()) => {
                if let Some(sealed) = sealed {
                    self.seq.committed(sealed);
                }
            }
            Err(e) => {
                self.seq.unsure = true;
                let refused = || Err(AppendError::Storage(e.clone()));
                for (reply, _) in sealed.into_iter().flat_map(|s| s.replies) {
                    let _ = reply.send(refused());
                }
                for (_, _, reply) in pending.drain(..) {
                    let _ = reply.send(refused());
                }
            }
        }
    }

    /// The latest checkpoint; an empty log gets its first (of size 0) here, and a writer
    /// unsure of the store catches up on it first.
    fn ensure_checkpoint(&mut self) -> Result<SignedCheckpoint, AppendError> {
        let latest = self.seq.latest();
        match latest {
            Some(latest) if !self.seq.unsure => Ok(latest),
            _ => self.write_checkpoint(),
        }
    }

    /// The checkpoint a writer leaves when it stops: of the log as the store holds it. On a
    /// shared database other replicas may have appended since this one last committed or
    /// archived; its latest checkpoint, already in the history, would then leave it behind.
    fn final_checkpoint(&mut self) -> Result<(), AppendError> {
        let stored = self.seq.shared.with_reader(|reader| Ok(reader.count()?));
        match stored {
            Ok(stored) if stored == self.seq.tree_size() => self.archive_latest(),
            // Behind, or the count could not be read: catching up says which, and signs.
            _ => self.write_checkpoint().map(drop),
        }
    }

    /// Keeps the latest checkpoint in the history too, if it is not there yet.
    fn archive_latest(&mut self) -> Result<(), AppendError> {
        let latest = self.ensure_checkpoint()?;
        if self.seq.archived != Some(latest.checkpoint.size) {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// Commits a batch of no events: the checkpoint of the tree as it stands (after catching
    /// up on the store), kept in the history.
    fn write_checkpoint(&mut self) -> Result<SignedCheckpoint, AppendError> {
        let seq = &mut self.seq;
        let result = self
            .store
            .commit(&mut |held| seq.seal(held, &mut Vec::new(), true));
        let sealed = self.seq.sealed.take();
        if let Err(e) = result {
            self.seq.unsure = true;
            return Err(e.into());
        }
        if let Some(sealed) = sealed {
            self.seq.committed(sealed);
        }
        self.seq.unsure = false;
        self.seq.latest().ok_or(AppendError::Closed)
    }
}

impl Sequencer {
    fn tree_size(&self) -> u64 {
        self.shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .size()
    }

    fn latest(&self) -> Option<SignedCheckpoint> {
        self.shared
            .checkpoint
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn sign(&self, size: u64, root: Hash) -> Result<SignedCheckpoint, AppendError> {
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size,
            root,
        };
        let note = checkpoint
            .sign(&self.signer)
            .map_err(|e| AppendError::Encoding(e.to_string()))?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    fn publish(&mut self, signed: SignedCheckpoint, archived: bool) {
        if archived {
            self.archived = Some(signed.checkpoint.size);
            self.last_archived = Instant::now();
        }
        *self
            .shared
            .checkpoint
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(signed);
    }

    fn apply(&self, changes: &[StateChange]) {
        if changes.is_empty() {
            return;
        }
        let observer = self
            .shared
            .observer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(observer) = observer {
            for change in changes {
                observer.applied(change);
            }
        }
    }

    /// Called by the store once it holds the log: catches up on what is stored, refuses the
    /// appends whose state changes rest on a stale view, and seals the rest into the batch to
    /// commit (`None`: nothing to write). With `checkpoint_only`, the batch is the checkpoint
    /// of the tree as it stands.
    fn seal(
        &mut self,
        held: &mut dyn HeldLog,
        pending: &mut Vec<Pending>,
        checkpoint_only: bool,
    ) -> Result<Option<Batch>, StoreError> {
        self.catch_up(held)?;
        self.refuse_conflicts(held, pending)?;
        let base = self.tree_size();
        let time_ms = now_ms().max(self.last_time);
        let mut prev = self.prev;
        let mut rows = Vec::with_capacity(pending.len());
        let mut state = Vec::new();
        let mut replies = Vec::with_capacity(pending.len());
        for (events, changes, reply) in pending.drain(..) {
            // A group is all or nothing: one event that cannot be encoded refuses the group.
            let (group_start, group_prev) = (rows.len(), prev);
            let mut receipts = Vec::with_capacity(events.len());
            let mut failure = None;
            for event in events {
                let seq = base + rows.len() as u64;
                let sealed = event.seal(seq, time_ms, &prev);
                match sealed.canonical_bytes() {
                    Ok(line) => {
                        prev = leaf_hash(&line);
                        rows.push(StoredEvent::new(&sealed, line));
                        receipts.push(Receipt {
                            seq,
                            time_ms,
                            leaf_hash: prev,
                        });
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            if let Some(e) = failure {
                rows.truncate(group_start);
                prev = group_prev;
                let _ = reply.send(Err(AppendError::Encoding(e)));
                continue;
            }
            state.extend(changes);
            replies.push((reply, receipts));
        }
        if rows.is_empty() && !checkpoint_only {
            return Ok(None);
        }
        let leaves: Vec<Hash> = replies
            .iter()
            .flat_map(|(_, receipts)| receipts.iter().map(|r| r.leaf_hash))
            .collect();
        let size = base + rows.len() as u64;
        let right_edge = self
            .shared
            .tree
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .right_edge_with(&leaves);
        let root = root_of_right_edge(&right_edge);
        let signed = self
            .sign(size, root)
            .map_err(|e| StoreError::Other(format!("the checkpoint cannot be signed: {e}")))?;
        let archive = checkpoint_only || self.last_archived.elapsed() >= self.interval;
        let batch = Batch {
            events: rows,
            state: state.clone(),
            checkpoint: CheckpointWrite {
                size,
                note: signed.note.clone(),
                archive,
            },
            frontier: Frontier {
                size,
                last_leaf: prev,
                right_edge,
            },
        };
        self.sealed = Some(Sealed {
            leaves,
            prev,
            time_ms,
            signed,
            archive,
            state,
            replies,
        });
        Ok(Some(batch))
    }

    /// A sealed batch is durable: it joins the tree, its state changes are applied, its
    /// appenders answered.
    fn committed(&mut self, sealed: Sealed) {
        {
            let mut tree = self
                .shared
                .tree
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for leaf in &sealed.leaves {
                tree.push(*leaf);
            }
        }
        self.prev = sealed.prev;
        self.last_time = sealed.time_ms;
        self.publish(sealed.signed, sealed.archive);
        self.apply(&sealed.state);
        for (reply, receipts) in sealed.replies {
            let _ = reply.send(Ok(receipts));
        }
    }

    /// Brings this writer's view in line with the store before it sequences anything: the
    /// events stored past the tree it knows — appended by another writer on the same
    /// database, or by its own commit that reported failure but landed — are checked as at
    /// start (but for decoding each in full: see [`Rebuilt::strict_from`]) and join the
    /// tree, the checkpoint stored with them must cover them, the stored
    /// frontier must be the tree's, and the sessions those commits changed are applied.
    fn catch_up(&mut self, held: &mut dyn HeldLog) -> Result<(), StoreError> {
        let known = self.tree_size();
        let appended = held.events_from(known)?;
        if !appended.is_empty() {
            self.take_up(held, &appended)?;
        }
        if let Some(frontier) = held.frontier()? {
            let tree = self
                .shared
                .tree
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if frontier.size != tree.size()
                || frontier.last_leaf != self.prev
                || frontier.right_edge != tree.right_edge_with(&[])
            {
                return Err(StoreError::Corrupt(format!(
                    "the stored frontier (a tree of {} events) is not the tree of the {} events this writer checked",
                    frontier.size,
                    tree.size()
                )));
            }
        }
        let changed = held.sessions_changed_after(known)?;
        let changes: Vec<StateChange> = changed.into_iter().map(StateChange::PutSession).collect();
        self.apply(&changes);
        self.unsure = false;
        Ok(())
    }

    /// Checks `appended` (stored past the known tree) as at start but for the full decoding,
    /// adds them to the tree and takes up the checkpoint that must cover exactly them (which
    /// stands in for that decoding). If anything fails, the tree is left as it
    /// was: nothing unverified stays in this writer's view.
    fn take_up(
        &mut self,
        held: &mut dyn HeldLog,
        appended: &[StoredEvent],
    ) -> Result<(), StoreError> {
        let (prev, last_time) = (self.prev, self.last_time);
        let mut tree = self
            .shared
            .tree
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let known = tree.size();
        let mut rebuilt = Rebuilt {
            // Not decoded in full: these events are taken up only if the signed checkpoint
            // stored with them covers exactly them (`covering_checkpoint`), so a log writer
            // sealed every byte of them — which is what the full decoding of an uncovered
            // event at start stands in for. Measured, it was most of catching up, and a
            // writer catches up holding the log.
            strict_from: u64::MAX,
            tree: std::mem::take(&mut *tree),
            prev,
            last_time,
        };
        let checked = appended
            .iter()
            .try_for_each(|row| check_event(&row.borrowed(), &mut rebuilt))
            .map_err(|e| StoreError::Corrupt(e.to_string()))
            .and_then(|()| covering_checkpoint(held, &rebuilt.tree, known, &self.signer));
        *tree = rebuilt.tree;
        match checked {
            Ok(checkpoint) => {
                drop(tree);
                self.prev = rebuilt.prev;
                self.last_time = rebuilt.last_time;
                self.publish(checkpoint, false);
                Ok(())
            }
            Err(error) => {
                tree.truncate(known);
                Err(error)
            }
        }
    }

    /// Refuses, with [`AppendError::Conflict`], each append whose state change is not the
    /// next version of the session as stored: its decision was taken on a stale view (another
    /// writer changed the session meanwhile). The stored session is applied, so this
    /// writer's view is current for the caller's retry.
    fn refuse_conflicts(
        &mut self,
        held: &mut dyn HeldLog,
        pending: &mut Vec<Pending>,
    ) -> Result<(), StoreError> {
        let mut ids: Vec<&str> = pending
            .iter()
            .flat_map(|(_, changes, _)| changes.iter().map(|c| c.session().id.as_str()))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        let stored = held.sessions(&ids)?;
        let mut versions: std::collections::HashMap<String, u64> = stored
            .iter()
            .map(|row| (row.id.clone(), row.version))
            .collect();
        let mut refused = Vec::new();
        let mut kept = Vec::with_capacity(pending.len());
        for (events, changes, reply) in pending.drain(..) {
            let mut next = versions.clone();
            let mut conflict = None;
            for change in &changes {
                let row = change.session();
                let at = next.get(&row.id).copied().unwrap_or(0);
                if row.version != at + 1 {
                    conflict = Some(StoreError::Conflict {
                        session: row.id.clone(),
                        stored: at,
                        expected: row.version.saturating_sub(1),
                    });
                    break;
                }
                next.insert(row.id.clone(), row.version);
            }
            match conflict {
                None => {
                    versions = next;
                    kept.push((events, changes, reply));
                }
                Some(error) => refused.push((reply, error)),
            }
        }
        *pending = kept;
        if !refused.is_empty() {
            let current: Vec<StateChange> =
                stored.into_iter().map(StateChange::PutSession).collect();
            self.apply(&current);
            for (reply, error) in refused {
                let _ = reply.send(Err(AppendError::Conflict(error.to_string())));
            }
        }
        Ok(())
    }
}
