//! The tamper-evident audit log: every decision and state change, written durably before the
//! action it records takes effect, in an RFC 6962 Merkle tree with signed checkpoints.
//!
//! **One decision, one transaction.** The control plane's session state lives in the audit
//! database, and a decision's events and the state change they record are handed to the log
//! together ([`AuditLog::append_with_state`]); the writer commits them with the batch's signed
//! checkpoint in one transaction. So after any crash the log never says what the state does
//! not (no "revoked" event for a session that comes back active, no "opened" event for a
//! session that does not exist), and no event exists that a checkpoint does not cover. The
//! alternatives were worse: two databases need a two-phase protocol or a replay of the log
//! into the state on start (which makes the state's shape part of the log's format); writing
//! the state first would let a crash leave an unrecorded change. A PostgreSQL store keeps the
//! same guarantee by committing the batch in one transaction too.
//!
//! - [`log`]: [`AuditLog`], the running log — group-committed appends, checkpoints, proofs,
//!   export, and the self-check on start.
//! - [`store`]: the narrow storage interface the log writes through.
//! - [`sqlite`]: the embedded SQLite backend.
//! - [`postgres`]: the PostgreSQL backend, shared by any number of control-plane replicas;
//!   [`postgres_tls`]: TLS to it.
//! - [`migrate`]: copying a SQLite deployment into an empty PostgreSQL database, verified.
//! - [`check`]: verifying a stored log (after a restore, after a migration) as a reviewer
//!   verifies an export, against a checkpoint they kept.
//! - [`notify`]: other replicas' session changes, learnt from that database as they commit.
//! - [`fault`]: storage that fails on command — whole commits, or at a chosen step of one —
//!   to test the fail-closed and crash paths.
//! - [`tree`]: the in-memory cache of full-subtree hashes that answers proofs.
//! - [`query`]: filters, pages and cursors for reading.
//! - [`ocsf`]: the OCSF rendering of events for SIEMs.
//!
//! The event format, hashing, checkpoints and offline verification live in
//! [`loupe_audit`], so a reviewer's tools need no server.

pub mod check;
pub mod fault;
pub mod log;
pub mod migrate;
pub mod notify;
pub mod ocsf;
pub mod postgres;
pub mod postgres_tls;
pub mod query;
pub mod sqlite;
pub mod store;
pub mod tree;

pub use log::{
    AppendError, AuditLog, AuditLogConfig, InclusionProof, OpenError, QueryStream, ReadError,
    Receipt, SignedCheckpoint, StateObserver,
};
pub use notify::SessionFeed;
pub use postgres::{Database, PostgresStore};
pub use query::{Cursor, Filter, Page};
pub use sqlite::SqliteStore;
pub use store::{
    AuditReader, AuditStore, Batch, CheckpointWrite, Frontier, HeldLog, ReaderSource, SessionRow,
    StateChange, StoreError, StoredEvent,
};
